/**
 * The etcd registry's pure parts, shared by the registry (etcd-registry.ts) and its two wires
 * (etcd-http-wire.ts, etcd-grpc-wire.ts): options and TLS files, keepalive timing, decoding
 * key/values into leases and watch events, lease expirations, and mapping failures to WeftError.
 * Imports nothing from `etcd3`: the default (http) wire must not load it (create-registry.ts).
 */
import { readFileSync } from 'node:fs';
import type { DaemonOptions, EtcdFlags } from '../config/types';
import { WeftError, describeError } from '../errors';
import type { Logger } from '../log';
import { decodeLease, parseSubnetKey, subnetKeyOf } from './codec';
import type { HostLease, InvalidSubnet, SubnetWatchEvent } from './registry';
import type { Lease } from './types';

export interface EtcdClientOptions {
  /** e.g. ["http://127.0.0.1:2379"]; all http or all https. */
  readonly endpoints: readonly string[];
  /** Default /coreos.com/network. */
  readonly prefix?: string;
  readonly caFile?: string | null;
  readonly certFile?: string | null;
  readonly keyFile?: string | null;
  readonly username?: string | null;
  readonly password?: string | null;
  /** Deadline of each unary call (get, put, txn, grant). Default 5000 ms. */
  readonly callTimeoutMs?: number;
  /** JSON gateway: how often a quiet watch stream is probed (etcd-http-wire.ts WATCH_PROBE_MS; tests shorten it). */
  readonly watchProbeMs?: number;
  /** --subnet-lease-renew-margin in seconds: renew at least this long before expiry (keepaliveTiming). */
  readonly renewMarginSeconds?: number | null;
  readonly log?: Logger;
}

/**
 * The registry options that weftd's and the CLI's `--etcd-*` flags (flanneld's names) describe;
 * the renew margin only for weftd (the CLI renews nothing for long).
 */
export function etcdClientOptionsFrom(
  opts: EtcdFlags & Partial<Pick<DaemonOptions, 'subnetLeaseRenewMarginMinutes'>>,
  log?: Logger,
): EtcdClientOptions {
  return {
    endpoints: opts.etcdEndpoints,
    prefix: opts.etcdPrefix,
    caFile: opts.etcdCafile,
    certFile: opts.etcdCertfile,
    keyFile: opts.etcdKeyfile,
    username: opts.etcdUsername,
    password: opts.etcdPassword,
    ...(opts.subnetLeaseRenewMarginMinutes === undefined ? {} : { renewMarginSeconds: opts.subnetLeaseRenewMarginMinutes * 60 }),
    ...(log === undefined ? {} : { log }),
  };
}

export const DEFAULT_CALL_TIMEOUT_MS = 5000;
/** Concurrent LeaseTimeToLive calls when listing expirations (`weft leases`). */
const TTL_QUERY_CONCURRENCY = 16;

/**
 * Refuse what would silently send etcd traffic in clear, and warn about a password that goes in
 * clear. flannel (etcd's clientv3) drops the TLS credentials for an http:// endpoint without a
 * word and sends --etcd-password over it; weft:
 * - refuses --etcd-cafile/--etcd-certfile/--etcd-keyfile with http:// endpoints (the operator
 *   meant TLS; the files would be ignored): CONFIG_INVALID saying to use https://;
 * - warns loudly, on every start, when a username/password goes to a non-loopback http://
 *   endpoint (anyone on the path reads it, and with it write access to the overlay's routing).
 * The password itself comes from WEFT_ETCD_PASSWORD / FLANNELD_ETCD_PASSWORD, never argv.
 * Returns the warning given (null when none), for tests.
 */
