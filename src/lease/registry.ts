/**
 * LeaseRegistry: the one seam between weft and the lease store (flannel's private Registry
 * under its public Manager — style habit 2). Everything that touches etcd is in
 * etcd-registry.ts; the LeaseManager logic is tested against memory-registry.ts, which
 * implements the same contract in-process (and can simulate outages and lost leases).
 *
 * Contract shared by every implementation:
 * - Keys are subnet keys (the last path segment, "10.5.52.0-24"); the implementation owns the
 *   prefix and the wire formats (codec.ts).
 * - Revisions and etcd lease IDs are decimal strings (etcd's are 64-bit).
 * - Errors: an unreachable store rejects with WeftError('ETCD_UNAVAILABLE', retryable: true);
 *   a malformed value never rejects a list — it is reported in `invalid` and skipped.
 * - After close(), every call rejects; watches and host leases stop without revoking anything.
 */
import type { WeftError } from '../errors';
import type { Lease, LeaseAttrs, LeaseEvent } from './types';

/** A key under subnets/ whose key or value could not be decoded. */
export interface InvalidSubnet {
  readonly key: string;
  readonly error: WeftError;
  /** The key's mod revision (lets the holder of that subnet overwrite the garbage, and only it). */
  readonly modRevision?: string;
}

export interface SubnetListing {
  readonly leases: readonly Lease[];
  readonly invalid: readonly InvalidSubnet[];
  /** Store revision the listing is consistent with: watch from `revision + 1`. */
  readonly revision: string;
}

/** readNetwork()'s answer: the config and the subnets, both as of `listing.revision`. */
export interface NetworkSnapshot {
  /** The text of `<prefix>/config`, or null when the key is absent. */
  readonly config: string | null;
  readonly listing: SubnetListing;
}

/**
 * What a subnet watch reports.
 * - added/removed: one per change, in revision order;
 * - invalid: a put whose key or value could not be decoded (skip it; the key is named);
 * - reset: the watch is over and will report nothing more — history was compacted past the
 *   revision asked for, or the store cancelled the watch. List again and watch from the new
 *   listing's revision + 1. Events may have been missed: treat the new listing as a snapshot.
 */
export type SubnetWatchEvent =
  | LeaseEvent
  | { readonly type: 'invalid'; readonly key: string; readonly error: WeftError }
  | { readonly type: 'reset'; readonly reason: string };

export interface SubnetWatch {
  /** Stop the watch; no handler call happens after the promise resolves. Idempotent. */
  close(): Promise<void>;
}

/**
 * The host's one etcd lease. Granted once, kept alive by the registry for as long as the process
 * holds it (flannel instead granted a new lease per renewal and let the old ones pile up).
 */
export interface HostLease {
  readonly id: string;
  readonly ttlSeconds: number;
  /** True once the lease is known gone (expired during an outage, revoked). It never comes back. */
  readonly lost: boolean;
  /**
   * When the lease runs out unless kept alive again: the last confirmed grant or keepalive plus
   * the TTL etcd reported (for health, metrics and `weft status`). Optional: absent when the
   * implementation does not track it.
   */
  readonly expiresAt?: Date | null;
  /**
   * Called once when the lease is lost. The keys attached to it are gone or about to go: grant a
   * new lease and re-acquire. Returns an unsubscribe function.
   */
  onLost(listener: (err: WeftError) => void): () => void;
  /**
   * Stop keeping the lease alive WITHOUT revoking it: the keys stay until the TTL runs out, so a
   * restart (which re-adopts its key) never cuts traffic. Idempotent; does not fire onLost.
   */
  release(): void;
}

export interface LeaseRegistry {
  /** The key prefix, e.g. "/coreos.com/network" (for messages). */
  readonly prefix: string;
  /** Human-readable store location, e.g. "http://127.0.0.1:2379" (for messages). */
  readonly location: string;

  /** The text of `<prefix>/config`, or null when the key is absent. */
  getConfig(): Promise<string | null>;

  /**
   * Watch `<prefix>/config` (weftd reports a changed config: daemon/config-watch.ts). `onChange`
   * is called, asynchronously, after every put or delete of the key and each time the watch is
   * (re)established — a change made while it was down is not replayed, so read the key then.
   * Nothing is called after close() resolves. An etcd registry runs it on the subnets' watch stream.
   */
  watchConfig(onChange: () => void): SubnetWatch;

