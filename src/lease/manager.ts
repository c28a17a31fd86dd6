/**
 * LeaseManager: the daemon's view of the lease store. It waits for the network config, acquires
 * this host's subnet (allocate.ts decides, the registry writes), keeps the one etcd lease alive,
 * re-acquires in place when the lease is lost, and keeps a live map of the peers' leases.
 *
 * States of the host's lease (`manager.state`):
 *
 *               acquire()                          ok
 *   idle ─────────────────────► acquiring ───────────────────────► held ◄───────────────┐
 *                                │ ▲   │                             │  (etcd outage     │
 *     lost create race, or the   │ │   │ non-retryable error         │  shorter than the │
 *     key changed under us:      └─┘   │ (out of subnets, no IPv4    │  TTL: stays held; │
 *     re-list, re-allocate;            │ Network): acquire() rejects │  keepalive and    │
 *     etcd unreachable: bounded        ▼ and the state is idle again │  watch resume)    │
 *     backoff, one log line per      idle                            │                   │
 *     state change                                                   │ etcd lease lost   │
 *                                                                    │ (outage > TTL,    │
 *                                                                    │ revoked), or own  │ ok: emit
 *                                                                    │ key deleted/taken │ 'lease'
 *                                                                    ▼ emit 'lost'       │
 *                                                               reacquiring ─────────────┘
 *                                                   prefers the same subnet; retries forever
 *                                                   (also when out of subnets); never exits
 *
 *   any state ── close() ──► closed: keepalive and watch stop; nothing is revoked or deleted,
 *                            so a restart (which re-adopts its key by PublicIP) never cuts traffic.
 *
 * The peer view (watchPeers) is a separate loop: list → snapshot → watch from revision + 1 →
 * events; on a watch reset (compaction) list again and emit a fresh snapshot. It also feeds the
 * lease state machine: it is how "our key was deleted" is seen.
 */
import { EventEmitter } from 'node:events';
import type { NetworkConfig } from '../config/types';
import { WeftError, describeError, isRetryable } from '../errors';
import { formatCidr, formatIPv4Cidr, sameNet, type IPFamily } from '../ip';
import type { Logger } from '../log';
import { allocate } from './allocate';
import { configKey, encodeLeaseAttrs, formatSubnetKey } from './codec';
import type { HostLease, InvalidSubnet, LeaseRegistry, SubnetWatch, SubnetWatchEvent } from './registry';
import { isReservation, type IPv4Net, type IPv6Net, type Lease, type LeaseAttrs, type LeaseEvent } from './types';

/** Time, injectable so tests need not wait. */
export interface Clock {
  now(): number;
  /** Resolve after `ms`; reject with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

export interface LeaseManagerOptions {
  readonly registry: LeaseRegistry;
  readonly log: Logger;
  readonly clock?: Clock;
  /** Uniform in [0, 1): the random pick among free subnets, and backoff jitter. */
  readonly random?: () => number;
  /** How often to look for `<prefix>/config` while it is absent. Default 1000 ms (flannel's). */
  readonly configPollMs?: number;
  /** While the config stays absent, repeat the message at debug level this often. Default 60 s. */
  readonly configReminderMs?: number;
  /** Bounded exponential backoff for retryable failures. Default 500 ms .. 10 s. */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
}

export interface AcquireRequest {
  readonly config: NetworkConfig;
  readonly publicIP: string;
  readonly publicIPv6: string | null;
  readonly backendType: string;
  readonly backendData: unknown;
  /** Dual stack / IPv6-only: the IPv6 device's data (lease BackendV6Data); undefined: none. */
  readonly backendV6Data?: unknown;
  /** FLANNEL_SUBNET's network from an existing subnet.env (flannel's "previous subnet"). */
  readonly subnetFromFile: IPv4Net | null;
  /** FLANNEL_IPV6_SUBNET's network from an existing subnet.env (dual stack / IPv6-only). */
  readonly ipv6SubnetFromFile?: IPv6Net | null;
  /** TTL of the etcd lease; keys expire this long after the host stops (default flannel: 24 h). */
  readonly ttlSeconds: number;
  /** Give up waiting for etcd (acquire() then rejects with the signal's reason). */
  readonly signal?: AbortSignal;
}

