/**
 * Which subnet this host should hold — a pure decision over a listing of the leases, in flannel's
 * order (compat §3, pkg/subnet/etcd/local_manager.go tryAcquireLease):
 *
 *   1. a lease holding our PublicIP that fits the config is reused (flannel: "Found lease ...
 *      reusing"); our leases that do not fit (config changed) are to be deleted;
 *   2. otherwise the subnet from subnet.env (FLANNEL_SUBNET), if it fits and nobody holds it;
 *   3. otherwise walk SubnetMin..SubnetMax, collect up to 100 free subnets, pick one at random
 *      (random so that hosts starting together rarely race for the same subnet).
 *
 * Where weft differs, on purpose:
 *   - step 2 requires the subnet to be free (flannel overwrote a lease held by someone else);
 *   - reservations (keys without an etcd lease) are never deleted: a reservation that holds our
 *     PublicIP but no longer fits is reported in `ignoredReservations` for the caller to log;
 *   - when several fitting leases hold our PublicIP (left over from a crash mid-race), one is
 *     reused — a reservation first, then the subnet.env one, then the lowest — and the other
 *     non-reservations are deleted, so a host never pins two subnets.
 *
 * Dual stack (EnableIPv6) allocates an IPv6 subnet beside the IPv4 one, in flannel's order: the
 * IPv4 walk, then the IPv6 walk IPv6SubnetMin..IPv6SubnetMax (100 free at most), one random pick
 * from each; a lease is ours to reuse only if both halves fit (isIPv6SubnetConfigCompat). An
 * IPv6-only network (EnableIPv4 false) leases the empty IPv4 half 0.0.0.0/0, which is what
 * flannel's MakeSubnetKey writes for it (`0.0.0.0-0&fc00:0:0:22::-64`); there our leases are
 * recognised by PublicIPv6, since every IPv6-only host's PublicIP is 0.0.0.0.
 */
import { WeftError } from '../errors';
import {
  compareIPNet, countSubnets, formatCidr, ipNetContainsNet, ipNetsOverlap, netAddress, parseIPv6, sameIPNet, walkSubnets,
  type IPFamily, type IPNet,
} from '../ip';
import type { NetworkConfig } from '../config/types';
import { isReservation, type IPv4Net, type IPv6Net, type Lease } from './types';

/** The IPv4 half of an IPv6-only lease: flannel's empty IP4Net. */
export const EMPTY_IPV4_NET: IPv4Net = { ip: 0, prefixLen: 0 };

/** flannel collects at most this many free subnets before picking one at random. */
export const FREE_SUBNET_WINDOW = 100;

export interface AllocateInput {
  readonly config: NetworkConfig;
  readonly leases: readonly Lease[];
  /** Our PublicIP (dotted quad), as written into the lease. */
  readonly publicIP: string;
  /** Our PublicIPv6; identifies our leases on an IPv6-only network. */
  readonly publicIPv6?: string | null;
  /** FLANNEL_SUBNET's network from subnet.env — or, on re-acquire, the subnet we held before. */
  readonly preferredSubnet: IPv4Net | null;
  /** FLANNEL_IPV6_SUBNET's network, likewise (dual stack / IPv6-only). */
  readonly preferredIPv6Subnet?: IPv6Net | null;
  /** Uniform in [0, 1); injected so tests are deterministic. Default Math.random. */
  readonly random?: () => number;
}

export type AllocateDecision =
  | {
      readonly kind: 'reuse';
      /** Our existing lease (or reservation) to rewrite with fresh attrs. */
      readonly lease: Lease;
      readonly toDelete: readonly Lease[];
      readonly ignoredReservations: readonly Lease[];
    }
  | {
      readonly kind: 'create';
      /** EMPTY_IPV4_NET on an IPv6-only network. */
      readonly subnet: IPv4Net;
      /** Non-null exactly when the config enables IPv6. */
      readonly ipv6Subnet: IPv6Net | null;
      readonly source: 'preferred' | 'allocated';
      readonly toDelete: readonly Lease[];
      readonly ignoredReservations: readonly Lease[];
    };

/** One address family's allocation range, from the config. */
interface FamilyRange {
  readonly family: IPFamily;
  readonly network: IPNet;
  readonly len: number;
  readonly min: IPNet;
  readonly max: IPNet;
  /** The lease's half of this family (null: the lease has none). */
  readonly of: (l: Lease) => IPNet | null;
}

