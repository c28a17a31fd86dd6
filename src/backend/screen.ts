/**
 * The one peer screen every backend's desired() runs before a lease becomes kernel state.
 *
 * Leases are data anyone with etcd write access can put there, so nothing in one is trusted
 * (flannel trusts all of it): a lease whose subnet is a /1, covers the underlay's own network,
 * an etcd endpoint or another host's PublicIP would, once routed into the overlay, take the
 * underlay over — the host's etcd session, the VXLAN/udp packets to the peers themselves and
 * ssh would all go into the tunnel. screenPeer() says why a lease must not be programmed (the
 * caller skips it and warns, naming the key); the good peers are programmed as usual.
 *
 * What it checks, in this order (the first failing check is the reason):
 *   1. the subnet lies inside the Network with the configured SubnetLen;
 *   2. it overlaps neither our subnet nor a subnet accepted earlier in this pass;
 *   3. it overlaps no network connected to the underlay interface (ctx.underlayNetworks);
 *   4. it covers no protected address: an etcd endpoint (ctx.protectedIPs), our PublicIP and
 *      interface address, and any other peer's PublicIP (screenPeers() passes those in);
 *   5. its PublicIP is a unicast IPv4 address that is not ours and not inside the Network (a
 *      tunnel endpoint inside the overlay would route its own packets into the tunnel).
 * Backend-specific checks (BackendType, BackendData, VNI, MACs) run after it, in the backend.
 *
 * Pure: no I/O. The facts about the host (underlay networks, etcd endpoint addresses) come in
 * DesiredContext, filled by the daemon.
 */
import {
  addressFamily, formatIPv4Cidr, ipNetContainsAddress, netContainsNet, netsOverlap, parseIPv4, parseIPv6, sameNet, type IPFamily, type IPNet,
} from '../ip';
import { leaseHalf } from '../lease/family';
import type { Lease } from '../lease/types';
import type { DesiredContext, SkippedPeer } from './backend';

/** What screenPeer needs besides the lease itself. */
export interface ScreenInput {
  /** Our own lease: its subnet and PublicIP are never given away. */
  readonly own: Lease;
  /** Facts about the host and the network (Network, SubnetLen, underlay networks, etcd addresses). */
  readonly ctx: DesiredContext;
  /** Peers already accepted in this pass: a subnet overlapping one of theirs is refused. */
  readonly accepted?: readonly Lease[];
  /** The same leases by subnetId() of their subnet (screenPeers keeps it): used when ctx.subnetLen is set. */
  readonly acceptedBySubnet?: ReadonlyMap<string, Lease>;
  /**
   * Other peers' PublicIPs (text, of `family`) that must stay reachable over the underlay. screenPeers()
   * passes the PublicIPs of every listed peer whose PublicIP lies outside the Network (one inside
   * it is refused by check 5 anyway, and must not be usable to get a good peer skipped).
   */
  readonly peerPublicIPs?: ReadonlySet<string>;
  /** Our underlay interface's own address when it differs from our PublicIP (--public-ip, NAT). */
  readonly ownIfaceIP?: string;
  /**
   * Which half of the leases to screen (default 4): 6 screens IPv6Subnet, PublicIPv6 against an
   * IPv6 Network (ctx) — the same checks, one code path (lease/family.ts).
   */
  readonly family?: IPFamily;
}

/**
 * Why `peer` must not be programmed, or null when it may be. Pure; see the module comment for the
 * checks. The reason is a sentence fragment ready for a log line: `skip lease <key>: <reason>`.
 */
export function screenPeer(peer: Lease, input: ScreenInput): string | null {
  const family = input.family ?? 4;
  const first = screenSubnet(peer, input.own, input.ctx, family);
  if (typeof first === 'string') return first;
  const { ctx } = input;
  const s = first.subnet;
  // With a SubnetLen every accepted subnet has that length, and two of one length overlap only
  // when equal: a map lookup instead of a scan (which made a recompute O(peers²)).
  const clash = ctx.subnetLen !== undefined && input.acceptedBySubnet
    ? input.acceptedBySubnet.get(subnetId(s))
    : input.accepted?.find((a) => {
        const other = leaseHalf(a, family).subnet;
        return other !== null && netsOverlap(other, s);
      });
  if (clash) return `subnet overlaps lease ${clash.key}`;
  return screenRest(peer, s, input, family);
}