export type LeaseManagerState = 'idle' | 'acquiring' | 'held' | 'reacquiring' | 'closed';

export type PeerChange = LeaseEvent | { readonly type: 'snapshot' };
/**
 * `peers` is the live map (own key excluded), valid during the call: copy what you keep.
 * A 'snapshot' replaces everything known before (after start and after a compaction).
 */
export type PeerListener = (peers: ReadonlyMap<string, Lease>, change: PeerChange) => void;

export interface LeaseManagerEvents {
  /** After a re-acquire: the new lease (subnet may differ from `previous`: rewrite subnet.env). */
  lease: [lease: Lease, previous: Lease];
  /** The held lease is gone (etcd lease lost, key deleted or taken); re-acquiring has started. */
  lost: [error: WeftError, previous: Lease];
  state: [state: LeaseManagerState];
}

const DEFAULTS = { configPollMs: 1000, configReminderMs: 60_000, retryMinMs: 500, retryMaxMs: 10_000 };
/** Consecutive lost races before acquire starts backing off (something is very busy). */
const FREE_RACE_RETRIES = 5;

export class LeaseManager extends EventEmitter<LeaseManagerEvents> {
  private readonly registry: LeaseRegistry;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly timing: typeof DEFAULTS;
  private readonly closing = new AbortController();

  private stateValue: LeaseManagerState = 'idle';
  private own: Lease | null = null;
  /** The IPv6 subnet to prefer (subnet.env's, or the one held before a loss); with `preferred` in acquireLoop. */
  private preferredIPv6: IPv6Net | null = null;
  private request: AcquireRequest | null = null;
  private hostLease: HostLease | null = null;
  private unsubscribeLost: (() => void) | null = null;

  // Peer view.
  private syncStarted = false;
  private syncDone: Promise<void> | null = null;
  private watch: SubnetWatch | null = null;
  private readonly all = new Map<string, Lease>();
  private readonly peers = new Map<string, Lease>();
  private haveSnapshot = false;
  private readonly peerListeners = new Map<PeerListener, { primed: boolean }>();
  private readonly warnedInvalid = new Set<string>();

  constructor(opts: LeaseManagerOptions) {
    super();
    this.registry = opts.registry;
    this.log = opts.log.child({ component: 'lease' });
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? Math.random;
    this.timing = {
      configPollMs: opts.configPollMs ?? DEFAULTS.configPollMs,
      configReminderMs: opts.configReminderMs ?? DEFAULTS.configReminderMs,
      retryMinMs: opts.retryMinMs ?? DEFAULTS.retryMinMs,
      retryMaxMs: opts.retryMaxMs ?? DEFAULTS.retryMaxMs,
    };
  }

  get state(): LeaseManagerState {
    return this.stateValue;
  }

  /** When the held lease's etcd lease runs out unless kept alive (null: a reservation, or unknown). */
  get leaseExpiresAt(): Date | null {
    const own = this.lease;
    if (own === null || own.etcdLeaseId === null || this.hostLease?.id !== own.etcdLeaseId) return null;
    return this.hostLease.expiresAt ?? null;
  }

  /** The lease held now (null unless state is 'held'). */
  get lease(): Lease | null {
    return this.stateValue === 'held' ? this.own : null;
  }

  // ---- config ----------------------------------------------------------------------------------

  /**
   * The text of `<prefix>/config`, waiting for it: polled every second while absent (one info
   * line, then a debug reminder a minute), and while etcd is unreachable (bounded backoff, one
   * line per state change). Rejects only for a non-retryable error, abort, or close().
   */
  async waitForConfig(signal?: AbortSignal): Promise<string> {
    const sig = this.combine(signal);
    const key = configKey(this.registry.prefix);
    const missingMsg = `flannel config not found in etcd store (${key}). Did you create your config using etcdv3 API?`;
    let last: 'missing' | 'unreachable' | null = null;
    let lastReminder = 0;
    let backoff = this.timing.retryMinMs;
    for (;;) {
      this.throwIfAborted(sig);
      let text: string | null;
      try {
        text = await this.registry.getConfig();
      } catch (err) {
        if (!isRetryable(err)) throw err;
        if (last !== 'unreachable') this.log.warn(`${describeError(err)}; retrying`);
        last = 'unreachable';
        await this.clock.sleep(this.jitter(backoff), sig);
        backoff = Math.min(backoff * 2, this.timing.retryMaxMs);
        continue;
      }
      backoff = this.timing.retryMinMs;
      if (text !== null) {
        if (last !== null) this.log.info('network config found', { key });
        return text;
      }
      const now = this.clock.now();
      if (last !== 'missing') {
        this.log.warn(missingMsg);
        lastReminder = now;
      } else if (now - lastReminder >= this.timing.configReminderMs) {
        this.log.debug(missingMsg);
        lastReminder = now;
      }
      last = 'missing';
      await this.clock.sleep(this.timing.configPollMs, sig);
    }
  }

