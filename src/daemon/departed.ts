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
  private readonly held = new Map<string, { readonly lease: Lease; readonly until: number }>();
  /** The current leases' subnets (kept by update/added/removed), for heldNow()'s overlap test. */
  private readonly current = new SubnetIndex();

  constructor(
    private readonly graceMs: number = DEFAULT_DEPARTED_GRACE_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** The peer set went from `before` to `after`: hold the keys that vanished, release those back. */
  update(before: readonly Lease[], after: readonly Lease[]): void {
    const present = new Set(after.map((l) => l.key));
    this.current.reset(after);
    for (const key of [...this.held.keys()]) if (present.has(key)) this.held.delete(key);
    if (this.graceMs <= 0) return;
    const until = this.now() + this.graceMs;
    for (const l of before) if (!present.has(l.key) && !this.held.has(l.key)) this.held.set(l.key, { lease: l, until });
  }

  /** One lease added or changed (`previous`: its value before): its key is no longer held. O(1). */
  added(lease: Lease, previous?: Lease): void {
    if (previous !== undefined) this.current.delete(previous.subnet);
    this.current.add(lease.subnet);
    this.held.delete(lease.key);
  }

  /** One lease's key vanished: held for the grace period. O(1). */
  removed(lease: Lease): void {
    this.current.delete(lease.subnet);
    if (this.graceMs > 0 && !this.held.has(lease.key)) this.held.set(lease.key, { lease, until: this.now() + this.graceMs });
  }

  /** `current` plus the held peers still in grace that overlap no current lease. */
  withHeld(current: readonly Lease[]): Lease[] {
    const now = this.now();
    const out = [...current];
    for (const [key, h] of [...this.held]) {
      if (h.until <= now || current.some((l) => netsOverlap(l.subnet, h.lease.subnet))) {
        this.held.delete(key);
        continue;
      }
      out.push(h.lease);
    }
    return out;
  }

  /**
   * The held peers to keep programming now (by key): in grace and overlapping no current lease
   * (as known from update/added/removed); the others are dropped. O(held), not O(peers).
   */
  heldNow(): ReadonlyMap<string, Lease> {
    const now = this.now();
    const out = new Map<string, Lease>();
    for (const [key, h] of [...this.held]) {
      if (h.until <= now || this.current.overlaps(h.lease.subnet)) {
        this.held.delete(key);
        continue;
      }
      out.set(key, h.lease);
    }
    return out;
  }

  /** Milliseconds until the next hold ends (then recompute), or null when nothing is held. */
  nextExpiryMs(): number | null {
    if (this.held.size === 0) return null;
    const now = this.now();
    let next = Infinity;
    for (const h of this.held.values()) next = Math.min(next, h.until - now);
    return Math.max(0, next);
  }

  get size(): number {
    return this.held.size;
  }
}

/**
 * A multiset of IPv4 subnets with an overlap test that costs a lookup per prefix length present
 * (leases have one length, the SubnetLen; longer ones, from hostile or stale data, are scanned).
 */
class SubnetIndex {
  /** prefix length → subnet address → how many leases have it. */
  private readonly byLength = new Map<number, Map<number, number>>();

  reset(leases: readonly Lease[]): void {
    this.byLength.clear();
    for (const l of leases) this.add(l.subnet);
  }

  add(net: IPv4Net): void {
    let m = this.byLength.get(net.prefixLen);
    if (!m) this.byLength.set(net.prefixLen, (m = new Map()));
    const ip = maskIPv4(net.ip, net.prefixLen);
    m.set(ip, (m.get(ip) ?? 0) + 1);
  }

  delete(net: IPv4Net): void {
    const m = this.byLength.get(net.prefixLen);
    const ip = maskIPv4(net.ip, net.prefixLen);
    const n = m?.get(ip);
    if (m === undefined || n === undefined) return;
    if (n > 1) m.set(ip, n - 1);
    else m.delete(ip);
    if (m.size === 0) this.byLength.delete(net.prefixLen);
  }

  overlaps(net: IPv4Net): boolean {
    for (const [len, m] of this.byLength) {
      if (len <= net.prefixLen) {
        // Two networks overlap when the shorter contains the longer: one lookup.
        if (m.has(maskIPv4(net.ip, len))) return true;
      } else {
        for (const ip of m.keys()) if (netsOverlap({ ip, prefixLen: len }, net)) return true;
      }
    }
    return false;
  }
}

function maskIPv4(ip: number, len: number): number {
  return len === 0 ? 0 : (ip & (~0 << (32 - len))) >>> 0;
}
