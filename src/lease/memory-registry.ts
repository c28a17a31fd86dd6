/**
 * An in-process LeaseRegistry with etcd's semantics (revisions, create-if-absent, leases that
 * hold keys, watches from a revision, compaction). It lives in src/ so that the LeaseManager and
 * the daemon are tested without etcd (style habit 2), and it exposes the faults the manager must
 * survive: an outage (`setAvailable(false)`), a lost lease (`expireLease`), a compaction
 * (`compact`), writes by other hosts (`putRaw`/`deleteRaw`), and a hook that runs just before a
 * create transaction (to lose a race on purpose).
 *
 * Events are delivered asynchronously (setImmediate), as a real watch would.
 */
import { WeftError } from '../errors';
import { DEFAULT_PREFIX, decodeLease, encodeLeaseAttrs, parseSubnetKey } from './codec';
import type { HostLease, InvalidSubnet, LeaseRegistry, NetworkSnapshot, SubnetListing, SubnetWatch, SubnetWatchEvent } from './registry';
import type { Lease, LeaseAttrs } from './types';

interface Entry {
  readonly value: string;
  readonly leaseId: string | null;
  readonly modRevision: number;
}

interface LeaseRecord {
  readonly id: string;
  readonly ttlSeconds: number;
  expiresAtMs: number;
  readonly keys: Set<string>;
  handle: MemoryHostLease | null;
}

interface HistoryItem {
  readonly revision: number;
  readonly event: SubnetWatchEvent;
}

export interface MemoryRegistryOptions {
  readonly prefix?: string;
  /** Milliseconds since the epoch; used only to report expirations. */
  readonly now?: () => number;
}

export class MemoryLeaseRegistry implements LeaseRegistry {
  readonly prefix: string;
  readonly location = 'memory://';
  /** Runs before every create transaction; tests use it to create the key first (a lost race). */
  beforeCreate: ((key: string) => void) | null = null;

  private readonly now: () => number;
  private config: string | null = null;
  private readonly entries = new Map<string, Entry>();
  private readonly leases = new Map<string, LeaseRecord>();
  private readonly history: HistoryItem[] = [];
  private readonly watches = new Set<MemoryWatch>();
  private readonly configWatchers = new Set<() => void>();
  private revision = 1;
  private compactedThrough = 0;
  private nextLeaseId = 0x1000;
  private available = true;
  private closed = false;
  /** Leases that expired while the store was unreachable: their holders learn on reconnect. */
  private readonly pendingLoss: MemoryHostLease[] = [];

  constructor(opts: MemoryRegistryOptions = {}) {
    this.prefix = opts.prefix ?? DEFAULT_PREFIX;
    this.now = opts.now ?? Date.now;
  }

  // ---- test controls -------------------------------------------------------------------------

  setConfig(text: string | null): void {
    this.config = text;
    this.revision++;
    for (const notify of this.configWatchers) setImmediate(notify);
  }

  /** Simulate an outage: every call rejects with ETCD_UNAVAILABLE until set back to true. */
  setAvailable(available: boolean): void {
    this.available = available;
    if (available) for (const h of this.pendingLoss.splice(0)) h.markLost('lease expired during the outage');
  }

  /** Write a raw value as another host (or a broken tool) would. Returns the new revision. */
  putRaw(key: string, value: string, leaseId: string | null = null): string {
    return String(this.write(key, value, leaseId));
  }

  deleteRaw(key: string): boolean {
    return this.remove(key);
  }

  /** Expire an etcd lease now: its keys are deleted; its holder is told on the next contact. */
  expireLease(id: string): void {
    const rec = this.leases.get(id);
    if (rec === undefined) return;
    this.leases.delete(id);
    for (const key of [...rec.keys]) this.remove(key);
    const handle = rec.handle;
    if (handle !== null) {
      if (this.available) handle.markLost('lease expired');
      else this.pendingLoss.push(handle);
    }
  }

  /**
   * Drop watch history up to and including `revision` (default: everything so far). As in etcd,
   * a watch that is up to date is unaffected; one asking for a compacted revision is reset.
   */
  compact(revision: number = this.revision): void {
    this.compactedThrough = Math.max(this.compactedThrough, revision);
    while (this.history.length > 0 && this.history[0]!.revision <= this.compactedThrough) this.history.shift();
  }

  /**
   * Cancel every watch (each gets 'reset'), as etcd does to a watch that reconnects after an
   * outage during which its revision was compacted away.
   */
  cancelWatches(reason = 'watch canceled: required revision has been compacted'): void {
    for (const w of [...this.watches]) w.reset(reason);
  }

  currentRevision(): string {
    return String(this.revision);
  }

  /** The raw value and lease of a key, for assertions. */
  rawGet(key: string): { value: string; leaseId: string | null } | null {
    const e = this.entries.get(key);
    return e === undefined ? null : { value: e.value, leaseId: e.leaseId };
  }

