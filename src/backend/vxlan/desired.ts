/**
 * What the kernel must hold for VXLAN (compat §4), as a pure function of our lease and the
 * peers' leases. No I/O: DirectRouting's "is this peer on our L2" is an input (ctx), looked up by
 * the caller beforehand (VxlanBackend.onLinkPeers).
 *
 * Per peer with BackendType vxlan and a decodable VtepMAC:
 *   neighbour <peer subnet>.0 lladdr VtepMAC            (so the kernel never ARPs over VXLAN)
 *   FDB       VtepMAC dst PublicIP self permanent       (where to send frames for that MAC)
 *   route     <peer subnet> via <peer subnet>.0 dev flannel.<VNI> onlink
 * DirectRouting and the peer on our L2: only `route <peer subnet> via PublicIP` on the underlay
 * (flannel does the same: no neighbour, no FDB for such a peer).
 *
 * Leases are data anyone with etcd access can write, so each one goes through the one peer screen
 * (../screen.ts, shared by every backend) before it becomes a route: inside the Network with the
 * configured SubnetLen, no overlap with ours, an earlier peer's or the underlay's networks, no
 * etcd endpoint or PublicIP covered, a unicast PublicIP that is not ours. Then vxlan's own
 * checks: BackendType vxlan, BackendData decodable (lease/codec.ts, the one decoder), the same
 * VNI, and a unicast VtepMAC that is neither ours nor another peer's. Anything else is skipped and
 * reported (the caller warns, naming the key); the good peers are programmed as usual. The
 * reconciler, for its part, never replaces a route weft did not create (a `proto kernel`
 * connected route with the same destination, say): see diffState.
 *
 * IPv6 (params.family 6, the device `flannel-v6.<VNI>`): the same, on the lease's IPv6 half
 * (IPv6Subnet, PublicIPv6, BackendV6Data; lease/family.ts): neighbour `<peer v6 subnet>::`
 * (NDP, permanent), FDB VtepMAC → PublicIPv6, route `<peer v6 subnet> via <peer v6 subnet>::
 * onlink`, our address `<own v6 subnet>::/128` — what flannel's AddV6ARP/AddV6FDB/v6VxlanRoute do.
 */
import { netAddress, type IPFamily } from '../../ip';
import { leaseHalf } from '../../lease/family';
import { decodeVxlanBackendData, type Decoded } from '../../lease/codec';
import type { Lease, VxlanLeaseData } from '../../lease/types';
import type { DesiredContext, DesiredFdb, DesiredNeighbour, DesiredRoute, DesiredState, PeerRules, PeerVerdict } from '../backend';
import { screenPeers } from '../screen';

export interface VxlanDesiredParams {
  /** Our VNI: a peer announcing another one cannot decapsulate our packets. */
  readonly vni: number;
  readonly directRouting: boolean;
  /** Our underlay interface's address when it differs from our PublicIP (--public-ip): never a peer's. */
  readonly ifaceIPv4?: string;
  /** Which half of the leases this device carries (default 4). With 6, `ifaceIPv4` is the interface's IPv6 address. */
  readonly family?: IPFamily;
}

export type { Decoded };

/** Decode a lease's BackendData as vxlan's {VNI?, VtepMAC} (lease/codec.ts's decoder, the only one). */
export function decodeVxlanData(data: unknown): Decoded<VxlanLeaseData> {
  return decodeVxlanBackendData(data);
}

