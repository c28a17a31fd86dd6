/**
 * The etcd wire (etcd-wire.ts) over etcd's v3 JSON gateway (`POST /v3/kv/range`, `/v3/kv/txn`,
 * `/v3/lease/*`, `/v3/watch` on the client port; etcd ≥ 3.4), with weft's own minimal HTTP/1.1
 * client (http1.ts, over node:net/node:tls): the default, because loading `etcd3` (grpc-js,
 * protobufjs, which compiles its codecs at load) costs ~150 ms and ~24 MB RSS against a budget of
 * 100 ms from exec to subnet.env and 60 MB RSS, and Node's `http` ~10 % of a peer join's CPU and
 * ~0.7 MB private memory (docs/performance.md has the figures).
 *
 * Wire notes (etcd 3.4's gateway, checked against a real etcd):
 * - keys and values are base64; int64 fields (revisions, lease IDs, TTLs) are decimal strings;
 *   fields at their default value are omitted (`succeeded: false` is absent, a PUT event has no
 *   `type`, a key without lease has no `lease`).
 * - errors: HTTP 4xx/5xx with `{"error", "message", "code"}` (gRPC codes: 5 "requested lease not
 *   found", 16 "invalid auth token", 3 "authentication failed", 7 permission denied).
 * - `/v3/lease/keepalive` and `/v3/watch` are gRPC streams: the gateway takes newline-delimited
 *   JSON requests in the body and answers newline-delimited `{"result": ...}` messages. A
 *   keepalive is one request with the body closed: one answer, then the response ends.
 * - a watch from a compacted revision answers `created`, then `canceled` with `compact_revision`.
 *
 * Everything read off the socket is checked before use (a bad server or a man in the middle must
 * not crash weftd): http1.ts bounds the HTTP framing, and the watch messages are decoded by
 * decodeWatchMessage(), which checks every field weft reads (a revision that is not a decimal
 * string would throw later, in BigInt()).
 */
import { Backoff } from '../backoff';
import { createDeadline, type Deadline } from '../deadline';
import { WeftError, describeError } from '../errors';
import { DEFAULT_CALL_TIMEOUT_MS, checkEtcdTransport, prefixEnd, readTlsFiles, type EtcdClientOptions } from './etcd-common';
import type { EtcdWire, TxnCompare, TxnOp, TxnResult, WatchSink, WireEvent, WireFailure, WireKv, WireWatch } from './etcd-wire';
import { Http1Client, Http1Failure, LineSplitter, MAX_BODY_BYTES, endpointOf, type Http1Answer, type Http1Stream, type StreamListeners } from './http1';
import { NATIVE_RECORD_BYTES, nativeJoin, readRecord } from './native-join';

/**
 * The watch stream asks etcd for a progress report this often, and takes it for dead when nothing
 * at all came back within half of it: a frozen member is noticed within 1.5 × 10 s = 15 s, as
 * before (test/e2e/faults-cluster.test.ts allows 20 s), for 6 timer wake-ups and 6 answers a
 * minute while idle (8 and 8 with the former 7.5 s tick whose deadline was the next tick).
 */
const WATCH_PROBE_MS = 10_000;
/** What is kept of an error answer on a stream (its message). */
const MAX_STREAM_ERROR_BYTES = 64 * 1024;

// ---- wire types (the subset weft reads) ---------------------------------------------------------

/** A unary answer (answerOf: a JSON object); each field weft reads is checked where it is read. */
type Answer = Readonly<Record<string, unknown>>;

/** An answer etcd gave with an error (as opposed to no answer at all). */
export class EtcdHttpError extends Error {
  constructor(readonly status: number, readonly grpcCode: number | null, message: string) {
    super(message);
    this.name = 'EtcdHttpError';
  }

  get leaseNotFound(): boolean {
    return this.grpcCode === 5 && /lease not found/.test(this.message);
  }

  get authTokenInvalid(): boolean {
    return this.grpcCode === 16 || /invalid auth token/.test(this.message);
  }

