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
 * Ownership (diffState never proposes anything else):
 * - every IPv4 address, permanent neighbour and permanent FDB entry on the overlay device;
 * - every main-table unicast route out of the overlay device (except the kernel's own);
 * - with DirectRouting or host-gw, main-table routes out of the underlay that have a gateway and
 *   whose destination lies strictly inside the flannel Network (`directRoutingNetwork`).
 * A backend without a device (host-gw, Backend.deviceless) owns only those underlay routes.
 * Non-permanent neighbours/FDB entries are the kernel's (ARP, learning) and left alone.
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
import type { Backend, BackendSetup, DesiredState, Underlay } from '../backend/backend';
import { describeError, WeftError } from '../errors';
import { addressFamily, familyOf, formatIPv4Cidr, isIPv6LinkLocal, maskNet, netAddress, netContainsNet, type IPFamily, type IPNet } from '../ip';
import { silentLogger, type Logger } from '../log';
import { isGone, type LinkRef } from '../netlink/client';
import {
  MAIN_TABLE,
  RTN_UNICAST,
  RTPROT_KERNEL,
  type AddressEntry,
  type ChangeBatch,
  type ChangeEvent,
  type FdbEntry,
  type LinkInfo,
  type Monitor,
  type NeighbourEntry,
  type RouteEntry,
  type RouteSpec,
} from '../netlink/types';

export type ObjectKind = 'address' | 'neighbour' | 'fdb' | 'route';
export type RepairKind = 'device' | ObjectKind;
export const REPAIR_KINDS: readonly RepairKind[] = ['device', 'address', 'neighbour', 'fdb', 'route'];

/** What the kernel holds, as read by dumps. Lists may include objects on other links: diffState filters. */
export interface ActualState {
  readonly overlayIndex: number;
  readonly underlayIndex: number;
  readonly addresses: readonly AddressEntry[];
  readonly neighbours: readonly NeighbourEntry[];
  readonly fdb: readonly FdbEntry[];
  /** Main-table IPv4 routes. */
  readonly routes: readonly RouteEntry[];
}

export interface Ownership {
  /** The flannel Network when DirectRouting is on (weft then owns underlay routes into it); else null. */
  readonly directRoutingNetwork: IPNet | null;
}

export type ChangeOp = 'add' | 'update' | 'remove';

export type Change =
  | { readonly op: ChangeOp; readonly kind: 'address'; readonly ip: string; readonly prefixLen: number }
  | { readonly op: ChangeOp; readonly kind: 'neighbour'; readonly ip: string; readonly mac: string | null }
  | { readonly op: ChangeOp; readonly kind: 'fdb'; readonly mac: string; readonly dst: string | null }
  | {
      readonly op: ChangeOp;
      readonly kind: 'route';
      readonly dst: IPNet;
      readonly gateway: string | null;
      readonly onlink: boolean;
      readonly oif: number;
      readonly via: 'overlay' | 'underlay' | 'other';
      readonly priority: number;
    };

const KIND_ORDER: readonly ObjectKind[] = ['address', 'neighbour', 'fdb', 'route'];

/**
 * Pure: the changes that turn `actual` into `desired`, touching only objects weft owns (see the
 * module comment). Ordered for application: adds and updates (address, neighbour, FDB, route),
 * then removals (route, FDB, neighbour, address). Empty when the kernel already matches.
 */
export function diffState(
  desired: DesiredState,
  actual: ActualState,
  own: Ownership = { directRoutingNetwork: null },
  conflicts?: RouteConflict[],
): Change[] {
  const ov = actual.overlayIndex;
  const sets: Change[] = [];
  const removes: Change[] = [];

  // Addresses on the overlay device.
  const haveAddr = new Set(actual.addresses.filter((a) => a.ifindex === ov).map((a) => `${a.ip}/${a.prefixLen}`));
  const wantAddr = new Set<string>();
  for (const a of desired.addresses) {
    const ip = netAddress(a);
    const k = `${ip}/${a.prefixLen}`;
    if (wantAddr.has(k)) continue;
    wantAddr.add(k);
    if (!haveAddr.has(k)) sets.push({ op: 'add', kind: 'address', ip, prefixLen: a.prefixLen });
  }
  for (const a of actual.addresses) {
    // IPv6 link-local addresses are the kernel's (every IPv6 link has one): never weft's to remove.
    if (a.ifindex === ov && !wantAddr.has(`${a.ip}/${a.prefixLen}`) && !isIPv6LinkLocal(a.ip)) removes.push({ op: 'remove', kind: 'address', ip: a.ip, prefixLen: a.prefixLen });
  }

  // Permanent neighbours on the overlay device, keyed by IP.
  const haveNeigh = new Map<string, NeighbourEntry>();
  for (const n of actual.neighbours) if (n.ifindex === ov) haveNeigh.set(n.ip, n);
  const wantNeigh = new Map<string, string>();
  for (const n of desired.neighbours) wantNeigh.set(n.ip, n.mac.toLowerCase());
  for (const [ip, mac] of wantNeigh) {
    const cur = haveNeigh.get(ip);
    if (!cur) sets.push({ op: 'add', kind: 'neighbour', ip, mac });
    else if (!cur.permanent || cur.mac !== mac) sets.push({ op: 'update', kind: 'neighbour', ip, mac });
  }
  for (const n of haveNeigh.values()) {
    if (n.permanent && !wantNeigh.has(n.ip)) removes.push({ op: 'remove', kind: 'neighbour', ip: n.ip, mac: n.mac });
  }

  // Permanent FDB entries on the overlay device, keyed by (MAC, dst).
  const haveFdb = new Map<string, FdbEntry>();
  for (const f of actual.fdb) if (f.ifindex === ov) haveFdb.set(`${f.mac} ${f.dst ?? ''}`, f);
  const wantFdb = new Map<string, { mac: string; dst: string }>();
  for (const f of desired.fdb) {
    const mac = f.mac.toLowerCase();
    wantFdb.set(`${mac} ${f.dst}`, { mac, dst: f.dst });
  }
  for (const [k, f] of wantFdb) {
    const cur = haveFdb.get(k);
    if (!cur) sets.push({ op: haveFdbMac(haveFdb, f.mac) ? 'update' : 'add', kind: 'fdb', mac: f.mac, dst: f.dst });
    else if (!cur.permanent) sets.push({ op: 'update', kind: 'fdb', mac: f.mac, dst: f.dst });
  }
  for (const [k, f] of haveFdb) {
    if (f.permanent && !wantFdb.has(k)) removes.push({ op: 'remove', kind: 'fdb', mac: f.mac, dst: f.dst });
  }

  // Routes, keyed like the kernel keys them in one table: (dst, metric).
  const viaOf = (r: RouteEntry): 'overlay' | 'underlay' | 'other' =>
    r.oif === ov ? 'overlay' : r.oif === actual.underlayIndex ? 'underlay' : 'other';
  const routeKey = (dst: IPNet, priority: number): string => `${formatIPv4Cidr(dst)} ${priority}`;
  const unicast = actual.routes.filter((r) => r.table === MAIN_TABLE && r.type === RTN_UNICAST);
  const byKey = new Map<string, RouteEntry[]>();
  for (const r of unicast) {
    const k = routeKey(r.dst, r.priority);
    byKey.set(k, [...(byKey.get(k) ?? []), r]);
  }
  const wantRoutes = new Map<string, Change & { kind: 'route' }>();
  for (const d of desired.routes) {
    const via = d.via ?? 'overlay';
    const dst = maskNet(d.dst);
    const oif = via === 'underlay' ? actual.underlayIndex : ov;
    const priority = routePriority(dst);
    wantRoutes.set(routeKey(dst, priority), { op: 'add', kind: 'route', dst, gateway: d.gateway, onlink: d.onlink, oif, via, priority });
  }
  const owned = (r: RouteEntry): boolean => ownsRoute(r, actual, own);
  for (const [k, w] of wantRoutes) {
    const present = byKey.get(k) ?? [];
    const match = present.some((r) => r.oif === w.oif && r.gateway === w.gateway && r.onlink === w.onlink);
    if (match) continue;
    // An update is an NLM_F_REPLACE, which takes whichever route holds (dst, metric) in the
    // table: never one weft did not create (the underlay's `proto kernel` connected route, an
    // operator's static route). The lease screen should have refused such a destination already;
    // this is the last line.
    const foreign = present.find((r) => !owned(r) && !leftoverDirectRoute(r, actual.underlayIndex));
    if (foreign) {
      conflicts?.push({ want: w, existing: foreign });
      continue;
    }
    sets.push(present.length ? { ...w, op: 'update' } : w);
  }
  for (const r of unicast) {
    if (!owned(r)) continue;
    const w = wantRoutes.get(routeKey(r.dst, r.priority));
    // The desired route for this key replaces r in place (same dst and metric): no removal.
    if (w) continue;
    removes.push({
      op: 'remove', kind: 'route', dst: r.dst, gateway: r.gateway, onlink: r.onlink, oif: r.oif!, via: viaOf(r), priority: r.priority,
    });
  }

  const rank = (c: Change): number => KIND_ORDER.indexOf(c.kind);
  sets.sort((a, b) => rank(a) - rank(b) || cmp(changeId(a), changeId(b)));
  removes.sort((a, b) => rank(b) - rank(a) || cmp(changeId(a), changeId(b)));
  return [...sets, ...removes];
}

/** A desired route left out because a route weft does not own holds its (dst, metric). */
export interface RouteConflict {
  readonly want: Change & { readonly kind: 'route' };
  readonly existing: RouteEntry;
}

/**
 * Whether weft created (and so may replace or delete) route `r`: a route out of the overlay
 * device, or with DirectRouting/host-gw a gatewayed underlay route strictly inside the Network;
 * never a `proto kernel` route (connected networks) nor one of another table (callers pass
 * main-table routes only).
 */
export function ownsRoute(r: RouteEntry, actual: Pick<ActualState, 'overlayIndex' | 'underlayIndex'>, own: Ownership): boolean {
  if (r.protocol === RTPROT_KERNEL || r.oif === null || r.table !== MAIN_TABLE) return false;
  if (r.oif === actual.overlayIndex) return true;
  const net = own.directRoutingNetwork;
  return (
    net !== null &&
    r.oif === actual.underlayIndex &&
    r.gateway !== null &&
    r.dst.prefixLen > net.prefixLen &&
    netContainsNet(net, r.dst)
  );
}

/**
 * A gatewayed underlay route with the protocol weft writes (boot): what DirectRouting leaves
 * behind once turned off. It may be replaced in place by the overlay route (not deleted: an
 * operator's `ip route add` looks the same). Routes of any other protocol — kernel, static, dhcp,
 * a routing daemon — are never replaced.
 */
function leftoverDirectRoute(r: RouteEntry, underlayIndex: number): boolean {
  return r.protocol === RTPROT_BOOT && r.oif === underlayIndex && r.gateway !== null && r.table === MAIN_TABLE;
}

function haveFdbMac(have: Map<string, FdbEntry>, mac: string): boolean {
  for (const f of have.values()) if (f.mac === mac) return true;
  return false;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Identity of the object a change is about, value included (used for ordering and repair accounting). */
export function changeId(c: Change): string {
  switch (c.kind) {
    case 'address':
      return `address ${c.ip}/${c.prefixLen}`;
    case 'neighbour':
      return `neighbour ${c.ip} ${c.mac ?? ''}`;
    case 'fdb':
      return `fdb ${c.mac} ${c.dst ?? ''}`;
    case 'route':
      return `route ${formatIPv4Cidr(c.dst)} ${c.priority} ${c.via} ${c.gateway ?? ''}${c.onlink ? ' onlink' : ''}`;
  }
}

/** The ids of every object in a desired state, in changeId's format. */
function desiredIds(d: DesiredState): Set<string> {
  const ids = new Set<string>();
  for (const a of d.addresses) ids.add(`address ${netAddress(a)}/${a.prefixLen}`);
  for (const n of d.neighbours) ids.add(`neighbour ${n.ip} ${n.mac.toLowerCase()}`);
  for (const f of d.fdb) ids.add(`fdb ${f.mac.toLowerCase()} ${f.dst}`);
  for (const r of d.routes) {
    const dst = maskNet(r.dst);
    ids.add(`route ${formatIPv4Cidr(dst)} ${routePriority(dst)} ${r.via ?? 'overlay'} ${r.gateway ?? ''}${r.onlink ? ' onlink' : ''}`);
  }
  return ids;
}

export function describeChange(c: Change): string {
  switch (c.kind) {
    case 'address':
      return `${c.op} address ${c.ip}/${c.prefixLen}`;
    case 'neighbour':
      return `${c.op} neighbour ${c.ip}${c.mac ? ` lladdr ${c.mac}` : ''}`;
    case 'fdb':
      return `${c.op} fdb ${c.mac}${c.dst ? ` dst ${c.dst}` : ''}`;
    case 'route':
      return `${c.op} route ${formatIPv4Cidr(c.dst)}${c.gateway ? ` via ${c.gateway}` : ''} (${c.via})${c.onlink ? ' onlink' : ''}${c.priority ? ` metric ${c.priority}` : ''}`;
  }
}

// ------------------------------------------------------------------------------- Reconciler

/** The part of NetlinkClient the reconciler uses (a seam for tests). */
export interface ReconcilerNetlink {
  getLink(name: string): Promise<LinkInfo | null>;
  listAddresses(ifindex?: number, family?: IPFamily): Promise<AddressEntry[]>;
  listNeighbours(ifindex?: number, family?: IPFamily): Promise<NeighbourEntry[]>;
  listFdb(ifindex?: number): Promise<FdbEntry[]>;
  listRoutes(table?: number, family?: IPFamily): Promise<RouteEntry[]>;
  addAddress(link: LinkRef, ip: string, prefixLen: number): Promise<void>;
  deleteAddress(link: LinkRef, ip: string, prefixLen: number): Promise<void>;
  replaceNeighbour(link: LinkRef, ip: string, mac: string): Promise<void>;
  deleteNeighbour(link: LinkRef, ip: string): Promise<void>;
  replaceFdb(link: LinkRef, mac: string, dst: string): Promise<void>;
  deleteFdb(link: LinkRef, mac: string, dst: string | null): Promise<void>;
  replaceRoute(spec: RouteSpec): Promise<void>;
  /**
   * Optional: add a route only where none holds (dst, metric) (NLM_F_EXCL: EEXIST otherwise).
   * Used for every new route, so that a route someone else added since our last dump (the
   * incremental path does not dump) is never replaced: the failure makes the next run a full one,
   * which sees that route and leaves it alone (diffState's conflicts). Absent: replaceRoute.
   */
  addRoute?(spec: RouteSpec): Promise<void>;
  deleteRoute(spec: RouteSpec): Promise<void>;
  monitor(onChange: (batch: ChangeBatch) => void, family?: IPFamily): Monitor;
}

export type TimerHandle = unknown;

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface ReconcilerOptions {
  readonly nl: ReconcilerNetlink;
  readonly backend: Backend;
  readonly underlay: Underlay;
  readonly log?: Logger;
  /** Periodic full resync. Default 10 000 ms. */
  readonly resyncIntervalMs?: number;
  readonly clock?: Clock;
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
  private readonly clock: Clock;
  private readonly resyncIntervalMs: number;
  private readonly debounceMs: number;
  private readonly ownership: Ownership;
  private readonly onDeviceSetup: ((setup: BackendSetup) => void) | undefined;
  private readonly refreshUnderlay: (() => Promise<Underlay>) | undefined;
  private readonly onUnderlayChanged: ((underlay: Underlay) => void) | undefined;

  private desired: DesiredState | null = null;
  private converged: Set<string> | null = null;
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
  private failures = 0;
  private lastErr: unknown = null;
  /** Main-table routes weft does not own, from the last full run (the incremental path must not replace them). */
  private foreignRoutes: RouteEntry[] = [];
  /** Conflicts already warned about (route key → existing route), so a steady conflict logs once. */
  private warnedConflicts = new Map<string, string>();

  /** Warn about each new conflict; a full run (`complete`) also forgets the ones that are gone. */
  private warnConflicts(conflicts: readonly RouteConflict[], complete: boolean): void {
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
    this.debounceMs = opts.debounceMs ?? 20;
    this.ownership = { directRoutingNetwork: opts.directRoutingNetwork ?? null };
    this.onDeviceSetup = opts.onDeviceSetup;
    this.refreshUnderlay = opts.refreshUnderlay;
    this.onUnderlayChanged = opts.onUnderlayChanged;
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
  setDesired(state: DesiredState): void {
    this.desired = state;
    if (this.started) this.schedule(0, false);
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
    this.monitorHandle = this.nl.monitor((batch) => {
      if (batch.resync || batch.events.some((e) => this.relevant(e) && !this.isEcho(e))) this.schedule(this.debounceMs);
    }, this.family);
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
    if (this.echoes.size >= 4096) for (const [k, until] of this.echoes) if (until <= now) this.echoes.delete(k);
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
      void this.runScheduled();
    }, delayMs);
  }

  private async runScheduled(): Promise<void> {
    try {
      await this.enqueue();
      this.failures = 0;
    } catch (err) {
      this.failures++;
      const retryMs = Math.min(100 * 2 ** (this.failures - 1), 5000, this.resyncIntervalMs);
      this.log.error('reconcile failed; retrying', { error: describeError(err), attempt: this.failures, retryInMs: retryMs });
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
    const full = this.wantFull || this.appliedDesired === null || this.lastErr !== null || this.overlayIndex === null
      || (desired as { readonly pump?: unknown }).pump !== undefined || desired.wireguardPeers !== undefined;
    this.wantFull = false;
    try {
      const result = full ? await this.apply(desired, repairs) : await this.applyIncremental(desired, this.appliedDesired!, this.overlayIndex!);
      this.lastErr = null;
      this.appliedDesired = desired;
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
    const errors: unknown[] = [];
    for (const phase of phases(changes)) {
      const results = await Promise.allSettled(phase.map((c) => this.applyChange(c, link)));
      results.forEach((r, i) => {
        if (r.status === 'rejected') errors.push(r.reason);
        else this.log.debug(describeChange(phase[i]!), { device: link.name });
      });
    }
    if (errors.length) {
      // lastErr is set by the caller: the next run is a full one.
      throw new WeftError('NETLINK', `reconcile ${link.name}: ${errors.length} of ${changes.length} changes failed: ${describeError(errors[0])}`, {
        cause: errors[0],
        retryable: true,
      });
    }
    if (changes.length) this.log.debug('reconciled (incremental)', { device: link.name, changes: changes.length });
    this.converged = desiredIds(desired);
    return { changes: changes.length, repairs: zeroRepairs() };
  }

  private async apply(desired: DesiredState, repairs: Record<RepairKind, number>): Promise<ReconcileResult> {
    const link = await this.ensureDevice(repairs);
    this.overlayIndex = link.index;
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
    this.warnConflicts(conflicts, true);
    const converged = this.converged;
    const isRepair = (c: Change): boolean => {
      if (converged === null) return false;
      return c.op === 'remove' ? !converged.has(changeId(c)) : converged.has(changeId(c));
    };

    const errors: unknown[] = [];
    const repairedLines: string[] = [];
    let applied = 0;
    // Phases run one after another (that is the ordering guarantee); inside a phase, in parallel.
    for (const phase of phases(changes)) {
      const results = await Promise.allSettled(phase.map((c) => this.applyChange(c, link)));
      results.forEach((r, i) => {
        const c = phase[i]!;
        if (r.status === 'rejected') {
          errors.push(r.reason);
          return;
        }
        applied++;
        if (isRepair(c)) {
          repairs[c.kind]++;
          repairedLines.push(`repaired: ${describeChange(c)}`);
        } else {
          this.log.debug(describeChange(c), { device: link.name });
        }
      });
    }
    // A repair is worth a line each; a mass repair (routes flushed on a 1000-peer host) is not.
    if (repairedLines.length <= 10) for (const line of repairedLines) this.log.info(line, { device: link.name });
    else this.log.info(`repaired ${repairedLines.length} objects`, { device: link.name, first: repairedLines.slice(0, 10) });
    if (errors.length) {
      throw new WeftError('NETLINK', `reconcile ${link.name}: ${errors.length} of ${changes.length} changes failed: ${describeError(errors[0])}`, {
        cause: errors[0],
        retryable: true,
      });
    }
    // One line per reconcile that repaired drift; routine runs (a peer joined or left: one per
    // peer event on a 1000-host cluster) are debug.
    const repaired = REPAIR_KINDS.some((k) => repairs[k] > 0);
    if (changes.length) (repaired ? this.log.info : this.log.debug)('reconciled', { device: link.name, changes: changes.length, repairs });
    this.converged = desiredIds(desired);
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
    try {
      this.onDeviceSetup?.(setup);
    } catch (err) {
      this.log.error('onDeviceSetup listener threw', { error: err });
    }
    const fresh = await this.nl.getLink(name);
    if (!fresh) throw new WeftError('NETLINK', `device ${name} is missing right after setting it up`, { retryable: true });
    return fresh;
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
    try {
      this.onDeviceSetup?.(setup);
    } catch (err) {
      this.log.error('onDeviceSetup listener threw', { error: err });
    }
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

  private async applyChange(c: Change, link: LinkInfo): Promise<void> {
    const dev: LinkRef = { index: link.index, name: link.name };
    this.expectEcho(c, link.index);
    try {
      switch (c.kind) {
        case 'address':
          if (c.op === 'remove') await this.nl.deleteAddress(dev, c.ip, c.prefixLen);
          else await this.nl.addAddress(dev, c.ip, c.prefixLen);
          return;
        case 'neighbour':
          if (c.op === 'remove') await this.nl.deleteNeighbour(dev, c.ip);
          else await this.nl.replaceNeighbour(dev, c.ip, c.mac!);
          return;
        case 'fdb':
          if (c.op === 'remove') await this.nl.deleteFdb(dev, c.mac, c.dst);
          else await this.nl.replaceFdb(dev, c.mac, c.dst!);
          return;
        case 'route': {
          const spec: RouteSpec = { dst: c.dst, gateway: c.gateway, oif: c.oif, onlink: c.onlink, priority: c.priority };
          if (c.op === 'remove') await this.nl.deleteRoute(spec);
          else if (c.op === 'add' && this.nl.addRoute) await this.nl.addRoute(spec);
          else await this.nl.replaceRoute(spec);
          return;
        }
      }
    } catch (err) {
      // Already gone is what a removal wanted (e.g. an FDB dst replaced in place just before).
      if (c.op === 'remove' && isGone(err)) return;
      throw err;
    }
  }
}

/** The overlay index of a backend without a device (Backend.deviceless): no kernel object has ifindex 0. */
const NO_DEVICE = 0;

/** How long after we add or change an object its notification is taken for an echo (see isEcho). */
const ECHO_TTL_MS = 2000;

/** The identity and value of an added or changed object, as changeEchoKey() writes it. */
function eventEchoKey(e: Exclude<ChangeEvent, { kind: 'link' }>): string | null {
  switch (e.kind) {
    case 'address':
      return e.ip ? `address ${e.ifindex} ${e.ip}/${e.prefixLen ?? 32}` : null;
    case 'neighbour':
      return e.ip && e.mac && e.permanent === true ? `neighbour ${e.ifindex} ${e.ip} ${e.mac}` : null;
    case 'fdb':
      return e.mac && e.dst && e.permanent === true ? `fdb ${e.ifindex} ${e.mac} ${e.dst}` : null;
    case 'route':
      return e.oif !== null && e.table === MAIN_TABLE ? `route ${e.oif} ${formatIPv4Cidr(e.dst)} ${e.gateway ?? ''}` : null;
  }
}

/** Addresses, neighbours and FDB entries are always on the overlay device (`overlayIndex`). */
function changeEchoKey(c: Change, overlayIndex: number): string {
  switch (c.kind) {
    case 'address':
      return `address ${overlayIndex} ${c.ip}/${c.prefixLen}`;
    case 'neighbour':
      return `neighbour ${overlayIndex} ${c.ip} ${c.mac ?? ''}`;
    case 'fdb':
      return `fdb ${overlayIndex} ${c.mac} ${c.dst ?? ''}`;
    case 'route':
      return `route ${c.oif} ${formatIPv4Cidr(c.dst)} ${c.gateway ?? ''}`;
  }
}

/** rtm_protocol of routes weft writes (RTPROT_BOOT, what the kernel records for a route without one). */
const RTPROT_BOOT = 3;

/**
 * The metric weft gives its routes: 0 for IPv4; for IPv6 the kernel stores a route added without
 * one (flannel's) at IP6_RT_PRIO_USER = 1024, so weft asks for 1024 and keys it there — asking
 * for 0 made every full reconcile see "dst 1024" as foreign, add "dst 0" (stored as 1024 again)
 * and then remove it: IPv6 routes flapped.
 */
export function routePriority(dst: IPNet): number {
  return familyOf(dst) === 6 ? 1024 : 0;
}

/** What the kernel holds after `d` was applied, as dumps would report it (for incremental runs). */
export function impliedState(d: DesiredState, overlayIndex: number, underlayIndex: number): ActualState {
  return {
    overlayIndex,
    underlayIndex,
    addresses: d.addresses.map((a) => ({ ifindex: overlayIndex, ip: netAddress(a), prefixLen: a.prefixLen })),
    neighbours: d.neighbours.map((n) => ({ ifindex: overlayIndex, ip: n.ip, mac: n.mac.toLowerCase(), permanent: true })),
    fdb: d.fdb.map((f) => ({ ifindex: overlayIndex, mac: f.mac.toLowerCase(), dst: f.dst, permanent: true, self: true })),
    routes: d.routes.map((r) => ({
      dst: maskNet(r.dst),
      gateway: r.gateway ?? null,
      oif: r.via === 'underlay' ? underlayIndex : overlayIndex,
      onlink: r.onlink,
      table: MAIN_TABLE,
      priority: routePriority(maskNet(r.dst)),
      protocol: RTPROT_BOOT,
      type: RTN_UNICAST,
    })),
  };
}

/** Split an ordered change list into runs of the same (op class, kind). */
function phases(changes: readonly Change[]): Change[][] {
  const out: Change[][] = [];
  let key = '';
  for (const c of changes) {
    const k = `${c.op === 'remove' ? 'remove' : 'set'} ${c.kind}`;
    if (k !== key || out.length === 0) {
      out.push([]);
      key = k;
    }
    out[out.length - 1]!.push(c);
  }
  return out;
}