/**
 * Checks 1 (inside the Network, SubnetLen) and the overlap with our subnet: the part of
 * screenPeer() that comes before the overlap with other peers. The lease's subnet when it passes.
 */
function screenSubnet(peer: Lease, own: Lease, ctx: DesiredContext, family: IPFamily): string | { readonly subnet: IPNet } {
  const mine = leaseHalf(own, family);
  const s = leaseHalf(peer, family).subnet;
  if (s === null) return `lease has no IPv${family} subnet`;
  const net = ctx.network ?? null;
  if (net !== null && !netContainsNet(net, s)) return `subnet is outside the Network ${formatIPv4Cidr(net)}`;
  if (ctx.subnetLen !== undefined && s.prefixLen !== ctx.subnetLen) {
    return `subnet length /${s.prefixLen} is not the configured SubnetLen /${ctx.subnetLen}`;
  }
  if (mine.subnet !== null && netsOverlap(s, mine.subnet)) return `subnet overlaps ours (${formatIPv4Cidr(mine.subnet)})`;
  return { subnet: s };
}

/** Checks 3 to 5: what screenPeer() checks after the overlap with other peers (`s`: the lease's subnet). */
function screenRest(peer: Lease, s: IPNet, input: ScreenInput, family: IPFamily): string | null {
  const { ctx } = input;
  const mine = leaseHalf(input.own, family);
  const net = ctx.network ?? null;
  for (const u of ctx.underlayNetworks ?? []) {
    if (netsOverlap(s, u)) return `subnet overlaps the underlay network ${formatIPv4Cidr(u)} (routing it into the overlay would cut this host off)`;
  }
  for (const text of ctx.protectedIPs ?? []) {
    if (ipNetContainsAddress(s, text)) return `subnet covers ${text}, an etcd endpoint (routing it into the overlay would cut this host off etcd)`;
  }
  for (const text of [mine.publicIP, input.ownIfaceIP]) {
    if (text && ipNetContainsAddress(s, text)) return `subnet covers our own address ${text}`;
  }
  // With a Network, the subnet lies inside it (check 1) and the protected PublicIPs outside it
  // (screenPeers; one inside is refused by check 5), so none can be covered: skip the O(peers)
  // loop, which would make a recompute O(peers²) on a big cluster.
  if (net === null) {
    for (const ip of input.peerPublicIPs ?? []) {
      if (ipNetContainsAddress(s, ip)) return `subnet covers ${ip}, another host's PublicIP (its tunnel packets would go into the tunnel)`;
    }
  }
  const field = family === 4 ? 'PublicIP' : 'PublicIPv6';
  const publicIp = leaseHalf(peer, family).publicIP;
  if (typeof publicIp !== 'string' || addressFamily(publicIp) !== family) {
    return `${field} ${JSON.stringify(publicIp)} is not an IPv${family} address`;
  }
  if (sameAddress(publicIp, mine.publicIP) || sameAddress(publicIp, input.ownIfaceIP)) return `${field} ${publicIp} is ours`;
  const unusable = family === 4 ? unusablePublicIP(parseIPv4(publicIp)!) : unusablePublicIPv6(parseIPv6(publicIp)!);
  if (unusable !== null) return `${field} ${publicIp} is ${unusable}`;
  if (net !== null && ipNetContainsAddress(net, publicIp)) return `PublicIP ${publicIp} lies inside the Network ${formatIPv4Cidr(net)}`;
  return null;
}

/** One lease judged on its own by screenPeerAlone(). */
export interface LoneScreen {
  /** Why the lease is refused whatever the other peers are, or null. */
  readonly reason: string | null;
  /**
   * subnetId() of its subnet when it passed the checks that come before the overlap with other
   * peers (null otherwise): two leases with the same one may refuse each other (key order).
   */
  readonly subnetKey: string | null;
}

/**
 * screenPeer() without the other peers, for the incremental desired state (daemon/desired-delta.ts):
 * exact only when ctx.network is set and ctx.subnetLen is defined (then the other peers matter
 * only through an equal subnet, which `subnetKey` tells, and their PublicIPs not at all).
 */
export function screenPeerAlone(peer: Lease, own: Lease, ctx: DesiredContext, family: IPFamily = 4, ownIfaceIP?: string): LoneScreen {
  const first = screenSubnet(peer, own, ctx, family);
  if (typeof first === 'string') return { reason: first, subnetKey: null };
  const reason = screenRest(peer, first.subnet, { own, ctx, family, ...(ownIfaceIP ? { ownIfaceIP } : {}) }, family);
  return { reason, subnetKey: subnetId(first.subnet) };
}

