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
 */
import { formatIPv4, netsOverlap, parseIPv4, sameNet } from '../../ip';
import type { Lease, VxlanLeaseData } from '../../lease/types';
import { normalizeMac } from '../../netlink/codec';
import type {
  DesiredContext,
  DesiredFdb,
  DesiredNeighbour,
  DesiredRoute,
  DesiredState,
  SkippedPeer,
} from '../backend';

export interface VxlanDesiredParams {
  /** Our VNI: a peer announcing another one cannot decapsulate our packets. */
  readonly vni: number;
  readonly directRouting: boolean;
}

export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

/** Decode a lease's BackendData as vxlan's {VNI?, VtepMAC}; the MAC comes back lower-cased. */
export function decodeVxlanData(data: unknown): Decoded<VxlanLeaseData> {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    return { ok: false, reason: `BackendData ${JSON.stringify(data) ?? 'undefined'} is not an object` };
  }
  const rec = data as Record<string, unknown>;
  const mac = typeof rec.VtepMAC === 'string' ? normalizeMac(rec.VtepMAC) : null;
  if (mac === null) return { ok: false, reason: `VtepMAC ${JSON.stringify(rec.VtepMAC) ?? 'undefined'} is not a MAC address` };
  if (rec.VNI === undefined || rec.VNI === null) return { ok: true, value: { VtepMAC: mac } }; // flannel v0.12 omitted it
  if (typeof rec.VNI !== 'number' || !Number.isInteger(rec.VNI) || rec.VNI < 0 || rec.VNI > 0xffffff) {
    return { ok: false, reason: `VNI ${JSON.stringify(rec.VNI)} is not a 24-bit integer` };
  }
  return { ok: true, value: { VNI: rec.VNI, VtepMAC: mac } };
}

export function vxlanDesired(
  own: Lease,
  peers: readonly Lease[],
  params: VxlanDesiredParams,
  ctx: DesiredContext = {},
): DesiredState {
  const neighbours: DesiredNeighbour[] = [];
  const fdb: DesiredFdb[] = [];
  const routes: DesiredRoute[] = [];
  const skipped: SkippedPeer[] = [];
  const macOwner = new Map<string, string>(); // VtepMAC → lease key
  const seenSubnets: Lease[] = [];

  // Sorted by key so that output, and which of two conflicting leases wins, never depends on
  // the order the watch delivered them in.
  const sorted = [...peers].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const peer of sorted) {
    if (peer.key === own.key || sameNet(peer.subnet, own.subnet)) continue; // our own lease
    const skip = (reason: string): void => {
      skipped.push({ key: peer.key, reason });
    };
    if (netsOverlap(peer.subnet, own.subnet)) {
      skip(`subnet overlaps ours (${formatIPv4(own.subnet.ip)}/${own.subnet.prefixLen})`);
      continue;
    }
    const clash = seenSubnets.find((s) => netsOverlap(s.subnet, peer.subnet));
    if (clash) {
      skip(`subnet overlaps lease ${clash.key}`);
      continue;
    }
    if (peer.attrs.BackendType !== 'vxlan') {
      skip(`BackendType ${JSON.stringify(peer.attrs.BackendType)} is not vxlan`);
      continue;
    }
    const publicIp = peer.attrs.PublicIP;
    if (typeof publicIp !== 'string' || parseIPv4(publicIp) === null) {
      skip(`PublicIP ${JSON.stringify(publicIp)} is not an IPv4 address`);
      continue;
    }
    if (publicIp === own.attrs.PublicIP) {
      skip(`PublicIP ${publicIp} is ours`);
      continue;
    }
    const data = decodeVxlanData(peer.attrs.BackendData);
    if (!data.ok) {
      skip(data.reason);
      continue;
    }
    if (data.value.VNI !== undefined && data.value.VNI !== params.vni) {
      skip(`VNI ${data.value.VNI} differs from ours (${params.vni})`);
      continue;
    }
    seenSubnets.push(peer);

    if (params.directRouting && ctx.onLinkPublicIPs?.has(publicIp)) {
      routes.push({ dst: peer.subnet, gateway: publicIp, onlink: false, via: 'underlay' });
      continue;
    }
    const mac = data.value.VtepMAC;
    const macClash = macOwner.get(mac);
    if (macClash !== undefined) {
      // Two VTEPs with one MAC (a cloned VM image): one FDB entry can point at only one of them.
      skip(`VtepMAC ${mac} is also lease ${macClash}'s`);
      seenSubnets.pop();
      continue;
    }
    macOwner.set(mac, peer.key);
    const gw = formatIPv4(peer.subnet.ip);
    neighbours.push({ ip: gw, mac });
    fdb.push({ mac, dst: publicIp });
    routes.push({ dst: peer.subnet, gateway: gw, onlink: true, via: 'overlay' });
  }

  return {
    addresses: [{ ip: own.subnet.ip, prefixLen: 32 }],
    neighbours,
    fdb,
    routes,
    skipped,
  };
}