export function checkEtcdTransport(opts: EtcdClientOptions): string | null {
  const plain = opts.endpoints.filter((e) => /^http:\/\//i.test(e));
  if (plain.length === 0) return null;
  const files = [opts.caFile && '--etcd-cafile', opts.certFile && '--etcd-certfile', opts.keyFile && '--etcd-keyfile'].filter(Boolean);
  if (files.length > 0) {
    throw new WeftError(
      'CONFIG_INVALID',
      `etcd TLS: ${files.join(', ')} given but the endpoint(s) ${plain.join(',')} are http://, so the files would be ignored ` +
        'and everything (leases, credentials) would go in clear; use https:// endpoints',
    );
  }
  if (!opts.username) return null;
  const remote = plain.filter((e) => !isLoopbackUrl(e));
  if (remote.length === 0) return null;
  const warning =
    `etcd credentials IN CLEAR: user ${JSON.stringify(opts.username)} and its password go to ${remote.join(',')} over http://; ` +
    'anyone on the path can read them and take over the overlay\'s routing. Use https:// endpoints with --etcd-cafile ' +
    '(and client certificates) — see docs/security.md';
  if (opts.log) opts.log.warn(warning);
  else process.emitWarning(warning, 'WeftInsecureEtcd');
  return warning;
}

function isLoopbackUrl(e: string): boolean {
  try {
    const h = new URL(e).hostname;
    return h === 'localhost' || h === '[::1]' || /^127\./.test(h);
  } catch {
    return false;
  }
}

/**
 * NODE_EXTRA_CA_CERTS as weftd sees it. Node parses that file, and its whole default root store
 * with it, at process start, before any JavaScript: ~50 ms of CPU per start measured here
 * (docs/performance.md, "Issue #14, third pass"), for a daemon that speaks TLS only to
 * etcd and usually with --etcd-cafile. So weftd's launchers (the shebang of src/cli/weftd.ts and
 * of the one-file weftd, the lab) move the variable to this name, and readTlsFiles adds the file
 * to Node's roots only when an https:// etcd is reached without --etcd-cafile: what Node would
 * have trusted, paid for only when used.
 */
export const EXTRA_CA_CERTS_ENV = 'WEFT_EXTRA_CA_CERTS';

/** `env` for a weftd child: NODE_EXTRA_CA_CERTS moved to EXTRA_CA_CERTS_ENV (the shebang's job when weftd is run as a command). */
export function deferExtraCaCerts(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_EXTRA_CA_CERTS: extra, ...rest } = env;
  return extra ? { ...rest, [EXTRA_CA_CERTS_ENV]: extra } : rest;
}

/**
 * The --etcd-cafile/--etcd-certfile/--etcd-keyfile contents; throws CONFIG_INVALID. `secure`:
 * some endpoint is https:// (only then are the deferred NODE_EXTRA_CA_CERTS read).
 */
export function readTlsFiles(opts: EtcdClientOptions, secure = true, env: NodeJS.ProcessEnv = process.env): { ca?: Buffer; cert?: Buffer; key?: Buffer } {
  if (Boolean(opts.certFile) !== Boolean(opts.keyFile)) {
    throw new WeftError('CONFIG_INVALID', 'etcd TLS: --etcd-certfile and --etcd-keyfile must be given together');
  }
  const read = (what: string, file: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new WeftError('CONFIG_INVALID', `read etcd ${what} ${file}: ${describeError(err)}`, { cause: err });
    }
  };
  const extra = env[EXTRA_CA_CERTS_ENV];
  let ca: Buffer | undefined;
  if (opts.caFile) {
    ca = read('CA file', opts.caFile);
  } else if (secure && extra) {
    // Node's bundled roots plus the file, as Node itself would have trusted at start.
    const { rootCertificates } = require('node:tls') as typeof import('node:tls');
    ca = Buffer.concat([Buffer.from(`${rootCertificates.join('\n')}\n`), read(`CA file (NODE_EXTRA_CA_CERTS)`, extra)]);
  }
  return {
    ...(ca ? { ca } : {}),
    ...(opts.certFile ? { cert: read('cert file', opts.certFile) } : {}),
    ...(opts.keyFile ? { key: read('key file', opts.keyFile) } : {}),
  };
}