  // ---- acquire / re-acquire ------------------------------------------------------------------

  /**
   * Acquire this host's subnet (compat §3 order) and keep it: the etcd lease is kept alive, and
   * if it is lost the manager re-acquires by itself (events 'lost' then 'lease').
   * Retries lost races and retryable etcd errors until `signal` aborts or close(); rejects with
   * WeftError('SUBNETS_EXHAUSTED' | 'CONFIG_INVALID' | ...) for what retrying cannot fix.
   * Calling it again while a lease is held re-runs the acquisition (e.g. new backend data).
   */
  async acquire(req: AcquireRequest): Promise<Lease> {
    if (this.stateValue === 'closed') throw closedError('acquire');
    if (this.stateValue === 'acquiring' || this.stateValue === 'reacquiring') {
      throw new WeftError('INTERNAL', 'acquire: an acquisition is already in progress');
    }
    this.request = req;
    this.preferredIPv6 = req.ipv6SubnetFromFile ?? null;
    this.setState('acquiring');
    try {
      const lease = await this.acquireLoop(req, req.subnetFromFile, this.combine(req.signal), false);
      this.hold(lease);
      return lease;
    } catch (err) {
      // A failed re-run leaves the lease we already held in place. (State read through a call:
      // TypeScript would narrow the field from the check above.)
      if (this.currentState() === 'acquiring') this.setState(this.own !== null ? 'held' : 'idle');
      throw err;
    }
  }

  /**
   * New BackendData (e.g. the overlay device got a new VtepMAC): rewrite our key so that peers
   * program the new value, and use it for every later (re-)acquisition. While a lease is held the
   * key is rewritten at once (emits 'lease'); while re-acquiring, the next attempt writes it.
   * A rewrite that fails (etcd down, key changed) is left to the re-acquire machinery: the
   * periodic check (checkBackendData) retries it.
   */
  async setBackendData(backendData: unknown, family: IPFamily = 4): Promise<void> {
    const req = this.request;
    if (req === null || this.stateValue === 'closed') return;
    this.request = family === 4 ? { ...req, backendData } : { ...req, backendV6Data: backendData };
    await this.syncOwnAttrs();
  }

  /** Rewrite our key if it does not carry the current request's attrs. No-op unless held. */
  private async syncOwnAttrs(): Promise<void> {
    const own = this.own;
    const req = this.request;
    if (own === null || req === null || this.stateValue !== 'held') return;
    const attrs = attrsOf(req);
    if (encodeLeaseAttrs(attrs) === encodeLeaseAttrs(own.attrs)) return;
    const hostLease = isReservation(own) ? null : await this.ensureHostLease(req.ttlSeconds);
    const updated = await this.registry.updateSubnet(own.key, attrs, hostLease, own.modRevision);
    if (this.own !== own || this.stateValue !== 'held') return; // lost meanwhile: re-acquire writes the new attrs
    if (updated === null) {
      this.onOwnGone(new WeftError('LEASE_CONFLICT', `our key ${own.key} changed while we rewrote it`, { retryable: true }));
      return;
    }
    this.own = updated;
    this.log.info(`rewrote our lease ${updated.key} with new backend data`, { key: updated.key, backendData: req.backendData });
    this.emit('lease', updated, own);
  }

