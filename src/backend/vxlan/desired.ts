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
 * Leases are data anyone with etcd access can write, so each one is checked before it becomes a
 * route (flannel checks none of this): the subnet must lie inside the Network with the configured
 * SubnetLen (a /8 or a lease over the underlay would otherwise hijack traffic), must not overlap
 * ours or an earlier peer's, the PublicIP must be a unicast address that is not ours, and the
 * VtepMAC a unicast MAC that is not ours. Anything else is skipped and reported (the caller warns,
 * naming the key); the good peers are programmed as usual.
 */
import { formatIPv4, formatIPv4Cidr, netContainsNet, netsOverlap, parseIPv4, sameNet } from '../../ip';
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
  const ownData = decodeVxlanData(own.attrs.BackendData);
  const ownMac = ownData.ok ? ownData.value.VtepMAC : null;

  // Sorted by key so that output, and which of two conflicting leases wins, never depends on
  // the order the watch delivered them in.
  const sorted = [...peers].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const peer of sorted) {
    if (peer.key === own.key || sameNet(peer.subnet, own.subnet)) continue; // our own lease
    const skip = (reason: string): void => {
      skipped.push({ key: peer.key, reason });
    };
    if (ctx.network && !netContainsNet(ctx.network, peer.subnet)) {
      skip(`subnet is outside the Network ${formatIPv4Cidr(ctx.network)}`);
      continue;
    }
    if (ctx.subnetLen !== undefined && peer.subnet.prefixLen !== ctx.subnetLen) {
      skip(`subnet length /${peer.subnet.prefixLen} is not the configured SubnetLen /${ctx.subnetLen}`);
      continue;
    }
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
    const unusable = unusablePublicIP(parseIPv4(publicIp)!);
    if (unusable !== null) {
      skip(`PublicIP ${publicIp} is ${unusable}`);
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
    const badMac = unusableMac(mac, ownMac);
    if (badMac !== null) {
      skip(`VtepMAC ${mac} is ${badMac}`);
      seenSubnets.pop();
      continue;
    }
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

/** Why a PublicIP cannot be a VXLAN destination (0.0.0.0 would even be the flood entry), or null. */
function unusablePublicIP(ip: number): string | null {
  if (ip === 0) return 'the unspecified address';
  if (ip >>> 24 === 127) return 'a loopback address';
  if (ip >>> 28 === 0xe) return 'a multicast address';
  if (ip >>> 0 === 0xffffffff) return 'the broadcast address';
  return null;
}

/** Why a VtepMAC cannot be a peer's (broadcast/multicast would flood; ours would loop), or null. */
function unusableMac(mac: string, ownMac: string | null): string | null {
  if (mac === '00:00:00:00:00:00') return 'all zeros';
  if (parseInt(mac.slice(0, 2), 16) & 1) return 'a multicast or broadcast MAC';
  if (mac === ownMac) return 'our own VtepMAC';
  return null;
}
