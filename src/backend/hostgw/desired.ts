/**
 * What the kernel must hold for host-gw (flannel's backend/hostgw over backend/route_network.go),
 * as a pure function of our lease and the peers' leases:
 *
 *   route <peer subnet> via <peer PublicIP> dev <underlay>     (one per host-gw peer; nothing else)
 *
 * No device, no address, no neighbour, no FDB entry: the underlay's own ARP finds the peer, whose
 * kernel forwards the packet to its container bridge. That only works when the peer's PublicIP is
 * on our L2 (the kernel reaches it without a gateway): a route via a PublicIP behind a router
 * would be refused by the kernel, or worse — with onlink — blackhole the peer's subnet. flannel
 * adds the route anyway and logs the kernel's error on every event; weft looks the PublicIP up
 * first (HostGwBackend.onLinkPeers, an input here as `ctx.onLinkPublicIPs`) and skips the peer
 * with a reason the daemon warns about once.
 *
 * Leases are data anyone with etcd access can write: each one is checked before it becomes a route
 * (screenHostGwPeer), like the vxlan backend does.
 */
import { formatIPv4Cidr, netContainsNet, netsOverlap, parseIPv4, sameNet } from '../../ip';
import type { Lease } from '../../lease/types';
import type { DesiredContext, DesiredRoute, DesiredState, SkippedPeer } from '../backend';

/** flannel's BackendType for host-gw, in our lease and the peers' we accept. */
export const HOSTGW_TYPE = 'host-gw';

export function hostGwDesired(own: Lease, peers: readonly Lease[], ctx: DesiredContext = {}): DesiredState {
  const routes: DesiredRoute[] = [];
  const skipped: SkippedPeer[] = [];
  const taken: Lease[] = [];
  // Sorted by key so that which of two conflicting leases wins never depends on watch order.
  const sorted = [...peers].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const peer of sorted) {
    if (peer.key === own.key || sameNet(peer.subnet, own.subnet)) continue; // our own lease
    const why = screenHostGwPeer(peer, own, ctx, taken);
    if (why !== null) {
      skipped.push({ key: peer.key, reason: why });
      continue;
    }
    taken.push(peer);
    routes.push({ dst: peer.subnet, gateway: peer.attrs.PublicIP, onlink: false, via: 'underlay' });
  }
  return { addresses: [], neighbours: [], fdb: [], routes, skipped };
}

/**
 * Why `peer` must not get a route, or null. `taken`: the peers already accepted (a subnet
 * overlapping one of them loses). The Network/SubnetLen/overlap/PublicIP checks are the ones
 * every backend makes; the last one (on our L2) is host-gw's own.
 */
export function screenHostGwPeer(peer: Lease, own: Lease, ctx: DesiredContext, taken: readonly Lease[]): string | null {
  if (ctx.network && !netContainsNet(ctx.network, peer.subnet)) return `subnet is outside the Network ${formatIPv4Cidr(ctx.network)}`;
  if (ctx.subnetLen !== undefined && peer.subnet.prefixLen !== ctx.subnetLen) {
    return `subnet length /${peer.subnet.prefixLen} is not the configured SubnetLen /${ctx.subnetLen}`;
  }
  if (netsOverlap(peer.subnet, own.subnet)) return `subnet overlaps ours (${formatIPv4Cidr(own.subnet)})`;
  const clash = taken.find((t) => netsOverlap(t.subnet, peer.subnet));
  if (clash) return `subnet overlaps lease ${clash.key}`;
  if (peer.attrs.BackendType !== HOSTGW_TYPE) {
    return `BackendType ${JSON.stringify(peer.attrs.BackendType)} is not host-gw (a host-gw host cannot reach it)`;
  }
  const publicIp = peer.attrs.PublicIP;
  const ip = typeof publicIp === 'string' ? parseIPv4(publicIp) : null;
  if (ip === null) return `PublicIP ${JSON.stringify(publicIp)} is not an IPv4 address`;
  if (publicIp === own.attrs.PublicIP) return `PublicIP ${publicIp} is ours`;
  if (ip === 0 || ip >>> 24 === 127 || ip >>> 28 === 0xe || ip >>> 0 === 0xffffffff) {
    return `PublicIP ${publicIp} is not a unicast address`;
  }
  if (!ctx.onLinkPublicIPs?.has(publicIp)) {
    return `PublicIP ${publicIp} is not on our L2 (the kernel would need a gateway to reach it, or reaches it through ` +
      'another interface than the underlay): host-gw needs all hosts on one L2 segment, so no route is programmed ' +
      '(use the vxlan backend, or vxlan with DirectRouting, across routers)';
  }
  return null;
}
