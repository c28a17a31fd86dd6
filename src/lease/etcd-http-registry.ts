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
 * Same contract as etcd-registry.ts (registry.ts), and the logic above the wire shared with it
 * (etcd-common.ts); test/e2e/helpers/registry-contract.ts has the contract tests that
 * test/e2e/lease-etcd-http.test.ts and test/e2e/lease-etcd.test.ts run.
 */
import type { Agent as HttpAgent, ClientRequest, IncomingMessage, RequestOptions } from 'node:http';
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
import type { HostLease, LeaseRegistry, RegistryStats, SubnetListing, SubnetWatch, SubnetWatchEvent } from './registry';
import type { Lease, LeaseAttrs } from './types';

export { keepaliveTiming } from './etcd-common';

/** The endpoints: the first that answers is used, the others on failure. */
export type EtcdHttpRegistryOptions = EtcdClientOptions;

/** The registry options that weftd's flags (flanneld's names) describe. */
export function etcdHttpOptionsFrom(opts: DaemonOptions, log?: Logger): EtcdHttpRegistryOptions {
  return etcdClientOptionsFrom(opts, log);
}

/** An idle watch asks etcd for a progress report this often... */
const WATCH_PROBE_MS = 10_000;
/** ...and is taken for dead when the answer does not come within this. */
const WATCH_PROBE_TIMEOUT_MS = 5000;

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

// ---- the registry ------------------------------------------------------------------------------

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
    const { leases, invalid } = splitDecoded(kvs.map((kv) => this.decodeKv(kv, expirations.get(kv.lease ?? '0') ?? null)));
    return { leases, invalid, revision: res.header?.revision ?? '0' };
  }

  async grantHostLease(ttlSeconds: number): Promise<HostLease> {
    const res = await this.call<GrantResponse>(`grant lease (TTL ${ttlSeconds} s)`, '/v3/lease/grant', { TTL: String(ttlSeconds) });
    if (!res.ID) throw new WeftError('ETCD_UNAVAILABLE', `etcd at ${this.location} granted no lease: ${res.error ?? 'empty answer'}`, { retryable: true });
    const handle: HttpHostLease = new HttpHostLease(res.ID, ttlSeconds, Number(res.TTL ?? ttlSeconds), keepaliveTiming(ttlSeconds, this.renewMarginSeconds), this.log,
      () => this.hostLeases.delete(handle), this.client);
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
    if (prevLease !== undefined && prevLease !== '0' && prevLease !== leaseId) {
      await revokeIfEmpty(
        this.log,
        prevLease,
        full,
        async () => {
          const ttl = await this.client.call<TimeToLiveResponse>('/v3/lease/timetolive', { ID: prevLease, keys: true }, this.callTimeoutMs);
          return { ttl: Number(ttl.TTL ?? -1), keys: ttl.keys?.length ?? 0 };
        },
        () => this.client.call('/v3/lease/revoke', { ID: prevLease }, this.callTimeoutMs),
      );
    }
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
    return decodeSubnetKv(this.prefix, { key: unb64(kv.key), value: unb64(kv.value), leaseId: kv.lease ?? '0', modRevision: kv.mod_revision ?? '0' }, expiration);
  }

  private removedEvent(kv: WireKv): SubnetWatchEvent | null {
    return removedEvent(this.prefix, unb64(kv.key), kv.mod_revision);
  }

  private expirationsOf(kvs: readonly WireKv[]): Promise<Map<string, Date | null>> {
    return expirationsOf(
      kvs.map((kv) => kv.lease ?? '0'),
      async (id) => Number((await this.call<TimeToLiveResponse>(`query TTL of lease ${id}`, '/v3/lease/timetolive', { ID: id })).TTL ?? -1),
    );
  }

  private async call<T>(op: string, path: string, body: unknown): Promise<T> {
    if (this.closed) throw registryClosedError(op);
    try {
      return await this.client.call<T>(path, body, this.callTimeoutMs);
    } catch (err) {
      throw this.wrap(op, err);
    }
  }

  /** A write attached to `lease`: etcd's "lease not found" means the lease is lost. */
  private async leaseCall<T>(op: string, lease: HostLease | null, path: string, body: unknown): Promise<T> {
    if (this.closed) throw registryClosedError(op);
    try {
      return await this.client.call<T>(path, body, this.callTimeoutMs);
    } catch (err) {
      if (err instanceof EtcdHttpError && err.leaseNotFound && lease !== null) {
        if (lease instanceof HttpHostLease) lease.markLost(err);
        throw leaseGoneError(op, lease, err);
      }
      throw this.wrap(op, err);
    }
  }

  private wrap(op: string, err: unknown): WeftError {
    if (err instanceof EtcdHttpError) return etcdError(this.location, op, err, err.refused ? 'refused' : 'answered', err.message);
    return etcdError(this.location, op, err, 'unreachable');
  }
}

/**
 * The host's etcd lease (KeptHostLease): one renewal is one `/v3/lease/keepalive` call (one
 * request with the body closed: one answer). The timer does not keep a process alive on its own
 * (the CLI, tests): weftd has other handles.
 */
class HttpHostLease extends KeptHostLease {
  constructor(id: string, ttlSeconds: number, grantedTtl: number, timing: KeepaliveTiming, log: Logger, forget: () => void, private readonly client: GatewayClient) {
    super(id, ttlSeconds, grantedTtl, timing, log, forget, true);
  }

  protected async renewOnce(): Promise<number> {
    const msg = await this.client.call<KeepaliveMessage>('/v3/lease/keepalive', { ID: this.id }, this.timing.timeoutMs);
    if (msg.error !== undefined) throw new Error(msg.error.message ?? 'keepalive failed');
    return Number(msg.result?.TTL ?? 0);
  }

  protected override isGone(err: unknown): boolean {
    return err instanceof EtcdHttpError && err.leaseNotFound;
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
      const event = watchEvent(ev.type === 'DELETE', () => this.s.removed(ev.kv), () => this.s.decode(ev.kv));
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