/** The range_end that makes a range "every key with this prefix". */
export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix, 'utf8');
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const out = Buffer.from(b.subarray(0, i + 1));
      out[i]!++;
      return out;
    }
  }
  return Buffer.from([0]);
}

// ---- errors ------------------------------------------------------------------------------------

/** How etcd failed a call, as the client's own error types tell. */
export type EtcdFailure =
  /** etcd answered: authentication failed or permission denied. */
  | 'refused'
  /** etcd answered with another error. */
  | 'answered'
  /** No answer (connection refused, timeout, ...). */
  | 'unreachable';

export function registryClosedError(op: string): WeftError {
  return new WeftError('INTERNAL', `${op}: the etcd lease registry is closed`);
}

/** A write attached to `lease` that etcd refused with "lease not found". */
export function leaseGoneError(op: string, lease: HostLease, cause: unknown): WeftError {
  return new WeftError('LEASE_CONFLICT', `${op}: etcd lease ${lease.id} is expired or revoked`, { cause, retryable: true });
}

/** `err` (from operation `op` on etcd at `location`) as a WeftError; `detail` describes it. */
export function etcdError(location: string, op: string, err: unknown, failure: EtcdFailure, detail: string = describeError(err)): WeftError {
  if (err instanceof WeftError) return err;
  if (failure === 'refused') {
    return new WeftError('ETCD_UNAVAILABLE', `etcd at ${location} refused ${op}: ${detail}; check --etcd-username/--etcd-password and the user's role`, {
      cause: err,
    });
  }
  if (failure === 'answered') {
    return new WeftError('ETCD_UNAVAILABLE', `etcd at ${location}: ${op}: ${detail}`, { cause: err, retryable: true });
  }
  return new WeftError(
    'ETCD_UNAVAILABLE',
    `cannot reach etcd at ${location}: ${op}: ${detail}; check --etcd-endpoints and that etcd is running`,
    { cause: err, retryable: true },
  );
}

// ---- key/values --------------------------------------------------------------------------------

export type DecodedKv =
  | { key: string; lease: Lease; error?: undefined }
  | { key: string; lease?: undefined; error: WeftError; modRevision: string };

/** One key/value as the clients read it off the wire (key as text, 64-bit numbers as strings). */
export interface SubnetKv {
  readonly key: string;
  readonly value: string | Buffer;
  readonly leaseId: string;
  readonly modRevision: string;
}

/** null: not a subnet key at all (something nested under subnets/). */
export function decodeSubnetKv(prefix: string, kv: SubnetKv, expiration: Date | null): DecodedKv | null {
  const key = subnetKeyOf(prefix, kv.key);
  if (key === null) return null;
  try {
    return { key, lease: decodeLease(key, kv.value, { etcdLeaseId: kv.leaseId, modRevision: kv.modRevision, expiration }) };
  } catch (err) {
    const error = err instanceof WeftError ? err : new WeftError('BAD_DATA', `decode lease ${key}: ${describeError(err)}`, { cause: err });
    return { key, error, modRevision: kv.modRevision };
  }
}

/** The leases and the invalid values of a listing. */
export function splitDecoded(decoded: Iterable<DecodedKv | null>): { leases: Lease[]; invalid: InvalidSubnet[] } {
  const leases: Lease[] = [];
  const invalid: InvalidSubnet[] = [];
  for (const d of decoded) {
    if (d === null) continue;
    if (d.error !== undefined) invalid.push({ key: d.key, error: d.error, modRevision: d.modRevision });
    else leases.push(d.lease);
  }
  return { leases, invalid };
}

/** The 'removed' event of a deleted key; null when it is not a subnet key. */
export function removedEvent(prefix: string, fullKey: string, revision: string | undefined): SubnetWatchEvent | null {
  const key = subnetKeyOf(prefix, fullKey);
  const parsed = key === null ? null : parseSubnetKey(key);
  if (key === null || parsed === null) return null;
  return { type: 'removed', key, subnet: parsed.subnet, ...(revision === undefined ? {} : { revision }) };
}

