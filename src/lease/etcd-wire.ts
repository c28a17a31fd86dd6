/**
 * The narrow wire the one etcd registry (etcd-registry.ts) runs over: the seven etcd v3 calls
 * weft needs, with 64-bit numbers as decimal strings and keys as text. Two implementations:
 * etcd-http-wire.ts (etcd's JSON gateway over Node's http, the default) and etcd-grpc-wire.ts
 * (etcd3 over gRPC, WEFT_ETCD_CLIENT=grpc, loaded only then: create-registry.ts). Everything
 * above the wire — transactions, lease keepalive, watch resume and de-duplication, errors — is
 * written once, in the registry.
 */
import type { SubnetKv } from './etcd-common';

export type WireKv = SubnetKv;

export type TxnCompare =
  | { readonly key: string; readonly target: 'version'; readonly version: '0' }
  | { readonly key: string; readonly target: 'mod'; readonly modRevision: string };

export type TxnOp =
  /** leaseId '0' or absent: no lease. prevKv: report which lease the key moves off. */
  | { readonly put: { readonly key: string; readonly value: string; readonly leaseId?: string; readonly prevKv?: boolean } }
  | { readonly deleteKey: string };

export interface TxnResult {
  readonly succeeded: boolean;
  readonly revision: string;
  /** First op a put with prevKv: the lease the key was attached to ('0': none; absent: new key). */
  readonly prevLeaseId?: string;
  /** First op a delete: how many keys it deleted. */
  readonly deleted?: string;
}

export interface WireEvent {
  readonly deleted: boolean;
  readonly kv: WireKv;
}

/** What a watch stream reports to the registry's watch (which owns the resume point). */
export interface WatchSink {
  /** The revision to (re)start from, asked on every (re)connect. */
  resumeRevision(): string;
  /** One watch response: `created` on a (re)connect, then events (all of one revision arrive together). */
  response(r: { readonly created: boolean; readonly events: readonly WireEvent[]; readonly headerRevision?: string }): void;
  /** The stream broke; the wire reconnects by itself (with a Backoff). */
  disconnected(err: unknown): void;
  /** etcd ended the watch for good (history compacted past the resume point, ...): `why` says. */
  canceled(why: string): void;
}

export interface WireWatch {
  /** Stop the stream; nothing reaches the sink after it resolves. */
  close(): Promise<void>;
}

/** How a call failed: etcd said the lease is gone, refused auth, answered another error, or did not answer. */
export type WireFailure = 'leaseNotFound' | 'refused' | 'answered' | 'unreachable';

export interface EtcdWire {
  /** The endpoints, for messages. */
  readonly location: string;
  /** Whether the host lease's renewal timer alone keeps the process alive (false: unref it). */
  readonly keepsProcessAlive: boolean;
  /** One key, or every key under `key` when `prefix`. */
  range(key: string, prefix: boolean): Promise<{ readonly revision: string; readonly kvs: readonly WireKv[] }>;
  /**
   * Several ranges in one round trip: a read-only transaction, so one consistent revision, and
   * etcd checks each range against the user's permissions on its own (a role that may read
   * `<prefix>/config` and `<prefix>/subnets/` but not all of `<prefix>/` is served). `kvs[i]`
   * answers `ranges[i]`.
   */
  ranges(ranges: readonly { readonly key: string; readonly prefix: boolean }[]): Promise<{ readonly revision: string; readonly kvs: readonly (readonly WireKv[])[] }>;
  txn(compare: readonly TxnCompare[], ops: readonly TxnOp[]): Promise<TxnResult>;
  grant(ttlSeconds: number): Promise<{ readonly id: string; readonly ttl: number }>;
  /** One keepalive round trip within `timeoutMs`: the TTL etcd granted (≤ 0: gone). `signal` aborts it. */
  keepaliveOnce(id: string, timeoutMs: number, signal: AbortSignal): Promise<number>;
  timeToLive(id: string, keys: boolean): Promise<{ readonly ttl: number; readonly keys: number }>;
  revoke(id: string): Promise<void>;
  watchPrefix(prefix: string, sink: WatchSink): WireWatch;
  classify(err: unknown): WireFailure;
  /** Unary-call endpoint failovers so far (for RegistryStats). */
  reconnects(): number;
  close(): void;
}