  /**
   * The lease this host held before (same PublicIP, preferring `subnet`), from one listing; null
   * when there is none or etcd does not answer. For keeping the VtepMAC of a device that has to
   * be created again (deleted while weftd was down): peers still have the old one programmed.
   */
  async findOwnLease(publicIP: string, subnet: IPv4Net | null, publicIPv6: string | null = null): Promise<Lease | null> {
    try {
      const listing = await this.registry.listSubnets();
      // An IPv6-only host's PublicIP is 0.0.0.0, like every other's: it is known by its PublicIPv6.
      const ours = listing.leases.filter((l) =>
        publicIP === '0.0.0.0' ? publicIPv6 !== null && l.attrs.PublicIPv6 === publicIPv6 : l.attrs.PublicIP === publicIP);
      return (subnet === null ? undefined : ours.find((l) => sameNet(l.subnet, subnet))) ?? ours[0] ?? null;
    } catch (err) {
      this.log.debug('could not look up our previous lease', { error: describeError(err) });
      return null;
    }
  }

  /** Keep trying until a lease is held. `background`: never give up (re-acquire). */
  private async acquireLoop(req: AcquireRequest, preferred: IPv4Net | null, signal: AbortSignal, background: boolean): Promise<Lease> {
    let races = 0;
    let backoff = this.timing.retryMinMs;
    let lastProblem: string | null = null;
    let retriedLostLease = false;
    for (;;) {
      this.throwIfAborted(signal);
      try {
        // The latest request: setBackendData() may have changed it meanwhile.
        const lease = await this.tryAcquire(this.request ?? req, preferred, background);
        if (lease !== null) {
          if (lastProblem !== null) this.log.info('lease acquired after retrying', { key: lease.key });
          return lease;
        }
        races++;
        this.log.info('another host changed the lease we were about to take; re-listing and re-allocating', { attempt: races });
        if (races > FREE_RACE_RETRIES) await this.clock.sleep(this.jitter(this.timing.retryMinMs), signal);
        continue;
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        // The write found our etcd lease gone (revoked, expired): the next attempt grants a new
        // one, so retry at once — once; a second loss in a row backs off like anything else.
        if (err instanceof WeftError && err.code === 'LEASE_CONFLICT' && this.hostLease?.lost === true && !retriedLostLease) {
          retriedLostLease = true;
          continue;
        }
        if (!isRetryable(err) && !background) throw err;
        // One line per kind of problem, not per attempt (gRPC's wording varies between tries).
        const problem = err instanceof WeftError ? err.code : 'unexpected';
        if (problem !== lastProblem) {
          if (isRetryable(err)) this.log.warn(`acquire subnet lease: ${describeError(err)}; retrying`);
          else this.log.error(`acquire subnet lease: ${describeError(err)}; retrying every ${this.timing.retryMaxMs} ms`);
          lastProblem = problem;
        }
        await this.clock.sleep(this.jitter(isRetryable(err) ? backoff : this.timing.retryMaxMs), signal);
        backoff = Math.min(backoff * 2, this.timing.retryMaxMs);
      }
    }
  }

