/**
 * The wireguard entry of the backend registry: decodes the config and picks the drivers
 * (kernel over generic netlink, wireguard-go in user space) per --wireguard-fallback.
 */
import type { NetworkConfig } from '../../config/types';
import { WeftError } from '../../errors';
import type { Logger } from '../../log';
import type { NetlinkClient } from '../../netlink/client';
import { decodeWireguardConfig } from './config';
import { KernelWireguardDriver } from './kernel';
import { WireguardBackend, type WireguardFallback } from './wireguard';

/** weftd's wireguard options (--wireguard-fallback, --wireguard-key-file, --wireguard-run-dir). */
export interface WireguardDeps {
  readonly fallback?: WireguardFallback;
  readonly keyFile?: string;
  readonly runDir?: string;
}

export function createWireguardBackend(config: NetworkConfig, deps: { readonly nl: NetlinkClient; readonly log: Logger; readonly wireguard?: WireguardDeps }): WireguardBackend {
  if (config.network === null) throw new WeftError('CONFIG_INVALID', 'network config: the wireguard backend needs an IPv4 Network');
  const wg = deps.wireguard ?? {};
  return new WireguardBackend({
    nl: deps.nl,
    config: decodeWireguardConfig(config.backend),
    network: config.network,
    log: deps.log,
    ...(wg.fallback ? { fallback: wg.fallback } : {}),
    ...(wg.keyFile ? { keyFile: wg.keyFile } : {}),
    ...(wg.runDir ? { runDir: wg.runDir } : {}),
    ...(wg.fallback === 'force' ? {} : { kernel: new KernelWireguardDriver({ nl: deps.nl, log: deps.log }) }),
  });
}