/** The families the config enables, each with its range. */
function rangesOf(config: NetworkConfig): FamilyRange[] {
  const out: FamilyRange[] = [];
  if (config.enableIPv4 && config.network !== null) {
    out.push({
      family: 4, network: config.network, len: config.subnetLen,
      min: { ip: config.subnetMin, prefixLen: config.subnetLen }, max: { ip: config.subnetMax, prefixLen: config.subnetLen },
      of: (l) => l.subnet,
    });
  }
  if (config.enableIPv6 && config.ipv6Network !== null && config.ipv6SubnetMin && config.ipv6SubnetMax) {
    out.push({
      family: 6, network: config.ipv6Network, len: config.ipv6SubnetLen,
      min: { ip: config.ipv6SubnetMin, prefixLen: config.ipv6SubnetLen }, max: { ip: config.ipv6SubnetMax, prefixLen: config.ipv6SubnetLen },
      of: (l) => l.ipv6Subnet,
    });
  }
  return out;
}

/** flannel's isSubnetConfigCompat / isIPv6SubnetConfigCompat for one family's half. */
function fitsRange(r: FamilyRange, subnet: IPNet | null): boolean {
  return (
    subnet !== null &&
    subnet.prefixLen === r.len &&
    ipNetContainsNet(r.network, subnet) &&
    compareIPNet({ ...subnet, prefixLen: r.len }, r.min) >= 0 &&
    compareIPNet({ ...subnet, prefixLen: r.len }, r.max) <= 0
  );
}

/** flannel's isSubnetConfigCompat: inside SubnetMin..SubnetMax with the configured SubnetLen. */
export function subnetFitsConfig(config: NetworkConfig, subnet: IPv4Net): boolean {
  const v4 = rangesOf(config).find((r) => r.family === 4);
  return v4 !== undefined && fitsRange(v4, subnet);
}

/**
 * A whole lease key fits: each enabled family's half fits its range, and a disabled family's half
 * is absent (IPv6: null; IPv4: the empty 0.0.0.0/0), as flannel requires of a lease to reuse.
 */
export function leaseFitsConfig(config: NetworkConfig, subnet: IPv4Net, ipv6Subnet: IPv6Net | null): boolean {
  const ranges = rangesOf(config);
  const lease = { subnet, ipv6Subnet } as Lease;
  if (!config.enableIPv4 && !sameIPNet(subnet, EMPTY_IPV4_NET)) return false;
  if (!config.enableIPv6 && ipv6Subnet !== null) return false;
  return ranges.every((r) => fitsRange(r, r.of(lease)));
}

