/**
 * The LeaseRegistry on etcd's v3 API, written once over a narrow wire (etcd-wire.ts): the JSON
 * gateway (etcd-http-wire.ts, the default) or gRPC (etcd-grpc-wire.ts). Here live flannel's
 * transaction rules, the host lease's keepalive loop, watch resume/de-duplication and the
 * mapping of failures to WeftError; create-registry.ts picks the wire.
 *
 * Watch correctness: every event of one revision (a multi-key transaction, a prefix delete)
 * is delivered; after a reconnect, events below the next undelivered revision are skipped.
 * test/e2e/helpers/registry-contract.ts has the contract tests that test/e2e/lease-etcd-http.test.ts
 * and test/e2e/lease-etcd.test.ts run against both wires.
 */
import { Backoff } from '../backoff';
import { WeftError, describeError } from '../errors';
import { silentLogger, type Logger } from '../log';
import { DEFAULT_PREFIX, configKey, decodeLease, encodeLeaseAttrs, fullSubnetKey, subnetsDir } from './codec';
import {
  decodeSubnetKv,
  etcdError,
  expirationsOf,
  keepaliveTiming,
  leaseGoneError,
  registryClosedError,
  removedEvent,
  revokeIfEmpty,
  splitDecoded,
  watchEvent,
  type DecodedKv,
  type EtcdClientOptions,
  type KeepaliveTiming,
} from './etcd-common';
import type { EtcdWire, TxnCompare, TxnOp, TxnResult, WireEvent, WireKv, WireWatch } from './etcd-wire';
import type { HostLease, LeaseRegistry, NetworkSnapshot, RegistryStats, SubnetListing, SubnetWatch, SubnetWatchEvent } from './registry';
import type { Lease, LeaseAttrs } from './types';

interface WatchCounters {
  watchResponses: number;
  watchRevisionLag: number;
  lastWatchResponseAt: number | null;
  watchReconnects: number;
}

export class EtcdLeaseRegistry implements LeaseRegistry {
  readonly prefix: string;
  readonly location: string;
  private readonly log: Logger;
  private readonly renewMarginSeconds: number | null;
  private readonly hostLeases = new Set<EtcdHostLease>();
  private readonly watches = new Set<EtcdSubnetWatch | EtcdConfigWatch>();
  private closed = false;
  /** Revocations of emptied etcd leases still under way (tidyInBackground); settled() awaits them. */
  private readonly tidying = new Set<Promise<void>>();
  /** Figures for /metrics; the watches update them. */
  private readonly counters: WatchCounters = { watchResponses: 0, watchRevisionLag: 0, lastWatchResponseAt: null, watchReconnects: 0 };

  /** `opts`: the options the wire was made from (prefix, log, renew margin). */
  constructor(private readonly wire: EtcdWire, opts: EtcdClientOptions) {
    this.prefix = opts.prefix ?? DEFAULT_PREFIX;
    this.location = wire.location;
    this.log = (opts.log ?? silentLogger).child({ component: 'etcd' });
    this.renewMarginSeconds = opts.renewMarginSeconds ?? null;
  }

  stats(): RegistryStats {
    return {
      reconnects: this.wire.reconnects() + this.counters.watchReconnects,
      watchResponses: this.counters.watchResponses,
      watchRevisionLag: this.counters.watchRevisionLag,
      lastWatchResponseAt: this.counters.lastWatchResponseAt,
    };
  }

  async getConfig(): Promise<string | null> {
    const key = configKey(this.prefix);
    const res = await this.call(`get ${key}`, () => this.wire.range(key, false));
    const kv = res.kvs[0];
    return kv === undefined ? null : kv.value.toString();
  }

  async readNetwork(): Promise<NetworkSnapshot> {
    const key = configKey(this.prefix);
    const dir = subnetsDir(this.prefix);
    const res = await this.call(`get ${key} and list ${dir}`, () => this.wire.ranges([{ key, prefix: false }, { key: dir, prefix: true }]));
    const config = res.kvs[0]?.[0];
    const { leases, invalid } = splitDecoded((res.kvs[1] ?? []).map((kv) => this.decodeKv(kv, null)));
    return { config: config === undefined ? null : config.value.toString(), listing: { leases, invalid, revision: res.revision } };
  }

  watchConfig(onChange: () => void): SubnetWatch {
    const w: EtcdConfigWatch = new EtcdConfigWatch(configKey(this.prefix), onChange, this.log, () => this.watches.delete(w));
    if (this.closed) return w;
    this.watches.add(w);
    w.start(this.wire);
    return w;
  }