  /**
   * One pass of flannel's tryAcquireLease. Null: lost a race, try again. `reclaim`: `preferred` is
   * the subnet we held until just now, so a malformed value under its key (someone overwrote our
   * lease with garbage) is ours to overwrite; otherwise garbage makes a subnet look taken.
   */
  private async tryAcquire(req: AcquireRequest, preferred: IPv4Net | null, reclaim: boolean): Promise<Lease | null> {
    const listing = await this.registry.listSubnets();
    this.warnInvalid(listing.invalid, true);
    const attrsNow = attrsOf(req);
    if (reclaim && preferred !== null) {
      const key = formatSubnetKey(preferred, this.preferredIPv6);
      const garbage = listing.invalid.find((i) => i.key === key);
      if (garbage?.modRevision !== undefined && !listing.leases.some((l) => l.attrs.PublicIP === req.publicIP)) {
        this.log.warn(`our lease ${key} holds a malformed value; overwriting it with ours`, { key });
        const hostLease = await this.ensureHostLease(req.ttlSeconds);
        return this.registry.updateSubnet(key, attrsNow, hostLease, garbage.modRevision);
      }
    }
    const decision = allocate({
      config: req.config, leases: listing.leases, publicIP: req.publicIP, publicIPv6: req.publicIPv6,
      preferredSubnet: preferred, preferredIPv6Subnet: this.preferredIPv6, random: this.random,
    });
    for (const r of decision.ignoredReservations) {
      this.log.warn('reservation for our PublicIP does not fit the network config; leaving it in place and not using it', {
        key: r.key,
        publicIP: req.publicIP,
      });
    }
    for (const l of decision.toDelete) {
      this.log.info(`Found lease (${formatIPv4Cidr(l.subnet)}) for current IP (${req.publicIP}) but not compatible with current config, deleting`, { key: l.key });
      await this.registry.deleteSubnet(l.key, l.modRevision);
    }
    const attrs = attrsNow;
    if (decision.kind === 'reuse') {
      const old = decision.lease;
      this.log.info(`Found lease (${formatIPv4Cidr(old.subnet)}) for current IP (${req.publicIP}), reusing`, {
        key: old.key,
        reservation: isReservation(old),
      });
      // A reservation stays a reservation (no etcd lease); anything else moves onto ours.
      const hostLease = isReservation(old) ? null : await this.ensureHostLease(req.ttlSeconds);
      return this.registry.updateSubnet(old.key, attrs, hostLease, old.modRevision);
    }
    const key = formatSubnetKey(decision.subnet, decision.ipv6Subnet);
    const hostLease = await this.ensureHostLease(req.ttlSeconds);
    const lease = await this.registry.createSubnet(key, attrs, hostLease);
    if (lease !== null) {
      const how = decision.source === 'preferred' ? 'previously leased subnet' : 'free subnet';
      const v6 = decision.ipv6Subnet === null ? '' : ` ipv6: ${formatCidr(decision.ipv6Subnet)}`;
      this.log.info(`Allocated lease (${formatIPv4Cidr(decision.subnet)}${v6}) to current node (${req.publicIP})`, { key, from: how });
    }
    return lease;
  }

  /** The one etcd lease of this host: granted once, re-granted only after it is lost. */
  private async ensureHostLease(ttlSeconds: number): Promise<HostLease> {
    const cur = this.hostLease;
    if (cur !== null && !cur.lost && cur.ttlSeconds === ttlSeconds) return cur;
    if (cur !== null) {
      this.unsubscribeLost?.();
      cur.release();
    }
    const lease = await this.registry.grantHostLease(ttlSeconds);
    this.hostLease = lease;
    this.unsubscribeLost = lease.onLost((err) => {
      if (this.hostLease === lease && this.own?.etcdLeaseId === lease.id) this.onLost(err);
    });
    this.log.debug('granted etcd lease', { lease: lease.id, ttlSeconds });
    return lease;
  }

  private hold(lease: Lease): void {
    const previousKey = this.own?.key ?? null;
    this.own = lease;
    this.setState('held');
    if (previousKey !== lease.key) this.rebuildPeers(true);
    this.startSync();
    // The etcd lease may have been lost while we were writing: re-check now that we hold it.
    if (lease.etcdLeaseId !== null && this.hostLease?.id === lease.etcdLeaseId && this.hostLease.lost) {
      this.onLost(new WeftError('LEASE_CONFLICT', `etcd lease ${lease.etcdLeaseId} lost while acquiring`, { retryable: true }));
    }
  }

  /** The held lease is gone: re-acquire in the background, preferring the same subnet. */
  private onLost(err: WeftError): void {
    const previous = this.own;
    const req = this.request;
    if (this.stateValue !== 'held' || previous === null || req === null) return;
    this.log.warn(`lost our lease ${previous.key}: ${describeError(err)}; re-acquiring (preferring the same subnet)`);
    this.setState('reacquiring');
    this.preferredIPv6 = previous.ipv6Subnet;
    this.emit('lost', err, previous);
    this.acquireLoop(req, previous.subnet, this.closing.signal, true).then(
      (lease) => {
        this.hold(lease);
        this.log.info(`re-acquired lease ${lease.key}${lease.key === previous.key ? ' (same subnet)' : ` (subnet changed from ${previous.key})`}`);
        this.emit('lease', lease, previous);
      },
      () => undefined, // only close() ends the loop
    );
  }

  // ---- peers ---------------------------------------------------------------------------------