  /** Live (not expired, not revoked) etcd lease IDs. */
  liveLeaseIds(): string[] {
    return [...this.leases.keys()];
  }

  activeWatchCount(): number {
    return this.watches.size;
  }

  // ---- LeaseRegistry -------------------------------------------------------------------------

  async getConfig(): Promise<string | null> {
    await this.contact('get config');
    return this.config;
  }

  async readNetwork(): Promise<NetworkSnapshot> {
    await this.contact('get config and list subnets');
    return { config: this.config, listing: this.listNow(false) };
  }

  async listSubnets(opts: { readonly expirations?: boolean } = {}): Promise<SubnetListing> {
    await this.contact('list subnets');
    return this.listNow(opts.expirations === true);
  }

  private listNow(expirations: boolean): SubnetListing {
    const leases: Lease[] = [];
    const invalid: InvalidSubnet[] = [];
    for (const [key, e] of [...this.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      try {
        const expiration = expirations ? this.expirationOf(e.leaseId) : null;
        leases.push(decodeLease(key, e.value, { etcdLeaseId: e.leaseId, modRevision: String(e.modRevision), expiration }));
      } catch (err) {
        invalid.push({ key, error: asWeftError(err), modRevision: String(e.modRevision) });
      }
    }
    return { leases, invalid, revision: String(this.revision) };
  }

  async grantHostLease(ttlSeconds: number): Promise<HostLease> {
    await this.contact('grant lease');
    const id = String(this.nextLeaseId++);
    const rec: LeaseRecord = { id, ttlSeconds, expiresAtMs: this.now() + ttlSeconds * 1000, keys: new Set(), handle: null };
    const handle = new MemoryHostLease(id, ttlSeconds);
    rec.handle = handle;
    this.leases.set(id, rec);
    return handle;
  }

  async createSubnet(key: string, attrs: LeaseAttrs, lease: HostLease): Promise<Lease | null> {
    await this.contact(`create subnet ${key}`);
    this.beforeCreate?.(key);
    this.requireLease(lease, key);
    if (this.entries.has(key)) return null;
    const rev = this.write(key, encodeLeaseAttrs(attrs), lease.id);
    return this.leaseAt(key, rev);
  }

  async updateSubnet(key: string, attrs: LeaseAttrs, lease: HostLease | null, expectModRevision: string): Promise<Lease | null> {
    await this.contact(`update subnet ${key}`);
    if (lease !== null) this.requireLease(lease, key);
    const cur = this.entries.get(key);
    if (cur === undefined || String(cur.modRevision) !== expectModRevision) return null;
    const rev = this.write(key, encodeLeaseAttrs(attrs), lease === null ? null : lease.id);
    // Revoke the lease the key moved off when it holds nothing else (the etcd registry does too).
    if (cur.leaseId !== null && cur.leaseId !== (lease?.id ?? null)) {
      const old = this.leases.get(cur.leaseId);
      if (old !== undefined && old.keys.size === 0) this.expireLease(cur.leaseId);
    }
    return this.leaseAt(key, rev);
  }

  async deleteSubnet(key: string, expectModRevision?: string): Promise<boolean> {
    await this.contact(`delete subnet ${key}`);
    const cur = this.entries.get(key);
    if (cur === undefined) return false;
    if (expectModRevision !== undefined && String(cur.modRevision) !== expectModRevision) return false;
    return this.remove(key);
  }

  async createReservation(key: string, attrs: LeaseAttrs): Promise<Lease | null> {
    await this.contact(`create reservation ${key}`);
    if (this.entries.has(key)) return null;
    const rev = this.write(key, encodeLeaseAttrs(attrs), null);
    return this.leaseAt(key, rev);
  }

  async revokeLease(leaseId: string): Promise<boolean> {
    await this.contact(`revoke lease ${leaseId}`);
    if (!this.leases.has(leaseId)) return false;
    this.expireLease(leaseId);
    return true;
  }

  async putConfig(text: string): Promise<void> {
    await this.contact('put config');
    this.setConfig(text);
  }

  watchConfig(onChange: () => void): SubnetWatch {
    let open = !this.closed;
    const notify = (): void => {
      if (open) onChange();
    };
    if (open) {
      this.configWatchers.add(notify);
      setImmediate(notify); // established
    }
    return {
      close: async () => {
        open = false;
        this.configWatchers.delete(notify);
      },
    };
  }

  watchSubnets(fromRevision: string, handler: (event: SubnetWatchEvent) => void, responseDone?: () => void): SubnetWatch {
    const w = new MemoryWatch(Number(fromRevision), handler, responseDone, (self) => this.watches.delete(self));
    if (this.closed) {
      w.reset('registry closed');
      return w;
    }
    this.watches.add(w);
    if (w.nextRevision <= this.compactedThrough) {
      w.reset(`required revision ${fromRevision} has been compacted`);
    } else {
      for (const item of this.history) if (item.revision >= w.nextRevision) w.deliver(item);
    }
    return w;
  }

  /** The revoke in updateSubnet happens within the call here: nothing is ever left running. */
  async settled(): Promise<void> {
    return undefined;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.configWatchers.clear();
    for (const w of [...this.watches]) await w.close();
    for (const rec of this.leases.values()) rec.handle?.release();
  }

  // ---- internals -----------------------------------------------------------------------------

  private async contact(op: string): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (this.closed) throw new WeftError('INTERNAL', `${op}: the lease registry is closed`);
    if (!this.available) {
      throw new WeftError('ETCD_UNAVAILABLE', `cannot reach etcd at ${this.location}: ${op}: simulated outage; check --etcd-endpoints and that etcd is running`, {
        retryable: true,
      });
    }
  }

