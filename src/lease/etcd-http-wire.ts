/**
 * The etcd wire (etcd-wire.ts) over etcd's v3 JSON gateway (`POST /v3/kv/range`, `/v3/kv/txn`,
 * `/v3/lease/*`, `/v3/watch` on the client port; etcd ≥ 3.4), with Node's own http/https: the
 * default, because loading `etcd3` (grpc-js, protobufjs, which compiles its codecs at load)
 * costs ~150 ms and ~24 MB RSS against a budget of 100 ms from exec to subnet.env and 60 MB RSS
 * (docs/performance.md has the figures).
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
 */
import type { Agent as HttpAgent, ClientRequest, IncomingMessage, RequestOptions } from 'node:http';
import { Backoff } from '../backoff';
import { WeftError, describeError } from '../errors';
import { DEFAULT_CALL_TIMEOUT_MS, checkEtcdTransport, prefixEnd, readTlsFiles, type EtcdClientOptions } from './etcd-common';
import type { EtcdWire, TxnCompare, TxnOp, TxnResult, WatchSink, WireFailure, WireKv, WireWatch } from './etcd-wire';

/** An idle watch asks etcd for a progress report this often... */
const WATCH_PROBE_MS = 10_000;
/** ...and is taken for dead when the answer does not come within this. */
const WATCH_PROBE_TIMEOUT_MS = 5000;

// ---- wire types (the subset weft reads) ---------------------------------------------------------

interface GwHeader { readonly revision?: string }
interface GwKv {
  readonly key: string;
  readonly value?: string;
  readonly mod_revision?: string;
  readonly lease?: string;
}
interface RangeResponse { readonly header?: GwHeader; readonly kvs?: readonly GwKv[] }
interface TxnResponse {
  readonly header?: GwHeader;
  readonly succeeded?: boolean;
  readonly responses?: readonly {
    readonly response_put?: { readonly prev_kv?: GwKv };
    readonly response_delete_range?: { readonly deleted?: string };
  }[];
}
interface GrantResponse { readonly ID?: string; readonly TTL?: string; readonly error?: string }
interface TimeToLiveResponse { readonly TTL?: string; readonly keys?: readonly string[] }
interface KeepaliveMessage { readonly result?: { readonly TTL?: string }; readonly error?: { readonly message?: string } }
interface WatchMessage {
  readonly result?: {
    readonly header?: GwHeader;
    readonly created?: boolean;
    readonly canceled?: boolean;
    readonly compact_revision?: string;
    readonly cancel_reason?: string;
    readonly events?: readonly { readonly type?: 'PUT' | 'DELETE'; readonly kv: GwKv }[];
  };
  readonly error?: { readonly message?: string; readonly code?: number };
}

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
const unb64 = (s: string | undefined): string => (s === undefined ? '' : Buffer.from(s, 'base64').toString('utf8'));

// ---- the HTTP client ---------------------------------------------------------------------------

/** An open streaming call (see GatewayClient.stream). */
interface GatewayStream {
  /** Origin of the endpoint it runs on, for messages. */
  readonly endpoint: string;
  abort(): void;
  send(msg: unknown): void;
  dead(why: string): void;
}

type RequestFn = (opts: RequestOptions, cb: (res: IncomingMessage) => void) => ClientRequest;

/** JSON over HTTP(S) to one of several endpoints, with an auth token when configured. */
class GatewayClient {
  private readonly endpoints: URL[];
  private current = 0;
  private readonly request: RequestFn;
  private readonly agent: HttpAgent;
  private readonly tls: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  private token: string | null = null;
  private authenticating: Promise<void> | null = null;
  private readonly streams = new Set<ClientRequest>();
  reconnects = 0;
  private failing = false;

