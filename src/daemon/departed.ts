/**
 * A short grace period for peers whose lease disappeared.
 *
 * When etcd comes back from a partition longer than the TTL, it expires every host's lease at
 * once: every weftd sees every peer's key deleted, and each re-creates its own a moment later.
 * Removing the routes at the deletion and adding them back at the re-creation would cut all
 * traffic for that moment, for nothing. So a peer whose key vanished stays programmed for
 * `graceMs` (default 3 s); if its key comes back meanwhile nothing was ever removed. A peer that
 * really left (its host is gone) only keeps a route to nowhere a few seconds longer.
 *
 * A held peer never competes with a live lease: if any current lease overlaps its subnet, the
 * held one is dropped at once (another host took the subnet).
 */
import { netsOverlap } from '../ip';
import type { IPv4Net, Lease } from '../lease/types';

export const DEFAULT_DEPARTED_GRACE_MS = 3000;

export class DepartedPeers {
  /** Held leases by key, in the order their hold began (and so, with one grace, of expiry). */
  private readonly held = new Map<string, { readonly lease: Lease; readonly until: number }>();
  /** The current leases' subnets (kept by update/added/removed): a lease overlapping one is not held. */
  private readonly current = new SubnetIndex();
  /** The held leases' subnets, to find those a new lease overlaps. */
  private readonly heldSubnets = new SubnetIndex();
  /** Keys whose hold began or ended since takeChanges(). */
  private readonly changed = new Set<string>();

  constructor(
    private readonly graceMs: number = DEFAULT_DEPARTED_GRACE_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** The peer set went from `before` to `after`: hold the keys that vanished, release those back. O(peers). */
  update(before: readonly Lease[], after: readonly Lease[]): void {
    const present = new Set(after.map((l) => l.key));
    this.current.reset(after);
    for (const [key, h] of [...this.held]) if (present.has(key) || this.current.overlaps(h.lease.subnet)) this.release(key);
    if (this.graceMs <= 0) return;
    const until = this.now() + this.graceMs;
    for (const l of before) {
      if (!present.has(l.key) && !this.held.has(l.key) && !this.current.overlaps(l.subnet)) this.hold(l, until);
    }
  }

  /**
   * One lease added or changed (`previous`: its value before): its key is no longer held, nor is
   * any held lease it overlaps (another host took that subnet). O(1) plus the holds it ends.
   */
  added(lease: Lease, previous?: Lease): void {
    if (previous !== undefined) this.current.delete(previous.subnet, previous.key);
    this.current.add(lease.subnet, lease.key);
    if (this.held.has(lease.key)) this.release(lease.key);
    for (const key of this.heldSubnets.overlapping(lease.subnet)) this.release(key);
  }

  /** One lease's key vanished: held for the grace period, unless a current lease overlaps it. O(1). */
  removed(lease: Lease): void {
    this.current.delete(lease.subnet, lease.key);
    if (this.graceMs <= 0 || this.held.has(lease.key) || this.current.overlaps(lease.subnet)) return;
    this.hold(lease, this.now() + this.graceMs);
  }

  /** `current` plus the held peers still in grace that overlap no current lease. O(peers × held). */
  withHeld(current: readonly Lease[]): Lease[] {
    const now = this.now();
    const out = [...current];
    for (const [key, h] of [...this.held]) {
      if (h.until <= now || current.some((l) => netsOverlap(l.subnet, h.lease.subnet))) {
        this.release(key);
        continue;
      }
      out.push(h.lease);
    }
    return out;
  }

  /** End the holds whose grace is over: O(holds ended) (they end in the order they began). */
  expire(): void {
    const now = this.now();
    for (const [key, h] of this.held) {
      if (h.until > now) break;
      this.release(key);
    }
  }

  /** The held lease of `key`, or undefined. */
  heldLease(key: string): Lease | undefined {
    return this.held.get(key)?.lease;
  }

  /** Every held lease (after expire(): all in grace, none overlapping a current lease). */
  heldLeases(): Lease[] {
    return [...this.held.values()].map((h) => h.lease);
  }

  /** The held peers to keep programming now, by key (expire() first). O(held). */
  heldNow(): ReadonlyMap<string, Lease> {
    this.expire();
    return new Map([...this.held].map(([k, h]) => [k, h.lease]));
  }

  /** The keys whose hold began or ended since the last call (their effective lease changed). */
  takeChanges(): string[] {
    const out = [...this.changed];
    this.changed.clear();
    return out;
  }

  /** Milliseconds until the next hold ends (then recompute), or null when nothing is held. O(1). */
  nextExpiryMs(): number | null {
    for (const h of this.held.values()) return Math.max(0, h.until - this.now());
    return null;
  }

  get size(): number {
    return this.held.size;
  }

  private hold(lease: Lease, until: number): void {
    this.held.set(lease.key, { lease, until });
    this.heldSubnets.add(lease.subnet, lease.key);
    this.changed.add(lease.key);
  }

  private release(key: string): void {
    const h = this.held.get(key);
    if (h === undefined) return;
    this.held.delete(key);
    this.heldSubnets.delete(h.lease.subnet, key);
    this.changed.add(key);
  }
}

/**
 * IPv4 subnets with the keys of the leases that have them, and an overlap test that costs a
 * lookup per prefix length present (leases have one length, the SubnetLen; longer ones, from
 * hostile or stale data, are scanned).
 */
class SubnetIndex {
  /** prefix length → subnet address → keys. */
  private readonly byLength = new Map<number, Map<number, Set<string>>>();

  reset(leases: readonly Lease[]): void {
    this.byLength.clear();
    for (const l of leases) this.add(l.subnet, l.key);
  }

  add(net: IPv4Net, key: string): void {
    let m = this.byLength.get(net.prefixLen);
    if (!m) this.byLength.set(net.prefixLen, (m = new Map()));
    const ip = maskIPv4(net.ip, net.prefixLen);
    const keys = m.get(ip);
    if (keys) keys.add(key);
    else m.set(ip, new Set([key]));
  }

  delete(net: IPv4Net, key: string): void {
    const m = this.byLength.get(net.prefixLen);
    const ip = maskIPv4(net.ip, net.prefixLen);
    const keys = m?.get(ip);
    if (m === undefined || keys === undefined) return;
    keys.delete(key);
    if (keys.size === 0) m.delete(ip);
    if (m.size === 0) this.byLength.delete(net.prefixLen);
  }

  overlaps(net: IPv4Net): boolean {
    for (const _ of this.overlapping(net)) return true;
    return false;
  }

  /** The keys of the subnets overlapping `net` (one contains the other). */
  *overlapping(net: IPv4Net): Generator<string> {
    for (const [len, m] of [...this.byLength]) {
      if (len <= net.prefixLen) {
        const keys = m.get(maskIPv4(net.ip, len));
        if (keys) yield* [...keys];
      } else {
        for (const [ip, keys] of [...m]) if (netsOverlap({ ip, prefixLen: len }, net)) yield* [...keys];
      }
    }
  }
}

function maskIPv4(ip: number, len: number): number {
  return len === 0 ? 0 : (ip & (~0 << (32 - len))) >>> 0;
}
