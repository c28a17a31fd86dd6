/**
 * LeaseRegistry on etcd's v3 API through its JSON gateway (`POST /v3/kv/range`, `/v3/kv/txn`,
 * `/v3/lease/*`, `/v3/watch` on the client port; etcd ≥ 3.4), with Node's own http/https.
 *
 * Why a second etcd client beside etcd-registry.ts (etcd3 over gRPC): start-up and memory.
 * Loading `etcd3` (grpc-js, protobufjs, which compiles its codecs at load) costs ~150 ms and
 * ~24 MB RSS on this machine, against a budget of 100 ms from exec to subnet.env and 60 MB RSS
 * (docs/performance.md has the figures). weftd needs eleven etcd calls, all plain JSON here.
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
 * Watch correctness: every event of one revision (a multi-key transaction, a prefix delete)
 * is delivered; after a reconnect, events below the next undelivered revision are skipped.
 *
 * Same contract as etcd-registry.ts (registry.ts); test/e2e/lease-etcd-http.test.ts runs the
 * contract tests of test/e2e/lease-etcd.test.ts against this implementation.
 */
import { readFileSync } from 'node:fs';
import type { Agent as HttpAgent, ClientRequest, IncomingMessage, RequestOptions } from 'node:http';
import type { DaemonOptions } from '../config/types';
import { WeftError, describeError } from '../errors';
import { silentLogger, type Logger } from '../log';
import { DEFAULT_PREFIX, configKey, decodeLease, encodeLeaseAttrs, fullSubnetKey, parseSubnetKey, subnetKeyOf, subnetsDir } from './codec';
import type { HostLease, InvalidSubnet, LeaseRegistry, RegistryStats, SubnetListing, SubnetWatch, SubnetWatchEvent } from './registry';
import type { Lease, LeaseAttrs } from './types';

export interface EtcdHttpRegistryOptions {
  /** e.g. ["http://127.0.0.1:2379"]; the first that answers is used, the others on failure. */
  readonly endpoints: readonly string[];
  /** Default /coreos.com/network. */
  readonly prefix?: string;
  readonly caFile?: string | null;
  readonly certFile?: string | null;
  readonly keyFile?: string | null;
  readonly username?: string | null;
  readonly password?: string | null;
  /** Deadline of each unary call. Default 5000 ms. */
  readonly callTimeoutMs?: number;
  /** --subnet-lease-renew-margin in seconds: renew at least this long before expiry. */
  readonly renewMarginSeconds?: number | null;
  readonly log?: Logger;
}

/** The registry options that weftd's flags (flanneld's names) describe. */
export function etcdHttpOptionsFrom(opts: DaemonOptions, log?: Logger): EtcdHttpRegistryOptions {
  return {
    endpoints: opts.etcdEndpoints,
    prefix: opts.etcdPrefix,
    caFile: opts.etcdCafile,
    certFile: opts.etcdCertfile,
    keyFile: opts.etcdKeyfile,
    username: opts.etcdUsername,
    password: opts.etcdPassword,
    renewMarginSeconds: opts.subnetLeaseRenewMarginMinutes * 60,
    ...(log === undefined ? {} : { log }),
  };
}

/** How a host lease is kept alive: the same rule as etcd-registry.ts's keepaliveTiming(). */
export function keepaliveTiming(ttlSeconds: number, renewMarginSeconds: number | null = null): {
  intervalMs: number; timeoutMs: number; retryMinMs: number; retryMaxMs: number;
} {
  const ttlMs = ttlSeconds * 1000;
  const byMargin = renewMarginSeconds === null ? Infinity : ttlMs - renewMarginSeconds * 1000;
  const intervalMs = Math.max(1000, Math.min(ttlMs / 3, byMargin));
  return { intervalMs, timeoutMs: Math.max(1000, Math.min(5000, intervalMs)), retryMinMs: 500, retryMaxMs: Math.max(1000, Math.min(5000, ttlMs / 4)) };
}

const DEFAULT_CALL_TIMEOUT_MS = 5000;
/** An idle watch asks etcd for a progress report this often... */
const WATCH_PROBE_MS = 10_000;
/** ...and is taken for dead when the answer does not come within this. */
const WATCH_PROBE_TIMEOUT_MS = 5000;
const TTL_QUERY_CONCURRENCY = 16;

// ---- wire types (the subset weft reads) ---------------------------------------------------------