  constructor(private readonly opts: EtcdClientOptions, readonly location: string) {
    this.endpoints = opts.endpoints.map((e) => {
      let u: URL;
      try {
        u = new URL(e);
      } catch (err) {
        throw new WeftError('CONFIG_INVALID', `etcd endpoint ${JSON.stringify(e)} is not a URL`, { cause: err });
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new WeftError('CONFIG_INVALID', `etcd endpoint ${e}: only http:// and https:// are supported`);
      return u;
    });
    const https = this.endpoints.some((u) => u.protocol === 'https:');
    if (https && this.endpoints.some((u) => u.protocol === 'http:')) {
      throw new WeftError('CONFIG_INVALID', `etcd endpoints ${location}: all http:// or all https://, not a mix`);
    }
    checkEtcdTransport(opts);
    this.tls = readTlsFiles(opts);
    // Loaded on demand: https (and its TLS stack) only when an endpoint needs it.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = (https ? require('node:https') : require('node:http')) as typeof import('node:http');
    this.request = mod.request as RequestFn;
    this.agent = new mod.Agent({ keepAlive: true, maxSockets: 16, ...this.tls } as ConstructorParameters<typeof mod.Agent>[0]);
  }

  /** One unary call: POST `path` with `body`, JSON answer. Rejects with EtcdHttpError or a transport error. */
  async call<T>(path: string, body: unknown, timeoutMs: number): Promise<T> {
    await this.ensureAuth(timeoutMs);
    try {
      return await this.callOnce<T>(path, body, timeoutMs);
    } catch (err) {
      if (err instanceof EtcdHttpError && err.authTokenInvalid && this.opts.username) {
        this.token = null;
        await this.ensureAuth(timeoutMs);
        return this.callOnce<T>(path, body, timeoutMs);
      }
      throw err;
    }
  }

  /** Try the current endpoint, then each other one once (a quick failover, no breaker). */
  private async callOnce<T>(path: string, body: unknown, timeoutMs: number): Promise<T> {
    let lastErr: unknown = null;
    for (let attempt = 0; attempt < this.endpoints.length; attempt++) {
      const idx = (this.current + attempt) % this.endpoints.length;
      try {
        const out = await this.post<T>(this.endpoints[idx]!, path, body, timeoutMs);
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

  private post<T>(endpoint: URL, path: string, body: unknown, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const data = JSON.stringify(body);
      let done = false;
      const finish = (err: unknown, value?: T): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err !== null) reject(err);
        else resolve(value as T);
      };
      const req = this.request({
        host: endpoint.hostname, port: endpoint.port || (endpoint.protocol === 'https:' ? 443 : 80), path, method: 'POST', agent: this.agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...(this.token ? { authorization: this.token } : {}) },
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => finish(err));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: Record<string, unknown>;
          try {
            json = JSON.parse(text) as Record<string, unknown>;
          } catch {
            finish(new EtcdHttpError(res.statusCode ?? 0, null, `HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
            return;
          }
          const errObj = json.error;
          if ((res.statusCode ?? 0) >= 400 || (typeof errObj === 'string' && json.code !== undefined)) {
            const message = typeof json.message === 'string' ? json.message : typeof errObj === 'string' ? errObj : `HTTP ${res.statusCode}`;
            finish(new EtcdHttpError(res.statusCode ?? 0, typeof json.code === 'number' ? json.code : null, message));
            return;
          }
          finish(null, json as T);
        });
      });
      const timer = setTimeout(() => {
        req.destroy(new Error(`no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      req.on('error', (err) => finish(err));
      req.end(data);
    });
  }

  /**
   * A streaming call (watch): POST `body` and keep the request open; `onMessage` gets each
   * newline-delimited JSON message, `onEnd` once when the stream ends for any reason.
   * Returns the stream: abort() ends it (onEnd is then not called), send() writes one more
   * request on it, dead() ends it as unresponsive (onEnd is called; the next stream and call
   * go to another endpoint).
   */
  async stream(path: string, body: unknown, onMessage: (msg: unknown) => void, onEnd: (err: Error | null) => void, timeoutMs: number): Promise<GatewayStream> {
    await this.ensureAuth(timeoutMs);
    const endpointIndex = this.current;
    const endpoint = this.endpoints[endpointIndex]!;
    const data = JSON.stringify(body);
    let ended = false;
    let aborted = false;
    const end = (err: Error | null): void => {
      if (ended) return;
      ended = true;
      this.streams.delete(req);
      if (!aborted) onEnd(err);
    };
    // Its own connection (agent: false): a watch holds it for as long as it lives.
    const req = this.request({
      host: endpoint.hostname, port: endpoint.port || (endpoint.protocol === 'https:' ? 443 : 80), path, method: 'POST', agent: false, ...this.tls,
      headers: { 'content-type': 'application/json', ...(this.token ? { authorization: this.token } : {}) },
    } as RequestOptions, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line === '') continue;
          let msg: unknown;
          try {
            msg = JSON.parse(line);
          } catch (err) {
            req.destroy(new Error(`undecodable watch message: ${describeError(err)}`));
            return;
          }
          onMessage(msg);
        }
      });
      res.on('end', () => end(new Error('etcd closed the stream')));
      res.on('error', (err) => end(err));
      res.on('close', () => end(new Error('stream closed')));
    });
    req.on('socket', (s) => s.setKeepAlive(true, 30_000));
    req.on('error', (err) => {
      // Next attempt on the next endpoint.
      this.endpointFailed(endpointIndex);
      end(err);
    });
    this.streams.add(req);
    // The request body stays open: closing it would end the stream (gRPC half-close).
    req.write(data + '\n');
    return {
      endpoint: endpoint.origin,
      abort: () => {
        aborted = true;
        ended = true;
        this.streams.delete(req);
        req.destroy();
      },
      send: (msg: unknown) => {
        if (!ended) req.write(JSON.stringify(msg) + '\n');
      },
      dead: (why: string) => {
        this.endpointFailed(endpointIndex);
        req.destroy(new Error(why));
      },
    };
  }

  /** Move off endpoint `idx` (if it is still the current one): the next call or stream tries the next. */
  private endpointFailed(idx: number): void {
    this.failing = true;
    if (this.current === idx) this.current = (idx + 1) % this.endpoints.length;
  }

  private async ensureAuth(timeoutMs: number): Promise<void> {
    if (!this.opts.username || this.token !== null) return;
    this.authenticating ??= this.callOnce<{ token?: string }>('/v3/auth/authenticate', { name: this.opts.username, password: this.opts.password ?? '' }, timeoutMs)
      .then((res) => {
        if (!res.token) throw new EtcdHttpError(200, null, 'etcd returned no auth token (is authentication enabled?)');
        this.token = res.token;
      })
      .finally(() => {
        this.authenticating = null;
      });
    await this.authenticating;
  }

  close(): void {
    for (const s of [...this.streams]) s.destroy();
    this.streams.clear();
    this.agent.destroy();
  }
}

