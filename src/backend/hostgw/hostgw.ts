/**
 * flannel's host-gw backend (backend/hostgw, backend/route_network.go): no encapsulation and no
 * device; each peer's subnet is routed via the peer's PublicIP out of the underlay, so every host
 * must be on one L2 segment. Our lease is flannel's host-gw lease exactly:
 * `{"PublicIP":...,"PublicIPv6":null,"BackendType":"host-gw"}` (no BackendData), and
 * FLANNEL_MTU is the underlay's MTU (nothing is added to a packet).
 *
 * Without a device, `deviceless` tells the reconciler to own nothing but underlay routes into the
 * Network (the same rule as vxlan DirectRouting), and `deviceName` names the underlay, which is
 * what must exist and be up for host-gw to carry traffic (readiness reports it).
 */
import { WeftError } from '../../errors';
import { addressFamily, type IPFamily } from '../../ip';
import { leaseHalf } from '../../lease/family';
import type { Lease } from '../../lease/types';
import { silentLogger, type Logger } from '../../log';
import type { Backend, BackendSetup, DesiredContext, DesiredState, PeerRules, Underlay } from '../backend';
import { onLinkAmong } from '../link';
import { HOSTGW_TYPE, hostGwDesired, hostGwPeerRules } from './desired';

/** The part of NetlinkClient host-gw uses (a seam for tests). */
export interface HostGwNetlink {
  isOnLink(ip: string, viaIndex?: number): Promise<boolean>;
}

export interface HostGwBackendOptions {
  readonly nl: HostGwNetlink;
  readonly log?: Logger;
  /** The family this instance routes (default 4); dual stack runs one instance per family. */
  readonly family?: IPFamily;
}

export class HostGwBackend implements Backend {
  readonly type = HOSTGW_TYPE;
  readonly deviceless = true;
  readonly family: IPFamily;
  private readonly nl: HostGwNetlink;
  private readonly log: Logger;
  private underlayName: string | null = null;

  constructor(opts: HostGwBackendOptions) {
    this.nl = opts.nl;
    this.family = opts.family ?? 4;
    this.log = (opts.log ?? silentLogger).child({ component: this.family === 4 ? 'host-gw' : 'host-gw-v6' });
  }

  /** The underlay's name once ensureDevice() has seen it: host-gw's traffic leaves through it. */
  get deviceName(): string {
    return this.underlayName ?? 'underlay';
  }

  async ensureDevice(underlay: Underlay): Promise<BackendSetup> {
    // Peers route our subnet via our PublicIP; behind NAT that address is not on their L2
    // (flannel refuses the same way: "your PublicIP differs from interface IP").
    const [pub, iface, flag] = this.family === 4
      ? [underlay.ipv4, underlay.ifaceIPv4, '--public-ip']
      : [underlay.ipv6 ?? null, underlay.ifaceIPv6, '--public-ipv6'];
    if (this.family === 6 && !pub) {
      throw new WeftError('CONFIG_INVALID', `host-gw over IPv6: ${underlay.ifName} has no global IPv6 address and no --public-ipv6 was given`);
    }
    if (iface !== undefined && iface !== null && iface !== pub) {
      throw new WeftError('CONFIG_INVALID',
        `host-gw: ${flag} ${pub} differs from ${underlay.ifName}'s address ${iface} (NAT?); ` +
        `peers route our subnet straight to our public address on their L2, which NAT cannot serve: drop ${flag} or use the vxlan backend`);
    }
    this.underlayName = underlay.ifName;
    return { backendType: HOSTGW_TYPE, backendData: undefined, mtu: underlay.mtu };
  }

  desired(own: Lease, peers: readonly Lease[], ctx: DesiredContext = {}): DesiredState {
    return hostGwDesired(own, peers, ctx, this.family);
  }

  /** desired() per peer (Backend.peerRules), for O(change) lease events. */
  peerRules(_own: Lease, ctx: DesiredContext): PeerRules {
    return hostGwPeerRules(ctx, this.family);
  }

  /**
   * The PublicIPs of host-gw peers the kernel reaches without a gateway through the underlay
   * (DesiredContext.onLinkPublicIPs): only those get a route. One route lookup per distinct
   * PublicIP; the daemon calls this when the peer set changes.
   */
  async onLinkPeers(peers: readonly Lease[], underlay: Underlay): Promise<Set<string>> {
    const ips: string[] = [];
    for (const p of peers) {
      const ip = leaseHalf(p, this.family).publicIP;
      if (p.attrs.BackendType === HOSTGW_TYPE && typeof ip === 'string' && addressFamily(ip) === this.family) ips.push(ip);
    }
    return onLinkAmong(this.nl, ips, underlay.ifIndex, (ip, err) =>
      this.log.warn('route lookup for a peer\'s PublicIP failed; no route to its subnet until the next lease event', { publicIp: ip, error: err }));
  }

  async close(): Promise<void> {
    // Nothing held; the routes stay (a restart must not cut traffic).
  }
}
