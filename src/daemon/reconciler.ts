/**
 * The one component that changes the kernel. Lease events (setDesired), netlink notifications
 * (someone deleted a route) and a periodic timer all end in the same idempotent reconcile():
 *
 *   ensure the overlay device (only when missing or down) → dump actual state → diffState()
 *   → apply the changes, adds in the order neighbour → FDB → route (a route never points at a
 *   neighbour the kernel would have to ARP for), removals in the reverse order. A backend with a
 *   user-space data path (DesiredState.pump) gets its peer table before the changes instead of
 *   kernel FDB entries.
 *
 * What weft owns, and so what diffState may change, is written down in diff.ts (the pure half:
 * diff, object keys, phases); this file is the I/O half: dumps, writes, echo suppression and
 * the scheduler.
 *
 * Concurrency: one reconcile at a time; calls made while one runs share a single follow-up run
 * (which sees the latest desired state).
 *
 * States of the scheduler:
 *
 *   idle ──(setDesired | netlink change | resync timer)──► scheduled ──(timer)──► running
 *     ▲                                                                          │
 *     └───────────────── ok ◄──────────────────────────────────────────────────────┤
 *                          failed: scheduled again with backoff (100 ms … 5 s) ◄──┘
 */
import type { Backend, BackendSetup, DesiredState, PeerObjects, Underlay } from '../backend/backend';
import { Backoff } from '../backoff';
import { systemClock, type Clock, type TimerHandle } from '../clock';
import { describeError, WeftError } from '../errors';
import { addressFamily, formatIPv4Cidr, type IPFamily, type IPNet } from '../ip';
import { silentLogger, type Logger } from '../log';
import { isGone } from '../netlink/client';
import {
  MAIN_TABLE,
  RTN_UNICAST,
  type AddressEntry,
  type ChangeBatch,
  type ChangeEvent,
  type FdbEntry,
  type KernelWrite,
  type LinkInfo,
  type Monitor,
  type MonitorInterest,
  type NeighbourEntry,
  type RouteEntry,
  type RouteSpec,
  type WriteOutcomes,
} from '../netlink/types';
import { applyWritesOneByOne, type SingleWriteMethods } from '../netlink/writes';
import {
  REPAIR_KINDS,
  changeEchoKey,
  changeId,
  describeChange,
  desiredIds,
  diffState,
  eventEchoKey,
  impliedState,
  ownsRoute,
  phases,
  type ActualState,
  type Change,
  type Ownership,
  type RepairKind,
  type RouteConflict,
} from './diff';
import { PendingDelta, desiredIsExact, noteNativeObjects, pinDesired, routesBySlot, type DesiredDelta, type NativeWritten } from './desired-delta';

// The pure half used to live here: re-exported for the callers that import it from the reconciler.
export { REPAIR_KINDS, describeChange, diffState, impliedState, type ActualState, type Change, type RepairKind } from './diff';

// ------------------------------------------------------------------------------- Reconciler

/** The part of NetlinkClient the reconciler uses (a seam for tests): dumps, the writes, the monitor. */
export interface ReconcilerNetlink extends SingleWriteMethods {
  getLink(name: string): Promise<LinkInfo | null>;
  listAddresses(ifindex?: number, family?: IPFamily): Promise<AddressEntry[]>;
  listNeighbours(ifindex?: number, family?: IPFamily): Promise<NeighbourEntry[]>;
  listFdb(ifindex?: number): Promise<FdbEntry[]>;
  listRoutes(table?: number, family?: IPFamily): Promise<RouteEntry[]>;
  /**
   * Optional: writes as one batch, applied in the order given (NetlinkClient: as few datagrams as
   * the receive buffer allows, each write acknowledged on its own), outcomes in order. A whole
   * reconcile run goes in one call. Absent: phase by phase, each write through its method.
   */
  applyWrites?(writes: readonly KernelWrite[]): Promise<WriteOutcomes>;
  monitor(onChange: (batch: ChangeBatch) => void, family?: IPFamily, interest?: MonitorInterest): Monitor;
  /**
   * Optional: true when the monitor never delivers the notifications of this seam's own writes
   * (NetlinkClient drops them by sender port, or by content where the kernel sends none: its
   * isOwnWrite). The reconciler then remembers no echo per write (a key string and a map entry
   * per change, on every join). Absent: the reconciler recognises its echoes itself (isEcho).
   */
  readonly dropsOwnEchoes?: boolean;
}

/** The part of the one Clock (src/clock.ts) the reconciler uses. */
export type ReconcilerClock = Pick<Clock, 'now' | 'setTimeout' | 'clearTimeout'>;

