/**
 * The explicit list of built-in backends (style habit 1: a map in one file, no side-effect
 * imports). A backend type named in the network config but absent here is a config error that
 * says which types exist.
 *
 * Each backend's module is loaded only when a network config names it (issue #14, start-up):
 * a vxlan host no longer compiles the udp, wireguard, host-gw and user-space code before it
 * writes subnet.env (~30 ms of CPU on a 2-core machine). One line per backend stays here; the
 * `require` in it is the lazy loader (typed by `typeof import`, so a renamed export still fails
 * the build). `import type` lines cost nothing at run time.
 */
import { decodeVxlanConfig } from '../config/network';
import type { NetworkConfig } from '../config/types';
import { WeftError } from '../errors';
import type { IPFamily } from '../ip';
import type { Logger } from '../log';
import type { Netlink } from '../netlink/client';
import { decodeVxlanLeaseData } from '../lease/codec';
import type { Lease } from '../lease/types';
import type { Backend } from './backend';
import type { PumpFactory } from './userspace';
import type { WireguardDeps } from './wireguard';

export interface BackendDeps {
  readonly nl: Netlink;
  readonly log: Logger;
  /** Our lease from before this process (same PublicIP), if any: vxlan keeps its VtepMAC. */
  readonly previousLease?: Lease | null;
  /**
   * --vxlan-fallback: 'auto' kernel VXLAN unless the kernel refuses to create the device, then
   * the user-space pump; 'force' always the pump; 'off' (the default here) kernel VXLAN or fail.
   */
  readonly vxlanFallback?: 'auto' | 'force' | 'off';
  /** Seam for tests: opens the native pump. */
  readonly pumps?: PumpFactory;
  /** --wireguard-fallback, --wireguard-key-file, --wireguard-run-dir. */
  readonly wireguard?: WireguardDeps;
  /**
   * The address family of the instance to build (default 4). Dual stack builds one per family;
   * only backends in IPV6_BACKENDS can carry IPv6.
   */
  readonly family?: IPFamily;
}

/** Backends with an IPv6 data path (flannel's vxlan has flannel-v6.<VNI>, host-gw its GetV6Route; udp is IPv4-only in flannel too). */
const IPV6_BACKENDS: ReadonlySet<string> = new Set(['vxlan', 'host-gw', 'wireguard']);

type BackendFactory = (config: NetworkConfig, deps: BackendDeps) => Backend;

// The lazy loaders: Node caches a module after its first require, so each costs one lookup after.
const loadVxlan = (): typeof import('./vxlan') => require('./vxlan') as typeof import('./vxlan');
const loadUserspace = (): typeof import('./userspace') => require('./userspace') as typeof import('./userspace');
const loadHostGw = (): typeof import('./hostgw') => require('./hostgw') as typeof import('./hostgw');
const loadWireguard = (): typeof import('./wireguard') => require('./wireguard') as typeof import('./wireguard');
const loadUdp = (): typeof import('./udp') => require('./udp') as typeof import('./udp');

const BACKENDS: Readonly<Record<string, BackendFactory>> = {
  vxlan: (config, deps) => {
    const family = deps.family ?? 4;
    const opts = {
      nl: deps.nl, config: decodeVxlanConfig(config.backend), log: deps.log, vtepMac: previousVtepMac(deps.previousLease, family),
      ...(deps.pumps ? { pumps: deps.pumps } : {}),
    };
    // The user-space pump speaks VXLAN over IPv4 only: IPv6 always takes the kernel's device.
    if (family === 6) {
      if (deps.vxlanFallback === 'force') {
        throw new WeftError('CONFIG_INVALID', '--vxlan-fallback=force: the user-space VXLAN fallback carries IPv4 only, and the network config enables IPv6; ' +
          'use --vxlan-fallback=auto or off (IPv6 then needs the kernel\'s vxlan module), or set EnableIPv6 false');
      }
      return new (loadVxlan().VxlanBackend)({ ...opts, family: 6 });
    }
    switch (deps.vxlanFallback ?? 'off') {
      case 'off': return new (loadVxlan().VxlanBackend)(opts);
      case 'force': return new (loadUserspace().UserspaceVxlanBackend)(opts);
      case 'auto': return new (loadUserspace().AutoVxlanBackend)(opts);
    }
  },
  'host-gw': (_config, deps) => new (loadHostGw().HostGwBackend)({ nl: deps.nl, log: deps.log, family: deps.family ?? 4 }),
  wireguard: (config, deps) => loadWireguard().createWireguardBackend(config, deps),
  udp: (config, deps) => {
    if (config.network === null) throw new WeftError('CONFIG_INVALID', 'network config: the udp backend needs an IPv4 Network');
    const udp = loadUdp();
    return new udp.UdpBackend({
      nl: deps.nl, config: udp.decodeUdpConfig(config.backend), network: config.network, log: deps.log,
      ...(deps.pumps ? { pumps: deps.pumps } : {}),
    });
  },
};

export function createBackend(config: NetworkConfig, deps: BackendDeps): Backend {
  const factory = BACKENDS[config.backend.type] as BackendFactory | undefined;
  if (factory !== undefined && (deps.family ?? 4) === 6 && !IPV6_BACKENDS.has(config.backend.type)) {
    throw new WeftError(
      'CONFIG_INVALID',
      `backend type "${config.backend.type}" carries IPv4 only in this weftd, and the network config enables IPv6 (EnableIPv6); ` +
        `use one of ${[...IPV6_BACKENDS].join(', ')} or set EnableIPv6 false`,
    );
  }
  if (!factory) {
    throw new WeftError(
      'CONFIG_INVALID',
      `backend type "${config.backend.type}" in the network config is not supported by this weftd; supported: ${Object.keys(BACKENDS).join(', ')}`,
    );
  }
  return factory(config, deps);
}

function previousVtepMac(lease: Lease | null | undefined, family: IPFamily = 4): string | null {
  if (!lease || lease.attrs.BackendType !== 'vxlan') return null;
  return decodeVxlanLeaseData(family === 4 ? lease.attrs.BackendData : lease.attrs.BackendV6Data)?.VtepMAC ?? null;
}