/** Throws WeftError('SUBNETS_EXHAUSTED') when nothing is free, 'CONFIG_INVALID' without any family. */
export function allocate(input: AllocateInput): AllocateDecision {
  const { config, leases, publicIP } = input;
  const random = input.random ?? Math.random;
  const ranges = rangesOf(config);
  if (ranges.length === 0) {
    throw new WeftError('CONFIG_INVALID', 'allocate subnet: the network config enables neither IPv4 (Network) nor IPv6 (IPv6Network)');
  }
  const preferredSubnet = config.enableIPv4 ? input.preferredSubnet : EMPTY_IPV4_NET;
  const preferredIPv6 = config.enableIPv6 ? input.preferredIPv6Subnet ?? null : null;
  const fits = (l: Lease): boolean => leaseFitsConfig(config, l.subnet, l.ipv6Subnet);

  // 1. Our own leases: by PublicIP, or by PublicIPv6 where every host's PublicIP is 0.0.0.0.
  const v6Key = (ip: string | null | undefined): string | null => (ip ? String(parseIPv6(ip) ?? ip) : null);
  const mineV6 = v6Key(input.publicIPv6);
  const ours = config.enableIPv4
    ? leases.filter((l) => l.attrs.PublicIP === publicIP)
    : leases.filter((l) => mineV6 !== null && v6Key(l.attrs.PublicIPv6) === mineV6);
  const fitting = ours.filter(fits);
  const ignoredReservations = ours.filter((l) => isReservation(l) && !fitting.includes(l));
  const keep = pickOwn(fitting, preferredSubnet, preferredIPv6);
  const toDelete = ours.filter((l) => l !== keep && !isReservation(l));
  if (keep !== undefined) return { kind: 'reuse', lease: keep, toDelete, ignoredReservations };

  // Everything not about to be deleted occupies its subnets.
  const occupied = leases.filter((l) => !toDelete.includes(l));
  const isFree = (r: FamilyRange, candidate: IPNet): boolean =>
    !occupied.some((l) => {
      const held = r.of(l);
      // An IPv6-only lease's IPv4 half (0.0.0.0/0) holds no IPv4 address.
      return held !== null && held.prefixLen > 0 && ipNetsOverlap(held, candidate);
    });

  // 2. The subnets we had before (subnet.env), if they fit and are still free.
  const preferredLease = { subnet: preferredSubnet ?? EMPTY_IPV4_NET, ipv6Subnet: preferredIPv6 } as Lease;
  if (
    (preferredSubnet !== null || !config.enableIPv4) &&
    (preferredIPv6 !== null || !config.enableIPv6) &&
    fits(preferredLease) &&
    ranges.every((r) => isFree(r, r.of(preferredLease)!))
  ) {
    return {
      kind: 'create', subnet: preferredLease.subnet, ipv6Subnet: preferredIPv6, source: 'preferred', toDelete, ignoredReservations,
    };
  }

  // 3. Per family, a random pick among the first free subnets (IPv4 first, as flannel).
  const picks = new Map<IPFamily, IPNet>();
  for (const r of ranges) {
    const free = walkSubnets(r.family, r.min, r.max, r.len, FREE_SUBNET_WINDOW, (c) => !isFree(r, c));
    if (free.length === 0) throw exhausted(r);
    picks.set(r.family, free[Math.min(free.length - 1, Math.max(0, Math.floor(random() * free.length)))]!);
  }
  return {
    kind: 'create',
    subnet: (picks.get(4) as IPv4Net | undefined) ?? EMPTY_IPV4_NET,
    ipv6Subnet: (picks.get(6) as IPv6Net | undefined) ?? null,
    source: 'allocated',
    toDelete,
    ignoredReservations,
  };
}

function pickOwn(fitting: readonly Lease[], preferred: IPv4Net | null, preferredIPv6: IPv6Net | null): Lease | undefined {
  const isPreferred = (l: Lease): boolean =>
    (preferred !== null && sameIPNet(l.subnet, preferred) && (preferredIPv6 === null || (l.ipv6Subnet !== null && sameIPNet(l.ipv6Subnet, preferredIPv6)))) ||
    (preferred === null && preferredIPv6 !== null && l.ipv6Subnet !== null && sameIPNet(l.ipv6Subnet, preferredIPv6));
  return (
    fitting.find((l) => isReservation(l)) ??
    fitting.find(isPreferred) ??
    [...fitting].sort((a, b) => compareIPNet(a.subnet, b.subnet) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))[0]
  );
}

/** Walk SubnetMin..SubnetMax (IPv4) in order and return up to `limit` subnets no lease overlaps. */
export function firstFreeSubnets(config: NetworkConfig, occupied: readonly Lease[], limit: number): IPv4Net[] {
  const r = rangesOf(config).find((x) => x.family === 4);
  if (r === undefined) return [];
  return walkSubnets(4, r.min, r.max, r.len, limit, (c) => occupied.some((l) => ipNetsOverlap(l.subnet, c))) as IPv4Net[];
}

function exhausted(r: FamilyRange): WeftError {
  const total = countSubnets(r.family, r.min, r.max, r.len);
  const [min, max] = r.family === 4 ? ['SubnetMin', 'SubnetMax'] : ['IPv6SubnetMin', 'IPv6SubnetMax'];
  const net = r.family === 4 ? 'Network' : 'IPv6Network';
  return new WeftError(
    'SUBNETS_EXHAUSTED',
    `out of subnets: all ${total} /${r.len} subnets between ${min} ${netAddress(r.min)} and ` +
      `${max} ${netAddress(r.max)} of ${formatCidr(r.network)} are leased; enlarge the ${net} (or ${min}..${max}) ` +
      'or remove stale leases (list them with `weft leases`)',
  );
}
