/**
 * LeaseRegistry on etcd's v3 API through `etcd3` 1.1.2 — the only file that talks to etcd.
 *
 * Traps of etcd3 1.1.2 handled here (docs/dependencies.md):
 * - Its default circuit breaker fails EVERY call for 5 s after 3 errors, and a retry policy
 *   hides which error happened. We install our own policies (cockatiel 3 API, which the doc
 *   comment in etcd3's options.d.ts still shows in its old v2 form): no breaker for a single
 *   endpoint (nothing to fail over to), a 1 s breaker per endpoint with several, and one quick
 *   retry on another endpoint. The manager's own bounded backoff paces retries after that.
 * - Unary calls get a deadline, so a black-holed endpoint cannot hang acquire() forever.
 * - A watch from a compacted revision emits 'error' ("Watcher canceled: " with an empty reason)
 *   and is dropped by etcd3: we report 'reset' and the manager re-lists. An EventEmitter without
 *   an 'error' listener crashes the process, so every emitter here gets one.
 * - etcd3 moves a watcher's resume revision to `header.revision + 1` of each response, which can
 *   skip events not yet delivered when the stream breaks mid catch-up; we pin it to the last
 *   revision actually delivered + 1.
 * - Revisions and lease IDs are strings (64-bit).
 */
import {
  ConsecutiveBreaker,
  ConstantBackoff,
  ExponentialBackoff,
  circuitBreaker,
  handleWhen,
  noop,
  retry,
} from 'cockatiel';
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  isRecoverableError,
  type IDuplexStream,
  type IEvent,
  type IKeyValue,
  type IOptions,
  type LeaseClient,
  type Watcher,
} from 'etcd3';
import type { DaemonOptions } from '../config/types';
import { WeftError, describeError } from '../errors';
import { silentLogger, type Logger } from '../log';
import { DEFAULT_PREFIX, configKey, decodeLease, encodeLeaseAttrs, fullSubnetKey, subnetsDir } from './codec';
import {
  DEFAULT_CALL_TIMEOUT_MS,
  KeptHostLease,
  decodeSubnetKv,
  etcdClientOptionsFrom,
  etcdError,
  expirationsOf,
  keepaliveTiming,
  leaseGoneError,
  readTlsFiles,
  checkEtcdTransport,
  registryClosedError,
  removedEvent,
  revokeIfEmpty,
  splitDecoded,
  watchEvent,
  type DecodedKv,
  type EtcdClientOptions,
  type KeepaliveTiming,
} from './etcd-common';
import type { HostLease, LeaseRegistry, SubnetListing, SubnetWatch, SubnetWatchEvent } from './registry';
import type { Lease, LeaseAttrs } from './types';

export { keepaliveTiming, type KeepaliveTiming } from './etcd-common';

/** All endpoints http or all https (etcd3 refuses a mix). */
export type EtcdRegistryOptions = EtcdClientOptions;

/** The registry options that weftd's flags (flanneld's names) describe. */
export function etcdRegistryOptionsFrom(opts: DaemonOptions, log?: Logger): EtcdRegistryOptions {
  return etcdClientOptionsFrom(opts, log);
}

type WatchBackoff = NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>;

export class EtcdLeaseRegistry implements LeaseRegistry {
  readonly prefix: string;
  readonly location: string;
  private readonly client: Etcd3;
  private readonly log: Logger;
  private readonly renewMarginSeconds: number | null;
  private readonly hostLeases = new Set<EtcdHostLease>();
  private readonly watches = new Set<EtcdSubnetWatch>();
  private closed = false;

