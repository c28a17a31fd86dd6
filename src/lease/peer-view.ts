/**
 * The other hosts' leases, as this host sees them: one listing, then a watch from its revision;
 * after a watch reset (compaction) a fresh listing. Split out of LeaseManager, which keeps only
 * its own lease: the manager tells the view which key is its own (`ownChanged()`), and the view
 * tells the manager when that key is deleted, taken over or overwritten with garbage (`ownGone`).
 *
 *   listing ──ok──► watching ──reset──► listing          (list failures: Backoff, one warning)
 *   close() from any state ──► closed
 *
 * Listeners first get a snapshot, then one call per change; our own key is never included;
 * malformed values are skipped (one warning per key), a peer's last valid value is kept.
 */
import { Backoff } from '../backoff';
import type { Clock } from '../clock';
import { WeftError, describeError } from '../errors';
import type { Logger } from '../log';
import type { InvalidSubnet, LeaseRegistry, SubnetWatch, SubnetWatchEvent } from './registry';
import type { Lease, LeaseAttrs, LeaseEvent } from './types';

export type PeerChange = LeaseEvent | { readonly type: 'snapshot' };
/**
 * `peers` is the live map (own key excluded), valid during the call: copy what you keep.
 * A 'snapshot' replaces everything known before (after start and after a compaction).
 */
export type PeerListener = (peers: ReadonlyMap<string, Lease>, change: PeerChange) => void;
/**
 * Called after the changes of one watch message (the events of one etcd watch response) — or a
 * snapshot — were all given to the listener, in the same call stack: where a subscriber acts on
 * a batch of changes at once (weftd recomputes there), without a promise step to find its end.
 */
export type PeersSettled = () => void;

interface Subscriber {
  primed: boolean;
  readonly settled: PeersSettled | undefined;
}

export interface PeerViewOptions {
  readonly registry: LeaseRegistry;
  /** The lease manager's logger (component 'lease'). */
  readonly log: Logger;
  readonly clock: Pick<Clock, 'sleep'>;
  /** Pacing of listing retries while etcd fails. */
  readonly backoff: Backoff;
  /** Aborted when the manager closes. */
  readonly signal: AbortSignal;
  /** Our own lease (also while re-acquiring: its key is left out of the peers). */
  readonly own: () => Lease | null;
  /** Whether `own()` is held now: only a held key is watched for deletion or take-over. */
  readonly held: () => boolean;
  /** Our held key was deleted, taken over or overwritten with a malformed value. */
  readonly ownGone: (err: WeftError) => void;
}

export class PeerView {
  private syncStarted = false;
  private syncDone: Promise<void> | null = null;
  private watch: SubnetWatch | null = null;
  private readonly all = new Map<string, Lease>();
  private readonly peers = new Map<string, Lease>();
  private haveSnapshot = false;
  private readonly listeners = new Map<PeerListener, Subscriber>();
  /** Changes were given to listeners since the last settle(). */
  private unsettled = false;
  private readonly warnedInvalid = new Set<string>();

  constructor(private readonly o: PeerViewOptions) {}

  /**
   * Subscribe (see PeerListener, PeersSettled); starts following etcd if not yet. Returns the
   * unsubscribe function.
   */
  subscribe(listener: PeerListener, settled?: PeersSettled): () => void {
    const entry: Subscriber = { primed: false, settled };
    this.listeners.set(listener, entry);
    if (this.haveSnapshot) {
      queueMicrotask(() => {
        if (this.listeners.get(listener) !== entry || entry.primed) return;
        entry.primed = true;
        this.call(listener, { type: 'snapshot' });
        if (entry.settled !== undefined) this.callSettled(entry.settled);
      });
    }
    this.start();
    return () => {
      this.listeners.delete(listener);
    };
  }

  start(): void {
    if (this.syncStarted || this.o.signal.aborted) return;
    this.syncStarted = true;
    this.syncDone = this.syncLoop().catch((err: unknown) => {
      if (!this.o.signal.aborted) this.o.log.error(`peer watch stopped: ${describeError(err)}`);
    });
  }

  /** Our own key changed: peers = all − the new own key, announced as a snapshot. */
  ownChanged(): void {
    this.rebuildPeers(true);
  }

