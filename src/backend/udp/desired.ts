/**
 * What flannel's legacy udp backend wants (compat §5), as a pure function of our lease and the
 * peers' leases:
 *   address  <our subnet>.0/32 on flannel0 (a source for host-to-container traffic)
 *   route    <Network> dev flannel0            (one route for the whole overlay)
 *   pump     <peer subnet> → <peer PublicIP>   (the peer table, in the pump, not the kernel)
 * flannel's udp backend takes every lease, whatever its BackendType, and forwards to anyone;
 * weft takes leases without BackendType (what flannel's udp backend writes) or "udp", and runs
 * each through the one peer screen (../screen.ts) every backend shares: a hostile or stale lease
 * must not capture traffic (the Network, the underlay, etcd, other hosts' PublicIPs).
 */
import type { IPv4Net, Lease } from '../../lease/types';
import type { DesiredContext, DesiredPumpEntry, DesiredState } from '../backend';
import { screenPeers } from '../screen';

export interface UdpDesiredParams {
  /** The flannel Network: routed through flannel0 as a whole. */
  readonly network: IPv4Net;
}

export function udpDesired(own: Lease, peers: readonly Lease[], params: UdpDesiredParams, ctx: DesiredContext = {}): DesiredState {
  const network = ctx.network ?? params.network;
  const pump: DesiredPumpEntry[] = [];
  const udpCheck = (peer: Lease): string | null => {
    if (peer.attrs.BackendType !== '' && peer.attrs.BackendType !== 'udp') {
      return `BackendType ${JSON.stringify(peer.attrs.BackendType)} is not udp's (a udp host cannot reach it)`;
    }
    pump.push({ kind: 'subnet', subnet: peer.subnet, dst: peer.attrs.PublicIP });
    return null;
  };
  const { skipped } = screenPeers(own, peers, { ...ctx, network }, udpCheck);
  return {
    addresses: [{ ip: own.subnet.ip, prefixLen: 32 }],
    neighbours: [],
    fdb: [],
    routes: [{ dst: network, gateway: null, onlink: false, via: 'overlay' }],
    pump,
    skipped,
  };
}