  get refused(): boolean {
    return this.grpcCode === 7 || this.grpcCode === 3 && /authentication failed/.test(this.message) || this.status === 401 || this.status === 403;
  }
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const DECIMAL = /^-?\d{1,20}$/;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function malformed(what: string): Http1Failure {
  return new Http1Failure('malformed', `etcd sent a malformed ${what}`);
}

/** An int64 field (decimal string; absent: its default); anything else is malformed. */
function int64Field(v: unknown, what: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !DECIMAL.test(v)) throw malformed(what);
  return v;
}

function stringField(v: unknown, what: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw malformed(what);
  return v;
}

/**
 * A key/value off the wire. The value stays base64 until read: the registry reads the values of
 * new subnet keys only (not those of deletes, replayed events or config events).
 */
class GatewayKv implements WireKv {
  private decoded: Buffer | null = null;

  constructor(readonly key: string, private readonly rawValue: string, readonly leaseId: string, readonly modRevision: string) {}

  get value(): Buffer {
    return (this.decoded ??= Buffer.from(this.rawValue, 'base64'));
  }
}

/** A nested object of an answer (absent: empty); anything else is malformed. */
function objectField(v: unknown, what: string): Answer {
  if (v === undefined) return {};
  if (!isRecord(v)) throw malformed(what);
  return v;
}

/** An answer's header revision ('0' when absent). */
const revisionOf = (res: Answer): string => int64Field(objectField(res.header, 'header').revision, 'header revision') ?? '0';

/** A key/value of an answer or a watch event, checked. Throws Http1Failure. */
function kvOf(raw: unknown): GatewayKv {
  if (!isRecord(raw) || typeof raw.key !== 'string') throw malformed('key/value');
  return new GatewayKv(
    Buffer.from(raw.key, 'base64').toString('utf8'),
    stringField(raw.value, 'value') ?? '',
    int64Field(raw.lease, 'lease ID') ?? '0',
    int64Field(raw.mod_revision, 'mod_revision') ?? '0',
  );
}

/** One watch message as weft reads it. */
export type WatchMessage =
  | { readonly error: string }
  | {
    readonly error?: undefined;
    /** '0' when absent (weft numbers its watchers from 1); '-1': a progress report for the stream. */
    readonly watchId: string;
    readonly headerRevision: string | undefined;
    readonly created: boolean;
    readonly canceled: boolean;
    readonly compactRevision: string | undefined;
    readonly cancelReason: string | undefined;
    /** null: the message has no events (progress, created, canceled). */
    readonly events: readonly WireEvent[] | null;
  };

/**
 * Decodes one newline-delimited watch message (the line, without its newline): JSON.parse, then
 * only the fields weft reads, each checked; keys decoded, values left in base64 (GatewayKv).
 * null: an empty line or a message without result (nothing to act on). Throws Http1Failure.
 */
export function decodeWatchMessage(line: Buffer): WatchMessage | null {
  let first = 0;
  while (first < line.length && (line[first] === 0x20 || line[first] === 0x0d || line[first] === 0x09)) first++;
  if (first === line.length) return null;
  let msg: unknown;
  try {
    msg = JSON.parse(line.toString('utf8'));
  } catch (err) {
    throw new Http1Failure('malformed', `undecodable watch message: ${describeError(err)}`, { cause: err });
  }
  if (!isRecord(msg)) throw malformed('watch message');
  if (msg.error !== undefined) {
    const e = msg.error;
    return { error: isRecord(e) && typeof e.message === 'string' ? e.message : typeof e === 'string' ? e : 'watch error' };
  }
  const r = msg.result;
  if (r === undefined) return null;
  if (!isRecord(r)) throw malformed('watch result');
  const header = r.header;
  if (header !== undefined && !isRecord(header)) throw malformed('watch header');
  let events: WireEvent[] | null = null;
  if (r.events !== undefined) {
    if (!Array.isArray(r.events)) throw malformed('watch events');
    events = new Array<WireEvent>(r.events.length);
    for (let i = 0; i < r.events.length; i++) {
      const ev: unknown = r.events[i];
      if (!isRecord(ev) || (ev.type !== undefined && ev.type !== 'PUT' && ev.type !== 'DELETE')) throw malformed('watch event');
      events[i] = { deleted: ev.type === 'DELETE', kv: kvOf(ev.kv) };
    }
  }
  return {
    watchId: int64Field(r.watch_id, 'watch_id') ?? '0',
    headerRevision: header === undefined ? undefined : int64Field(header.revision, 'header revision'),
    created: r.created === true,
    canceled: r.canceled === true,
    compactRevision: int64Field(r.compact_revision, 'compact_revision'),
    cancelReason: stringField(r.cancel_reason, 'cancel_reason'),
    events,
  };
}

