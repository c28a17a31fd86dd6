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

/**
 * The watch stream asks etcd for a progress report this often and is taken for dead when the
 * report asked for at the previous tick is still unanswered: a frozen member is noticed within
 * 2 × 7.5 s = 15 s, as before this was one timer (test/e2e/faults-cluster.test.ts allows 20 s),
 * for 8 timer wake-ups and 8 answers a minute while idle.
 */
const WATCH_PROBE_MS = 7500;

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
    /** Absent for watcher 0 (weft numbers its watchers from 1); "-1": a progress report for the stream. */
    readonly watch_id?: string;
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

  private call<T>(path: string, body: unknown): Promise<T> {
    return this.client.call<T>(path, body, this.callTimeoutMs);
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
  private probeTimer: NodeJS.Timeout | null = null;
  private lastMessageAt = 0;
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
    this.client.stream('/v3/watch', first.createRequest(), (m) => this.onMessage(m as WatchMessage), (err) => this.onEnd(err), this.callTimeoutMs)
      .then((stream) => {
        this.connecting = false;
        if (this.watchers.size === 0) {
          stream.abort();
          return;
        }
        this.stream = stream;
        this.created.add(first.id);
        // Watchers added while connecting (or the first one, closed meanwhile: cancelled).
        if (!this.watchers.has(first.id)) stream.send({ cancel_request: { watch_id: first.id } });
        for (const w of this.watchers.values()) if (!this.created.has(w.id)) this.create(stream, w);
        this.lastMessageAt = Date.now();
        this.probeSentAt = null;
        this.armProbe();
      }, (err: unknown) => {
        this.connecting = false;
        this.onEnd(err instanceof Error ? err : new Error(String(err)));
      });
  }

  private create(stream: GatewayStream, w: HttpWatcher): void {
    this.created.add(w.id);
    stream.send(w.createRequest());
  }

  /**
   * Liveness: an idle watch cannot tell a quiet etcd from a dead or frozen one (a member that
   * crashed without a RST, a partition: TCP keepalive takes minutes, and a frozen etcd's kernel
   * still answers it). One timer every `probeMs`: each tick asks etcd for a progress report on
   * the stream (WatchProgressRequest, etcd ≥ 3.4) — unless the one asked at the previous tick is
   * still unanswered: then the stream is ended as dead and re-opened on the next endpoint, every
   * watcher resuming from its next undelivered revision. So a stream that goes silent is noticed
   * within 2 × probeMs, at the cost of one timer wake-up and one answer (a read) per probeMs
   * while idle — no separate deadline timer. (Skipping the request when other messages arrived
   * since the last tick would save nothing while idle, where the answers are the only messages,
   * and would stretch the bound to 3 × probeMs.)
   */
  private armProbe(): void {
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      const stream = this.stream;
      if (stream === null) return;
      const at = Date.now();
      if (this.probeSentAt !== null && this.lastMessageAt < this.probeSentAt) {
        stream.dead(`no answer from ${stream.endpoint} to a watch progress request within ${at - this.probeSentAt} ms`);
        return;
      }
      this.probeSentAt = at;
      stream.send({ progress_request: {} });
      this.armProbe();
    }, this.probeMs);
    this.probeTimer.unref();
  }

  private onMessage(msg: WatchMessage): void {
    if (this.stream === null && !this.connecting) return;
    this.lastMessageAt = Date.now();
    if (msg.error !== undefined) {
      this.onEnd(new Error(msg.error.message ?? 'watch error'));
      return;
    }
    const r = msg.result;
    if (r === undefined) return;
    if (r.created === true) this.backoff.reset();
    const watcher = this.watchers.get(r.watch_id ?? '0');
    if (watcher === undefined) {
      // A progress report (watch_id -1: for the whole stream), or an answer for a watcher closed
      // meanwhile: every open watcher is as current as its header says.
      if (r.events === undefined && r.created !== true && r.canceled !== true) {
        for (const w of this.watchers.values()) w.deliver({ created: false, events: [], ...(r.header?.revision === undefined ? {} : { headerRevision: r.header.revision }) });
      }
      return;
    }
    if (r.canceled === true) {
      const compacted = r.compact_revision !== undefined && r.compact_revision !== '0';
      this.watchers.delete(watcher.id);
      this.created.delete(watcher.id);
      if (this.watchers.size === 0) this.end();
      watcher.cancel(compacted ? `history compacted up to revision ${r.compact_revision}` : r.cancel_reason || 'canceled by etcd');
      return;
    }
    watcher.deliver({
      created: r.created === true,
      events: (r.events ?? []).map((ev) => ({ deleted: ev.type === 'DELETE', kv: toKv(ev.kv) })),
      ...(r.header?.revision === undefined ? {} : { headerRevision: r.header.revision }),
    });
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
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    this.probeTimer = null;
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