  /** Throws WeftError('CONFIG_INVALID') for unreadable TLS files or bad endpoint lists. */
  constructor(opts: EtcdRegistryOptions) {
    if (opts.endpoints.length === 0) throw new WeftError('CONFIG_INVALID', 'etcd endpoints: none given; set --etcd-endpoints');
    this.prefix = opts.prefix ?? DEFAULT_PREFIX;
    this.location = opts.endpoints.join(',');
    this.log = (opts.log ?? silentLogger).child({ component: 'etcd' });
    this.renewMarginSeconds = opts.renewMarginSeconds ?? null;
    checkEtcdTransport(opts);
    try {
      this.client = new Etcd3(clientOptions(opts));
    } catch (err) {
      throw new WeftError('CONFIG_INVALID', `etcd client for ${this.location}: ${describeError(err)}`, { cause: err });
    }
  }

  async getConfig(): Promise<string | null> {
    const key = configKey(this.prefix);
    return this.call(`get ${key}`, () => this.client.get(key).string());
  }

  async listSubnets(opts: { readonly expirations?: boolean } = {}): Promise<SubnetListing> {
    const dir = subnetsDir(this.prefix);
    const res = await this.call(`list ${dir}`, () => this.client.getAll().prefix(dir).exec());
    const expirations = opts.expirations === true ? await this.expirationsOf(res.kvs) : new Map<string, Date | null>();
    const { leases, invalid } = splitDecoded(res.kvs.map((kv) => this.decodeKv(kv, expirations.get(kv.lease) ?? null)));
    return { leases, invalid, revision: res.header.revision };
  }

  async grantHostLease(ttlSeconds: number): Promise<HostLease> {
    this.assertOpen('grant lease');
    const res = await this.call(`grant lease (TTL ${ttlSeconds} s)`, () => this.client.leaseClient.leaseGrant({ TTL: ttlSeconds }));
    const timing = keepaliveTiming(ttlSeconds, this.renewMarginSeconds);
    const handle: EtcdHostLease = new EtcdHostLease(res.ID, ttlSeconds, timing, this.log, () => this.hostLeases.delete(handle), this.client.leaseClient);
    this.hostLeases.add(handle);
    return handle;
  }

  async createSubnet(key: string, attrs: LeaseAttrs, lease: HostLease): Promise<Lease | null> {
    const full = fullSubnetKey(this.prefix, key);
    const value = encodeLeaseAttrs(attrs);
    // flannel's createSubnet: if version(key) == 0 then put(key, value, lease).
    const res = await this.leaseCall(`create ${full}`, lease, () =>
      this.client.if(full, 'Version', '==', 0).then(this.client.put(full).value(value).lease(lease.id)).commit(),
    );
    if (!res.succeeded) return null;
    return decodeLease(key, value, { etcdLeaseId: lease.id, modRevision: res.header.revision });
  }

  async updateSubnet(key: string, attrs: LeaseAttrs, lease: HostLease | null, expectModRevision: string): Promise<Lease | null> {
    const full = fullSubnetKey(this.prefix, key);
    const value = encodeLeaseAttrs(attrs);
    const leaseId = lease === null ? '0' : lease.id;
    // A raw put op, to get prev_kv (which lease the key moves off). lease 0 = no lease.
    const put = { request_put: { key: Buffer.from(full), value: Buffer.from(value), lease: leaseId, prev_kv: true } };
    const res = await this.leaseCall(`update ${full}`, lease, () =>
      this.client.if(full, 'Mod', '==', expectModRevision).then(put).commit(),
    );
    if (!res.succeeded) return null;
    const prevLease = res.responses[0]?.response_put?.prev_kv?.lease;
    if (prevLease !== undefined && prevLease !== '0' && prevLease !== leaseId) {
      await revokeIfEmpty(
        this.log,
        prevLease,
        full,
        async () => {
          const ttl = await this.client.leaseClient.leaseTimeToLive({ ID: prevLease, keys: true });
          return { ttl: Number(ttl.TTL), keys: ttl.keys.length };
        },
        () => this.client.leaseClient.leaseRevoke({ ID: prevLease }),
      );
    }
    return decodeLease(key, value, { etcdLeaseId: lease === null ? null : lease.id, modRevision: res.header.revision });
  }