/** A unary answer: its JSON, or the EtcdHttpError etcd answered with. */
function answerOf(answer: Http1Answer): Answer {
  const status = answer.status;
  const text = answer.body.toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new EtcdHttpError(status, null, `HTTP ${status}: ${text.slice(0, 200)}`);
  }
  if (!isRecord(json)) throw new EtcdHttpError(status, null, `HTTP ${status}: the answer is not a JSON object: ${text.slice(0, 200)}`);
  const errObj = json.error;
  if (status >= 400 || (typeof errObj === 'string' && json.code !== undefined)) {
    const message = typeof json.message === 'string' ? json.message : typeof errObj === 'string' ? errObj : `HTTP ${status}`;
    throw new EtcdHttpError(status, typeof json.code === 'number' ? json.code : null, message);
  }
  return json;
}

// ---- the HTTP client ---------------------------------------------------------------------------

/** An open streaming call (see GatewayClient.stream). */
interface GatewayStream {
  /** Origin of the endpoint it runs on, for messages. */
  readonly endpoint: string;
  abort(): void;
  send(msg: unknown): void;
  dead(why: string): void;
  /** The watchers open on it (a stream the addon reads applies only their events: the native join path). */
  watchOpen(id: string): void;
  watchClosed(id: string): void;
}

/** JSON over HTTP(S) to one of several endpoints, with an auth token when configured. */
class GatewayClient {
  private readonly endpoints: Http1Client[];
  private current = 0;
  private token: string | null = null;
  private authenticating: Promise<void> | null = null;
  private readonly streams = new Set<Http1Stream>();
  reconnects = 0;
  private failing = false;

