/**
 * When the lab calls a cluster converged: a pure decision over what each host's kernel holds
 * (`ip -j -d link`, `ip -j route` of both families, `ip -j neigh`, `bridge -j fdb`), so that a
 * container ping right after `lab up` needs no retry. For every ordered pair of hosts running a
 * daemon (both directions: a reply takes the reverse path) and every family the hosts lease:
 *
 *   - no two hosts hold overlapping subnets (two hosts on one subnet can never all be reached);
 *   - the sending host routes the peer's subnet (its most specific route covering it), and that
 *     route is a unicast one;
 *   - through a VXLAN device: the route has a gateway, the device has a PERMANENT neighbour for
 *     it whose MAC is the peer's device MAC, and a permanent FDB entry sending that MAC to the
 *     peer's underlay address of the subnet's family (flannel's three objects per peer);
 *   - out of the underlay (host-gw, DirectRouting): the gateway is the peer's underlay address;
 *   - through any other device (udp's TUN, wireguard, the user-space VXLAN's TAP, whose peers
 *     live in user space): the route is all the kernel tables show.
 */
import { addressFamily, familyOf, formatCidr, ipNetContainsNet, ipNetsOverlap, parseCidr, parseIPv4, parseIPv6, type IPNet } from '../ip';

/** One entry of `ip -j -d link show`, as far as used. */
export interface LinkJson {
  readonly ifname: string;
  readonly address?: string;
  readonly linkinfo?: { readonly info_kind?: string };
}

/** One entry of `ip -j route show` (either family). */
export interface RouteJson {
  readonly dst: string;
  readonly gateway?: string;
  readonly dev?: string;
  readonly type?: string;
  readonly flags?: readonly string[];
}

/** One entry of `ip -j neigh show`. */
export interface NeighbourJson {
  readonly dst: string;
  readonly dev?: string;
  readonly lladdr?: string;
  readonly state?: readonly string[];
}

/** One entry of `bridge -j fdb show`. */
export interface FdbJson {
  readonly mac: string;
  readonly ifname?: string;
  readonly dst?: string;
  readonly state?: string;
}

/** One host as the convergence check sees it. */
export interface HostKernelState {
  readonly name: string;
  /** The interface the host's underlay addresses are on (the lab's eth0). */
  readonly underlayDevice: string;
  /** The host's underlay address per family (null: the underlay has none of that family). */
  readonly underlay: { readonly 4: string; readonly 6: string | null };
  /** The subnets its subnet.env names (IPv4 and/or IPv6). */
  readonly subnets: readonly IPNet[];
  readonly links: readonly LinkJson[];
  readonly routes: readonly RouteJson[];
  readonly neighbours: readonly NeighbourJson[];
  readonly fdb: readonly FdbJson[];
}

/** What keeps traffic from flowing between the hosts, one line each; empty when converged. */
export function convergenceGaps(hosts: readonly HostKernelState[]): string[] {
  const gaps: string[] = [];
  for (const [i, a] of hosts.entries()) {
    for (const b of hosts.slice(i + 1)) {
      for (const sa of a.subnets) {
        const clash = b.subnets.find((sb) => ipNetsOverlap(sa, sb));
        if (clash) gaps.push(`${a.name} (${formatCidr(sa)}) and ${b.name} (${formatCidr(clash)}) hold overlapping subnets`);
      }
    }
  }
  for (const from of hosts) {
    for (const to of hosts) {
      if (to === from) continue;
      for (const subnet of to.subnets) {
        const gap = pathGap(from, to, subnet);
        if (gap !== null) gaps.push(`${from.name} → ${to.name}'s ${formatCidr(subnet)}: ${gap}`);
      }
    }
  }
  return gaps;
}

/** Why `from` cannot send to `subnet` of `to`, or null. */
function pathGap(from: HostKernelState, to: HostKernelState, subnet: IPNet): string | null {
  const route = bestRoute(from.routes, subnet);
  if (route === null) return 'no route';
  const shown = `route ${route.dst}${route.gateway ? ` via ${route.gateway}` : ''}${route.dev ? ` dev ${route.dev}` : ''}`;
  if (route.type !== undefined && route.type !== 'unicast') return `${shown} is of type ${route.type}`;
  const family = familyOf(subnet);
  const peerUnderlay = to.underlay[family];
  if (route.dev === from.underlayDevice) {
    const viaPeer = peerUnderlay !== null && route.gateway !== undefined && sameAddress(route.gateway, peerUnderlay);
    return viaPeer ? null : `${shown}, not via ${to.name}'s ${peerUnderlay ?? 'underlay address'}`;
  }
  const device = from.links.find((l) => l.ifname === route.dev);
  if (device?.linkinfo?.info_kind !== 'vxlan') return null;
  if (route.gateway === undefined) return `${shown} has no gateway`;
  // The peer's device of the same name: its MAC is what the neighbour must resolve to. (A peer
  // without one — another data path — is checked for the entries alone.)
  const peerMac = to.links.find((l) => l.ifname === route.dev)?.address?.toLowerCase() ?? null;
  const gateway = route.gateway;
  const neighbour = from.neighbours.find((n) => n.dev === route.dev && sameAddress(n.dst, gateway));
  if (neighbour === undefined) return `${shown}, but no neighbour for ${gateway} on ${route.dev}`;
  // INCOMPLETE/FAILED (the kernel tried to resolve it: nolearning, no FDB default) or learnt: not weft's.
  if (!(neighbour.state ?? []).includes('PERMANENT') || neighbour.lladdr === undefined) {
    return `neighbour ${gateway} on ${route.dev} is ${(neighbour.state ?? []).join(',') || 'without state'}, not PERMANENT`;
  }
  const mac = neighbour.lladdr.toLowerCase();
  if (peerMac !== null && mac !== peerMac) return `neighbour ${gateway} on ${route.dev} is ${mac}, ${to.name}'s ${route.dev} is ${peerMac}`;
  const fdb = from.fdb.filter((f) => f.ifname === route.dev && f.mac.toLowerCase() === mac && f.state === 'permanent' && f.dst !== undefined);
  if (fdb.length === 0) return `no permanent FDB entry for ${mac} on ${route.dev}`;
  if (peerUnderlay !== null && !fdb.some((f) => sameAddress(f.dst!, peerUnderlay))) {
    return `FDB sends ${mac} to ${fdb.map((f) => f.dst).join(', ')}, not to ${to.name}'s ${peerUnderlay}`;
  }
  return null;
}

/** The most specific route of `routes` covering `subnet` (the one the kernel takes), or null. */
function bestRoute(routes: readonly RouteJson[], subnet: IPNet): RouteJson | null {
  let best: { route: RouteJson; len: number } | null = null;
  const family = familyOf(subnet);
  for (const r of routes) {
    const text = r.dst === 'default' ? (family === 4 ? '0.0.0.0/0' : '::/0') : r.dst.includes('/') ? r.dst : `${r.dst}/${addressFamily(r.dst) === 6 ? 128 : 32}`;
    const dst = parseCidr(text, false);
    if (dst === null || !ipNetContainsNet(dst, subnet)) continue;
    if (best === null || dst.prefixLen > best.len) best = { route: r, len: dst.prefixLen };
  }
  return best?.route ?? null;
}

function sameAddress(a: string, b: string): boolean {
  const v4a = parseIPv4(a);
  if (v4a !== null) return v4a === parseIPv4(b);
  const v6a = parseIPv6(a);
  return v6a !== null && v6a === parseIPv6(b);
}