  /** One warning per malformed key until it is fixed or removed. `full`: this is the whole set. */
  warnInvalid(invalid: readonly InvalidSubnet[], full: boolean): void {
    if (full) {
      const now = new Set(invalid.map((i) => i.key));
      for (const k of [...this.warnedInvalid]) if (!now.has(k)) this.warnedInvalid.delete(k);
    }
    for (const { key, error } of invalid) {
      if (this.warnedInvalid.has(key)) continue;
      this.warnedInvalid.add(key);
      this.o.log.warn(`skipping malformed lease ${key}: ${describeError(error)}`, { key });
    }
  }

  /** Call after aborting the signal: stops the watch, waits for the loop to end. */
  async close(): Promise<void> {
    this.listeners.clear();
    await this.watch?.close();
    await this.syncDone;
  }

  private async syncLoop(): Promise<void> {
    const { signal, registry, log, backoff } = this.o;
    let failing = false;
    while (!signal.aborted) {
      let listing;
      try {
        listing = await registry.listSubnets();
      } catch (err) {
        if (signal.aborted) return;
        if (!failing) log.warn(`list peer leases: ${describeError(err)}; retrying`);
        failing = true;
        await this.o.clock.sleep(backoff.next(), signal).catch(() => undefined);
        continue;
      }
      if (signal.aborted) return;
      if (failing) log.info('peer leases listed again');
      failing = false;
      backoff.reset();

      // A key that turned malformed keeps its last valid value (see onWatchEvent).
      const before = new Map(this.all);
      this.all.clear();
      for (const l of listing.leases) this.all.set(l.key, l);
      for (const { key } of listing.invalid) {
        const kept = before.get(key);
        if (kept !== undefined) this.all.set(key, kept);
      }
      this.warnInvalid(listing.invalid, true);
      this.rebuildPeers(false);
      this.haveSnapshot = true;
      this.emitSnapshot();
      this.checkOwnInListing(listing.revision);

      const reason = await new Promise<string>((resolve) => {
        const onAbort = (): void => resolve('closed');
        signal.addEventListener('abort', onAbort, { once: true });
        this.watch = registry.watchSubnets((BigInt(listing.revision) + 1n).toString(), (ev) => {
          if (ev.type === 'reset') {
            signal.removeEventListener('abort', onAbort);
            resolve(ev.reason);
          } else {
            this.onWatchEvent(ev);
          }
        }, () => this.settle());
      });
      const w = this.watch;
      this.watch = null;
      if (signal.aborted) {
        await w?.close();
        return;
      }
      log.info(`lease watch reset (${reason}); re-listing`);
    }
  }

  private onWatchEvent(ev: Exclude<SubnetWatchEvent, { type: 'reset' }>): void {
    const ownKey = this.o.own()?.key ?? null;
    switch (ev.type) {
      case 'added': {
        this.all.set(ev.lease.key, ev.lease);
        this.warnedInvalid.delete(ev.lease.key);
        if (ev.lease.key === ownKey) {
          this.checkOwnOverwritten(ev.lease);
        } else {
          this.peers.set(ev.lease.key, ev.lease);
          this.emitChange(ev);
        }
        return;
      }
      case 'removed': {
        this.all.delete(ev.key);
        this.warnedInvalid.delete(ev.key);
        if (ev.key === ownKey) {
          this.checkOwnRemoved(ev.revision);
        } else if (this.peers.delete(ev.key)) {
          this.emitChange(ev);
        }
        return;
      }
      case 'invalid': {
        this.warnInvalid([{ key: ev.key, error: ev.error }], false);
        if (ev.key === ownKey) {
          this.o.ownGone(new WeftError('BAD_DATA', `our key ${ev.key} was overwritten with a malformed value`));
        }
        // A peer's lease overwritten with garbage keeps its last valid value (flannel, too, skips
        // such an event): a typo in etcd must not cut traffic to a host that is still there. The
        // key's deletion or expiry, or a valid value, ends that.
        return;
      }
    }
  }