export interface ReconcilerOptions {
  /**
   * Called before every run that may read the kernel: what the native join path wrote and still
   * holds (addon/src/fastjoin.cc) must be in the desired state first, or a full run removes it.
   * It may call setDesired.
   */
  readonly beforeRun?: () => void;
  readonly nl: ReconcilerNetlink;
  readonly backend: Backend;
  readonly underlay: Underlay;
  readonly log?: Logger;
  /** Periodic full resync. Default 10 000 ms. */
  readonly resyncIntervalMs?: number;
  readonly clock?: ReconcilerClock;
  /** The flannel Network when vxlan DirectRouting is on or the backend is host-gw; null/absent otherwise. */
  readonly directRoutingNetwork?: IPNet | null;
  /** Delay between a netlink notification and the reconcile it triggers (coalescing). Default 20 ms. */
  readonly debounceMs?: number;
  /**
   * Called after the reconciler had to (re)create or bring up the device. The daemon compares
   * the setup (VtepMAC, MTU) with its lease and subnet.env and updates them if they changed.
   */
  readonly onDeviceSetup?: (setup: BackendSetup) => void;
  /**
   * Look the underlay up again (by the daemon's --iface / --iface-regex / default-route rule).
   * Called before (re)creating the device when the underlay interface is gone or has another
   * index: it may have been deleted and re-created. A different PublicIP is not followed.
   */
  readonly refreshUnderlay?: () => Promise<Underlay>;
  /** Called after the underlay changed interface index (same PublicIP) and the device was re-created on it. */
  readonly onUnderlayChanged?: (underlay: Underlay) => void;
  /** Called when a run succeeded and brought the kernel to the current desired state (`isUpToDate`). */
  readonly onUpToDate?: () => void;
}

export interface ReconcileResult {
  /** Changes applied (successfully) in this run. */
  readonly changes: number;
  /** Of those, repairs (drift from an already converged state), by kind. */
  readonly repairs: Record<RepairKind, number>;
}

function zeroRepairs(): Record<RepairKind, number> {
  return { device: 0, address: 0, neighbour: 0, fdb: 0, route: 0 };
}

export class Reconciler {
  private readonly nl: ReconcilerNetlink;
  private readonly backend: Backend;
  /** The address family of the backend's device (Backend.family): what this reconciler reads and owns. */
  private readonly family: IPFamily;
  private underlay: Underlay;
  private readonly log: Logger;
  private readonly clock: ReconcilerClock;
  private readonly resyncIntervalMs: number;
  private readonly debounceMs: number;
  private readonly ownership: Ownership;
  private readonly onDeviceSetup: ((setup: BackendSetup) => void) | undefined;
  private readonly refreshUnderlay: (() => Promise<Underlay>) | undefined;
  private readonly onUnderlayChanged: ((underlay: Underlay) => void) | undefined;
  private readonly onUpToDate: (() => void) | undefined;
  /** Debug lines are written: only then is each change described (a join's three strings otherwise thrown away). */
  private readonly debugOn: boolean;

  private desired: DesiredState | null = null;
  /** The desired state the kernel last converged to; its ids are built only when a full run needs them (not per event). */
  private converged: DesiredState | null = null;
  private convergedIds: Set<string> | null = null;
  private overlayIndex: number | null = null;
  private running: Promise<ReconcileResult> | null = null;
  private followUp: Promise<ReconcileResult> | null = null;
  private readonly totals = zeroRepairs();
  /** The desired state the kernel matched after the last successful run (for readiness/metrics). */
  private appliedDesired: DesiredState | null = null;
  private runsTotal = 0;
  private failedRunsTotal = 0;
  /** The next run must read the kernel (not only apply the desired-state difference). */
  private wantFull = true;
  /** Objects we just added or changed (echoKey → until when, clock ms): their notifications are echoes. */
  private readonly echoes = new Map<string, number>();
  /** The size of `echoes` at which expired entries are swept next (see expectEcho). */
  private echoSweepAt = ECHO_SWEEP_MIN;
  /** Retries of a failed run: 100 ms doubling to 5 s (never beyond the resync interval). */
  private readonly retry: Backoff;
  private lastErr: unknown = null;
  /** Main-table routes weft does not own, from the last full run (the incremental path must not replace them). */
  private foreignRoutes: RouteEntry[] = [];
  /** The same by (dst, metric) slot, for the delta path. */
  private foreignBySlot = new Map<string, RouteEntry[]>();
  /**
   * The deltas (setDesired's second argument) from the desired state of the run in progress or
   * last run to `desired`, folded by slot; null when a state came without one (the chain is broken).
   */
  private pending: PendingDelta | null = null;
  /** The last run's PendingDelta, emptied, for the next run (two alternate: no three Maps per join). */
  private sparePending: PendingDelta | null = null;
  private readonly beforeRun: (() => void) | undefined;
  /**
   * Objects the native join path wrote ahead of the delta that will carry them (by slot and
   * fingerprint): PendingDelta.add takes them as in the kernel. A run that reads the kernel finds
   * them there itself and forgets the rest.
   */
  private readonly nativeWritten: NativeWritten = new Map();

  /** The overlay device's index once a run found it (null before, or while it is missing). */
  get overlayIfIndex(): number | null {
    return this.overlayIndex;
  }

  /** `objects` are in the kernel already: the native join path wrote them (addon/src/fastjoin.cc, weftd.ts). */
  noteNativeWrite(objects: PeerObjects): void {
    noteNativeObjects(this.nativeWritten, objects);
  }

  /** Conflicts already warned about (route key → existing route), so a steady conflict logs once. */
  private warnedConflicts = new Map<string, string>();

