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
 * (../screen.ts, shared by every backend, then hostGwCheck).
 */
import type { IPFamily } from '../../ip';
import { leaseHalf } from '../../lease/family';
import type { Lease } from '../../lease/types';
import type { DesiredContext, DesiredRoute, DesiredState, PeerRules, PeerVerdict } from '../backend';
import { screenPeers } from '../screen';

/** flannel's BackendType for host-gw, in our lease and the peers' we accept. */
export const HOSTGW_TYPE = 'host-gw';

/**
 * `family` 6: the same on the lease's IPv6 half (flannel's GetV6Route: IPv6Subnet via
 * PublicIPv6); ctx then carries the IPv6 Network and the on-L2 IPv6 PublicIPs.
 */
export function hostGwDesired(own: Lease, peers: readonly Lease[], ctx: DesiredContext = {}, family: IPFamily = 4): DesiredState {
  const routes: DesiredRoute[] = [];
  const rules = hostGwPeerRules(ctx, family);
  // screenPeers (the checks every backend shares) sorts by key and runs hostGwCheck only on the
  // leases that passed it.
  const { skipped } = screenPeers(own, peers, ctx, (peer) => {
    const v = rules.peer(peer);
    if ('skip' in v) return v.skip;
    routes.push(...v.objects.routes);
    return null;
  }, undefined, family);
  return { addresses: [], neighbours: [], fdb: [], routes, skipped };
}

/** host-gw per peer (Backend.peerRules): one route via its PublicIP, no tag (nothing two peers may not share). */
export function hostGwPeerRules(ctx: DesiredContext, family: IPFamily = 4): PeerRules {
  return {
    family,
    addresses: [],
    peer(peer: Lease): PeerVerdict {
      const why = hostGwCheck(peer, ctx, family);
      if (why !== null) return { skip: why };
      const half = leaseHalf(peer, family);
      if (half.subnet === null || half.publicIP === null) return { objects: { neighbours: [], fdb: [], routes: [] } };
      return { objects: { neighbours: [], fdb: [], routes: [{ dst: half.subnet, gateway: half.publicIP, onlink: false, via: 'underlay' }] } };
    },
    clashReason: (tag, ownerKey) => `${tag} is also lease ${ownerKey}'s`,
  };
}

/** host-gw's own checks on a lease that passed screenPeer(): its BackendType, and its PublicIP on our L2. */
export function hostGwCheck(peer: Lease, ctx: DesiredContext, family: IPFamily = 4): string | null {
  if (peer.attrs.BackendType !== HOSTGW_TYPE) {
    return `BackendType ${JSON.stringify(peer.attrs.BackendType)} is not host-gw (a host-gw host cannot reach it)`;
  }
  const publicIp = leaseHalf(peer, family).publicIP;
  const what = family === 4 ? 'PublicIP' : 'PublicIPv6';
  if (publicIp === null) return `no ${what}`;
  if (!ctx.onLinkPublicIPs?.has(publicIp)) {
    return `${what} ${publicIp} is not on our L2 (the kernel would need a gateway to reach it, or reaches it through ` +
      'another interface than the underlay): host-gw needs all hosts on one L2 segment, so no route is programmed ' +
      '(use the vxlan backend, or vxlan with DirectRouting, across routers)';
  }
  return null;
}
