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
 * The peer view (watchPeers) is a separate loop in its own class (peer-view.ts): list → snapshot
 * → watch from revision + 1 → events; on a watch reset (compaction) list again and emit a fresh
 * snapshot. It also feeds the lease state machine: it is how "our key was deleted" is seen.
 */
import { EventEmitter } from 'node:events';
import { Backoff } from '../backoff';
import { systemClock, type Clock } from '../clock';
import type { NetworkConfig } from '../config/types';
import { WeftError, describeError, isRetryable } from '../errors';
import { formatCidr, formatIPv4Cidr, ipNetsOverlap, sameNet, type IPFamily } from '../ip';
import type { Logger } from '../log';
import { allocate } from './allocate';
import { configKey, encodeLeaseAttrs, formatSubnetKey } from './codec';
import { PeerView, type PeerListener, type PeersSettled } from './peer-view';
import type { HostLease, LeaseRegistry, SubnetListing } from './registry';
import { isReservation, type IPv4Net, type IPv6Net, type Lease, type LeaseAttrs } from './types';

export type { PeerChange, PeerListener } from './peer-view';

export interface LeaseManagerOptions {
  readonly registry: LeaseRegistry;
  readonly log: Logger;
  readonly clock?: Pick<Clock, 'now' | 'sleep'>;
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

export interface LeaseManagerEvents {
  /** After a re-acquire: the new lease (subnet may differ from `previous`: rewrite subnet.env). */
  lease: [lease: Lease, previous: Lease];
  /** The held lease is gone (etcd lease lost, key deleted or taken); re-acquiring has started. */
  lost: [error: WeftError, previous: Lease];
  state: [state: LeaseManagerState];
}

const DEFAULTS = { configPollMs: 1000, configReminderMs: 60_000, retryMinMs: 500, retryMaxMs: 10_000 };
/**
 * How old a start-up listing (waitForConfig's, findOwnLease's) may be for acquire() to start from it. Correctness does not
 * depend on it (takeRecentListing); it only keeps an old one from costing a lost race.
 */
const RECENT_LISTING_MS = 5000;
/** Consecutive lost races before acquire starts backing off (something is very busy). */
const FREE_RACE_RETRIES = 5;

export class LeaseManager extends EventEmitter<LeaseManagerEvents> {
  private readonly registry: LeaseRegistry;
  private readonly log: Logger;
  private readonly clock: Pick<Clock, 'now' | 'sleep'>;
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
  /** waitForConfig's or findOwnLease's listing and when it was read (clock ms), for acquire()'s first attempt. */
  private recentListing: { readonly listing: SubnetListing; readonly at: number } | null = null;
  /** The other hosts' leases (peer-view.ts): the second loop, apart from our own lease's. */
  private readonly peerView: PeerView;

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
    this.peerView = new PeerView({
      registry: this.registry,
      log: this.log,
      clock: this.clock,
      backoff: this.backoff(),
      signal: this.closing.signal,
      own: () => this.own,
      held: () => this.stateValue === 'held',
      ownGone: (err) => this.onOwnGone(err),
    });
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
    const backoff = this.backoff();
    for (;;) {
      this.throwIfAborted(sig);
      let text: string | null;
      try {
        // The subnets come with the config (one round trip): findOwnLease and acquire start
        // from them (takeRecentListing says why that is safe).
        const snapshot = await this.registry.readNetwork();
        text = snapshot.config;
        if (text !== null) this.recentListing = { listing: snapshot.listing, at: this.clock.now() };
      } catch (err) {
        if (!isRetryable(err)) throw err;
        if (last !== 'unreachable') this.log.warn(`${describeError(err)}; retrying`);
        last = 'unreachable';
        await this.clock.sleep(backoff.next(), sig);
        continue;
      }
      backoff.reset();
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
      const lease = await this.acquireLoop(req, req.subnetFromFile, this.combine(req.signal), false, this.takeRecentListing());
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
      const listing = this.recentListingIfAny() ?? (await this.registry.listSubnets());
      this.recentListing ??= { listing, at: this.clock.now() };
      // An IPv6-only host's PublicIP is 0.0.0.0, like every other's: it is known by its PublicIPv6.
      const ours = listing.leases.filter((l) =>
        publicIP === '0.0.0.0' ? publicIPv6 !== null && l.attrs.PublicIPv6 === publicIPv6 : l.attrs.PublicIP === publicIP);
      return (subnet === null ? undefined : ours.find((l) => sameNet(l.subnet, subnet))) ?? ours[0] ?? null;
    } catch (err) {
      this.log.debug('could not look up our previous lease', { error: describeError(err) });
      return null;
    }
  }

  /**
   * The listing waitForConfig or findOwnLease just read, once, if it is at most
   * RECENT_LISTING_MS old; null otherwise. acquire() starts from it instead of listing again
   * (start-up reads etcd once before writing its key: config and subnets together).
   *
   * Why a listing read a moment earlier is as good as a fresh one — what a reused lease must
   * verify before subnet.env is written (flannel's tryAcquireLease, docs/flannel-compat.md §3):
   * the key still holds our PublicIP's lease, unchanged; its subnet fits the current config; it
   * is attached to a live etcd lease of ours. The first is checked by etcd itself, not by the
   * listing: updateSubnet's transaction compares the key's mod revision with the listing's, so a
   * key deleted, taken or rewritten since the listing fails the transaction (null: re-list and
   * allocate again, as for any lost race). The second is allocate()'s decision on the config
   * we hold, whatever the listing's age; the third is the transaction's lease attachment (etcd
   * refuses an unknown lease). A new subnet is likewise created only if absent (version == 0)
   * and an incompatible lease deleted only if unchanged. A stale listing can cost a lost race,
   * never a wrong write.
   */
  private takeRecentListing(): SubnetListing | null {
    const listing = this.recentListingIfAny();
    this.recentListing = null;
    return listing;
  }