interface WireHeader { readonly revision?: string }
interface WireKv {
  readonly key: string;
  readonly value?: string;
  readonly mod_revision?: string;
  readonly lease?: string;
}
interface RangeResponse { readonly header?: WireHeader; readonly kvs?: readonly WireKv[] }
interface TxnResponse {
  readonly header?: WireHeader;
  readonly succeeded?: boolean;
  readonly responses?: readonly {
    readonly response_put?: { readonly prev_kv?: WireKv };
    readonly response_delete_range?: { readonly deleted?: string };
  }[];
}
interface GrantResponse { readonly ID?: string; readonly TTL?: string; readonly error?: string }
interface TimeToLiveResponse { readonly TTL?: string; readonly keys?: readonly string[] }
interface KeepaliveMessage { readonly result?: { readonly TTL?: string }; readonly error?: { readonly message?: string } }
interface WatchMessage {
  readonly result?: {
    readonly header?: WireHeader;
    readonly created?: boolean;
    readonly canceled?: boolean;
    readonly compact_revision?: string;
    readonly cancel_reason?: string;
    readonly events?: readonly { readonly type?: 'PUT' | 'DELETE'; readonly kv: WireKv }[];
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

/** The range_end that makes a range "every key with this prefix". */
function prefixEnd(prefix: string): string {
  const b = Buffer.from(prefix, 'utf8');
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const out = b.subarray(0, i + 1);
      out[i]!++;
      return out.toString('base64');
    }
  }
  return Buffer.from([0]).toString('base64');
}

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

  constructor(private readonly opts: EtcdHttpRegistryOptions, readonly location: string) {
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
    const read = (what: string, file: string): Buffer => {
      try {
        return readFileSync(file);
      } catch (err) {
        throw new WeftError('CONFIG_INVALID', `read etcd ${what} ${file}: ${describeError(err)}`, { cause: err });
      }
    };
    if (Boolean(opts.certFile) !== Boolean(opts.keyFile)) {
      throw new WeftError('CONFIG_INVALID', 'etcd TLS: --etcd-certfile and --etcd-keyfile must be given together');
    }
    this.tls = {
      ...(opts.caFile ? { ca: read('CA file', opts.caFile) } : {}),
      ...(opts.certFile ? { cert: read('cert file', opts.certFile) } : {}),
      ...(opts.keyFile ? { key: read('key file', opts.keyFile) } : {}),
    };
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

// ---- the registry ------------------------------------------------------------------------------

type DecodedKv =
  | { key: string; lease: Lease; error?: undefined }
  | { key: string; lease?: undefined; error: WeftError; modRevision: string };

export class EtcdHttpLeaseRegistry implements LeaseRegistry {
  readonly prefix: string;
  readonly location: string;
  private readonly client: GatewayClient;
  private readonly log: Logger;
  private readonly callTimeoutMs: number;
  private readonly renewMarginSeconds: number | null;
  private readonly hostLeases = new Set<HttpHostLease>();
  private readonly watches = new Set<HttpSubnetWatch>();
  private closed = false;
  /** Figures for /metrics; the watches update them. */
  readonly counters = { watchResponses: 0, watchRevisionLag: 0, lastWatchResponseAt: null as number | null, watchReconnects: 0 };

  /** Throws WeftError('CONFIG_INVALID') for unreadable TLS files or bad endpoint lists. */
  constructor(opts: EtcdHttpRegistryOptions) {
    if (opts.endpoints.length === 0) throw new WeftError('CONFIG_INVALID', 'etcd endpoints: none given; set --etcd-endpoints');
    this.prefix = opts.prefix ?? DEFAULT_PREFIX;
    this.location = opts.endpoints.join(',');
    this.log = (opts.log ?? silentLogger).child({ component: 'etcd' });
    this.callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.renewMarginSeconds = opts.renewMarginSeconds ?? null;
    this.client = new GatewayClient(opts, this.location);
  }

  stats(): RegistryStats {
    return {
      reconnects: this.client.reconnects + this.counters.watchReconnects,
      watchResponses: this.counters.watchResponses,
      watchRevisionLag: this.counters.watchRevisionLag,
      lastWatchResponseAt: this.counters.lastWatchResponseAt,
    };
  }

  async getConfig(): Promise<string | null> {
    const key = configKey(this.prefix);
    const res = await this.call<RangeResponse>(`get ${key}`, '/v3/kv/range', { key: b64(key) });
    const kv = res.kvs?.[0];
    return kv === undefined ? null : unb64(kv.value);
  }

  async listSubnets(opts: { readonly expirations?: boolean } = {}): Promise<SubnetListing> {
    const dir = subnetsDir(this.prefix);
    const res = await this.call<RangeResponse>(`list ${dir}`, '/v3/kv/range', { key: b64(dir), range_end: prefixEnd(dir) });
    const kvs = res.kvs ?? [];
    const expirations = opts.expirations === true ? await this.expirationsOf(kvs) : new Map<string, Date | null>();
    const leases: Lease[] = [];
    const invalid: InvalidSubnet[] = [];
    for (const kv of kvs) {
      const decoded = this.decodeKv(kv, expirations.get(kv.lease ?? '0') ?? null);
      if (decoded === null) continue;
      if (decoded.error !== undefined) invalid.push({ key: decoded.key, error: decoded.error, modRevision: decoded.modRevision });
      else leases.push(decoded.lease);
    }
    return { leases, invalid, revision: res.header?.revision ?? '0' };
  }

  async grantHostLease(ttlSeconds: number): Promise<HostLease> {
    const res = await this.call<GrantResponse>(`grant lease (TTL ${ttlSeconds} s)`, '/v3/lease/grant', { TTL: String(ttlSeconds) });
    if (!res.ID) throw new WeftError('ETCD_UNAVAILABLE', `etcd at ${this.location} granted no lease: ${res.error ?? 'empty answer'}`, { retryable: true });
    const handle = new HttpHostLease(res.ID, ttlSeconds, Number(res.TTL ?? ttlSeconds), keepaliveTiming(ttlSeconds, this.renewMarginSeconds), this.client, this.log,
      () => this.hostLeases.delete(handle));
    this.hostLeases.add(handle);
    return handle;
  }

  async createSubnet(key: string, attrs: LeaseAttrs, lease: HostLease): Promise<Lease | null> {
    const full = fullSubnetKey(this.prefix, key);
    const value = encodeLeaseAttrs(attrs);
    // flannel's createSubnet: if version(key) == 0 then put(key, value, lease).
    const res = await this.leaseCall<TxnResponse>(`create ${full}`, lease, '/v3/kv/txn', {
      compare: [{ key: b64(full), target: 'VERSION', result: 'EQUAL', version: '0' }],
      success: [{ request_put: { key: b64(full), value: b64(value), lease: lease.id } }],
    });
    if (res.succeeded !== true) return null;
    return decodeLease(key, value, { etcdLeaseId: lease.id, modRevision: res.header?.revision ?? '0' });
  }

  async updateSubnet(key: string, attrs: LeaseAttrs, lease: HostLease | null, expectModRevision: string): Promise<Lease | null> {
    const full = fullSubnetKey(this.prefix, key);
    const value = encodeLeaseAttrs(attrs);
    const leaseId = lease === null ? '0' : lease.id;
    const res = await this.leaseCall<TxnResponse>(`update ${full}`, lease, '/v3/kv/txn', {
      compare: [{ key: b64(full), target: 'MOD', result: 'EQUAL', mod_revision: expectModRevision }],
      success: [{ request_put: { key: b64(full), value: b64(value), lease: leaseId, prev_kv: true } }],
    });
    if (res.succeeded !== true) return null;
    const prevLease = res.responses?.[0]?.response_put?.prev_kv?.lease;
    if (prevLease !== undefined && prevLease !== '0' && prevLease !== leaseId) await this.revokeIfEmpty(prevLease, full);
    return decodeLease(key, value, { etcdLeaseId: lease === null ? null : lease.id, modRevision: res.header?.revision ?? '0' });
  }

  async deleteSubnet(key: string, expectModRevision?: string): Promise<boolean> {
    const full = fullSubnetKey(this.prefix, key);
    const res = await this.call<TxnResponse>(`delete ${full}`, '/v3/kv/txn', {
      compare: expectModRevision === undefined ? [] : [{ key: b64(full), target: 'MOD', result: 'EQUAL', mod_revision: expectModRevision }],
      success: [{ request_delete_range: { key: b64(full) } }],
    });
    const deleted = res.responses?.[0]?.response_delete_range?.deleted;
    return res.succeeded === true && deleted !== undefined && deleted !== '0';
  }

  async createReservation(key: string, attrs: LeaseAttrs): Promise<Lease | null> {
    const full = fullSubnetKey(this.prefix, key);
    const value = encodeLeaseAttrs(attrs);
    const res = await this.call<TxnResponse>(`create reservation ${full}`, '/v3/kv/txn', {
      compare: [{ key: b64(full), target: 'VERSION', result: 'EQUAL', version: '0' }],
      success: [{ request_put: { key: b64(full), value: b64(value) } }],
    });
    if (res.succeeded !== true) return null;
    return decodeLease(key, value, { etcdLeaseId: null, modRevision: res.header?.revision ?? '0' });
  }

  async revokeLease(leaseId: string): Promise<boolean> {
    try {
      await this.call(`revoke lease ${leaseId}`, '/v3/lease/revoke', { ID: leaseId });
      return true;
    } catch (err) {
      if (err instanceof WeftError && err.cause instanceof EtcdHttpError && err.cause.leaseNotFound) return false;
      throw err;
    }
  }

  async putConfig(text: string): Promise<void> {
    const key = configKey(this.prefix);
    await this.call(`put ${key}`, '/v3/kv/put', { key: b64(key), value: b64(text) });
  }

  watchSubnets(fromRevision: string, handler: (event: SubnetWatchEvent) => void): SubnetWatch {
    const dir = subnetsDir(this.prefix);
    const w: HttpSubnetWatch = new HttpSubnetWatch({
      fromRevision, handler, log: this.log, client: this.client, counters: this.counters, callTimeoutMs: this.callTimeoutMs,
      request: (rev) => ({ create_request: { key: b64(dir), range_end: prefixEnd(dir), start_revision: rev, progress_notify: true } }),
      decode: (kv) => this.decodeKv(kv, null),
      removed: (kv) => this.removedEvent(kv),
      forget: () => this.watches.delete(w),
    });
    if (this.closed) {
      w.fail('the lease registry is closed');
      return w;
    }
    this.watches.add(w);
    w.start();
    return w;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.watches].map((w) => w.close()));
    for (const l of [...this.hostLeases]) l.release();
    this.client.close();
  }

  // ---- internals -------------------------------------------------------------------------------

  /** null: not a subnet key at all (something nested under subnets/). */
  private decodeKv(kv: WireKv, expiration: Date | null): DecodedKv | null {
    const key = subnetKeyOf(this.prefix, unb64(kv.key));
    if (key === null) return null;
    const modRevision = kv.mod_revision ?? '0';
    try {
      return { key, lease: decodeLease(key, unb64(kv.value), { etcdLeaseId: kv.lease ?? '0', modRevision, expiration }) };
    } catch (err) {
      const error = err instanceof WeftError ? err : new WeftError('BAD_DATA', `decode lease ${key}: ${describeError(err)}`, { cause: err });
      return { key, error, modRevision };
    }
  }

  private removedEvent(kv: WireKv): SubnetWatchEvent | null {
    const key = subnetKeyOf(this.prefix, unb64(kv.key));
    const parsed = key === null ? null : parseSubnetKey(key);
    if (key === null || parsed === null) return null;
    return { type: 'removed', key, subnet: parsed.subnet, ...(kv.mod_revision === undefined ? {} : { revision: kv.mod_revision }) };
  }

  private async expirationsOf(kvs: readonly WireKv[]): Promise<Map<string, Date | null>> {
    const ids = [...new Set(kvs.map((kv) => kv.lease ?? '0').filter((id) => id !== '0'))];
    const out = new Map<string, Date | null>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < ids.length) {
        const id = ids[next++]!;
        const res = await this.call<TimeToLiveResponse>(`query TTL of lease ${id}`, '/v3/lease/timetolive', { ID: id });
        // TTL -1: the lease expired between the list and this query; the key is going too.
        out.set(id, new Date(Date.now() + Math.max(0, Number(res.TTL ?? -1)) * 1000));
      }
    };
    await Promise.all(Array.from({ length: Math.min(TTL_QUERY_CONCURRENCY, ids.length) }, worker));
    return out;
  }

  /** Revoke the etcd lease a key moved off when it holds nothing else (our previous run's). */
  private async revokeIfEmpty(leaseId: string, movedKey: string): Promise<void> {
    try {
      const ttl = await this.client.call<TimeToLiveResponse>('/v3/lease/timetolive', { ID: leaseId, keys: true }, this.callTimeoutMs);
      if (Number(ttl.TTL ?? -1) <= 0 || (ttl.keys?.length ?? 0) > 0) return;
      await this.client.call('/v3/lease/revoke', { ID: leaseId }, this.callTimeoutMs);
      this.log.info('revoked the etcd lease our key moved off (it held no other keys)', { lease: leaseId, key: movedKey });
    } catch (err) {
      // Harmless if it fails: the empty lease just expires at the end of its TTL.
      this.log.debug('could not revoke the previous etcd lease; it will expire by itself', { lease: leaseId, error: describeError(err) });
    }
  }

  private async call<T>(op: string, path: string, body: unknown): Promise<T> {
    if (this.closed) throw new WeftError('INTERNAL', `${op}: the etcd lease registry is closed`);
    try {
      return await this.client.call<T>(path, body, this.callTimeoutMs);
    } catch (err) {
      throw this.wrap(op, err);
    }
  }

  /** A write attached to `lease`: etcd's "lease not found" means the lease is lost. */
  private async leaseCall<T>(op: string, lease: HostLease | null, path: string, body: unknown): Promise<T> {
    if (this.closed) throw new WeftError('INTERNAL', `${op}: the etcd lease registry is closed`);
    try {
      return await this.client.call<T>(path, body, this.callTimeoutMs);
    } catch (err) {
      if (err instanceof EtcdHttpError && err.leaseNotFound && lease !== null) {
        if (lease instanceof HttpHostLease) lease.markLost(err);
        throw new WeftError('LEASE_CONFLICT', `${op}: etcd lease ${lease.id} is expired or revoked`, { cause: err, retryable: true });
      }
      throw this.wrap(op, err);
    }
  }

  private wrap(op: string, err: unknown): WeftError {
    if (err instanceof WeftError) return err;
    if (err instanceof EtcdHttpError && err.refused) {
      return new WeftError('ETCD_UNAVAILABLE', `etcd at ${this.location} refused ${op}: ${err.message}; check --etcd-username/--etcd-password and the user's role`, { cause: err });
    }
    if (err instanceof EtcdHttpError) {
      return new WeftError('ETCD_UNAVAILABLE', `etcd at ${this.location}: ${op}: ${err.message}`, { cause: err, retryable: true });
    }
    return new WeftError(
      'ETCD_UNAVAILABLE',
      `cannot reach etcd at ${this.location}: ${op}: ${describeError(err)}; check --etcd-endpoints and that etcd is running`,
      { cause: err, retryable: true },
    );
  }
}

