/**
 * What flannel's legacy udp backend wants (compat §5), as a pure function of our lease and the
 * peers' leases:
 *   address  <our subnet>.0/32 on flannel0 (a source for host-to-container traffic)
 *   route    <Network> dev flannel0            (one route for the whole overlay)
 *   pump     <peer subnet> → <peer PublicIP>   (the peer table, in the pump, not the kernel)
 * flannel's udp backend takes every lease, whatever its BackendType, and forwards to anyone;
 * weft takes leases without BackendType (what flannel's udp backend writes) or "udp", and checks
 * each like the vxlan backend does: a hostile or stale lease must not capture traffic.
 */
import { formatIPv4Cidr, netContainsNet, netsOverlap, parseIPv4, sameNet } from '../../ip';
import type { IPv4Net, Lease } from '../../lease/types';
import type { DesiredContext, DesiredPumpEntry, DesiredState, SkippedPeer } from '../backend';

export interface UdpDesiredParams {
  /** The flannel Network: routed through flannel0 as a whole. */
  readonly network: IPv4Net;
}

export function udpDesired(own: Lease, peers: readonly Lease[], params: UdpDesiredParams, ctx: DesiredContext = {}): DesiredState {
  const network = ctx.network ?? params.network;
  const pump: DesiredPumpEntry[] = [];
  const skipped: SkippedPeer[] = [];
  const taken: Lease[] = [];
  const sorted = [...peers].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const peer of sorted) {
    if (peer.key === own.key || sameNet(peer.subnet, own.subnet)) continue;
    const why = rejection(peer, own, network, ctx.subnetLen, taken);
    if (why !== null) {
      skipped.push({ key: peer.key, reason: why });
      continue;
    }
    taken.push(peer);
    pump.push({ kind: 'subnet', subnet: peer.subnet, dst: peer.attrs.PublicIP });
  }
  return {
    addresses: [{ ip: own.subnet.ip, prefixLen: 32 }],
    neighbours: [],
    fdb: [],
    routes: [{ dst: network, gateway: null, onlink: false, via: 'overlay' }],
    pump,
    skipped,
  };
}

function rejection(peer: Lease, own: Lease, network: IPv4Net, subnetLen: number | undefined, taken: readonly Lease[]): string | null {
  if (!netContainsNet(network, peer.subnet)) return `subnet is outside the Network ${formatIPv4Cidr(network)}`;
  if (subnetLen !== undefined && peer.subnet.prefixLen !== subnetLen) {
    return `subnet length /${peer.subnet.prefixLen} is not the configured SubnetLen /${subnetLen}`;
  }
  if (netsOverlap(peer.subnet, own.subnet)) return `subnet overlaps ours (${formatIPv4Cidr(own.subnet)})`;
  const clash = taken.find((t) => netsOverlap(t.subnet, peer.subnet));
  if (clash) return `subnet overlaps lease ${clash.key}`;
  if (peer.attrs.BackendType !== '' && peer.attrs.BackendType !== 'udp') {
    return `BackendType ${JSON.stringify(peer.attrs.BackendType)} is not udp's (a udp host cannot reach it)`;
  }
  const ip = parseIPv4(peer.attrs.PublicIP);
  if (ip === null) return `PublicIP ${JSON.stringify(peer.attrs.PublicIP)} is not an IPv4 address`;
  if (peer.attrs.PublicIP === own.attrs.PublicIP) return `PublicIP ${peer.attrs.PublicIP} is ours`;
  if (ip === 0 || ip >>> 24 === 127 || ip >>> 28 === 0xe || ip >>> 0 === 0xffffffff) {
    return `PublicIP ${peer.attrs.PublicIP} is not a unicast address`;
  }
  return null;
}