  constructor(private readonly opts: EtcdClientOptions, readonly location: string) {
    const urls = opts.endpoints.map((e) => {
      let u: URL;
      try {
        u = new URL(e);
      } catch (err) {
        throw new WeftError('CONFIG_INVALID', `etcd endpoint ${JSON.stringify(e)} is not a URL`, { cause: err });
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new WeftError('CONFIG_INVALID', `etcd endpoint ${e}: only http:// and https:// are supported`);
      return u;
    });
    const https = urls.some((u) => u.protocol === 'https:');
    if (https && urls.some((u) => u.protocol === 'http:')) {
      throw new WeftError('CONFIG_INVALID', `etcd endpoints ${location}: all http:// or all https://, not a mix`);
    }
    checkEtcdTransport(opts);
    const tls = readTlsFiles(opts, https);
    this.endpoints = urls.map((u) => new Http1Client(endpointOf(u, tls)));
  }

  /** One unary call: POST `path` with `body`, JSON answer. Rejects with EtcdHttpError or a transport error. */
  async call(path: string, body: unknown, timeoutMs: number): Promise<Answer> {
    await this.ensureAuth(timeoutMs);
    try {
      return await this.callOnce(path, body, timeoutMs);
    } catch (err) {
      if (err instanceof EtcdHttpError && err.authTokenInvalid && this.opts.username) {
        this.token = null;
        await this.ensureAuth(timeoutMs);
        return this.callOnce(path, body, timeoutMs);
      }
      throw err;
    }
  }

  /** Try the current endpoint, then each other one once (a quick failover, no breaker). */
  private async callOnce(path: string, body: unknown, timeoutMs: number): Promise<Answer> {
    const data = JSON.stringify(body);
    let lastErr: unknown = null;
    for (let attempt = 0; attempt < this.endpoints.length; attempt++) {
      const idx = (this.current + attempt) % this.endpoints.length;
      try {
        const out = answerOf(await this.endpoints[idx]!.post(path, data, this.headers(), timeoutMs));
        if (idx !== this.current || this.failing) {
          if (this.failing) this.reconnects++;
          this.current = idx;
        }
        this.failing = false;
        return out;
      } catch (err) {
        if (err instanceof EtcdHttpError) throw err; // etcd answered: no other endpoint will differ
        lastErr = err;
        this.failing = true;
      }
    }
    throw lastErr;
  }

  private headers(): Readonly<Record<string, string>> {
    return this.token === null ? {} : { authorization: this.token };
  }

  /**
   * A streaming call (watch): POST `body` and keep the request open; `onMessage` gets each
   * newline-delimited JSON message (decodeWatchMessage), `onEnd` once when the stream ends for
   * any reason (a malformed message included). Returns the stream: abort() ends it (onEnd is then
   * not called), send() writes one more request on it, dead() ends it as unresponsive (onEnd is
   * called; the next stream and call go to another endpoint).
   */
  async stream(path: string, body: unknown, onMessage: (msg: WatchMessage) => void, onEnd: (err: Error | null) => void, timeoutMs: number): Promise<GatewayStream> {
    await this.ensureAuth(timeoutMs);
    const endpointIndex = this.current;
    const endpoint = this.endpoints[endpointIndex]!;
    let ended = false;
    let aborted = false;
    // A non-200 answer is an error of etcd's (JSON, like a unary one): its body is kept (bounded).
    let errorStatus = 0;
    const errorBody: Buffer[] = [];
    let errorBytes = 0;
    const splitter = new LineSplitter(MAX_BODY_BYTES, (line) => {
      const msg = decodeWatchMessage(line);
      if (msg !== null && !ended) onMessage(msg);
    });
    const end = (err: Error | null): void => {
      if (ended) return;
      ended = true;
      this.streams.delete(stream);
      if (!aborted) onEnd(err);
    };
    // The native join path reads streams without credentials only: with a token, etcd's answers
    // to a stale one (re-authenticate, then open again) are read by the code below.
    const lines: StreamListeners['lines'] = this.opts.username ? undefined : (data, meta, records) => {
      let at = 0;
      let r = 0;
      // Consecutive messages the addon applied (each one PUT on one watcher) are taken in as one:
      // one recompute for the batch, as for a message of many events.
      let batch: (WatchMessage & { error?: undefined }) | null = null;
      let batchEvents: WireEvent[] = [];
      const flushBatch = (): void => {
        if (batch === null) return;
        const m = { ...batch, events: batchEvents };
        batch = null;
        batchEvents = [];
        if (!ended) onMessage(m);
      };
      try {
        for (let i = 0; i < meta.length; i += 2) {
          const line = data.subarray(at, at + meta[i]!);
          at += meta[i]!;
          const applied = meta[i + 1] === 1;
          if (applied) {
            // First, whatever follows: the kernel holds these objects.
            nativeJoin.applied?.(readRecord(records, r));
            r += NATIVE_RECORD_BYTES;
          }
          const msg = decodeWatchMessage(line);
          if (applied && msg !== null && msg.error === undefined && msg.events !== null) {
            if (batch !== null && batch.watchId !== msg.watchId) flushBatch();
            batch = msg;
            for (const e of msg.events) batchEvents.push(e);
            continue;
          }
          flushBatch();
          if (msg !== null && !ended) onMessage(msg);
        }
        flushBatch();
      } catch (err) {
        stream.fail(err instanceof Error ? err : new Error(String(err)));
      }
    };
    // Its own connection: a watch holds it for as long as it lives.
    const stream = endpoint.openStream(path, this.headers(), JSON.stringify(body) + '\n', {
      ...(lines === undefined ? {} : { lines }),
      head: (h) => {
        if (h.status !== 200) errorStatus = h.status;
      },
      body: (piece) => {
        if (errorStatus === 0) splitter.push(piece);
        else if (errorBytes < MAX_STREAM_ERROR_BYTES) {
          errorBody.push(Buffer.from(piece)); // a view into the read buffer: kept, so copied
          errorBytes += piece.length;
        }
      },
      end: (err) => {
        if (errorStatus !== 0) {
          let answered: Error;
          try {
            answerOf({ status: errorStatus, body: Buffer.concat(errorBody) });
            answered = new EtcdHttpError(errorStatus, null, `HTTP ${errorStatus}`);
          } catch (e) {
            answered = e instanceof Error ? e : new Error(String(e));
          }
          if (answered instanceof EtcdHttpError && answered.authTokenInvalid) this.token = null; // re-authenticate on the next open
          end(answered);
          return;
        }
        if (err === null) {
          end(new Error(`etcd at ${endpoint.endpoint.origin} closed the stream`));
          return;
        }
        // Next attempt on the next endpoint.
        this.endpointFailed(endpointIndex);
        end(err);
      },
    });
    this.streams.add(stream);
    return {
      endpoint: endpoint.endpoint.origin,
      abort: () => {
        aborted = true;
        ended = true;
        this.streams.delete(stream);
        stream.abort();
      },
      send: (msg: unknown) => {
        if (!ended) stream.send(JSON.stringify(msg) + '\n');
      },
      dead: (why: string) => {
        this.endpointFailed(endpointIndex);
        stream.fail(new Error(why));
      },
      watchOpen: (id: string) => stream.watchOpen?.(id),
      watchClosed: (id: string) => stream.watchClosed?.(id),
    };
  }

  /** Move off endpoint `idx` (if it is still the current one): the next call or stream tries the next. */
  private endpointFailed(idx: number): void {
    this.failing = true;
    if (this.current === idx) this.current = (idx + 1) % this.endpoints.length;
  }

  private async ensureAuth(timeoutMs: number): Promise<void> {
    if (!this.opts.username || this.token !== null) return;
    this.authenticating ??= this.callOnce('/v3/auth/authenticate', { name: this.opts.username, password: this.opts.password ?? '' }, timeoutMs)
      .then((res) => {
        if (typeof res.token !== 'string' || res.token === '') throw new EtcdHttpError(200, null, 'etcd returned no auth token (is authentication enabled?)');
        // It goes back in a header: a token with control characters (CR LF: header injection) is refused.
        if (!/^[\x21-\x7e]+$/.test(res.token)) throw new Http1Failure('malformed', 'etcd returned an auth token with characters a header cannot carry');
        this.token = res.token;
      })
      .finally(() => {
        this.authenticating = null;
      });
    await this.authenticating;
  }

  close(): void {
    for (const s of [...this.streams]) s.abort();
    this.streams.clear();
    for (const e of this.endpoints) e.close();
  }
}

// ---- the wire ----------------------------------------------------------------------------------

export class EtcdHttpWire implements EtcdWire {
  readonly location: string;
  /** The CLI and tests hold leases too: the renewal timer alone does not keep them running (weftd has other handles). */
  readonly keepsProcessAlive = false;
  private readonly client: GatewayClient;
  private readonly callTimeoutMs: number;
  private readonly watches: HttpWatchSession;