export function vxlanDesired(
  own: Lease,
  peers: readonly Lease[],
  params: VxlanDesiredParams,
  ctx: DesiredContext = {},
): DesiredState {
  const rules = vxlanPeerRules(own, params, ctx);
  const neighbours: DesiredNeighbour[] = [];
  const fdb: DesiredFdb[] = [];
  const routes: DesiredRoute[] = [];
  const macOwner = new Map<string, string>(); // VtepMAC → lease key

  // screenPeers sorts by key, so which of two conflicting leases wins never depends on the order
  // the watch delivered them in; the vxlan checks run only on leases that passed the common screen.
  const vxlanCheck = (peer: Lease): string | null => {
    const v = rules.peer(peer);
    if ('skip' in v) return v.skip;
    if (v.tag !== undefined) {
      const macClash = macOwner.get(v.tag);
      if (macClash !== undefined) return rules.clashReason(v.tag, macClash);
      macOwner.set(v.tag, peer.key);
    }
    neighbours.push(...v.objects.neighbours);
    fdb.push(...v.objects.fdb);
    routes.push(...v.objects.routes);
    return null;
  };
  const { skipped } = screenPeers(own, peers, ctx, vxlanCheck, params.ifaceIPv4, rules.family);
  return { addresses: rules.addresses, neighbours, fdb, routes, skipped };
}

/**
 * vxlan's checks and objects for one peer at a time (Backend.peerRules): desired() above is these
 * rules applied in key order, which is what the daemon's incremental desired state relies on.
 * The VtepMAC is the tag: two VTEPs with one MAC (a cloned VM image) cannot both have the one
 * FDB entry, the first lease by key keeps it.
 */
export function vxlanPeerRules(own: Lease, params: VxlanDesiredParams, ctx: DesiredContext): PeerRules {
  const family = params.family ?? 4;
  const mine = leaseHalf(own, family);
  const ownData = decodeVxlanBackendData(mine.backendData);
  const ownMac = ownData.ok ? ownData.value.VtepMAC : null;
  return {
    family,
    ...(params.ifaceIPv4 ? { ownIfaceIP: params.ifaceIPv4 } : {}),
    // flannel: a /32 (/128) so that no broadcast or prefix route comes with it.
    addresses: mine.subnet === null ? [] : [{ ...mine.subnet, prefixLen: family === 4 ? 32 : 128 }],
    peer(peer: Lease): PeerVerdict {
      if (peer.attrs.BackendType !== 'vxlan') return { skip: `BackendType ${JSON.stringify(peer.attrs.BackendType)} is not vxlan` };
      // screenPeers checked this half's subnet and public address.
      const half = leaseHalf(peer, family);
      const subnet = half.subnet!;
      const publicIp = half.publicIP!;
      const data = decodeVxlanBackendData(half.backendData);
      if (!data.ok) return { skip: family === 4 ? data.reason : `BackendV6Data: ${data.reason}` };
      if (data.value.VNI !== undefined && data.value.VNI !== params.vni) return { skip: `VNI ${data.value.VNI} differs from ours (${params.vni})` };
      if (params.directRouting && ctx.onLinkPublicIPs?.has(publicIp)) {
        return { objects: { neighbours: [], fdb: [], routes: [{ dst: subnet, gateway: publicIp, onlink: false, via: 'underlay' }] } };
      }
      const mac = data.value.VtepMAC;
      const badMac = unusableMac(mac, ownMac);
      if (badMac !== null) return { skip: `VtepMAC ${mac} is ${badMac}` };
      const gw = netAddress(subnet);
      return {
        objects: { neighbours: [{ ip: gw, mac }], fdb: [{ mac, dst: publicIp }], routes: [{ dst: subnet, gateway: gw, onlink: true, via: 'overlay' }] },
        tag: mac,
      };
    },
    clashReason: (mac, ownerKey) => `VtepMAC ${mac} is also lease ${ownerKey}'s`,
  };
}

/** Why a VtepMAC cannot be a peer's (broadcast/multicast would flood; ours would loop), or null. */
function unusableMac(mac: string, ownMac: string | null): string | null {
  if (mac === '00:00:00:00:00:00') return 'all zeros';
  if (parseInt(mac.slice(0, 2), 16) & 1) return 'a multicast or broadcast MAC';
  if (mac === ownMac) return 'our own VtepMAC';
  return null;
}