  private requireLease(lease: HostLease, key: string): void {
    if (this.leases.has(lease.id)) return;
    (lease as MemoryHostLease).markLost('lease not found');
    throw new WeftError('LEASE_CONFLICT', `write subnet ${key}: etcd lease ${lease.id} is expired or revoked`, { retryable: true });
  }

  private write(key: string, value: string, leaseId: string | null): number {
    const rev = ++this.revision;
    const prev = this.entries.get(key);
    if (prev?.leaseId) this.leases.get(prev.leaseId)?.keys.delete(key);
    if (leaseId !== null) this.leases.get(leaseId)?.keys.add(key);
    this.entries.set(key, { value, leaseId, modRevision: rev });
    let event: SubnetWatchEvent;
    try {
      event = { type: 'added', lease: decodeLease(key, value, { etcdLeaseId: leaseId, modRevision: String(rev) }) };
    } catch (err) {
      event = { type: 'invalid', key, error: asWeftError(err) };
    }
    this.publish({ revision: rev, event });
    return rev;
  }

  private remove(key: string): boolean {
    const prev = this.entries.get(key);
    if (prev === undefined) return false;
    const rev = ++this.revision;
    this.entries.delete(key);
    if (prev.leaseId !== null) this.leases.get(prev.leaseId)?.keys.delete(key);
    const parsed = parseSubnetKey(key);
    if (parsed !== null) this.publish({ revision: rev, event: { type: 'removed', key, subnet: parsed.subnet, revision: String(rev) } });
    return true;
  }

  private publish(item: HistoryItem): void {
    this.history.push(item);
    for (const w of this.watches) w.deliver(item);
  }

  private leaseAt(key: string, rev: number): Lease {
    const e = this.entries.get(key)!;
    return decodeLease(key, e.value, { etcdLeaseId: e.leaseId, modRevision: String(rev) });
  }

  private expirationOf(leaseId: string | null): Date | null {
    if (leaseId === null) return null;
    const rec = this.leases.get(leaseId);
    return rec === undefined ? null : new Date(rec.expiresAtMs);
  }
}

class MemoryHostLease implements HostLease {
  private lostFlag = false;
  private released = false;
  private readonly listeners = new Set<(err: WeftError) => void>();

  constructor(
    readonly id: string,
    readonly ttlSeconds: number,
  ) {}

  get lost(): boolean {
    return this.lostFlag;
  }

  onLost(listener: (err: WeftError) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  release(): void {
    this.released = true;
    this.listeners.clear();
  }

  markLost(why: string): void {
    if (this.lostFlag) return;
    this.lostFlag = true;
    if (this.released) return;
    const err = new WeftError('LEASE_CONFLICT', `etcd lease ${this.id} lost: ${why}`, { retryable: true });
    for (const l of [...this.listeners]) setImmediate(() => l(err));
  }
}

class MemoryWatch implements SubnetWatch {
  nextRevision: number;
  private done = false;

  constructor(
    fromRevision: number,
    private readonly handler: (event: SubnetWatchEvent) => void,
    /** Each event is a response of its own here. */
    private readonly responseDone: (() => void) | undefined,
    private readonly detach: (self: MemoryWatch) => void,
  ) {
    this.nextRevision = fromRevision;
  }

  deliver(item: HistoryItem): void {
    if (item.revision < this.nextRevision) return;
    this.nextRevision = item.revision + 1;
    setImmediate(() => {
      if (this.done) return;
      this.handler(item.event);
      if (!this.done) this.responseDone?.();
    });
  }

  reset(reason: string): void {
    this.detach(this);
    setImmediate(() => {
      if (this.done) return;
      this.done = true;
      this.handler({ type: 'reset', reason });
    });
  }

  async close(): Promise<void> {
    this.done = true;
    this.detach(this);
  }
}

function asWeftError(err: unknown): WeftError {
  return err instanceof WeftError ? err : new WeftError('BAD_DATA', String(err), { cause: err });
}