  /** Warn about each new conflict; a full run (`complete`) also forgets the ones that are gone. */
  private warnConflicts(conflicts: readonly RouteConflict[], complete: boolean): void {
    // Nothing new and nothing to forget (an ordinary join): no copy of the map.
    if (!complete && conflicts.length === 0) return;
    const now = complete ? new Map<string, string>() : new Map(this.warnedConflicts);
    for (const c of conflicts) {
      const key = formatIPv4Cidr(c.want.dst);
      const existing = `${key}${c.existing.gateway ? ` via ${c.existing.gateway}` : ''} dev #${c.existing.oif ?? '?'} proto ${c.existing.protocol}`;
      now.set(key, existing);
      if (this.warnedConflicts.get(key) === existing) continue;
      this.log.warn('not routing a peer subnet: a route weft did not create holds that destination; leaving it alone', {
        wanted: describeChange(c.want),
        existing,
      });
    }
    this.warnedConflicts = now;
  }

  private started = false;
  private stopped = false;
  private monitorHandle: Monitor | null = null;
  private timer: TimerHandle | null = null;
  private timerDue = 0;
  private resyncTimer: TimerHandle | null = null;

  constructor(opts: ReconcilerOptions) {
    this.nl = opts.nl;
    this.backend = opts.backend;
    this.family = opts.backend.family ?? 4;
    this.underlay = opts.underlay;
    this.log = (opts.log ?? silentLogger).child({ component: 'reconciler' });
    this.clock = opts.clock ?? systemClock;
    this.resyncIntervalMs = opts.resyncIntervalMs ?? 10_000;
    this.retry = new Backoff({ initialMs: 100, maxMs: Math.min(5000, this.resyncIntervalMs) });
    this.debounceMs = opts.debounceMs ?? 20;
    this.ownership = { directRoutingNetwork: opts.directRoutingNetwork ?? null };
    this.onDeviceSetup = opts.onDeviceSetup;
    this.refreshUnderlay = opts.refreshUnderlay;
    this.onUnderlayChanged = opts.onUnderlayChanged;
    this.onUpToDate = opts.onUpToDate;
    this.beforeRun = opts.beforeRun;
    this.debugOn = this.log.enabled?.('debug') ?? true;
  }

  /** applyPhases' per-change callback of a routine run: a debug line each, or nothing when debug is off. */
  private debugEach(link: LinkInfo): (c: Change) => void {
    return this.debugOn ? (c) => this.log.debug(describeChange(c), { device: link.name }) : ignoreChange;
  }

  /** Repairs since construction, by kind (for metrics). */
  get repairCounts(): Readonly<Record<RepairKind, number>> {
    return { ...this.totals };
  }

  /** Reconcile runs and failed runs since construction (for metrics). */
  get runCounts(): { readonly runs: number; readonly failed: number } {
    return { runs: this.runsTotal, failed: this.failedRunsTotal };
  }

  /** The desired state the last successful reconcile brought the kernel to, or null before one. */
  get applied(): DesiredState | null {
    return this.appliedDesired;
  }

  /** True when the last reconcile succeeded and the desired state has not changed since. */
  get isUpToDate(): boolean {
    return this.appliedDesired !== null && this.appliedDesired === this.desired && this.lastErr === null;
  }

  /** The last reconcile's error, or null if it succeeded. */
  get lastError(): unknown {
    return this.lastErr;
  }

  /** True once a reconcile has brought the kernel to the current desired state. */
  get isConverged(): boolean {
    return this.converged !== null && this.lastErr === null;
  }

  /**
   * Replace the desired state; when started, a reconcile follows at once. That run is
   * incremental when the kernel was last seen converged: only the difference between the state
   * last applied and this one is written, without dumping the kernel first (a peer joining costs
   * three netlink requests, not four dumps of O(peers) objects). Drift is still caught: kernel
   * change notifications, failures and the periodic resync always run a full reconcile.
   */
  setDesired(state: DesiredState, delta?: DesiredDelta): void {
    // With a delta from the state we hold, an incremental run writes only the slots it touched
    // (O(change)); without one it diffs the whole states, or reads the kernel (see runOnce).
    if (delta !== undefined && delta.from === this.desired && this.pending !== null) this.pending.add(delta, this.nativeWritten);
    else this.pending = null;
    this.desired = state;
    if (!this.started) return;
    // Idle (no run in flight, none due): start the run now, in this tick — a join's writes leave
    // in the watch event's own tick instead of after a 0 ms timer (a timer hop per event was
    // ~7 % of a join's main-thread CPU, issue #14). Bursts still coalesce: events that arrive
    // while this run awaits the kernel fold into `pending` and share one follow-up run.
    if (this.running === null && this.timer === null) {
      if (!this.startDeltaRun()) void this.runScheduled();
    } else {
      this.schedule(0, false);
    }
  }