// ---- the wire ----------------------------------------------------------------------------------

const toKv = (kv: GwKv): WireKv => ({ key: unb64(kv.key), value: unb64(kv.value), leaseId: kv.lease ?? '0', modRevision: kv.mod_revision ?? '0' });

export class EtcdHttpWire implements EtcdWire {
  readonly location: string;
  /** The CLI and tests hold leases too: the renewal timer alone does not keep them running (weftd has other handles). */
  readonly keepsProcessAlive = false;
  private readonly client: GatewayClient;
  private readonly callTimeoutMs: number;

  /** Throws WeftError('CONFIG_INVALID') for unreadable TLS files or bad endpoint lists. */
  constructor(opts: EtcdClientOptions) {
    if (opts.endpoints.length === 0) throw new WeftError('CONFIG_INVALID', 'etcd endpoints: none given; set --etcd-endpoints');
    this.location = opts.endpoints.join(',');
    this.callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.client = new GatewayClient(opts, this.location);
  }

  async range(key: string, prefix: boolean): Promise<{ revision: string; kvs: WireKv[] }> {
    const res = await this.call<RangeResponse>('/v3/kv/range', prefix ? { key: b64(key), range_end: prefixEnd(key).toString('base64') } : { key: b64(key) });
    return { revision: res.header?.revision ?? '0', kvs: (res.kvs ?? []).map(toKv) };
  }