/**
 * The host's etcd lease, kept alive by one short keepalive call per interval (TTL/3, or earlier
 * by the renew margin); failures retried with a bounded backoff and logged once per outage.
 */
class HttpHostLease implements HostLease {
  private lostFlag = false;
  private released = false;
  private failures = 0;
  private failingSince: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private expiresMs: number;
  private readonly listeners = new Set<(err: WeftError) => void>();

  constructor(
    readonly id: string,
    readonly ttlSeconds: number,
    grantedTtl: number,
    private readonly timing: ReturnType<typeof keepaliveTiming>,
    private readonly client: GatewayClient,
    private readonly log: Logger,
    private readonly forget: () => void,
  ) {
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
  }

  private schedule(ms: number): void {
    if (this.released || this.lostFlag) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.renew();
    }, ms);
    // The lease alone must not keep a process alive (the CLI, tests): weftd has other handles.
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    let ttl: number;
    try {
      const msg = await this.client.call<KeepaliveMessage>('/v3/lease/keepalive', { ID: this.id }, this.timing.timeoutMs);
      if (msg.error !== undefined) throw new Error(msg.error.message ?? 'keepalive failed');
      ttl = Number(msg.result?.TTL ?? 0);
    } catch (err) {
      if (this.released || this.lostFlag) return;
      if (err instanceof EtcdHttpError && err.leaseNotFound) {
        this.markLost(err);
        return;
      }
      this.failures++;
      if (this.failingSince === null) {
        this.failingSince = Date.now();
        this.log.warn('etcd lease keepalive failing; retrying with backoff (the lease survives outages shorter than its TTL)', {
          lease: this.id, ttlSeconds: this.ttlSeconds, error: describeError(err),
        });
      }
      const backoff = Math.min(this.timing.retryMinMs * 2 ** (this.failures - 1), this.timing.retryMaxMs);
      this.schedule(Math.round(backoff * (0.75 + Math.random() * 0.5)));
      return;
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
    this.failures = 0;
    this.failingSince = null;
    this.schedule(this.timing.intervalMs);
  }
}