  async listSubnets(opts: { readonly expirations?: boolean } = {}): Promise<SubnetListing> {
    const dir = subnetsDir(this.prefix);
    const res = await this.call(`list ${dir}`, () => this.wire.range(dir, true));
    const expirations = opts.expirations === true ? await this.expirationsOf(res.kvs) : new Map<string, Date | null>();
    const { leases, invalid } = splitDecoded(res.kvs.map((kv) => this.decodeKv(kv, expirations.get(kv.leaseId) ?? null)));
    return { leases, invalid, revision: res.revision };
  }

  async grantHostLease(ttlSeconds: number): Promise<HostLease> {
    const res = await this.call(`grant lease (TTL ${ttlSeconds} s)`, () => this.wire.grant(ttlSeconds));
    const timing = keepaliveTiming(ttlSeconds, this.renewMarginSeconds);
    const handle: EtcdHostLease = new EtcdHostLease(res.id, ttlSeconds, res.ttl, timing, this.log, this.wire, () => this.hostLeases.delete(handle));
    this.hostLeases.add(handle);
    return handle;
  }

  async createSubnet(key: string, attrs: LeaseAttrs, lease: HostLease): Promise<Lease | null> {
    const full = fullSubnetKey(this.prefix, key);
    const value = encodeLeaseAttrs(attrs);
    // flannel's createSubnet: if version(key) == 0 then put(key, value, lease).
    const res = await this.txn(`create ${full}`, lease, [{ key: full, target: 'version', version: '0' }], [
      { put: { key: full, value, leaseId: lease.id } },
    ]);
    if (!res.succeeded) return null;
    return decodeLease(key, value, { etcdLeaseId: lease.id, modRevision: res.revision });
  }

  async updateSubnet(key: string, attrs: LeaseAttrs, lease: HostLease | null, expectModRevision: string): Promise<Lease | null> {
    const full = fullSubnetKey(this.prefix, key);
    const value = encodeLeaseAttrs(attrs);
    const leaseId = lease === null ? '0' : lease.id;
    // prev_kv: which lease the key moves off. lease 0 = no lease.
    const res = await this.txn(`update ${full}`, lease, [{ key: full, target: 'mod', modRevision: expectModRevision }], [
      { put: { key: full, value, leaseId, prevKv: true } },
    ]);
    if (!res.succeeded) return null;
    const prevLease = res.prevLeaseId;
    if (prevLease !== undefined && prevLease !== '0' && prevLease !== leaseId) this.tidyInBackground(prevLease, full);
    return decodeLease(key, value, { etcdLeaseId: lease === null ? null : lease.id, modRevision: res.revision });
  }

  async deleteSubnet(key: string, expectModRevision?: string): Promise<boolean> {
    const full = fullSubnetKey(this.prefix, key);
    const compare: TxnCompare[] = expectModRevision === undefined ? [] : [{ key: full, target: 'mod', modRevision: expectModRevision }];
    const res = await this.txn(`delete ${full}`, null, compare, [{ deleteKey: full }]);
    return res.succeeded && res.deleted !== undefined && res.deleted !== '0';
  }

  async createReservation(key: string, attrs: LeaseAttrs): Promise<Lease | null> {
    const full = fullSubnetKey(this.prefix, key);
    const value = encodeLeaseAttrs(attrs);
    // createSubnet's transaction without a lease: the key has no TTL.
    const res = await this.txn(`create reservation ${full}`, null, [{ key: full, target: 'version', version: '0' }], [{ put: { key: full, value } }]);
    if (!res.succeeded) return null;
    return decodeLease(key, value, { etcdLeaseId: null, modRevision: res.revision });
  }

  async revokeLease(leaseId: string): Promise<boolean> {
    const op = `revoke lease ${leaseId}`;
    if (this.closed) throw registryClosedError(op);
    try {
      await this.wire.revoke(leaseId);
      return true;
    } catch (err) {
      if (this.wire.classify(err) === 'leaseNotFound') return false;
      throw this.wrap(op, err);
    }
  }

  async putConfig(text: string): Promise<void> {
    const key = configKey(this.prefix);
    await this.txn(`put ${key}`, null, [], [{ put: { key, value: text } }]);
  }