  async txn(compare: readonly TxnCompare[], ops: readonly TxnOp[]): Promise<TxnResult> {
    const res = await this.call<TxnResponse>('/v3/kv/txn', {
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
    const first = res.responses?.[0];
    const prevKv = first?.response_put?.prev_kv;
    const deleted = first?.response_delete_range?.deleted;
    return {
      succeeded: res.succeeded === true,
      revision: res.header?.revision ?? '0',
      ...(prevKv === undefined ? {} : { prevLeaseId: prevKv.lease ?? '0' }),
      ...(deleted === undefined ? {} : { deleted }),
    };
  }

  async grant(ttlSeconds: number): Promise<{ id: string; ttl: number }> {
    const res = await this.call<GrantResponse>('/v3/lease/grant', { TTL: String(ttlSeconds) });
    if (!res.ID) throw new WeftError('ETCD_UNAVAILABLE', `etcd at ${this.location} granted no lease: ${res.error ?? 'empty answer'}`, { retryable: true });
    return { id: res.ID, ttl: Number(res.TTL ?? ttlSeconds) };
  }

  /** One request with the body closed: one answer. */
  async keepaliveOnce(id: string, timeoutMs: number): Promise<number> {
    const msg = await this.client.call<KeepaliveMessage>('/v3/lease/keepalive', { ID: id }, timeoutMs);
    if (msg.error !== undefined) throw new Error(msg.error.message ?? 'keepalive failed');
    return Number(msg.result?.TTL ?? 0);
  }

  async timeToLive(id: string, keys: boolean): Promise<{ ttl: number; keys: number }> {
    const res = await this.call<TimeToLiveResponse>('/v3/lease/timetolive', keys ? { ID: id, keys: true } : { ID: id });
    return { ttl: Number(res.TTL ?? -1), keys: res.keys?.length ?? 0 };
  }

  async revoke(id: string): Promise<void> {
    await this.call('/v3/lease/revoke', { ID: id });
  }

  watchPrefix(prefix: string, sink: WatchSink): WireWatch {
    const w = new HttpWatchStream(this.client, this.callTimeoutMs, prefix, sink);
    w.start();
    return w;
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
    this.client.close();
  }

  private call<T>(path: string, body: unknown): Promise<T> {
    return this.client.call<T>(path, body, this.callTimeoutMs);
  }
}

/**
 * One watch stream that survives disconnections: it resumes from the sink's resume revision,
 * after a Backoff of 100 ms doubling to 5 s (each attempt is a TCP connect), on the next
 * endpoint when this one failed.
 */
class HttpWatchStream implements WireWatch {
  private done = false;
  private stream: GatewayStream | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private lastMessageAt = 0;
  private probeSentAt: number | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly backoff = new Backoff({ initialMs: 100, maxMs: 5000 });

  constructor(private readonly client: GatewayClient, private readonly callTimeoutMs: number, private readonly dir: string, private readonly sink: WatchSink) {}

  start(): void {
    if (this.done) return;
    const request = { create_request: { key: b64(this.dir), range_end: prefixEnd(this.dir).toString('base64'), start_revision: this.sink.resumeRevision(), progress_notify: true } };
    this.client.stream('/v3/watch', request, (m) => this.onMessage(m as WatchMessage), (err) => this.onEnd(err), this.callTimeoutMs)
      .then((stream) => {
        if (this.done) {
          stream.abort();
          return;
        }
        this.stream = stream;
        this.lastMessageAt = Date.now();
        this.probeSentAt = null;
        this.armProbe();
      }, (err: unknown) => this.onEnd(err instanceof Error ? err : new Error(String(err))));
  }

  /**
   * Liveness: an idle watch cannot tell a quiet etcd from a dead or frozen one (a member that
   * crashed without a RST, a partition: TCP keepalive takes minutes). After WATCH_PROBE_MS
   * without a message, ask etcd for a progress report on the stream (WatchProgressRequest,
   * etcd ≥ 3.4); no answer within WATCH_PROBE_TIMEOUT_MS ends the stream as dead, and the watch
   * resumes on the next endpoint from the next undelivered revision.
   */
  private armProbe(): void {
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    const now = Date.now();
    const due = this.probeSentAt === null ? this.lastMessageAt + WATCH_PROBE_MS : this.probeSentAt + WATCH_PROBE_TIMEOUT_MS;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      const stream = this.stream;
      if (this.done || stream === null) return;
      const at = Date.now();
      if (this.probeSentAt !== null) {
        if (this.lastMessageAt < this.probeSentAt) {
          stream.dead(`no answer from ${stream.endpoint} to a watch progress request within ${at - this.probeSentAt} ms`);
          return;
        }
        this.probeSentAt = null; // answered
      } else if (at - this.lastMessageAt >= WATCH_PROBE_MS) {
        this.probeSentAt = at;
        stream.send({ progress_request: {} });
      }
      this.armProbe();
    }, Math.max(0, due - now));
    this.probeTimer.unref();
  }

  private onMessage(msg: WatchMessage): void {
    if (this.done) return;
    this.lastMessageAt = Date.now();
    if (msg.error !== undefined) {
      this.onEnd(new Error(msg.error.message ?? 'watch error'));
      return;
    }
    const r = msg.result;
    if (r === undefined) return;
    if (r.created === true) this.backoff.reset();
    if (r.canceled === true) {
      const compacted = r.compact_revision !== undefined && r.compact_revision !== '0';
      this.stop();
      this.sink.canceled(compacted ? `history compacted up to revision ${r.compact_revision}` : r.cancel_reason || 'canceled by etcd');
      return;
    }
    this.sink.response({
      created: r.created === true,
      events: (r.events ?? []).map((ev) => ({ deleted: ev.type === 'DELETE', kv: toKv(ev.kv) })),
      ...(r.header?.revision === undefined ? {} : { headerRevision: r.header.revision }),
    });
  }

  private onEnd(err: Error | null): void {
    if (this.done) return;
    this.stream?.abort();
    this.stream = null;
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    this.sink.disconnected(err);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.start();
    }, this.backoff.next());
  }

  async close(): Promise<void> {
    this.stop();
  }

  private stop(): void {
    this.done = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    this.stream?.abort();
    this.stream = null;
  }
}
