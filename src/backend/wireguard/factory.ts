/**
 * The wireguard entry of the backend registry: decodes the config and picks the drivers
 * (kernel over generic netlink, wireguard-go in user space) per --wireguard-fallback.
 */
import type { NetworkConfig } from '../../config/types';
import { WeftError } from '../../errors';
import type { Logger } from '../../log';
import type { IPFamily } from '../../ip';
import type { Netlink } from '../../netlink/client';
import { decodeWireguardConfig } from './config';
import { KernelWireguardDriver } from './kernel';
import { WireguardBackend, type WireguardFallback } from './wireguard';

/** weftd's wireguard options (--wireguard-fallback, --wireguard-key-file, --wireguard-run-dir). */
export interface WireguardDeps {
  readonly fallback?: WireguardFallback;
  readonly keyFile?: string;
  readonly runDir?: string;
}

export function createWireguardBackend(
  config: NetworkConfig,
  deps: { readonly nl: Netlink; readonly log: Logger; readonly wireguard?: WireguardDeps; readonly family?: IPFamily },
): WireguardBackend {
  const family = deps.family ?? 4;
  const network = family === 4 ? config.network : config.ipv6Network;
  if (network === null) throw new WeftError('CONFIG_INVALID', `network config: the wireguard backend needs ${family === 4 ? 'a Network' : 'an IPv6Network'} for IPv${family}`);
  const wg = deps.wireguard ?? {};
  return new WireguardBackend({
    nl: deps.nl,
    config: decodeWireguardConfig(config.backend),
    network,
    family,
    log: deps.log,
    ...(wg.fallback ? { fallback: wg.fallback } : {}),
    ...(wg.keyFile ? { keyFile: wg.keyFile } : {}),
    ...(wg.runDir ? { runDir: wg.runDir } : {}),
    ...(wg.fallback === 'force' ? {} : { kernel: new KernelWireguardDriver({ nl: deps.nl, log: deps.log }) }),
  });
}