  watchSubnets(fromRevision: string, handler: (event: SubnetWatchEvent) => void, responseDone?: () => void): SubnetWatch {
    const w: EtcdSubnetWatch = new EtcdSubnetWatch(fromRevision, handler, responseDone, this.log, this.counters, (kv) => this.decodeKv(kv, null),
      (kv) => removedEvent(this.prefix, kv.key, kv.modRevision), () => this.watches.delete(w));
    if (this.closed) {
      w.fail('the lease registry is closed');
      return w;
    }
    this.watches.add(w);
    w.start(this.wire, subnetsDir(this.prefix));
    return w;
  }

  settled(): Promise<void> {
    return Promise.all([...this.tidying]).then(() => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // A revoke still in flight is abandoned: wire.close() below ends its request, and
    // revokeIfEmpty only logs (the lease then expires at the end of its TTL, as flannel's do).
    await Promise.all([...this.watches].map((w) => w.close()));
    for (const l of [...this.hostLeases]) l.release();
    this.wire.close();
  }

  // ---- internals -------------------------------------------------------------------------------

  /**
   * Revoke the etcd lease our key just moved off if it holds no other key (timetolive + revoke:
   * two round trips, the revoke an fsync-bound write) — after updateSubnet has returned, so that
   * a restart writes subnet.env without waiting for it. Only tidying: if it fails or is cut short
   * by close(), the empty lease expires at the end of its TTL. settled() waits for it.
   */
  private tidyInBackground(leaseId: string, movedKey: string): void {
    // Through call(): once closed, a step not yet sent is not sent (revokeIfEmpty logs it at debug).
    const tidy: Promise<void> = revokeIfEmpty(this.log, leaseId, movedKey,
      () => this.call(`query TTL of lease ${leaseId}`, () => this.wire.timeToLive(leaseId, true)),
      () => this.call(`revoke lease ${leaseId}`, () => this.wire.revoke(leaseId)))
      .finally(() => this.tidying.delete(tidy));
    this.tidying.add(tidy);
  }

  /** null: not a subnet key at all (something nested under subnets/). */
  private decodeKv(kv: WireKv, expiration: Date | null): DecodedKv | null {
    return decodeSubnetKv(this.prefix, kv, expiration);
  }

  private expirationsOf(kvs: readonly WireKv[]): Promise<Map<string, Date | null>> {
    return expirationsOf(
      kvs.map((kv) => kv.leaseId),
      async (id) => (await this.call(`query TTL of lease ${id}`, () => this.wire.timeToLive(id, false))).ttl,
    );
  }

  private async call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw registryClosedError(op);
    try {
      return await fn();
    } catch (err) {
      throw this.wrap(op, err);
    }
  }

  /** A transaction; when it writes under `lease`, etcd's "lease not found" means the lease is lost. */
  private async txn(op: string, lease: HostLease | null, compare: readonly TxnCompare[], ops: readonly TxnOp[]): Promise<TxnResult> {
    if (this.closed) throw registryClosedError(op);
    try {
      return await this.wire.txn(compare, ops);
    } catch (err) {
      if (lease !== null && this.wire.classify(err) === 'leaseNotFound') {
        if (lease instanceof EtcdHostLease) lease.markLost(err);
        throw leaseGoneError(op, lease, err);
      }
      throw this.wrap(op, err);
    }
  }

  private wrap(op: string, err: unknown): WeftError {
    const failure = this.wire.classify(err);
    // etcd's own answer reads best as its message; a transport error needs its cause chain
    // (Node's ECONNREFUSED to several addresses is an AggregateError with an empty message).
    const detail = failure !== 'unreachable' && err instanceof Error && err.message !== '' ? err.message : describeError(err);
    return etcdError(this.location, op, err, failure === 'leaseNotFound' ? 'answered' : failure, detail);
  }
}

/**
 * The host's etcd lease, kept alive by one short keepalive round trip per interval
 * (KeepaliveTiming) rather than a client library's own loop (etcd3's retries every 100 ms, and
 * re-opens its gRPC channel each time: ~20 TCP connects a second while etcd is down):
 *
 *   alive ──renewal fails──► failing (retry with Backoff; one warning) ──renewal ok──► alive
 *     │                         │
 *     └──── etcd answers TTL ≤ 0 or "lease not found" (expired during an outage, revoked) ────► lost (onLost, once)
 *
 * The lease is never declared lost locally: only etcd knows (a restarted etcd extends every
 * lease by its TTL, so a whole-cluster outage longer than the TTL loses nothing).
 */