  /**
   * The common case in one synchronous pass (issue #14): the pending deltas applied to a device
   * known to be up, from a state known to be in the kernel — the changes are found and the batch
   * is sent within this call (no promise step between the lease event and the sendmsg), and the
   * batch's answer completes the run in one promise step (runDone). False, with nothing done,
   * when the run needs the general path (runOnce: a full run, no delta chain, a user-space or
   * WireGuard table, a seam without batches). Only when no run is in flight (the caller checks).
   */
  private startDeltaRun(): boolean {
    const desired = this.desired;
    const pending = this.pending;
    const overlayIndex = this.overlayIndex;
    if (desired === null || pending === null || overlayIndex === null || this.wantFull || this.appliedDesired === null
      || this.lastErr !== null || this.nl.applyWrites === undefined
      || (desired as { readonly pump?: unknown }).pump !== undefined || desired.wireguardPeers !== undefined) return false;
    this.runsTotal++;
    // Deltas from now on are relative to the state this run brings the kernel to.
    this.pending = this.sparePending ?? new PendingDelta();
    this.sparePending = null;
    const changes = this.takeDeltaChanges(pending, overlayIndex);
    if (changes.length === 0) {
      this.runDone(desired, changes, null, null, null);
      return true;
    }
    const link: LinkInfo = { index: overlayIndex, name: this.backend.deviceName, up: true, mtu: 0, mac: null, kind: null, vxlan: null };
    const writes = new Array<KernelWrite>(changes.length);
    for (let i = 0; i < changes.length; i++) writes[i] = this.applyChange(changes[i]!, link);
    this.running = this.nl.applyWrites(writes).then(
      (outcomes) => this.runDone(desired, changes, link, outcomes, null),
      (err: unknown) => this.runDone(desired, changes, link, null, err),
    );
    return true;
  }

  /**
   * A run started by startDeltaRun is over: what runOnce and runScheduled do after a run, in one
   * place — account each change (applyPhases' rule), then either up to date (onUpToDate, the
   * retry backoff reset) or failed (lastErr: the next run is a full one, scheduled with backoff).
   * Never throws: its promise is `running`, which nobody else awaits but stop() and a follow-up.
   */
  private runDone(desired: DesiredState, changes: readonly Change[], link: LinkInfo | null, outcomes: WriteOutcomes | null, failure: unknown): ReconcileResult {
    this.running = null;
    let applied = 0;
    let firstError: unknown = failure;
    let errors = failure === null ? 0 : changes.length;
    if (outcomes !== null) {
      for (let i = 0; i < outcomes.length; i++) {
        const err = outcomes[i];
        const c = changes[i]!;
        // Already gone is what a removal wanted (e.g. an FDB dst replaced in place just before).
        if (err !== null && err !== undefined && !(c.op === 'remove' && isGone(err))) {
          if (errors++ === 0) firstError = err;
          continue;
        }
        applied++;
        if (this.debugOn) this.log.debug(describeChange(c), { device: link!.name });
      }
    }
    if (errors > 0) {
      const err = new WeftError('NETLINK', `reconcile ${link!.name}: ${errors} of ${changes.length} changes failed: ${describeError(firstError)}`, {
        cause: firstError,
        retryable: true,
      });
      this.lastErr = err;
      this.failedRunsTotal++;
      const retryMs = this.retry.next();
      this.log.error('reconcile failed; retrying', { error: describeError(err), attempt: this.retry.attempts, retryInMs: retryMs });
      this.schedule(retryMs);
      return { changes: applied, repairs: zeroRepairs() };
    }
    if (changes.length > 0 && this.debugOn) this.log.debug('reconciled (delta)', { device: link!.name, changes: changes.length });
    this.converged = desired;
    this.convergedIds = null;
    this.lastErr = null;
    this.appliedDesired = desired;
    if (this.onUpToDate !== undefined && this.isUpToDate) this.onUpToDate();
    this.retry.reset();
    return { changes: applied, repairs: zeroRepairs() };
  }

  /** The kernel changes `pending` asks for (conflicts warned), and `pending` emptied for the run after next. */
  private takeDeltaChanges(pending: PendingDelta, overlayIndex: number): Change[] {
    const conflicts: RouteConflict[] = [];
    const changes = pending.changes(overlayIndex, this.underlay.ifIndex, this.foreignBySlot, conflicts);
    pending.clear();
    this.sparePending = pending;
    this.warnConflicts(conflicts, false);
    return changes;
  }

  /**
   * Bring the kernel to the desired state now. Rejects (WeftError 'NETLINK', retryable) when some
   * change failed; the others are applied anyway. Concurrent calls coalesce into one follow-up.
   */
  reconcile(): Promise<ReconcileResult> {
    this.wantFull = true;
    return this.enqueue();
  }

  /** Run now, or once after the run in progress (calls made meanwhile share that follow-up). */
  private enqueue(): Promise<ReconcileResult> {
    // Taking in held native joins may start a delta run (setDesired): this run then follows it.
    if (!this.running) this.beforeRun?.();
    if (!this.running) {
      this.running = this.runOnce().finally(() => {
        this.running = null;
      });
      return this.running;
    }
    if (!this.followUp) {
      this.followUp = this.running
        .catch(() => undefined)
        .then(() => {
          this.followUp = null;
          return this.enqueue();
        });
    }
    return this.followUp;
  }