  /** The recent listing (waitForConfig's or findOwnLease's) if young enough; left in place. */
  private recentListingIfAny(): SubnetListing | null {
    const recent = this.recentListing;
    if (recent === null || this.clock.now() - recent.at > RECENT_LISTING_MS) {
      this.recentListing = null;
      return null;
    }
    return recent.listing;
  }

  /**
   * Keep trying until a lease is held. `background`: never give up (re-acquire). `firstListing`:
   * the first attempt's listing when one was just read (takeRecentListing), else null.
   */
  private async acquireLoop(
    req: AcquireRequest, preferred: IPv4Net | null, signal: AbortSignal, background: boolean, firstListing: SubnetListing | null = null,
  ): Promise<Lease> {
    let listing = firstListing;
    let races = 0;
    const backoff = this.backoff();
    let lastProblem: string | null = null;
    let retriedLostLease = false;
    for (;;) {
      this.throwIfAborted(signal);
      try {
        // The latest request: setBackendData() may have changed it meanwhile.
        const given = listing;
        listing = null; // a retry (lost race, error) lists again
        const lease = await this.tryAcquire(this.request ?? req, preferred, background, given);
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
        const delay = backoff.next();
        await this.clock.sleep(isRetryable(err) ? delay : this.jitter(this.timing.retryMaxMs), signal);
      }
    }
  }

  /**
   * One pass of flannel's tryAcquireLease. Null: lost a race, try again. `reclaim`: `preferred` is
   * the subnet we held until just now, so a malformed value under its key (someone overwrote our
   * lease with garbage) is ours to overwrite; otherwise garbage makes a subnet look taken.
   */
  private async tryAcquire(req: AcquireRequest, preferred: IPv4Net | null, reclaim: boolean, given: SubnetListing | null): Promise<Lease | null> {
    const listing = given ?? (await this.registry.listSubnets());
    this.peerView.warnInvalid(listing.invalid, true);
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
    if (lease !== null && decision.ipv6Subnet !== null && decision.subnet.prefixLen > 0 && !(await this.keptAlone(lease))) return null;
    if (lease !== null) {
      const how = decision.source === 'preferred' ? 'previously leased subnet' : 'free subnet';
      const v6 = decision.ipv6Subnet === null ? '' : ` ipv6: ${formatCidr(decision.ipv6Subnet)}`;
      this.log.info(`Allocated lease (${formatIPv4Cidr(decision.subnet)}${v6}) to current node (${req.publicIP})`, { key, from: how });
    }
    return lease;
  }

  /**
   * Dual stack: whether the key just created is the only lease holding either of its subnets;
   * if not, it is deleted again (false: a lost race, allocate afresh). A dual-stack key is
   * "<IPv4>&<IPv6>", so etcd's create-if-absent (version == 0) guards the pair, not each half:
   * hosts that list before either writes can pick the same IPv4 subnet with different IPv6 ones
   * (or the reverse) and both get through — two hosts on one subnet, every peer routing it to
   * one of them (seen as a lab host unreachable for good right after start-up). A creator that
   * lists after its write sees every key written before it, so of two clashing creates at least
   * the later one gives way; both may (then both allocate again at random). IPv4-only and
   * IPv6-only keys are the subnet itself: create-if-absent is exact there, no listing needed.
   * flanneld does not check this (its dual-stack hosts can collide the same way).
   */
  private async keptAlone(created: Lease): Promise<boolean> {
    const listing = await this.registry.listSubnets();
    const clash = listing.leases.find((l) => l.key !== created.key && (
      (l.subnet.prefixLen > 0 && ipNetsOverlap(l.subnet, created.subnet)) ||
      (l.ipv6Subnet !== null && created.ipv6Subnet !== null && ipNetsOverlap(l.ipv6Subnet, created.ipv6Subnet))));
    if (clash === undefined) return true;
    this.log.info('another host took one of our subnets at the same moment under another key; giving ours back and allocating again', {
      key: created.key, other: clash.key, otherPublicIP: clash.attrs.PublicIP,
    });
    // Only if unchanged since our create: never a key someone rewrote meanwhile.
    await this.registry.deleteSubnet(created.key, created.modRevision);
    return false;
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
    if (previousKey !== lease.key) this.peerView.ownChanged();
    this.peerView.start();
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
   * Follow the other hosts' leases (PeerView). The listener first gets a snapshot, then one call
   * per change; after a watch reset (compaction) a fresh snapshot. `settled`, when given, after
   * the changes of each watch message (and each snapshot). Our own key is never included;
   * malformed values are skipped (one warning per key). Returns an unsubscribe function.
   */
  watchPeers(listener: PeerListener, settled?: PeersSettled): () => void {
    if (this.stateValue === 'closed') throw closedError('watch peers');
    return this.peerView.subscribe(listener, settled);
  }

  private onOwnGone(err: WeftError): void {
    const own = this.own;
    if (own === null || this.stateValue !== 'held') return;
    this.onLost(err);
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
    this.unsubscribeLost?.();
    this.hostLease?.release();
    await this.peerView.close();
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

  /** Bounded exponential, ±25 % so that hosts restarted together do not retry in lockstep. */
  private backoff(): Backoff {
    return new Backoff({ initialMs: this.timing.retryMinMs, maxMs: this.timing.retryMaxMs, jitter: 0.25, random: this.random });
  }

  /** ±25 %, as backoff(). */
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