  /**
   * getConfig() and listSubnets() in one read (etcd: one read-only transaction, one round trip,
   * one revision): what start-up reads before acquiring (LeaseManager.waitForConfig).
   */
  readNetwork(): Promise<NetworkSnapshot>;

  /** Every key under `<prefix>/subnets/`, decoded, with the revision to watch from. */
  listSubnets(opts?: { readonly expirations?: boolean }): Promise<SubnetListing>;

  /** Grant a new etcd lease with this TTL and keep it alive. */
  grantHostLease(ttlSeconds: number): Promise<HostLease>;

  /**
   * Create-if-absent (etcd: `if version(key) == 0 then put`), attached to `lease`. Resolves to the
   * new Lease, or null when the key already exists (a lost race — not an error: re-list and
   * re-allocate). When etcd no longer knows `lease`, the HostLease is marked lost (its onLost
   * fires) and the call rejects with WeftError('LEASE_CONFLICT', retryable: true): grant a new one.
   */
  createSubnet(key: string, attrs: LeaseAttrs, lease: HostLease): Promise<Lease | null>;

  /**
   * Rewrite an existing key — only if its mod revision is still `expectModRevision` (so a key
   * that changed hands since the listing is never overwritten); null when it changed or is gone.
   * `lease` null keeps a reservation a reservation (no etcd lease). When the key moves off a
   * different etcd lease that is left holding no keys (our previous process's), that lease is
   * revoked, best effort — restarts do not pile up leases. The revoke is tidying: it runs after
   * the promise resolves (a restart writes subnet.env without waiting for it); settled() waits
   * for it. A lost `lease` rejects as in createSubnet.
   */
  updateSubnet(key: string, attrs: LeaseAttrs, lease: HostLease | null, expectModRevision: string): Promise<Lease | null>;

  /**
   * Delete a key; with `expectModRevision`, only if unchanged since. Resolves true when a key was
   * deleted, false when it was absent or had changed.
   */
  deleteSubnet(key: string, expectModRevision?: string): Promise<boolean>;

  /**
   * Create-if-absent WITHOUT an etcd lease: a reservation (compat §1), permanent until deleted,
   * belonging to the host whose PublicIP it holds (`weft leases reserve`). Null when the key exists.
   */
  createReservation(key: string, attrs: LeaseAttrs): Promise<Lease | null>;

  /**
   * Revoke an etcd lease now, deleting every key attached to it (`weft leases revoke`: free the
   * subnet of a host that is gone without waiting for the TTL). False when etcd no longer knows it.
   */
  revokeLease(leaseId: string): Promise<boolean>;

  /** Write `<prefix>/config` as given (`weft config set` validates it first). */
  putConfig(text: string): Promise<void>;

  /**
   * Watch `<prefix>/subnets/` from `fromRevision` (inclusive). The handler is called
   * synchronously for each event in revision order and must not throw. Disconnections are the
   * registry's business (it resumes from the last revision seen); only 'reset' ends a watch.
   * `responseDone`, when given, is called right after the handler has had the events of one
   * response of the store (etcd: a watch response; every implementation calls it): a consumer
   * acts on a burst at once, in the same call stack, instead of finding its end with a promise
   * step (PeerView → weftd: a join's kernel write leaves in the watch message's pass, issue #14).
   */
  watchSubnets(fromRevision: string, handler: (event: SubnetWatchEvent) => void, responseDone?: () => void): SubnetWatch;

  /**
   * Resolves once the background tidying started so far (updateSubnet's revoke of an emptied
   * etcd lease) is over, whether it succeeded or not. Never rejects. For tests and tools that
   * must see the store tidy; the daemon does not wait for it.
   */
  settled(): Promise<void>;

  /**
   * Close connections. Tidying still under way is abandoned (an emptied etcd lease then
   * expires at the end of its TTL). Host leases are released (not revoked) and watches stop; keys stay.
   * Idempotent.
   */
  close(): Promise<void>;

  /** Optional: connection and watch figures for /metrics (implementations that track them). */
  stats?(): RegistryStats;
}

/** What a registry may report for /metrics. */
export interface RegistryStats {
  /** Times the connection to etcd (or the watch stream) was re-established after a failure. */
  readonly reconnects: number;
  /** Watch responses received (events and progress notifications). */
  readonly watchResponses: number;
  /** Store revision of the last watch response minus the last revision delivered (0: caught up). */
  readonly watchRevisionLag: number;
  /** When the last watch response arrived (ms since the epoch), null before one. */
  readonly lastWatchResponseAt: number | null;
}