/** The event a watched PUT (decoded) or DELETE (removed) gives; null for none. */
export function watchEvent<K>(deleted: boolean, kv: K, removed: (kv: K) => SubnetWatchEvent | null, decode: (kv: K) => DecodedKv | null): SubnetWatchEvent | null {
  // The kv and two long-lived functions, not two closures per event: this runs once per lease event.
  if (deleted) return removed(kv);
  const decoded = decode(kv);
  if (decoded === null) return null;
  if (decoded.error !== undefined) return { type: 'invalid', key: decoded.key, error: decoded.error };
  return { type: 'added', lease: decoded.lease };
}

/**
 * When each etcd lease in `leaseIds` ("0": none) expires, asking etcd (`ttlOf`, seconds left)
 * a bounded number at a time.
 */
export async function expirationsOf(leaseIds: Iterable<string>, ttlOf: (id: string) => Promise<number>): Promise<Map<string, Date | null>> {
  const ids = [...new Set([...leaseIds].filter((id) => id !== '0'))];
  const out = new Map<string, Date | null>();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < ids.length) {
      const id = ids[next++]!;
      const ttl = await ttlOf(id);
      // TTL -1: the lease expired between the list and this query; the key is going too.
      out.set(id, new Date(Date.now() + Math.max(0, ttl) * 1000));
    }
  };
  await Promise.all(Array.from({ length: Math.min(TTL_QUERY_CONCURRENCY, ids.length) }, worker));
  return out;
}

/**
 * Revoke the etcd lease a key moved off when it holds nothing else (our previous run's).
 * `timeToLive` gives its TTL and how many keys it holds.
 */
export async function revokeIfEmpty(
  log: Logger,
  leaseId: string,
  movedKey: string,
  timeToLive: () => Promise<{ ttl: number; keys: number }>,
  revoke: () => Promise<unknown>,
): Promise<void> {
  try {
    const ttl = await timeToLive();
    if (ttl.ttl <= 0 || ttl.keys > 0) return;
    await revoke();
    log.info('revoked the etcd lease our key moved off (it held no other keys)', { lease: leaseId, key: movedKey });
  } catch (err) {
    // Harmless if it fails: the empty lease just expires at the end of its TTL.
    log.debug('could not revoke the previous etcd lease; it will expire by itself', { lease: leaseId, error: describeError(err) });
  }
}

// ---- the host lease ----------------------------------------------------------------------------

/** How a host lease is kept alive (see keepaliveTiming()). */
export interface KeepaliveTiming {
  /** Between two successful renewals. */
  readonly intervalMs: number;
  /** A renewal not answered within this is a failure. */
  readonly timeoutMs: number;
  /** Bounded exponential backoff between failed renewals (etcd unreachable). */
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
}

/**
 * Renewal timing for a lease of `ttlSeconds`. flannel renews at expiry minus
 * --subnet-lease-renew-margin; weft keeps one lease alive and renews every TTL/3 (what etcd's
 * own Go client does), or earlier when the margin asks for it: the interval is
 * min(TTL/3, TTL - margin), never under 1 s. With flannel's defaults (24 h, 60 min) that is 8 h.
 * While etcd is unreachable, renewals are retried 0.5 s, 1 s, 2 s ... up to 5 s apart (less for
 * TTLs under 20 s): every attempt costs a TCP connect, so this is what keeps an outage cheap.
 */
export function keepaliveTiming(ttlSeconds: number, renewMarginSeconds: number | null = null): KeepaliveTiming {
  const ttlMs = ttlSeconds * 1000;
  const byMargin = renewMarginSeconds === null ? Infinity : ttlMs - renewMarginSeconds * 1000;
  const intervalMs = Math.max(1000, Math.min(ttlMs / 3, byMargin));
  return {
    intervalMs,
    timeoutMs: Math.max(1000, Math.min(5000, intervalMs)),
    retryMinMs: 500,
    retryMaxMs: Math.max(1000, Math.min(5000, ttlMs / 4)),
  };
}