/** Our own lease (by key, or by this family's subnet): left out of the peers silently. */
export function isOwnLease(own: Lease, p: Lease, family: IPFamily = 4): boolean {
  if (p.key === own.key) return true;
  const sub = leaseHalf(p, family).subnet;
  const ownSubnet = leaseHalf(own, family).subnet;
  return sub !== null && ownSubnet !== null && sameNet(sub, ownSubnet);
}

/** Why an address cannot be a tunnel endpoint (0.0.0.0 would even be the VXLAN flood entry), or null. */
export function unusablePublicIP(ip: number): string | null {
  if (ip === 0) return 'the unspecified address';
  if (ip >>> 24 === 0) return 'in 0.0.0.0/8 ("this network")';
  if (ip >>> 24 === 127) return 'a loopback address';
  if (ip >>> 28 === 0xe) return 'a multicast address';
  if (ip >>> 0 === 0xffffffff) return 'the broadcast address';
  if (ip >>> 28 === 0xf) return 'in the reserved 240.0.0.0/4';
  return null;
}

/** Why an IPv6 address cannot be a tunnel endpoint, or null. */
export function unusablePublicIPv6(ip: bigint): string | null {
  if (ip === 0n) return 'the unspecified address';
  if (ip === 1n) return 'the loopback address';
  if (ip >> 120n === 0xffn) return 'a multicast address';
  if (ip >> 32n === 0xffffn) return 'an IPv4-mapped address';
  return null;
}

/** Same address, whatever its text form ("fd00::1" and "fd00:0::1"). */
function sameAddress(a: string, b: string | null | undefined): boolean {
  if (!b) return false;
  if (a === b) return true;
  const x = parseIPv6(a);
  return x !== null && x === parseIPv6(b);
}

/** The result of screening a list of leases. */
export interface Screened {
  /** Peers that passed, sorted by key, each with its backend-specific value (see screenPeers). */
  readonly accepted: readonly Lease[];
  readonly skipped: SkippedPeer[];
}

/**
 * Screen every peer in key order (so which of two conflicting leases wins never depends on the
 * order the watch delivered them in): our own lease is left out silently, a lease failing
 * screenPeer() or `backendCheck` is skipped with its reason. `backendCheck` runs only on a lease
 * that passed screenPeer(); returning null accepts it (it may record what it decoded).
 */
export function screenPeers(
  own: Lease,
  peers: readonly Lease[],
  ctx: DesiredContext,
  backendCheck: (peer: Lease) => string | null = () => null,
  ownIfaceIP?: string,
  family: IPFamily = 4,
): Screened {
  const sorted = [...peers].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const net = ctx.network ?? null;
  // Our own lease (by key, or by this family's subnet) is left out silently.
  const isOwn = (p: Lease): boolean => isOwnLease(own, p, family);
  const peerPublicIPs = new Set<string>();
  for (const p of sorted) {
    if (isOwn(p)) continue;
    const ip = leaseHalf(p, family).publicIP;
    if (ip && addressFamily(ip) === family && (net === null || !ipNetContainsAddress(net, ip))) peerPublicIPs.add(ip);
  }
  const accepted: Lease[] = [];
  const acceptedBySubnet = new Map<string, Lease>();
  const skipped: SkippedPeer[] = [];
  for (const peer of sorted) {
    if (isOwn(peer)) continue; // our own lease
    const why = screenPeer(peer, { own, ctx, accepted, acceptedBySubnet, peerPublicIPs, family, ...(ownIfaceIP ? { ownIfaceIP } : {}) }) ?? backendCheck(peer);
    if (why !== null) {
      skipped.push({ key: peer.key, reason: why });
      continue;
    }
    accepted.push(peer);
    const sub = leaseHalf(peer, family).subnet;
    if (sub !== null) acceptedBySubnet.set(subnetId(sub), peer);
  }
  return { accepted, skipped };
}

/** A network's identity for maps: "<ip>/<len>" (IPv4 as its uint32, IPv6 as its canonical text). */
export function subnetId(net: { readonly ip: number | string; readonly prefixLen: number }): string {
  return `${net.ip}/${net.prefixLen}`;
}
