/**
 * The etcd wire (etcd-wire.ts) over gRPC through `etcd3` 1.1.2, selected by
 * WEFT_ETCD_CLIENT=grpc (e.g. for an etcd whose JSON gateway is disabled). Only
 * create-registry.ts loads this file, and only then: etcd3 costs ~150 ms of start-up.
 *
 * Traps of etcd3 1.1.2 handled here (docs/dependencies.md):
 * - Its default circuit breaker fails EVERY call for 5 s after 3 errors, and a retry policy
 *   hides which error happened. We install our own policies (cockatiel 3 API, which the doc
 *   comment in etcd3's options.d.ts still shows in its old v2 form): no breaker for a single
 *   endpoint (nothing to fail over to), a 1 s breaker per endpoint with several, and one quick
 *   retry on another endpoint. The manager's own bounded backoff paces retries after that.
 * - Unary calls get a deadline, so a black-holed endpoint cannot hang acquire() forever.
 * - A watch from a compacted revision emits 'error' ("Watcher canceled: " with an empty reason)
 *   and is dropped by etcd3: we report it canceled and the manager re-lists. An EventEmitter
 *   without an 'error' listener crashes the process, so every emitter here gets one.
 * - etcd3 moves a watcher's resume revision to `header.revision + 1` of each response, which can
 *   skip events not yet delivered when the stream breaks mid catch-up; we pin it to the
 *   registry's resume point (the last revision actually delivered + 1).
 * - Its own lease keepalive retries every 100 ms and re-opens its gRPC channel each time (~20
 *   TCP connects a second while etcd is down): one renewal here is one short LeaseKeepAlive
 *   stream (write the ID, read the answer, end), paced by the registry.
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
  type IKeyValue,
  type IOptions,
  type Watcher,
} from 'etcd3';
import { WeftError, describeError } from '../errors';
import { DEFAULT_CALL_TIMEOUT_MS, EXTRA_CA_CERTS_ENV, checkEtcdTransport, prefixEnd, readTlsFiles, type EtcdClientOptions } from './etcd-common';
import type { EtcdWire, TxnCompare, TxnOp, TxnResult, WatchSink, WireFailure, WireKv, WireWatch } from './etcd-wire';

type WatchBackoff = NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>;

const toKv = (kv: IKeyValue): WireKv => ({ key: kv.key.toString(), value: kv.value, leaseId: kv.lease, modRevision: kv.mod_revision });

export class EtcdGrpcWire implements EtcdWire {
  readonly location: string;
  /** grpc's channel keeps the process alive anyway; the renewal timer is a plain one. */
  readonly keepsProcessAlive = true;
  private readonly client: Etcd3;

  /** Throws WeftError('CONFIG_INVALID') for unreadable TLS files or bad endpoint lists. */
  constructor(opts: EtcdClientOptions) {
    if (opts.endpoints.length === 0) throw new WeftError('CONFIG_INVALID', 'etcd endpoints: none given; set --etcd-endpoints');
    this.location = opts.endpoints.join(',');
    checkEtcdTransport(opts);
    try {
      this.client = new Etcd3(clientOptions(opts));
    } catch (err) {
      throw new WeftError('CONFIG_INVALID', `etcd client for ${this.location}: ${describeError(err)}`, { cause: err });
    }
  }

  async range(key: string, prefix: boolean): Promise<{ revision: string; kvs: WireKv[] }> {
    const res = await this.client.kv.range(prefix ? { key: Buffer.from(key), range_end: prefixEnd(key) } : { key: Buffer.from(key) });
    return { revision: res.header.revision, kvs: res.kvs.map(toKv) };
  }

  async ranges(ranges: readonly { readonly key: string; readonly prefix: boolean }[]): Promise<{ revision: string; kvs: WireKv[][] }> {
    const res = await this.client.kv.txn({
      success: ranges.map((r) => ({ request_range: r.prefix ? { key: Buffer.from(r.key), range_end: prefixEnd(r.key) } : { key: Buffer.from(r.key) } })),
    });
    return { revision: res.header.revision, kvs: ranges.map((_, i) => (res.responses[i]?.response_range?.kvs ?? []).map(toKv)) };
  }

  async txn(compare: readonly TxnCompare[], ops: readonly TxnOp[]): Promise<TxnResult> {
    const res = await this.client.kv.txn({
      compare: compare.map((c) =>
        c.target === 'version'
          ? { key: Buffer.from(c.key), target: 'Version' as const, result: 'Equal' as const, version: Number(c.version) }
          : { key: Buffer.from(c.key), target: 'Mod' as const, result: 'Equal' as const, mod_revision: c.modRevision },
      ),
      success: ops.map((op) =>
        'put' in op
          ? { request_put: { key: Buffer.from(op.put.key), value: Buffer.from(op.put.value), lease: op.put.leaseId ?? '0', prev_kv: op.put.prevKv === true } }
          : { request_delete_range: { key: Buffer.from(op.deleteKey) } },
      ),
    });
    const first = res.responses[0];
    const prevKv = first?.response_put?.prev_kv;
    const deleted = first?.response_delete_range?.deleted;
    return {
      succeeded: res.succeeded,
      revision: res.header.revision,
      ...(prevKv === undefined || prevKv === null ? {} : { prevLeaseId: prevKv.lease }),
      ...(deleted === undefined ? {} : { deleted }),
    };
  }

  async grant(ttlSeconds: number): Promise<{ id: string; ttl: number }> {
    const res = await this.client.leaseClient.leaseGrant({ TTL: ttlSeconds });
    return { id: res.ID, ttl: Number(res.TTL) };
  }

  keepaliveOnce(id: string, timeoutMs: number, signal: AbortSignal): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      let done = false;
      let stream: IDuplexStream<{ ID: string }, { TTL: string }> | null = null;
      const finish = (err: unknown, ttl = 0): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
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
      const onAbort = (): void => finish(signal.reason ?? new Error('lease released'));
      const timer = setTimeout(() => finish(new Error(`no keepalive answer within ${timeoutMs} ms`)), timeoutMs);
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      this.client.leaseClient.leaseKeepAlive().then(
        (s) => {
          stream = s;
          s.on('error', (e) => finish(e));
          if (done) {
            s.cancel();
            return;
          }
          s.on('data', (res) => finish(null, Number(res.TTL)));
          s.on('end', () => finish(new Error('keepalive stream ended without an answer')));
          s.write({ ID: id });
        },
        (e: unknown) => finish(e),
      );
    });
  }

  async timeToLive(id: string, keys: boolean): Promise<{ ttl: number; keys: number }> {
    const res = await this.client.leaseClient.leaseTimeToLive({ ID: id, keys });
    return { ttl: Number(res.TTL), keys: res.keys.length };
  }

  async revoke(id: string): Promise<void> {
    await this.client.leaseClient.leaseRevoke({ ID: id });
  }

  watchPrefix(prefix: string, sink: WatchSink): WireWatch {
    const w = new GrpcWatchStream(sink);
    w.start(this.client.watch().prefix(prefix).startRevision(sink.resumeRevision()).watcher());
    return w;
  }

  classify(err: unknown): WireFailure {
    if (err instanceof EtcdLeaseInvalidError) return 'leaseNotFound';
    if (err instanceof EtcdAuthenticationFailedError || err instanceof EtcdPermissionDeniedError) return 'refused';
    return 'unreachable';
  }

  reconnects(): number {
    return 0;
  }

  close(): void {
    this.client.close();
  }
}

