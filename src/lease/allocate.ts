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
 * Only the IPv4 subnet is allocated; IPv6 subnets are not handled yet.
 */
import { WeftError } from '../errors';
import { formatIPv4, formatIPv4Cidr, netContainsNet, netsOverlap, sameNet } from '../ip';
import type { NetworkConfig } from '../config/types';
import { isReservation, type IPv4Net, type Lease } from './types';

/** flannel collects at most this many free subnets before picking one at random. */
export const FREE_SUBNET_WINDOW = 100;

export interface AllocateInput {
  readonly config: NetworkConfig;
  readonly leases: readonly Lease[];
  /** Our PublicIP (dotted quad), as written into the lease. */
  readonly publicIP: string;
  /** FLANNEL_SUBNET's network from subnet.env — or, on re-acquire, the subnet we held before. */
  readonly preferredSubnet: IPv4Net | null;
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
      readonly subnet: IPv4Net;
      readonly source: 'preferred' | 'allocated';
      readonly toDelete: readonly Lease[];
      readonly ignoredReservations: readonly Lease[];
    };

/** flannel's isSubnetConfigCompat: inside SubnetMin..SubnetMax with the configured SubnetLen. */
export function subnetFitsConfig(config: NetworkConfig, subnet: IPv4Net): boolean {
  if (config.network === null) return false;
  return (
    subnet.prefixLen === config.subnetLen &&
    netContainsNet(config.network, subnet) &&
    subnet.ip >= config.subnetMin &&
    subnet.ip <= config.subnetMax
  );
}

/** Throws WeftError('SUBNETS_EXHAUSTED') when nothing is free, 'CONFIG_INVALID' without IPv4. */
export function allocate(input: AllocateInput): AllocateDecision {
  const { config, leases, publicIP, preferredSubnet } = input;
  const random = input.random ?? Math.random;
  if (!config.enableIPv4 || config.network === null) {
    throw new WeftError('CONFIG_INVALID', 'allocate subnet: the network config has no IPv4 Network; weft leases IPv4 subnets only');
  }

  // 1. Our own leases.
  const ours = leases.filter((l) => l.attrs.PublicIP === publicIP);
  const fitting = ours.filter((l) => subnetFitsConfig(config, l.subnet));
  const ignoredReservations = ours.filter((l) => isReservation(l) && !fitting.includes(l));
  const keep = pickOwn(fitting, preferredSubnet);
  const toDelete = ours.filter((l) => l !== keep && !isReservation(l));
  if (keep !== undefined) return { kind: 'reuse', lease: keep, toDelete, ignoredReservations };

  // Everything not about to be deleted occupies its subnet.
  const occupied = leases.filter((l) => !toDelete.includes(l));

  // 2. The subnet we had before (subnet.env), if still ours to take.
  if (
    preferredSubnet !== null &&
    subnetFitsConfig(config, preferredSubnet) &&
    !occupied.some((l) => netsOverlap(l.subnet, preferredSubnet))
  ) {
    return { kind: 'create', subnet: preferredSubnet, source: 'preferred', toDelete, ignoredReservations };
  }

  // 3. A random pick among the first free subnets.
  const free = firstFreeSubnets(config, occupied, FREE_SUBNET_WINDOW);
  if (free.length === 0) throw exhausted(config);
  const index = Math.min(free.length - 1, Math.max(0, Math.floor(random() * free.length)));
  return { kind: 'create', subnet: free[index]!, source: 'allocated', toDelete, ignoredReservations };
}

function pickOwn(fitting: readonly Lease[], preferred: IPv4Net | null): Lease | undefined {
  return (
    fitting.find((l) => isReservation(l)) ??
    (preferred === null ? undefined : fitting.find((l) => sameNet(l.subnet, preferred))) ??
    [...fitting].sort((a, b) => a.subnet.ip - b.subnet.ip)[0]
  );
}

/** Walk SubnetMin..SubnetMax in order and return up to `limit` subnets no lease overlaps. */
export function firstFreeSubnets(config: NetworkConfig, occupied: readonly Lease[], limit: number): IPv4Net[] {
  const len = config.subnetLen;
  const step = 2 ** (32 - len);
  // Leases of the configured length are looked up by address (O(1)); others (config changed,
  // hand-written keys) are few and checked for overlap one by one.
  const sameLen = new Set<number>();
  const other: IPv4Net[] = [];
  for (const l of occupied) {
    if (l.subnet.prefixLen === len) sameLen.add(l.subnet.ip);
    else other.push(l.subnet);
  }
  const free: IPv4Net[] = [];
  for (let ip = config.subnetMin; ip <= config.subnetMax && free.length < limit; ip += step) {
    const candidate = { ip, prefixLen: len };
    if (sameLen.has(ip) || other.some((o) => netsOverlap(o, candidate))) continue;
    free.push(candidate);
  }
  return free;
}

function exhausted(config: NetworkConfig): WeftError {
  const total = Math.floor((config.subnetMax - config.subnetMin) / 2 ** (32 - config.subnetLen)) + 1;
  const network = config.network === null ? '?' : formatIPv4Cidr(config.network);
  return new WeftError(
    'SUBNETS_EXHAUSTED',
    `out of subnets: all ${total} /${config.subnetLen} subnets between SubnetMin ${formatIPv4(config.subnetMin)} and ` +
      `SubnetMax ${formatIPv4(config.subnetMax)} of ${network} are leased; enlarge the Network (or SubnetMin..SubnetMax) ` +
      'or remove stale leases (list them with `weft leases`)',
  );
}