  /** Throws WeftError('CONFIG_INVALID') for unreadable TLS files or bad endpoint lists. */
  constructor(opts: EtcdClientOptions) {
    if (opts.endpoints.length === 0) throw new WeftError('CONFIG_INVALID', 'etcd endpoints: none given; set --etcd-endpoints');
    this.location = opts.endpoints.join(',');
    this.callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.client = new GatewayClient(opts, this.location);
    this.watches = new HttpWatchSession(this.client, this.callTimeoutMs, opts.watchProbeMs ?? WATCH_PROBE_MS);
  }

  async range(key: string, prefix: boolean): Promise<{ revision: string; kvs: WireKv[] }> {
    const res = await this.call('/v3/kv/range', prefix ? { key: b64(key), range_end: prefixEnd(key).toString('base64') } : { key: b64(key) });
    if (res.kvs !== undefined && !Array.isArray(res.kvs)) throw malformed('range answer');
    return { revision: revisionOf(res), kvs: res.kvs === undefined ? [] : (res.kvs as unknown[]).map(kvOf) };
  }

  async ranges(ranges: readonly { readonly key: string; readonly prefix: boolean }[]): Promise<{ revision: string; kvs: WireKv[][] }> {
    const res = await this.call('/v3/kv/txn', {
      success: ranges.map((r) => ({ request_range: r.prefix ? { key: b64(r.key), range_end: prefixEnd(r.key).toString('base64') } : { key: b64(r.key) } })),
    });
    const responses: unknown = res.responses;
    if (!Array.isArray(responses) || responses.length !== ranges.length) throw malformed('read-only txn answer');
    const kvs = responses.map((op: unknown) => {
      const found = objectField(objectField(op, 'txn response').response_range, 'txn range response').kvs;
      if (found !== undefined && !Array.isArray(found)) throw malformed('txn range answer');
      return found === undefined ? [] : (found as unknown[]).map(kvOf);
    });
    return { revision: revisionOf(res), kvs };
  }