interface WatchSetup {
  readonly fromRevision: string;
  readonly handler: (event: SubnetWatchEvent) => void;
  readonly log: Logger;
  readonly client: GatewayClient;
  readonly counters: EtcdHttpLeaseRegistry['counters'];
  readonly callTimeoutMs: number;
  readonly request: (fromRevision: string) => unknown;
  readonly decode: (kv: WireKv) => DecodedKv | null;
  readonly removed: (kv: WireKv) => SubnetWatchEvent | null;
  readonly forget: () => void;
}

/**
 * A prefix watch that survives disconnections: it resumes from the next revision not yet
 * delivered, with a backoff of 100 ms doubling to 5 s (each attempt is a TCP connect).
 *
 *   connecting ──created──► streaming ──stream ends / error / no answer to a progress probe──► backoff ──► connecting
 *       │                      │
 *       └──────────────────────┴──canceled (compacted) ──► done: 'reset' delivered once
 *   close() from any state ──► done (nothing delivered after close() resolves)
 */
class HttpSubnetWatch implements SubnetWatch {
  private done = false;
  private stream: GatewayStream | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private lastMessageAt = 0;
  private probeSentAt: number | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private disconnected = false;
  private backoffMs = 100;
  /** Next revision not delivered yet: the resume point. */
  private nextRevision: bigint;