  /**
   * Follow the other hosts' leases. The listener first gets a snapshot, then one call per change;
   * after a watch reset (compaction) a fresh snapshot. Our own key is never included; malformed
   * values are skipped (one warning per key). Returns an unsubscribe function.
   */
  watchPeers(listener: PeerListener): () => void {
    if (this.stateValue === 'closed') throw closedError('watch peers');
    const entry = { primed: false };
    this.peerListeners.set(listener, entry);
    if (this.haveSnapshot) {
      queueMicrotask(() => {
        if (this.peerListeners.get(listener) !== entry || entry.primed) return;
        entry.primed = true;
        this.call(listener, { type: 'snapshot' });
      });
    }
    this.startSync();
    return () => {
      this.peerListeners.delete(listener);
    };
  }

  private startSync(): void {
    if (this.syncStarted || this.stateValue === 'closed') return;
    this.syncStarted = true;
    this.syncDone = this.syncLoop().catch((err: unknown) => {
      if (!this.closing.signal.aborted) this.log.error(`peer watch stopped: ${describeError(err)}`);
    });
  }

  private async syncLoop(): Promise<void> {
    const signal = this.closing.signal;
    let backoff = this.timing.retryMinMs;
    let failing = false;
    while (!signal.aborted) {
      let listing;
      try {
        listing = await this.registry.listSubnets();
      } catch (err) {
        if (signal.aborted) return;
        if (!failing) this.log.warn(`list peer leases: ${describeError(err)}; retrying`);
        failing = true;
        await this.clock.sleep(this.jitter(backoff), signal).catch(() => undefined);
        backoff = Math.min(backoff * 2, this.timing.retryMaxMs);
        continue;
      }
      if (signal.aborted) return;
      if (failing) this.log.info('peer leases listed again');
      failing = false;
      backoff = this.timing.retryMinMs;

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
        this.watch = this.registry.watchSubnets((BigInt(listing.revision) + 1n).toString(), (ev) => {
          if (ev.type === 'reset') {
            signal.removeEventListener('abort', onAbort);
            resolve(ev.reason);
          } else {
            this.onWatchEvent(ev);
          }
        });
      });
      const w = this.watch;
      this.watch = null;
      if (signal.aborted) {
        await w?.close();
        return;
      }
      this.log.info(`lease watch reset (${reason}); re-listing`);
    }
  }

  private onWatchEvent(ev: Exclude<SubnetWatchEvent, { type: 'reset' }>): void {
    const ownKey = this.own?.key ?? null;
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
          this.onOwnGone(new WeftError('BAD_DATA', `our key ${ev.key} was overwritten with a malformed value`));
        }
        // A peer's lease overwritten with garbage keeps its last valid value (flannel, too, skips
        // such an event): a typo in etcd must not cut traffic to a host that is still there. The
        // key's deletion or expiry, or a valid value, ends that.
        return;
      }
    }
  }

  private checkOwnRemoved(revision: string | undefined): void {
    const own = this.own;
    if (own === null || this.stateValue !== 'held') return;
    // A deletion older than our write is history (e.g. the expiry that made us re-acquire).
    if (revision !== undefined && BigInt(revision) < BigInt(own.modRevision)) return;
    this.onOwnGone(new WeftError('LEASE_CONFLICT', `our key ${own.key} was deleted from etcd`, { retryable: true }));
  }

  private checkOwnOverwritten(lease: Lease): void {
    const own = this.own;
    if (own === null || this.stateValue !== 'held') return;
    if (BigInt(lease.modRevision) <= BigInt(own.modRevision)) return;
    if (lease.attrs.PublicIP === own.attrs.PublicIP) return;
    this.onOwnGone(new WeftError('LEASE_CONFLICT', `our key ${own.key} was taken over by ${lease.attrs.PublicIP}`, { retryable: true }));
  }

  /** After a (re-)list: our key must still be there (and ours). */
  private checkOwnInListing(revision: string): void {
    const own = this.own;
    if (own === null || this.stateValue !== 'held') return;
    // A listing taken before our own write says nothing about it.
    if (BigInt(revision) < BigInt(own.modRevision)) return;
    const cur = this.all.get(own.key);
    if (cur === undefined) {
      if (!this.warnedInvalid.has(own.key)) this.checkOwnRemoved(undefined);
      else this.onOwnGone(new WeftError('BAD_DATA', `our key ${own.key} holds a malformed value`));
    } else if (cur.attrs.PublicIP !== own.attrs.PublicIP) {
      this.checkOwnOverwritten(cur);
    }
  }

  private onOwnGone(err: WeftError): void {
    const own = this.own;
    if (own === null || this.stateValue !== 'held') return;
    this.onLost(err);
  }

  /** peers = all − own key. `announce`: tell primed listeners with a snapshot. */
  private rebuildPeers(announce: boolean): void {
    const ownKey = this.own?.key ?? null;
    this.peers.clear();
    for (const [k, l] of this.all) if (k !== ownKey) this.peers.set(k, l);
    if (announce && this.haveSnapshot) this.emitSnapshot();
  }

  private emitSnapshot(): void {
    for (const [listener, entry] of [...this.peerListeners]) {
      entry.primed = true;
      this.call(listener, { type: 'snapshot' });
    }
  }

  private emitChange(change: LeaseEvent): void {
    for (const [listener, entry] of [...this.peerListeners]) if (entry.primed) this.call(listener, change);
  }

  private call(listener: PeerListener, change: PeerChange): void {
    try {
      listener(this.peers, change);
    } catch (err) {
      // A listener bug must not stop the watch that every other part of the daemon relies on.
      this.log.error(`peer listener threw on ${change.type}: ${describeError(err)}`);
    }
  }

  /** One warning per malformed key until it is fixed or removed. `full`: this is the whole set. */
  private warnInvalid(invalid: readonly InvalidSubnet[], full: boolean): void {
    if (full) {
      const now = new Set(invalid.map((i) => i.key));
      for (const k of [...this.warnedInvalid]) if (!now.has(k)) this.warnedInvalid.delete(k);
    }
    for (const { key, error } of invalid) {
      if (this.warnedInvalid.has(key)) continue;
      this.warnedInvalid.add(key);
      this.log.warn(`skipping malformed lease ${key}: ${describeError(error)}`, { key });
    }
  }

  // ---- CLI -------------------------------------------------------------------------------------

  /** Every lease with its expiration (null: a reservation), sorted by subnet. For `weft leases`. */
  async listLeases(): Promise<Lease[]> {
    const listing = await this.registry.listSubnets({ expirations: true });
    return [...listing.leases].sort((a, b) => a.subnet.ip - b.subnet.ip || a.subnet.prefixLen - b.subnet.prefixLen);
  }

  // ---- shutdown --------------------------------------------------------------------------------

  /**
   * Stop the watch and the keepalive. Revokes nothing and deletes nothing: the key stays until its
   * TTL, and a restart re-adopts it. Does not close the registry (its creator does). Idempotent.
   */
  async close(): Promise<void> {
    if (this.stateValue === 'closed') return;
    this.setState('closed');
    this.closing.abort(closedError('operation'));
    this.peerListeners.clear();
    this.unsubscribeLost?.();
    this.hostLease?.release();
    await this.watch?.close();
    await this.syncDone;
  }

  // ---- helpers ---------------------------------------------------------------------------------

  private currentState(): LeaseManagerState {
    return this.stateValue;
  }

  private setState(state: LeaseManagerState): void {
    if (this.stateValue === state) return;
    if (this.stateValue === 'closed') return;
    this.stateValue = state;
    this.emit('state', state);
  }

  private combine(signal: AbortSignal | undefined): AbortSignal {
    return signal === undefined ? this.closing.signal : AbortSignal.any([signal, this.closing.signal]);
  }

  private throwIfAborted(signal: AbortSignal): void {
    if (signal.aborted) throw signal.reason;
  }

  /** ±25 % so that hosts restarted together do not retry in lockstep. */
  private jitter(ms: number): number {
    return Math.round(ms * (0.75 + this.random() * 0.5));
  }
}

function closedError(op: string): WeftError {
  return new WeftError('INTERNAL', `${op}: the lease manager is closed`);
}

/** Our lease value for a request: flannel's LeaseAttrs, BackendV6Data only with an IPv6 device. */
function attrsOf(req: AcquireRequest): LeaseAttrs {
  return {
    PublicIP: req.publicIP,
    PublicIPv6: req.publicIPv6,
    BackendType: req.backendType,
    BackendData: req.backendData,
    ...(req.backendV6Data === undefined ? {} : { BackendV6Data: req.backendV6Data }),
  };
}