  async txn(compare: readonly TxnCompare[], ops: readonly TxnOp[]): Promise<TxnResult> {
    const res = await this.call('/v3/kv/txn', {
      compare: compare.map((c) =>
        c.target === 'version'
          ? { key: b64(c.key), target: 'VERSION', result: 'EQUAL', version: c.version }
          : { key: b64(c.key), target: 'MOD', result: 'EQUAL', mod_revision: c.modRevision },
      ),
      success: ops.map((op) =>
        'put' in op
          ? { request_put: { key: b64(op.put.key), value: b64(op.put.value), ...(op.put.leaseId === undefined ? {} : { lease: op.put.leaseId }), ...(op.put.prevKv ? { prev_kv: true } : {}) } }
          : { request_delete_range: { key: b64(op.deleteKey) } },
      ),
    });
    if (res.responses !== undefined && !Array.isArray(res.responses)) throw malformed('txn answer');
    const first = objectField((res.responses as unknown[] | undefined)?.[0], 'txn response');
    const prevKv = objectField(first.response_put, 'txn put response').prev_kv;
    const deleted = int64Field(objectField(first.response_delete_range, 'txn delete response').deleted, 'deleted count');
    return {
      succeeded: res.succeeded === true,
      revision: revisionOf(res),
      ...(prevKv === undefined ? {} : { prevLeaseId: int64Field(objectField(prevKv, 'prev_kv').lease, 'prev_kv lease') ?? '0' }),
      ...(deleted === undefined ? {} : { deleted }),
    };
  }

  async grant(ttlSeconds: number): Promise<{ id: string; ttl: number }> {
    const res = await this.call('/v3/lease/grant', { TTL: String(ttlSeconds) });
    const id = int64Field(res.ID, 'lease ID');
    if (id === undefined || id === '0') {
      throw new WeftError('ETCD_UNAVAILABLE', `etcd at ${this.location} granted no lease: ${typeof res.error === 'string' ? res.error : 'empty answer'}`, { retryable: true });
    }
    return { id, ttl: Number(int64Field(res.TTL, 'TTL') ?? ttlSeconds) };
  }

  /** One request with the body closed: one answer. */
  async keepaliveOnce(id: string, timeoutMs: number): Promise<number> {
    const msg = await this.client.call('/v3/lease/keepalive', { ID: id }, timeoutMs);
    if (msg.error !== undefined) {
      const message = isRecord(msg.error) ? msg.error.message : undefined;
      throw new Error(typeof message === 'string' ? message : 'keepalive failed');
    }
    return Number(int64Field(objectField(msg.result, 'keepalive result').TTL, 'TTL') ?? 0);
  }

  async timeToLive(id: string, keys: boolean): Promise<{ ttl: number; keys: number }> {
    const res = await this.call('/v3/lease/timetolive', keys ? { ID: id, keys: true } : { ID: id });
    if (res.keys !== undefined && !Array.isArray(res.keys)) throw malformed('timetolive answer');
    return { ttl: Number(int64Field(res.TTL, 'TTL') ?? -1), keys: (res.keys as unknown[] | undefined)?.length ?? 0 };
  }

  async revoke(id: string): Promise<void> {
    await this.call('/v3/lease/revoke', { ID: id });
  }

  /** On the wire's one watch stream (HttpWatchSession), beside the other watches. */
  watchPrefix(prefix: string, sink: WatchSink): WireWatch {
    return this.watches.watch(prefix, sink);
  }

  classify(err: unknown): WireFailure {
    if (!(err instanceof EtcdHttpError)) return 'unreachable';
    if (err.leaseNotFound) return 'leaseNotFound';
    return err.refused ? 'refused' : 'answered';
  }

  reconnects(): number {
    return this.client.reconnects;
  }

  close(): void {
    this.watches.close();
    this.client.close();
  }

