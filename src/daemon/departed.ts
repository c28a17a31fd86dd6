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
import type { Lease } from '../lease/types';

export const DEFAULT_DEPARTED_GRACE_MS = 3000;

export class DepartedPeers {
  private readonly held = new Map<string, { readonly lease: Lease; readonly until: number }>();

  constructor(
    private readonly graceMs: number = DEFAULT_DEPARTED_GRACE_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** The peer set went from `before` to `after`: hold the keys that vanished, release those back. */
  update(before: readonly Lease[], after: readonly Lease[]): void {
    const present = new Set(after.map((l) => l.key));
    for (const key of [...this.held.keys()]) if (present.has(key)) this.held.delete(key);
    if (this.graceMs <= 0) return;
    const until = this.now() + this.graceMs;
    for (const l of before) if (!present.has(l.key) && !this.held.has(l.key)) this.held.set(l.key, { lease: l, until });
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

  /** Milliseconds until the next hold ends (then recompute), or null when nothing is held. */
  nextExpiryMs(): number | null {
    if (this.held.size === 0) return null;
    const now = this.now();
    return Math.max(0, Math.min(...[...this.held.values()].map((h) => h.until - now)));
  }

  get size(): number {
    return this.held.size;
  }
}