  constructor(private readonly s: WatchSetup) {
    this.nextRevision = BigInt(s.fromRevision);
  }

  start(): void {
    if (this.done) return;
    this.s.client.stream('/v3/watch', this.s.request(this.nextRevision.toString()), (m) => this.onMessage(m as WatchMessage), (err) => this.onEnd(err), this.s.callTimeoutMs)
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
    this.s.counters.watchResponses++;
    this.s.counters.lastWatchResponseAt = Date.now();
    if (r.created === true) {
      this.backoffMs = 100;
      if (this.disconnected) {
        this.disconnected = false;
        this.s.counters.watchReconnects++;
        this.s.log.info('etcd watch reconnected', { fromRevision: this.nextRevision.toString() });
      }
    }
    if (r.canceled === true) {
      const compacted = r.compact_revision !== undefined && r.compact_revision !== '0';
      const why = compacted ? `history compacted up to revision ${r.compact_revision}` : r.cancel_reason || 'canceled by etcd';
      this.fail(`etcd ended the watch from revision ${this.nextRevision} (${why})`);
      return;
    }
    let maxRev = this.nextRevision - 1n;
    for (const ev of r.events ?? []) {
      const rev = BigInt(ev.kv.mod_revision ?? '0');
      // Replayed after a reconnect. Events of one revision arrive in one message, so a revision
      // is either wholly delivered (and below nextRevision) or not at all.
      if (rev < this.nextRevision) continue;
      if (rev > maxRev) maxRev = rev;
      let event: SubnetWatchEvent | null;
      if (ev.type === 'DELETE') {
        event = this.s.removed(ev.kv);
      } else {
        const decoded = this.s.decode(ev.kv);
        if (decoded === null) event = null;
        else if (decoded.error !== undefined) event = { type: 'invalid', key: decoded.key, error: decoded.error };
        else event = { type: 'added', lease: decoded.lease };
      }
      if (event !== null) this.s.handler(event);
      if (this.done) return;
    }
    if (maxRev + 1n > this.nextRevision) this.nextRevision = maxRev + 1n;
    const head = r.header?.revision;
    if (head !== undefined) this.s.counters.watchRevisionLag = Math.max(0, Number(BigInt(head) - (this.nextRevision - 1n)));
  }

  private onEnd(err: Error | null): void {
    if (this.done) return;
    this.stream?.abort();
    this.stream = null;
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    if (!this.disconnected) {
      this.disconnected = true;
      this.s.log.warn('etcd watch disconnected; resuming when etcd is back', { error: err === null ? 'stream ended' : describeError(err) });
    }
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, 5000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.start();
    }, delay);
  }

  /** End the watch with 'reset' (delivered asynchronously, once). */
  fail(reason: string): void {
    if (this.done) return;
    this.stopAll();
    setImmediate(() => this.s.handler({ type: 'reset', reason }));
  }

  async close(): Promise<void> {
    if (this.done) return;
    this.stopAll();
  }

  private stopAll(): void {
    this.done = true;
    this.s.forget();
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    this.stream?.abort();
    this.stream = null;
  }
}