  private call(path: string, body: unknown): Promise<Answer> {
    return this.client.call(path, body, this.callTimeoutMs);
  }
}

/**
 * Every watch of one wire on ONE stream (one TCP connection, one liveness probe): etcd's watch
 * stream multiplexes watchers, each created with its own `watch_id` (explicit ids: etcd ≥ 3.4)
 * and answered with it. weftd watches `<prefix>/subnets/` and `<prefix>/config` on it.
 *
 * The stream survives disconnections: it is re-opened after a Backoff of 100 ms doubling to 5 s
 * (each attempt is a TCP connect), on the next endpoint when this one failed, and every watcher
 * still open is created again from its sink's resume revision.
 *
 *   idle (no watcher) ──watch()──► connecting ──stream open──► streaming ──breaks──► backoff ──► connecting
 *   the last watcher closed ──► idle (stream ended)
 */
class HttpWatchSession {
  private stream: GatewayStream | null = null;
  private connecting = false;
  private readonly watchers = new Map<string, HttpWatcher>();
  /** Watchers whose create_request went out on the current stream. */
  private readonly created = new Set<string>();
  private nextId = 1;
  /** The next progress request, or the last one's answer deadline (armProbe). */
  private readonly probeTimer: Deadline = createDeadline(() => this.probeDue(), { keepsProcessAlive: false });
  private probeSentAt: number | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly backoff = new Backoff({ initialMs: 100, maxMs: 5000 });

  constructor(private readonly client: GatewayClient, private readonly callTimeoutMs: number, private readonly probeMs: number) {}

  watch(dir: string, sink: WatchSink): WireWatch {
    const id = String(this.nextId++);
    const watcher = new HttpWatcher(id, dir, sink, () => this.remove(id));
    this.watchers.set(id, watcher);
    if (this.stream !== null) this.create(this.stream, watcher);
    else if (!this.connecting && this.retryTimer === null) this.open();
    return watcher;
  }

  private remove(id: string): void {
    if (!this.watchers.delete(id)) return;
    this.stream?.watchClosed(id);
    const wasCreated = this.created.delete(id);
    if (this.watchers.size === 0) {
      this.end();
      return;
    }
    // The others go on: only this one is cancelled on the stream.
    if (wasCreated) this.stream?.send({ cancel_request: { watch_id: id } });
  }

  private open(): void {
    const first = this.watchers.values().next().value;
    if (first === undefined) return;
    this.connecting = true;
    this.created.clear();
    this.client.stream('/v3/watch', first.createRequest(), (m) => this.onMessage(m), (err) => this.onEnd(err), this.callTimeoutMs)
      .then((stream) => {
        this.connecting = false;
        if (this.watchers.size === 0) {
          stream.abort();
          return;
        }
        this.stream = stream;
        this.created.add(first.id);
        if (this.watchers.has(first.id)) stream.watchOpen(first.id);
        // Watchers added while connecting (or the first one, closed meanwhile: cancelled).
        if (!this.watchers.has(first.id)) stream.send({ cancel_request: { watch_id: first.id } });
        for (const w of this.watchers.values()) if (!this.created.has(w.id)) this.create(stream, w);
        this.probeSentAt = null;
        this.armProbe(this.probeMs);
      }, (err: unknown) => {
        this.connecting = false;
        this.onEnd(err instanceof Error ? err : new Error(String(err)));
      });
  }

  private create(stream: GatewayStream, w: HttpWatcher): void {
    this.created.add(w.id);
    stream.watchOpen(w.id);
    stream.send(w.createRequest());
  }

  /**
   * Liveness: an idle watch cannot tell a quiet etcd from a dead or frozen one (a member that
   * crashed without a RST, a partition: TCP keepalive takes minutes, and a frozen etcd's kernel
   * still answers it). Every `probeMs` the stream asks etcd for a progress report
   * (WatchProgressRequest, etcd ≥ 3.4) and the one timer is re-armed as the answer's deadline,
   * `probeMs / 2`: when it fires before any message came back, the stream is ended as dead and
   * re-opened on the next endpoint, every watcher resuming from its next undelivered revision. The
   * first message after the request (the answer, or any event) re-arms it for the next request,
   * `probeMs` after this one. So a stream that goes silent is noticed within 1.5 × probeMs, at the
   * cost of one timer wake-up and one answer (a read) per probeMs while idle: the deadline is
   * always cancelled before it expires, and being a Deadline (src/deadline.ts) its cancel takes it
   * off the loop — with setTimeout the loop still woke at the cancelled deadline, a third wake-up
   * per probe. (The former scheme, a tick every probeMs whose deadline was the next tick, needed
   * probeMs = 2/3 of this one for the same bound: a third more requests.)
   */
  private armProbe(delayMs: number): void {
    this.probeTimer.arm(delayMs);
  }