  private checkOwnRemoved(revision: string | undefined): void {
    const own = this.o.own();
    if (own === null || !this.o.held()) return;
    // A deletion older than our write is history (e.g. the expiry that made us re-acquire).
    if (revision !== undefined && BigInt(revision) < BigInt(own.modRevision)) return;
    this.o.ownGone(new WeftError('LEASE_CONFLICT', `our key ${own.key} was deleted from etcd`, { retryable: true }));
  }

  private checkOwnOverwritten(lease: Lease): void {
    const own = this.o.own();
    if (own === null || !this.o.held()) return;
    if (BigInt(lease.modRevision) <= BigInt(own.modRevision)) return;
    if (sameHost(lease.attrs, own.attrs)) return;
    const by = lease.attrs.PublicIP === '0.0.0.0' ? lease.attrs.PublicIPv6 : lease.attrs.PublicIP;
    this.o.ownGone(new WeftError('LEASE_CONFLICT', `our key ${own.key} was taken over by ${by}`, { retryable: true }));
  }

  /** After a (re-)list: our key must still be there (and ours). */
  private checkOwnInListing(revision: string): void {
    const own = this.o.own();
    if (own === null || !this.o.held()) return;
    // A listing taken before our own write says nothing about it.
    if (BigInt(revision) < BigInt(own.modRevision)) return;
    const cur = this.all.get(own.key);
    if (cur === undefined) {
      if (!this.warnedInvalid.has(own.key)) this.checkOwnRemoved(undefined);
      else this.o.ownGone(new WeftError('BAD_DATA', `our key ${own.key} holds a malformed value`));
    } else if (!sameHost(cur.attrs, own.attrs)) {
      this.checkOwnOverwritten(cur);
    }
  }

  /** peers = all − own key. `announce`: tell primed listeners with a snapshot. */
  private rebuildPeers(announce: boolean): void {
    const ownKey = this.o.own()?.key ?? null;
    this.peers.clear();
    for (const [k, l] of this.all) if (k !== ownKey) this.peers.set(k, l);
    if (announce && this.haveSnapshot) this.emitSnapshot();
  }

  /** A snapshot is a batch of its own: settled right after. */
  private emitSnapshot(): void {
    for (const [listener, entry] of [...this.listeners]) {
      entry.primed = true;
      this.call(listener, { type: 'snapshot' });
    }
    this.unsettled = true;
    this.settle();
  }

  /** One change; the subscribers' `settled` follows at the end of its watch message (settle). */
  private emitChange(change: LeaseEvent): void {
    // No copy of the map per event: a listener that unsubscribes meanwhile is skipped by the
    // Map's own iteration, and one subscribing now is not primed.
    for (const [listener, entry] of this.listeners) if (entry.primed) this.call(listener, change);
    this.unsettled = true;
  }

  /** The registry delivered a whole watch response: tell the subscribers if anything changed. */
  private settle(): void {
    if (!this.unsettled) return;
    this.unsettled = false;
    for (const entry of this.listeners.values()) if (entry.primed && entry.settled !== undefined) this.callSettled(entry.settled);
  }

  private callSettled(settled: PeersSettled): void {
    try {
      settled();
    } catch (err) {
      this.o.log.error(`peer listener threw when its changes settled: ${describeError(err)}`);
    }
  }

  private call(listener: PeerListener, change: PeerChange): void {
    try {
      listener(this.peers, change);
    } catch (err) {
      // A listener bug must not stop the watch that every other part of the daemon relies on.
      this.o.log.error(`peer listener threw on ${change.type}: ${describeError(err)}`);
    }
  }
}

/**
 * Whether two lease values are the same host's: the same PublicIP, and on an IPv6-only network
 * (where every host's PublicIP is flannel's 0.0.0.0) the same PublicIPv6 — the identity
 * LeaseManager.findOwnLease uses. Without the second half a host rewriting our IPv6-only key
 * (flanneld v0.20.2 does: it takes any lease of "current IP 0.0.0.0") went unnoticed.
 */
function sameHost(a: LeaseAttrs, b: LeaseAttrs): boolean {
  return a.PublicIP === b.PublicIP && (a.PublicIP !== '0.0.0.0' || a.PublicIPv6 === b.PublicIPv6);
}