  async deleteSubnet(key: string, expectModRevision?: string): Promise<boolean> {
    const full = fullSubnetKey(this.prefix, key);
    if (expectModRevision === undefined) {
      const res = await this.call(`delete ${full}`, () => this.client.delete().key(full).exec());
      return res.deleted !== '0';
    }
    const res = await this.call(`delete ${full}`, () =>
      this.client.if(full, 'Mod', '==', expectModRevision).then(this.client.delete().key(full)).commit(),
    );
    return res.succeeded && res.responses[0]?.response_delete_range?.deleted !== '0';
  }

  async createReservation(key: string, attrs: LeaseAttrs): Promise<Lease | null> {
    const full = fullSubnetKey(this.prefix, key);
    const value = encodeLeaseAttrs(attrs);
    // createSubnet's transaction without a lease: the key has no TTL.
    const res = await this.call(`create reservation ${full}`, () =>
      this.client.if(full, 'Version', '==', 0).then(this.client.put(full).value(value)).commit(),
    );
    if (!res.succeeded) return null;
    return decodeLease(key, value, { etcdLeaseId: null, modRevision: res.header.revision });
  }

  async revokeLease(leaseId: string): Promise<boolean> {
    try {
      await this.call(`revoke lease ${leaseId}`, () => this.client.leaseClient.leaseRevoke({ ID: leaseId }));
      return true;
    } catch (err) {
      if (err instanceof WeftError && err.cause instanceof EtcdLeaseInvalidError) return false;
      throw err;
    }
  }

  async putConfig(text: string): Promise<void> {
    const key = configKey(this.prefix);
    await this.call(`put ${key}`, () => this.client.put(key).value(text).exec());
  }

  watchSubnets(fromRevision: string, handler: (event: SubnetWatchEvent) => void): SubnetWatch {
    const dir = subnetsDir(this.prefix);
    const w = new EtcdSubnetWatch(fromRevision, handler, this.log, (kv) => this.decodeKv(kv, null), (kv) => this.removedEvent(kv), () =>
      this.watches.delete(w),
    );
    if (this.closed) {
      w.fail('the lease registry is closed');
      return w;
    }
    this.watches.add(w);
    w.start(this.client.watch().prefix(dir).startRevision(fromRevision).watcher());
    return w;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.watches].map((w) => w.close()));
    for (const l of [...this.hostLeases]) l.release();
    this.client.close();
  }

  // ---- internals -----------------------------------------------------------------------------

  /** null: not a subnet key at all (something nested under subnets/). */
  private decodeKv(kv: IKeyValue, expiration: Date | null): DecodedKv | null {
    return decodeSubnetKv(this.prefix, { key: kv.key.toString(), value: kv.value, leaseId: kv.lease, modRevision: kv.mod_revision }, expiration);
  }

  private removedEvent(kv: IKeyValue): SubnetWatchEvent | null {
    return removedEvent(this.prefix, kv.key.toString(), kv.mod_revision);
  }

  private expirationsOf(kvs: readonly IKeyValue[]): Promise<Map<string, Date | null>> {
    return expirationsOf(
      kvs.map((kv) => kv.lease),
      async (id) => Number((await this.call(`query TTL of lease ${id}`, () => this.client.leaseClient.leaseTimeToLive({ ID: id }))).TTL),
    );
  }

  private assertOpen(op: string): void {
    if (this.closed) throw registryClosedError(op);
  }

  private async call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    this.assertOpen(op);
    try {
      return await fn();
    } catch (err) {
      throw this.wrap(op, err);
    }
  }

  /** A write attached to `lease`: etcd's "lease not found" means the lease is lost. */
  private async leaseCall<T>(op: string, lease: HostLease | null, fn: () => Promise<T>): Promise<T> {
    this.assertOpen(op);
    try {
      return await fn();
    } catch (err) {
      if (err instanceof EtcdLeaseInvalidError && lease !== null) {
        if (lease instanceof EtcdHostLease) lease.markLost(err);
        throw leaseGoneError(op, lease, err);
      }
      throw this.wrap(op, err);
    }
  }

  private wrap(op: string, err: unknown): WeftError {
    const refused = err instanceof EtcdAuthenticationFailedError || err instanceof EtcdPermissionDeniedError;
    return etcdError(this.location, op, err, refused ? 'refused' : 'unreachable');
  }
}