function clientOptions(opts: EtcdClientOptions): IOptions {
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
  const secure = opts.endpoints.some((e) => e.startsWith('https://'));
  if (opts.caFile || opts.certFile || opts.keyFile || (secure && process.env[EXTRA_CA_CERTS_ENV])) {
    const tls = readTlsFiles(opts, secure);
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

/** etcd3's watcher, which reconnects by itself (watchBackoff): this pins its resume point and forwards. */
class GrpcWatchStream implements WireWatch {
  private watcher: Watcher | null = null;

  constructor(private readonly sink: WatchSink) {}

  start(watcher: Watcher): void {
    this.watcher = watcher;
    const pin = (): void => {
      // etcd3 sets start_revision to header.revision + 1 on every response; pin it to what was
      // actually delivered so a reconnect mid catch-up replays instead of skipping.
      (watcher.request as { start_revision?: string | number }).start_revision = this.sink.resumeRevision();
    };
    watcher.on('connected', () => {
      pin();
      this.sink.response({ created: true, events: [] });
    });
    watcher.on('disconnected', (err) => this.sink.disconnected(err));
    watcher.on('data', (res) => {
      this.sink.response({
        created: false,
        events: res.events.map((ev) => ({ deleted: ev.type === 'Delete', kv: toKv(ev.kv) })),
        headerRevision: res.header.revision,
      });
      pin();
    });
    // etcd3 emits 'error' only when etcd cancels the watch — "Watcher canceled: " (empty reason)
    // for a compacted start revision. The watcher is dropped by etcd3 after that.
    // Do not cancel() it ourselves then: etcd has already dropped it, and a cancel for an
    // unknown watch could be answered with a response etcd3 cannot route (it throws).
    watcher.on('error', (err) => {
      this.watcher = null;
      const why = describeError(err).replace(/:\s*$/, '') || 'canceled';
      this.sink.canceled(`${why}; usually history compacted past it`);
    });
    watcher.on('end', () => undefined);
  }

  async close(): Promise<void> {
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