class EtcdHostLease implements HostLease {
  private lostFlag = false;
  private released = false;
  private failingSince: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private renewal: AbortController | null = null;
  private readonly backoff: Backoff;
  /** Last confirmed grant/keepalive + the TTL etcd gave (ms since the epoch), for expiresAt. */
  private expiresMs: number;
  private readonly listeners = new Set<(err: WeftError) => void>();

  /** `grantedTtl`: the TTL etcd granted, in seconds. */
  constructor(
    readonly id: string,
    readonly ttlSeconds: number,
    grantedTtl: number,
    private readonly timing: KeepaliveTiming,
    private readonly log: Logger,
    private readonly wire: EtcdWire,
    private readonly forget: () => void,
  ) {
    this.backoff = new Backoff({ initialMs: timing.retryMinMs, maxMs: timing.retryMaxMs, jitter: 0.25 });
    this.expiresMs = Date.now() + grantedTtl * 1000;
    this.schedule(timing.intervalMs);
  }

  get lost(): boolean {
    return this.lostFlag;
  }

  get expiresAt(): Date | null {
    return this.lostFlag ? null : new Date(this.expiresMs);
  }

  onLost(listener: (err: WeftError) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.listeners.clear();
    this.stop(); // stops renewing; does NOT revoke
    this.forget();
  }

  markLost(cause: unknown): void {
    if (this.lostFlag) return;
    this.lostFlag = true;
    this.stop();
    if (this.released) return;
    const err = new WeftError('LEASE_CONFLICT', `etcd lease ${this.id} (TTL ${this.ttlSeconds} s) is expired or revoked`, { cause, retryable: true });
    for (const l of [...this.listeners]) l(err);
    this.forget();
  }

  private stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.renewal?.abort(new Error('lease released'));
    this.renewal = null;
  }

  private schedule(ms: number): void {
    if (this.released || this.lostFlag) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.renew();
    }, ms);
    if (!this.wire.keepsProcessAlive) this.timer.unref();
  }

  private async renew(): Promise<void> {
    let ttl: number;
    const renewal = (this.renewal = new AbortController());
    try {
      ttl = await this.wire.keepaliveOnce(this.id, this.timing.timeoutMs, renewal.signal);
    } catch (err) {
      if (this.released || this.lostFlag) return;
      if (this.wire.classify(err) === 'leaseNotFound') {
        this.markLost(err);
        return;
      }
      if (this.failingSince === null) {
        this.failingSince = Date.now();
        this.log.warn('etcd lease keepalive failing; retrying with backoff (the lease survives outages shorter than its TTL)', {
          lease: this.id,
          ttlSeconds: this.ttlSeconds,
          error: describeError(err),
        });
      }
      this.schedule(this.backoff.next());
      return;
    } finally {
      if (this.renewal === renewal) this.renewal = null;
    }
    if (this.released || this.lostFlag) return;
    if (!(ttl > 0)) {
      this.markLost(new Error(`etcd answered the keepalive of lease ${this.id} with TTL ${ttl}: it expired or was revoked`));
      return;
    }
    this.expiresMs = Date.now() + ttl * 1000;
    if (this.failingSince !== null) {
      this.log.info('etcd lease keepalive recovered', { lease: this.id, failedForMs: Date.now() - this.failingSince, ttlLeftSeconds: ttl });
    }
    this.backoff.reset();
    this.failingSince = null;
    this.schedule(this.timing.intervalMs);
  }
}

/**
 * The watch on `<prefix>/config` (LeaseRegistry.watchConfig): it starts from the current
 * revision on every (re)connect and calls `onChange` then — the caller re-reads the key, which
 * covers whatever changed while the stream was down without keeping a resume revision (no
 * compaction can cancel it) — and after each event on the key. On the JSON gateway it shares the
 * subnets' stream (etcd-http-wire.ts HttpWatchSession): no connection, timer or probe of its own.
 */
class EtcdConfigWatch implements SubnetWatch {
  private done = false;
  private stream: WireWatch | null = null;
  private retry: NodeJS.Timeout | null = null;
  private readonly backoff = new Backoff({ initialMs: 1000, maxMs: 30_000 });

  constructor(private readonly key: string, private readonly onChange: () => void, private readonly log: Logger, private readonly forget: () => void) {}