function clientOptions(opts: EtcdRegistryOptions): IOptions {
  const callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  const several = opts.endpoints.length > 1;
  const options: IOptions = {
    hosts: [...opts.endpoints],
    // Streams (watch, keepalive) live forever; unary calls must not.
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    faultHandling: {
      // One endpoint: a breaker has nothing to fail over to and would only turn every call into
      // an instant failure for its open period. Several: skip a dead one for 1 s (etcd3's
      // default is 5 s after 3 errors).
      host: () =>
        several
          ? circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(3) })
          : noop,
      // One quick retry (on another endpoint when there is one), e.g. across a reconnect.
      global: retry(handleWhen(isRecoverableError), { maxAttempts: 1, backoff: new ConstantBackoff(50) }),
      // Watch stream reconnects: resume within seconds of etcd coming back (etcd3's default caps at 30 s);
      // every attempt is a TCP connect, so not much more often than every 5 s during an outage.
      // etcd3 calls .next() on this (a backoff factory) though its type says IBackoff.
      watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 5000 }) as unknown as WatchBackoff,
    },
    // Detect a dead connection (host gone without a RST) on streams; etcd's server policy
    // rejects pings more often than every 5 s.
    grpcOptions: { 'grpc.keepalive_time_ms': 30_000, 'grpc.keepalive_timeout_ms': 10_000 },
  };
  if (opts.caFile || opts.certFile || opts.keyFile) {
    const tls = readTlsFiles(opts);
    options.credentials = {
      // grpc's createSsl takes null for "the system's root CAs"; etcd3's type insists on a Buffer.
      rootCertificate: tls.ca ?? (null as unknown as Buffer),
      ...(tls.cert ? { certChain: tls.cert } : {}),
      ...(tls.key ? { privateKey: tls.key } : {}),
    };
  }
  if (opts.username) options.auth = { username: opts.username, password: opts.password ?? '' };
  return options;
}

/**
 * The host's etcd lease, kept alive by our own loop (KeptHostLease) rather than etcd3's
 * autoKeepAlive: etcd3 retries a failed keepalive every 100 ms, and each retry makes it drop and
 * re-open its gRPC channel, i.e. ~20 TCP connects a second for as long as etcd is down. Here one
 * renewal is one short LeaseKeepAlive stream (write the ID, read the answer, end).
 */
class EtcdHostLease extends KeptHostLease {
  private abortRenewal: (() => void) | null = null;

  constructor(id: string, ttlSeconds: number, timing: KeepaliveTiming, log: Logger, forget: () => void, private readonly leases: LeaseClient) {
    super(id, ttlSeconds, ttlSeconds, timing, log, forget, false);
  }

  protected override onStop(): void {
    this.abortRenewal?.();
  }

  /** One keepalive round trip; resolves to the TTL etcd granted (≤ 0: the lease is gone). */
  protected renewOnce(): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      let done = false;
      let stream: IDuplexStream<{ ID: string }, { TTL: string }> | null = null;
      const finish = (err: unknown, ttl = 0): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.abortRenewal = null;
        try {
          // end() after an answer; cancel() a stream that never answered (etcd hung, released).
          if (err === null) stream?.end();
          else stream?.cancel();
        } catch {
          // already closed
        }
        if (err === null) resolve(ttl);
        else reject(err);
      };
      const timer = setTimeout(() => finish(new Error(`no keepalive answer within ${this.timing.timeoutMs} ms`)), this.timing.timeoutMs);
      this.abortRenewal = () => finish(new Error('lease released'));
      this.leases.leaseKeepAlive().then(
        (s) => {
          stream = s;
          s.on('error', (e) => finish(e));
          if (done) {
            s.cancel();
            return;
          }
          s.on('data', (res) => finish(null, Number(res.TTL)));
          s.on('end', () => finish(new Error('keepalive stream ended without an answer')));
          s.write({ ID: this.id });
        },
        (e: unknown) => finish(e),
      );
    });
  }
}