  /** Watch netlink (reconcile ~debounceMs after a relevant change) and resync periodically. */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    // Dropped before decoding: main-table routes and objects off the device (and underlay) cannot be relevant().
    const interest: MonitorInterest = {
      table: MAIN_TABLE,
      ifindexes: () => (this.overlayIndex === null ? null : new Set([this.overlayIndex, this.underlay.ifIndex])),
      // relevant() takes addresses, neighbours and FDB entries of the device only: the underlay's
      // neighbour churn stays in the kernel (the monitor's socket filter).
      objectIfindexes: () => (this.overlayIndex === null ? null : new Set([this.overlayIndex])),
      // relevant() takes links of the device and the underlay, by ifindex or name: a container's
      // veth or bridge coming up stays out (no decode, no 10 ms flush timer).
      linkNames: () => new Set([this.backend.deviceName, this.underlay.ifName]),
    };
    this.monitorHandle = this.nl.monitor((batch) => {
      if (batch.resync || batch.events.some((e) => this.relevant(e) && !this.isEcho(e))) this.schedule(this.debounceMs);
    }, this.family, interest);
    this.schedule(0);
    this.armResync();
  }

  /** Stop watching and timers; waits for a reconcile in progress. Leaves kernel state in place. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.started = false;
    this.monitorHandle?.close();
    this.monitorHandle = null;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    if (this.resyncTimer !== null) this.clock.clearTimeout(this.resyncTimer);
    this.timer = null;
    this.resyncTimer = null;
    await (this.followUp ?? this.running)?.catch(() => undefined);
  }

  private relevant(e: ChangeEvent): boolean {
    const ov = this.overlayIndex;
    switch (e.kind) {
      case 'link':
        return ov === null || e.ifindex === ov || e.ifindex === this.underlay.ifIndex || e.name === this.backend.deviceName || e.name === this.underlay.ifName;
      case 'address':
      case 'neighbour':
        // The other family's objects on the device are another reconciler's (or the kernel's).
        if (e.ip && addressFamily(e.ip) !== this.family) return false;
        return ov === null || e.ifindex === ov;
      case 'fdb':
        return ov === null || e.ifindex === ov;
      case 'route':
        return (
          e.table === MAIN_TABLE &&
          (ov === null || e.oif === ov || (this.ownership.directRoutingNetwork !== null && e.oif === this.underlay.ifIndex))
        );
    }
  }

  /**
   * Our own changes come back as notifications; reconciling again for each would double the cost
   * of every peer event. A notification is taken for an echo only when it describes exactly an
   * object we added or changed within the last ECHO_TTL_MS (same route/gateway/device, same
   * neighbour IP and MAC, same FDB MAC and destination, permanent). Removals, link events, and
   * anything else — an entry added or altered by hand a millisecond after our own — still
   * trigger a reconcile at once.
   */
  private isEcho(e: ChangeEvent): boolean {
    if (e.kind === 'link' || e.removed) return false;
    const key = eventEchoKey(e);
    if (key === null) return false;
    const until = this.echoes.get(key);
    return until !== undefined && this.clock.now() < until;
  }

  /** Remember that `c`'s notification is coming (called before the request is sent). */
  private expectEcho(c: Change, overlayIndex: number): void {
    if (c.op === 'remove') return;
    const now = this.clock.now();
    // Expired entries are swept when the map reaches a bound that doubles with what a sweep left:
    // amortised O(1) per write. (A fixed bound swept 4096 live entries on every write once that
    // many echoes were pending — 1000 peers programmed, then joins: O(peers) per event.)
    if (this.echoes.size >= this.echoSweepAt) {
      for (const [k, until] of this.echoes) if (until <= now) this.echoes.delete(k);
      this.echoSweepAt = Math.max(ECHO_SWEEP_MIN, 2 * this.echoes.size);
    }
    this.echoes.set(changeEchoKey(c, overlayIndex), now + ECHO_TTL_MS);
  }

  /** `full` false: an incremental run is enough (only setDesired asks for that). */
  private schedule(delayMs: number, full = true): void {
    if (!this.started) return;
    if (full) this.wantFull = true;
    const due = this.clock.now() + delayMs;
    if (this.timer !== null) {
      if (this.timerDue <= due) return;
      this.clock.clearTimeout(this.timer);
    }
    this.timerDue = due;
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      // A follow-up of deltas only (changes that came during a run) takes the synchronous path too.
      if (this.running !== null || !this.startDeltaRun()) void this.runScheduled();
    }, delayMs);
  }

  private async runScheduled(): Promise<void> {
    try {
      await this.enqueue();
      this.retry.reset();
    } catch (err) {
      const retryMs = this.retry.next();
      this.log.error('reconcile failed; retrying', { error: describeError(err), attempt: this.retry.attempts, retryInMs: retryMs });
      this.schedule(retryMs);
    }
  }

  private armResync(): void {
    if (!this.started) return;
    this.resyncTimer = this.clock.setTimeout(() => {
      this.resyncTimer = null;
      this.schedule(0);
      this.armResync();
    }, this.resyncIntervalMs);
  }

  private async runOnce(): Promise<ReconcileResult> {
    const desired = this.desired;
    const repairs = zeroRepairs();
    if (desired === null) return { changes: 0, repairs };
    this.runsTotal++;
    // Incremental only from a state known to be in the kernel; a user-space data path's table
    // (DesiredState.pump, when a backend has one) is handled by the full path.
    const pending = this.pending;
    // Deltas from now on are relative to the state this run brings the kernel to.
    this.pending = this.sparePending ?? new PendingDelta();
    this.sparePending = null;
    const applied = this.appliedDesired;
    // Diffing whole states needs `applied` as it was: a per-peer state read after later events
    // is not (desired-delta.ts); then the kernel is read instead.
    const full = this.wantFull || applied === null || this.lastErr !== null || this.overlayIndex === null
      || (desired as { readonly pump?: unknown }).pump !== undefined || desired.wireguardPeers !== undefined
      || (pending === null && !desiredIsExact(applied));
    this.wantFull = false;
    // A run that reads the kernel finds the native path's writes there itself.
    if (full) this.nativeWritten.clear();
    // Whatever reads the whole of `desired` below does so after an await: build it now, while exact.
    if (full || pending === null) pinDesired(desired);
    try {
      const result = full
        ? await this.apply(desired, repairs)
        : pending !== null
          ? await this.applyDelta(desired, pending, this.overlayIndex!)
          : await this.applyIncremental(desired, applied!, this.overlayIndex!);
      this.lastErr = null;
      this.appliedDesired = desired;
      if (this.onUpToDate !== undefined && this.isUpToDate) this.onUpToDate();
      return result;
    } catch (err) {
      this.lastErr = err;
      this.failedRunsTotal++;
      throw err;
    } finally {
      for (const k of REPAIR_KINDS) this.totals[k] += repairs[k];
    }
  }

  /**
   * The changes from `applied` (in the kernel as of the last successful run) to `desired`, found
   * by diffing against the state `applied` implies, and written without reading the kernel.
   */
  private async applyIncremental(desired: DesiredState, applied: DesiredState, overlayIndex: number): Promise<ReconcileResult> {
    // Routes weft does not own, as last dumped, so an added peer route never replaces one of them.
    const implied = impliedState(applied, overlayIndex, this.underlay.ifIndex);
    const conflicts: RouteConflict[] = [];
    const changes = diffState(desired, { ...implied, routes: [...implied.routes, ...this.foreignRoutes] }, this.ownership, conflicts);
    this.warnConflicts(conflicts, false);
    const link: LinkInfo = { index: overlayIndex, name: this.backend.deviceName, up: true, mtu: 0, mac: null, kind: null, vxlan: null };
    const { errors } = await this.applyPhases(changes, link, this.debugEach(link));
    // lastErr is set by the caller: the next run is a full one.
    if (errors.length) throw reconcileFailure(link.name, errors, changes.length);
    if (changes.length && this.debugOn) this.log.debug('reconciled (incremental)', { device: link.name, changes: changes.length });
    this.converged = desired;
    this.convergedIds = null;
    return { changes: changes.length, repairs: zeroRepairs() };
  }

  /**
   * The delta path: only the slots the pending deltas touched, compared with the state last
   * applied, written without reading the kernel. O(change), whatever the number of peers.
   */
  private async applyDelta(desired: DesiredState, pending: PendingDelta, overlayIndex: number): Promise<ReconcileResult> {
    const changes = this.takeDeltaChanges(pending, overlayIndex);
    if (changes.length === 0) {
      this.converged = desired;
      this.convergedIds = null;
      return { changes: 0, repairs: zeroRepairs() };
    }
    const link: LinkInfo = { index: overlayIndex, name: this.backend.deviceName, up: true, mtu: 0, mac: null, kind: null, vxlan: null };
    const { errors } = await this.applyPhases(changes, link, this.debugEach(link));
    // lastErr is set by the caller: the next run is a full one.
    if (errors.length) throw reconcileFailure(link.name, errors, changes.length);
    if (this.debugOn) this.log.debug('reconciled (delta)', { device: link.name, changes: changes.length });
    this.converged = desired;
    this.convergedIds = null;
    return { changes: changes.length, repairs: zeroRepairs() };
  }

  private async apply(desired: DesiredState, repairs: Record<RepairKind, number>): Promise<ReconcileResult> {
    const link = await this.ensureDevice(repairs);
    const indexChanged = this.overlayIndex !== link.index;
    this.overlayIndex = link.index;
    if (indexChanged) this.monitorHandle?.interestChanged?.();
    // A user-space data path keeps its FDB in the pump: kernel FDB entries on the device (a TAP
    // lists its own MAC and multicast addresses there) are then neither read nor touched.
    const pump = desired.pump;
    // No device (host-gw): nothing on one to read; only routes.
    const dev = link.index !== NO_DEVICE;
    const [addresses, neighbours, fdb, routes] = await Promise.all([
      dev ? this.nl.listAddresses(link.index, this.family) : Promise.resolve([]),
      dev ? this.nl.listNeighbours(link.index, this.family) : Promise.resolve([]),
      pump || !dev ? Promise.resolve([]) : this.nl.listFdb(link.index),
      this.nl.listRoutes(MAIN_TABLE, this.family),
    ]);
    // The pump's table goes in before any route that could send traffic its way.
    if (pump) this.backend.applyPump?.(pump);
    // Likewise the WireGuard peers (wireguard backend): the route below sends traffic to them.
    if (desired.wireguardPeers) await this.backend.applyWireguardPeers?.(desired.wireguardPeers);
    const actual: ActualState = { overlayIndex: link.index, underlayIndex: this.underlay.ifIndex, addresses, neighbours, fdb, routes };
    const conflicts: RouteConflict[] = [];
    const changes = diffState(desired, actual, this.ownership, conflicts);
    this.foreignRoutes = routes.filter((r) => r.type === RTN_UNICAST && !ownsRoute(r, actual, this.ownership));
    this.foreignBySlot = routesBySlot(this.foreignRoutes);
    this.warnConflicts(conflicts, true);
    const isRepair = (c: Change): boolean => {
      if (this.converged === null) return false;
      // Built on the first change only: a resync that finds the kernel right (nearly all) needs none.
      const converged = (this.convergedIds ??= desiredIds(this.converged));
      return c.op === 'remove' ? !converged.has(changeId(c)) : converged.has(changeId(c));
    };

    const repairedLines: string[] = [];
    const { applied, errors } = await this.applyPhases(changes, link, (c) => {
      if (isRepair(c)) {
        repairs[c.kind]++;
        repairedLines.push(`repaired: ${describeChange(c)}`);
      } else if (this.debugOn) {
        this.log.debug(describeChange(c), { device: link.name });
      }
    });
    // A repair is worth a line each; a mass repair (routes flushed on a 1000-peer host) is not.
    if (repairedLines.length <= 10) for (const line of repairedLines) this.log.info(line, { device: link.name });
    else this.log.info(`repaired ${repairedLines.length} objects`, { device: link.name, first: repairedLines.slice(0, 10) });
    if (errors.length) throw reconcileFailure(link.name, errors, changes.length);
    // One line per reconcile that repaired drift; routine runs (a peer joined or left: one per
    // peer event on a 1000-host cluster) are debug.
    const repaired = REPAIR_KINDS.some((k) => repairs[k] > 0);
    if (changes.length) (repaired ? this.log.info : this.log.debug)('reconciled', { device: link.name, changes: changes.length, repairs });
    this.converged = desired;
    this.convergedIds = null;
    return { changes: applied, repairs };
  }

  private async ensureDevice(repairs: Record<RepairKind, number>): Promise<LinkInfo> {
    if (this.backend.deviceless) return this.ensureUnderlayOnly();
    const name = this.backend.deviceName;
    const link = await this.nl.getLink(name);
    const why = !link ? 'missing' : !link.up ? 'down' : this.backend.deviceProblem?.(link) ?? null;
    if (link && why === null) return link;
    if (this.converged !== null) this.log.warn(`device ${name}: ${why}; setting it up again`);
    const setup = await this.ensureDeviceOnUnderlay();
    if (this.converged !== null) repairs.device++;
    this.notifySetup(setup);
    const fresh = await this.nl.getLink(name);
    if (!fresh) throw new WeftError('NETLINK', `device ${name} is missing right after setting it up`, { retryable: true });
    return fresh;
  }

  /** Tell the daemon the (possibly new) setup; a throwing listener must not fail the reconcile. */
  private notifySetup(setup: BackendSetup): void {
    try {
      this.onDeviceSetup?.(setup);
    } catch (err) {
      this.log.error('onDeviceSetup listener threw', { error: err });
    }
  }

  /**
   * A backend without a device (host-gw) routes out of the underlay: it must exist (followed when
   * re-created) and be up — weft never changes the host's own interface, so a missing or down
   * underlay is a retryable failure that names it. The LinkInfo returned carries NO_DEVICE as its
   * index, which no kernel object has, so diffState owns nothing but the underlay routes.
   */
  private async ensureUnderlayOnly(): Promise<LinkInfo> {
    let lower = await this.nl.getLink(this.underlay.ifName);
    if ((lower === null || lower.index !== this.underlay.ifIndex) && this.refreshUnderlay) {
      await this.followUnderlay();
      lower = await this.nl.getLink(this.underlay.ifName);
    }
    const name = this.underlay.ifName;
    if (lower === null) throw new WeftError('NETLINK', `underlay ${name} is missing: no route to any peer can be programmed until it is back`, { retryable: true });
    if (!lower.up) throw new WeftError('NETLINK', `underlay ${name} is down: routes to peers need it up (ip link set ${name} up)`, { retryable: true });
    const setup = await this.backend.ensureDevice(this.underlay); // no kernel change: checks and returns the setup
    this.notifySetup(setup);
    return { ...lower, index: NO_DEVICE };
  }

  /**
   * backend.ensureDevice() on the underlay as it is now. The underlay interface may have been
   * deleted and re-created (a new ifindex; the kernel deletes a VXLAN device with its lower
   * device): then it is looked up again first, so the device is never created against an index
   * that no longer exists (which fails with ENODEV, and would look like a kernel without VXLAN).
   */
  private async ensureDeviceOnUnderlay(): Promise<BackendSetup> {
    if (this.refreshUnderlay) {
      const lower = await this.nl.getLink(this.underlay.ifName);
      if (lower === null || lower.index !== this.underlay.ifIndex) await this.followUnderlay();
    }
    return this.backend.ensureDevice(this.underlay);
  }

  private async followUnderlay(): Promise<void> {
    let fresh: Underlay;
    try {
      fresh = await this.refreshUnderlay!();
    } catch (err) {
      throw new WeftError('NETLINK', `underlay ${this.underlay.ifName} (index ${this.underlay.ifIndex}) is gone: ${describeError(err)}`, { cause: err, retryable: true });
    }
    if (fresh.ipv4 !== this.underlay.ipv4) {
      throw new WeftError('NETLINK', `underlay moved from ${this.underlay.ipv4} (${this.underlay.ifName}) to ${fresh.ipv4} (${fresh.ifName}): ` +
        'our lease carries the old PublicIP; restart weftd to take the new one', { retryable: true });
    }
    if (fresh.ifIndex === this.underlay.ifIndex) return;
    this.log.warn(`underlay ${fresh.ifName} was re-created (index ${this.underlay.ifIndex} → ${fresh.ifIndex}); setting the device up on it`);
    this.underlay = fresh;
    this.onUnderlayChanged?.(fresh);
  }

  /**
   * Apply `changes` in diffState's order (adds neighbour → FDB → route, removals the reverse: the
   * ordering guarantee). A seam that batches (`applyWrites`: NetlinkClient, which applies writes in
   * the order given — the kernel handles the messages of a datagram one after another, and the
   * next datagram goes once the previous one is answered) gets the whole run in one call: a peer
   * joining is one datagram. Otherwise phase by phase (diff.ts `phases`), the changes of a phase
   * in parallel. A failed change does not stop the others; `onApplied` is called for each change
   * that succeeded.
   */
  private async applyPhases(changes: readonly Change[], link: LinkInfo, onApplied: (c: Change) => void): Promise<{ applied: number; errors: unknown[] }> {
    const errors: unknown[] = [];
    let applied = 0;
    const account = (sent: readonly Change[], outcomes: WriteOutcomes): void => {
      outcomes.forEach((err, i) => {
        const c = sent[i]!;
        // Already gone is what a removal wanted (e.g. an FDB dst replaced in place just before).
        if (err !== null && !(c.op === 'remove' && isGone(err))) {
          errors.push(err);
          return;
        }
        applied++;
        onApplied(c);
      });
    };
    if (this.nl.applyWrites) {
      if (changes.length > 0) account(changes, await this.nl.applyWrites(changes.map((c) => this.applyChange(c, link))));
    } else {
      for (const phase of phases(changes)) account(phase, await applyWritesOneByOne(this.nl, phase.map((c) => this.applyChange(c, link))));
    }
    return { applied, errors };
  }

  /**
   * The kernel write that applies `c` (sent by applyPhases with the rest of its run): every new
   * route with NLM_F_EXCL (`addRoute`) where the seam has it, so a route someone else added since
   * our last dump is never replaced. Its notification is expected from now on (isEcho).
   */
  private applyChange(c: Change, link: LinkInfo): KernelWrite {
    const dev = { index: link.index, name: link.name };
    if (this.nl.dropsOwnEchoes !== true) this.expectEcho(c, link.index);
    switch (c.kind) {
      case 'address':
        return { op: c.op === 'remove' ? 'deleteAddress' : 'addAddress', link: dev, ip: c.ip, prefixLen: c.prefixLen };
      case 'neighbour':
        return c.op === 'remove' ? { op: 'deleteNeighbour', link: dev, ip: c.ip } : { op: 'replaceNeighbour', link: dev, ip: c.ip, mac: c.mac! };
      case 'fdb':
        return c.op === 'remove' ? { op: 'deleteFdb', link: dev, mac: c.mac, dst: c.dst } : { op: 'replaceFdb', link: dev, mac: c.mac, dst: c.dst! };
      case 'route': {
        const spec: RouteSpec = { dst: c.dst, gateway: c.gateway, oif: c.oif, onlink: c.onlink, priority: c.priority };
        if (c.op === 'remove') return { op: 'deleteRoute', spec };
        // A seam without addRoute (applyWritesOneByOne) writes it with replaceRoute, as before.
        return { op: c.op === 'add' ? 'addRoute' : 'replaceRoute', spec };
      }
    }
  }
}

function ignoreChange(): void {}

/** The overlay index of a backend without a device (Backend.deviceless): no kernel object has ifindex 0. */
const NO_DEVICE = 0;

/** How long after we add or change an object its notification is taken for an echo (see isEcho). */
const ECHO_TTL_MS = 2000;

/** The least size of the echo map at which expired entries are swept. */
const ECHO_SWEEP_MIN = 4096;

/** The error of a run in which some changes failed (the others were applied): retryable. */
function reconcileFailure(device: string, errors: readonly unknown[], total: number): WeftError {
  return new WeftError('NETLINK', `reconcile ${device}: ${errors.length} of ${total} changes failed: ${describeError(errors[0])}`, {
    cause: errors[0],
    retryable: true,
  });
}