  private probeDue(): void {
    const stream = this.stream;
    if (stream === null) return;
    const at = Date.now();
    if (this.probeSentAt !== null) {
      stream.dead(`no answer from ${stream.endpoint} to a watch progress request within ${at - this.probeSentAt} ms`);
      return;
    }
    this.probeSentAt = at;
    stream.send({ progress_request: {} });
    this.armProbe(this.probeMs / 2);
  }

  private onMessage(msg: WatchMessage): void {
    if (this.stream === null && !this.connecting) return;
    if (this.probeSentAt !== null && this.stream !== null) {
      // The stream answered: the next request is due probeMs after the last one.
      const sentAt = this.probeSentAt;
      this.probeSentAt = null;
      this.armProbe(Math.max(0, sentAt + this.probeMs - Date.now()));
    }
    if (msg.error !== undefined) {
      this.onEnd(new Error(msg.error));
      return;
    }
    if (msg.created) this.backoff.reset();
    const headerRevision = msg.headerRevision;
    const watcher = this.watchers.get(msg.watchId);
    if (watcher === undefined) {
      // A progress report (watch_id -1: for the whole stream), or an answer for a watcher closed
      // meanwhile: every open watcher is as current as its header says.
      if (msg.events === null && !msg.created && !msg.canceled) {
        for (const w of this.watchers.values()) w.deliver({ created: false, events: [], ...(headerRevision === undefined ? {} : { headerRevision }) });
      }
      return;
    }
    if (msg.canceled) {
      const compacted = msg.compactRevision !== undefined && msg.compactRevision !== '0';
      this.stream?.watchClosed(watcher.id);
      this.watchers.delete(watcher.id);
      this.created.delete(watcher.id);
      if (this.watchers.size === 0) this.end();
      watcher.cancel(compacted ? `history compacted up to revision ${msg.compactRevision}` : msg.cancelReason || 'canceled by etcd');
      return;
    }
    watcher.deliver({ created: msg.created, events: msg.events ?? [], ...(headerRevision === undefined ? {} : { headerRevision }) });
  }

  private onEnd(err: Error | null): void {
    this.stopStream();
    if (this.watchers.size === 0) return;
    for (const w of [...this.watchers.values()]) w.disconnected(err);
    if (this.retryTimer !== null) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.stream === null && !this.connecting) this.open();
    }, this.backoff.next());
  }

  private stopStream(): void {
    this.probeTimer.cancel();
    this.stream?.abort();
    this.stream = null;
    this.created.clear();
  }

  /** The wire closes: every watcher is dropped silently, the stream ended. */
  close(): void {
    this.watchers.clear();
    this.end();
  }

  /** No watcher left: end the stream and any retry (a new watch() opens a new one). */
  private end(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.stopStream();
  }
}

/** One watcher on the session's stream: its range, its sink, its id on the stream. */
class HttpWatcher implements WireWatch {
  private done = false;

  constructor(readonly id: string, private readonly dir: string, private readonly sink: WatchSink, private readonly detach: () => void) {}

  createRequest(): unknown {
    return {
      create_request: {
        key: b64(this.dir), range_end: prefixEnd(this.dir).toString('base64'), start_revision: this.sink.resumeRevision(),
        watch_id: this.id, progress_notify: true,
      },
    };
  }

  deliver(r: Parameters<WatchSink['response']>[0]): void {
    if (!this.done) this.sink.response(r);
  }

  disconnected(err: Error | null): void {
    if (!this.done) this.sink.disconnected(err);
  }

  /** etcd ended this watcher (the session has forgotten it already). */
  cancel(why: string): void {
    if (this.done) return;
    this.done = true;
    this.sink.canceled(why);
  }

  async close(): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.detach();
  }
}