class EtcdSubnetWatch implements SubnetWatch {
  private watcher: Watcher | null = null;
  private done = false;
  private disconnected = false;
  /** Next revision we have not delivered; the resume point after a reconnect. */
  private nextRevision: bigint;

  constructor(
    fromRevision: string,
    private readonly handler: (event: SubnetWatchEvent) => void,
    private readonly log: Logger,
    private readonly decode: (kv: IKeyValue) => DecodedKv | null,
    private readonly removed: (kv: IKeyValue) => SubnetWatchEvent | null,
    private readonly forget: () => void,
  ) {
    this.nextRevision = BigInt(fromRevision);
  }

  start(watcher: Watcher): void {
    this.watcher = watcher;
    const pin = (): void => {
      // etcd3 sets start_revision to header.revision + 1 on every response; pin it to what we
      // actually delivered so a reconnect mid catch-up replays instead of skipping.
      (watcher.request as { start_revision?: string | number }).start_revision = this.nextRevision.toString();
    };
    watcher.on('connected', () => {
      pin();
      if (this.disconnected) {
        this.disconnected = false;
        this.log.info('etcd watch reconnected', { fromRevision: this.nextRevision.toString() });
      }
    });
    watcher.on('disconnected', (err) => {
      if (this.disconnected || this.done) return;
      this.disconnected = true;
      this.log.warn('etcd watch disconnected; resuming when etcd is back', { error: describeError(err) });
    });
    watcher.on('data', (res) => {
      // Every event of one revision (a multi-key transaction, a prefix delete) arrives in the
      // same response, all with that revision: decide "already delivered" against the resume
      // point as it was before this response, or all but the first would be dropped.
      const from = this.nextRevision;
      for (const ev of res.events) this.onEvent(ev.type, ev.kv, from);
      pin();
    });
    // etcd3 emits 'error' only when etcd cancels the watch — "Watcher canceled: " (empty reason)
    // for a compacted start revision. The watcher is dropped by etcd3 after that.
    // Do not cancel() it ourselves then: etcd has already dropped it, and a cancel for an
    // unknown watch could be answered with a response etcd3 cannot route (it throws).
    watcher.on('error', (err) => {
      this.watcher = null;
      const why = describeError(err).replace(/:\s*$/, '') || 'canceled';
      this.fail(`etcd ended the watch from revision ${this.nextRevision} (${why}; usually history compacted past it)`);
    });
    watcher.on('end', () => undefined);
  }

  private onEvent(type: IEvent['type'], kv: IKeyValue, from: bigint): void {
    if (this.done) return;
    const rev = BigInt(kv.mod_revision);
    if (rev < from) return; // replayed after a reconnect
    if (rev >= this.nextRevision) this.nextRevision = rev + 1n;
    const event = watchEvent(type === 'Delete', () => this.removed(kv), () => this.decode(kv));
    if (event !== null) this.handler(event);
  }

  /** End the watch with 'reset' (delivered asynchronously, once). */
  fail(reason: string): void {
    if (this.done) return;
    this.done = true;
    this.forget();
    this.detach();
    setImmediate(() => this.handler({ type: 'reset', reason }));
  }

  async close(): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.forget();
    await this.detach();
  }

  private async detach(): Promise<void> {
    const w = this.watcher;
    this.watcher = null;
    if (w === null) return;
    // cancel() waits for etcd to confirm, which never comes while it is unreachable: bound it.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      w.cancel().catch(() => undefined),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, 1000);
      }),
    ]);
    clearTimeout(timer);
  }
}