  start(wire: EtcdWire): void {
    if (this.done) return;
    // The watch is a prefix watch on the key: "<prefix>/config" also covers "<prefix>/configX".
    this.stream = wire.watchPrefix(this.key, {
      resumeRevision: () => '0', // from now: the read after `created` covers the past
      response: (r) => {
        if (this.done) return;
        if (r.created) this.backoff.reset();
        if (r.created || r.events.some((ev) => ev.kv.key === this.key)) this.onChange();
      },
      disconnected: () => undefined, // the subnets' watch reports the outage
      canceled: (why) => {
        if (this.done) return;
        const inMs = this.backoff.next();
        this.log.warn(`etcd ended the watch on ${this.key} (${why}); watching it again in ${Math.round(inMs / 1000)} s`);
        this.stream = null;
        this.retry = setTimeout(() => {
          this.retry = null;
          this.start(wire);
        }, inMs);
        this.retry.unref();
      },
    });
  }

  async close(): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.forget();
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
    const s = this.stream;
    this.stream = null;
    await s?.close();
  }
}

/**
 * A prefix watch: the wire keeps the stream up (reconnecting with a Backoff, failing over
 * across endpoints); this keeps the resume point — the next revision not yet delivered — and
 * delivers each event once.
 *
 *   connecting ──created──► streaming ──stream breaks──► (wire) backoff ──► connecting
 *       │                      │
 *       └──────────────────────┴──canceled (compacted) ──► done: 'reset' delivered once
 *   close() from any state ──► done (nothing delivered after close() resolves)
 */
class EtcdSubnetWatch implements SubnetWatch {
  private done = false;
  private disconnected = false;
  private stream: WireWatch | null = null;
  /** Next revision not delivered yet: the resume point. */
  private nextRevision: bigint;

  constructor(
    fromRevision: string,
    private readonly handler: (event: SubnetWatchEvent) => void,
    /** LeaseRegistry.watchSubnets' responseDone: after a response that delivered an event. */
    private readonly responseDone: (() => void) | undefined,
    private readonly log: Logger,
    private readonly counters: WatchCounters,
    private readonly decode: (kv: WireKv) => DecodedKv | null,
    private readonly removed: (kv: WireKv) => SubnetWatchEvent | null,
    private readonly forget: () => void,
  ) {
    this.nextRevision = BigInt(fromRevision);
  }

  start(wire: EtcdWire, dir: string): void {
    this.stream = wire.watchPrefix(dir, {
      resumeRevision: () => this.nextRevision.toString(),
      response: (r) => this.onResponse(r.created, r.events, r.headerRevision),
      disconnected: (err) => {
        if (this.disconnected || this.done) return;
        this.disconnected = true;
        this.log.warn('etcd watch disconnected; resuming when etcd is back', { error: err === null ? 'stream ended' : describeError(err) });
      },
      canceled: (why) => this.fail(`etcd ended the watch from revision ${this.nextRevision} (${why})`),
    });
  }

  private onResponse(created: boolean, events: readonly WireEvent[], headerRevision: string | undefined): void {
    if (this.done) return;
    this.counters.watchResponses++;
    this.counters.lastWatchResponseAt = Date.now();
    if (created && this.disconnected) {
      this.disconnected = false;
      this.counters.watchReconnects++;
      this.log.info('etcd watch reconnected', { fromRevision: this.nextRevision.toString() });
    }
    // Every event of one revision (a multi-key transaction, a prefix delete) arrives in the
    // same response, all with that revision: decide "already delivered" against the resume
    // point as it was before this response, or all but the first would be dropped.
    const from = this.nextRevision;
    let delivered = false;
    for (const ev of events) {
      const rev = BigInt(ev.kv.modRevision);
      if (rev < from) continue; // replayed after a reconnect
      if (rev >= this.nextRevision) this.nextRevision = rev + 1n;
      const event = watchEvent(ev.deleted, ev.kv, this.removed, this.decode);
      if (event !== null) {
        this.handler(event);
        delivered = true;
      }
      if (this.done) return;
    }
    if (headerRevision !== undefined) this.counters.watchRevisionLag = Math.max(0, Number(BigInt(headerRevision) - (this.nextRevision - 1n)));
    // A progress report or a replay delivers nothing: nothing to act on.
    if (delivered && this.responseDone !== undefined) this.responseDone();
  }

  /** End the watch with 'reset' (delivered asynchronously, once). */
  fail(reason: string): void {
    if (this.done) return;
    this.done = true;
    this.forget();
    void this.stream?.close();
    this.stream = null;
    setImmediate(() => this.handler({ type: 'reset', reason }));
  }

  async close(): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.forget();
    const s = this.stream;
    this.stream = null;
    await s?.close();
  }
}

