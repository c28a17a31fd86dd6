/**
 * The desired state kept per peer, so that a lease event costs work proportional to what changed
 * (issue #14, "O(change) per event"), not to the number of peers.
 *
 * A backend that can describe its desired() peer by peer (Backend.peerRules: vxlan on the kernel
 * data path, host-gw) gets an IncrementalDesired: every peer is judged once on its own (the
 * shared screen, screen.ts's screenPeerAlone, then the backend's rules) and the verdict cached by
 * lease key and value identity. An event re-judges only the changed leases and yields a
 * DesiredDelta (the objects leaving and entering the desired state), which the reconciler turns
 * into kernel changes slot by slot (deltaChanges) without diffing the whole state.
 *
 * Exactness: desired() judges peers in key order, and a peer's verdict depends on the others in
 * two ways only (given a Network and a SubnetLen, see screenPeerAlone): an equal subnet (the
 * first accepted lease by key keeps it) and an equal tag (vxlan's VtepMAC). Peers are indexed by
 * both; when a changed lease shares either with another peer, the verdicts of the whole group may
 * move, and the engine judges everything again in key order (a full pass, O(peers)) and yields no
 * delta: the caller hands the whole state to the reconciler. That happens only with conflicting
 * leases (stale or hostile data), never for an ordinary join, change or departure.
 *
 * Pure: no I/O, no clock. The caller (weftd.ts) owns the peer set, the departed-peer grace and the
 * on-link lookups, and tells the engine which keys changed.
 */
import type {
  DesiredContext, DesiredFdb, DesiredNeighbour, DesiredRoute, DesiredState, PeerObjects, PeerRules, PeerVerdict, SkippedPeer,
} from '../backend/backend';
import { isOwnLease, screenPeerAlone } from '../backend/screen';
import { maskNet, type IPNet } from '../ip';
import type { Lease } from '../lease/types';
import { MAIN_TABLE, RTN_UNICAST, type RouteEntry } from '../netlink/types';
import { applicationRank, changeId, objectKey, routePriority, type Change, type RouteConflict } from './diff';

/** The objects that left and entered the desired state between `from` and the state it comes with. */
export interface DesiredDelta {
  /** The state this delta applies to: the reconciler uses it only on top of exactly that one. */
  readonly from: DesiredState;
  readonly remove: PeerObjects;
  readonly add: PeerObjects;
}

const NO_OBJECTS: PeerObjects = { neighbours: [], fdb: [], routes: [] };

/** One peer judged on its own. */
interface Entry {
  readonly lease: Lease;
  /** Our own lease (by key or subnet): left out silently. */
  readonly own: boolean;
  /** screenPeerAlone's subnetKey: leases sharing one may refuse each other. */
  readonly subnetKey: string | null;
  /** The verdict were this lease the only peer. */
  readonly alone: PeerVerdict;
}

/** Counters for tests and the bench: how much judging an event cost. */
export interface IncrementalStats {
  /** Leases judged (screen + backend rules) since construction. */
  judged: number;
  /** Full passes over every peer (start, conflicts). */
  fullPasses: number;
}

/**
 * A DesiredState whose arrays are built on first use from the engine's verdicts (an event does
 * not copy all peers' objects). Built from the verdicts current at that moment: `exact` says
 * whether they were still this state's (no later event had changed them).
 */
class PerPeerDesiredState implements DesiredState {
  private built: { neighbours: DesiredNeighbour[]; fdb: DesiredFdb[]; routes: DesiredRoute[]; skipped: SkippedPeer[] } | null = null;
  private builtExact = true;

  constructor(private readonly engine: IncrementalDesired, readonly version: number, readonly addresses: readonly IPNet[]) {}

  get neighbours(): readonly DesiredNeighbour[] { return this.build().neighbours; }
  get fdb(): readonly DesiredFdb[] { return this.build().fdb; }
  get routes(): readonly DesiredRoute[] { return this.build().routes; }
  get skipped(): readonly SkippedPeer[] { return this.build().skipped; }

  /** True while what the arrays hold (or would hold if built now) is exactly this state. */
  get exact(): boolean {
    return this.built !== null ? this.builtExact : this.engine.version === this.version;
  }

  /** Build the arrays now if they are still exact (the reconciler calls it before any await). */
  pin(): void {
    if (this.built === null && this.engine.version === this.version) this.build();
  }

  private build(): { neighbours: DesiredNeighbour[]; fdb: DesiredFdb[]; routes: DesiredRoute[]; skipped: SkippedPeer[] } {
    if (this.built !== null) return this.built;
    this.builtExact = this.engine.version === this.version;
    this.built = this.engine.materialize();
    return this.built;
  }
}

/**
 * Whether `d`'s arrays are exactly the state it was created as. Always true for a plain object;
 * false for an engine state read after later events changed the verdicts (the reconciler then
 * reads the kernel instead of trusting it).
 */
export function desiredIsExact(d: DesiredState): boolean {
  return !(d instanceof PerPeerDesiredState) || d.exact;
}

/** Build a per-peer state's arrays while they are exact (no-op for a plain object). */
export function pinDesired(d: DesiredState): void {
  if (d instanceof PerPeerDesiredState) d.pin();
}

/** One changed key: its lease now (null: gone from the effective peer set). */
export interface PeerEdit {
  readonly key: string;
  readonly lease: Lease | null;
}

export class IncrementalDesired {
  private readonly entries = new Map<string, Entry>();
  /** subnetKey → keys of the (non-own) leases with it. */
  private readonly bySubnet = new Map<string, Set<string>>();
  /** tag → keys of the leases accepted alone with it. */
  private readonly byTag = new Map<string, Set<string>>();
  /** PublicIP of the rules' family → keys (an on-link verdict flips by address). */
  private readonly byPublicIP = new Map<string, Set<string>>();
  /** Each non-own peer's verdict in the whole state (what desired() decides for it). */
  private readonly verdicts = new Map<string, PeerVerdict>();
  private stateValue: DesiredState;
  /** Bumped whenever the verdicts change: older states can then no longer be built exactly. */
  version = 0;
  readonly stats: IncrementalStats = { judged: 0, fullPasses: 0 };

  /**
   * `ctx` must have a Network and a SubnetLen (IncrementalDesired.supports); its onLinkPublicIPs
   * is read when a peer is judged (the caller passes the keys whose address's answer changed).
   */
  constructor(
    private readonly rules: PeerRules,
    private readonly own: Lease,
    private readonly ctx: DesiredContext,
    peers: Iterable<Lease>,
  ) {
    for (const l of peers) this.insert(this.judge(l));
    this.fullPass();
    this.stateValue = new PerPeerDesiredState(this, this.version, rules.addresses);
  }

  /** Whether per-peer verdicts are exact for this context (see screenPeerAlone). */
  static supports(ctx: DesiredContext): boolean {
    return ctx.network !== undefined && ctx.network !== null && ctx.subnetLen !== undefined;
  }

  get state(): DesiredState {
    return this.stateValue;
  }

  /** Why `key`'s lease is left out of the state now (null: programmed, or not a peer at all). */
  skipReason(key: string): string | null {
    const v = this.verdicts.get(key);
    return v !== undefined && 'skip' in v ? v.skip : null;
  }

  /** The keys of the peers whose PublicIP (of the rules' family) is `ip`. */
  keysWithPublicIP(ip: string): ReadonlySet<string> {
    return this.byPublicIP.get(ip) ?? EMPTY;
  }

  /**
   * Take these keys' new leases (null: gone). Returns the new state and, unless a conflict made
   * a full pass necessary, the delta from the previous state to it.
   */
  apply(edits: Iterable<PeerEdit>): { readonly state: DesiredState; readonly delta: DesiredDelta | null } {
    const from = this.stateValue;
    const removeN: DesiredNeighbour[] = [];
    const removeF: DesiredFdb[] = [];
    const removeR: DesiredRoute[] = [];
    const addN: DesiredNeighbour[] = [];
    const addF: DesiredFdb[] = [];
    const addR: DesiredRoute[] = [];
    let conflict = false;
    let changed = false;
    const seen = new Set<string>();
    for (const { key, lease } of edits) {
      if (seen.has(key)) continue; // the caller's latest value is what `lease` holds for every mention
      seen.add(key);
      const old = this.entries.get(key);
      if (old === undefined && lease === null) continue;
      // The same lease is judged again all the same: what it is judged against may have changed
      // (its PublicIP's on-link answer); an unchanged verdict nets out in PendingDelta.
      changed = true;
      if (old !== undefined) {
        if (this.sharesWithOthers(key, old)) conflict = true;
        this.remove(key, old);
      }
      const next = lease === null ? undefined : this.judge(lease);
      if (next !== undefined) {
        if (this.sharesWithOthers(key, next)) conflict = true;
        this.insert(next);
      }
      if (conflict) continue; // a full pass below decides every verdict
      const before = this.verdicts.get(key);
      const after = next === undefined || next.own ? undefined : next.alone;
      if (after === undefined) this.verdicts.delete(key);
      else this.verdicts.set(key, after);
      if (before !== undefined && 'objects' in before) {
        removeN.push(...before.objects.neighbours);
        removeF.push(...before.objects.fdb);
        removeR.push(...before.objects.routes);
      }
      if (after !== undefined && 'objects' in after) {
        addN.push(...after.objects.neighbours);
        addF.push(...after.objects.fdb);
        addR.push(...after.objects.routes);
      }
    }
    if (!changed) return { state: from, delta: { from, remove: NO_OBJECTS, add: NO_OBJECTS } };
    this.version++;
    if (conflict) this.fullPass();
    this.stateValue = new PerPeerDesiredState(this, this.version, this.rules.addresses);
    if (conflict) return { state: this.stateValue, delta: null };
    return {
      state: this.stateValue,
      delta: { from, remove: { neighbours: removeN, fdb: removeF, routes: removeR }, add: { neighbours: addN, fdb: addF, routes: addR } },
    };
  }

  /** The whole state's arrays from the current verdicts, in key order (as desired() lists them). O(peers). */
  materialize(): { neighbours: DesiredNeighbour[]; fdb: DesiredFdb[]; routes: DesiredRoute[]; skipped: SkippedPeer[] } {
    const neighbours: DesiredNeighbour[] = [];
    const fdb: DesiredFdb[] = [];
    const routes: DesiredRoute[] = [];
    const skipped: SkippedPeer[] = [];
    for (const key of [...this.verdicts.keys()].sort(byText)) {
      const v = this.verdicts.get(key)!;
      if ('skip' in v) {
        skipped.push({ key, reason: v.skip });
        continue;
      }
      neighbours.push(...v.objects.neighbours);
      fdb.push(...v.objects.fdb);
      routes.push(...v.objects.routes);
    }
    return { neighbours, fdb, routes, skipped };
  }

  /** One lease on its own: the shared screen, then (if it passed) the backend's rules. */
  private judge(lease: Lease): Entry {
    this.stats.judged++;
    const family = this.rules.family;
    if (isOwnLease(this.own, lease, family)) return { lease, own: true, subnetKey: null, alone: { skip: 'our own lease' } };
    const s = screenPeerAlone(lease, this.own, this.ctx, family, this.rules.ownIfaceIP);
    return { lease, own: false, subnetKey: s.subnetKey, alone: s.reason !== null ? { skip: s.reason } : this.rules.peer(lease) };
  }

  /** Whether another peer has `e`'s subnet or tag (then their verdicts depend on each other). */
  private sharesWithOthers(key: string, e: Entry): boolean {
    if (e.own) return false;
    if (e.subnetKey !== null && hasOther(this.bySubnet.get(e.subnetKey), key)) return true;
    const tag = tagOf(e);
    return tag !== undefined && hasOther(this.byTag.get(tag), key);
  }

  private insert(e: Entry): void {
    const key = e.lease.key;
    this.entries.set(key, e);
    const ip = publicIPOf(e.lease, this.rules);
    if (ip !== null) addTo(this.byPublicIP, ip, key);
    if (e.own) return;
    if (e.subnetKey !== null) addTo(this.bySubnet, e.subnetKey, key);
    const tag = tagOf(e);
    if (tag !== undefined) addTo(this.byTag, tag, key);
  }

  private remove(key: string, e: Entry): void {
    this.entries.delete(key);
    const ip = publicIPOf(e.lease, this.rules);
    if (ip !== null) deleteFrom(this.byPublicIP, ip, key);
    if (e.own) return;
    if (e.subnetKey !== null) deleteFrom(this.bySubnet, e.subnetKey, key);
    const tag = tagOf(e);
    if (tag !== undefined) deleteFrom(this.byTag, tag, key);
  }

  /** Every verdict again, in key order, exactly as screenPeers() + the backend's check decide them. */
  private fullPass(): void {
    this.stats.fullPasses++;
    this.verdicts.clear();
    const acceptedBySubnet = new Map<string, string>();
    const tagOwner = new Map<string, string>();
    for (const key of [...this.entries.keys()].sort(byText)) {
      const e = this.entries.get(key)!;
      if (e.own) continue;
      let v = e.alone;
      const clash = e.subnetKey === null ? undefined : acceptedBySubnet.get(e.subnetKey);
      if (clash !== undefined) v = { skip: `subnet overlaps lease ${clash}` };
      if ('objects' in v && v.tag !== undefined) {
        const owner = tagOwner.get(v.tag);
        if (owner !== undefined) v = { skip: this.rules.clashReason(v.tag, owner) };
        else tagOwner.set(v.tag, key);
      }
      if ('objects' in v && e.subnetKey !== null) acceptedBySubnet.set(e.subnetKey, key);
      this.verdicts.set(key, v);
    }
  }
}

const EMPTY: ReadonlySet<string> = new Set();

function tagOf(e: Entry): string | undefined {
  return 'objects' in e.alone ? e.alone.tag : undefined;
}

function publicIPOf(l: Lease, rules: PeerRules): string | null {
  const ip = rules.family === 4 ? l.attrs.PublicIP : l.attrs.PublicIPv6;
  return typeof ip === 'string' ? ip : null;
}

function hasOther(set: ReadonlySet<string> | undefined, key: string): boolean {
  return set !== undefined && (set.size > 1 || (set.size === 1 && !set.has(key)));
}

function addTo(index: Map<string, Set<string>>, k: string, key: string): void {
  const set = index.get(k);
  if (set) set.add(key);
  else index.set(k, new Set([key]));
}

function deleteFrom(index: Map<string, Set<string>>, k: string, key: string): void {
  const set = index.get(k);
  if (!set) return;
  set.delete(key);
  if (set.size === 0) index.delete(k);
}

function byText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ------------------------------------------------------------------ deltas → kernel changes

/** One slot's value in the kernel as last applied (`before`) and as wanted now (`after`); null: empty. */
interface Slot<T> {
  before: T | null;
  after: T | null;
}

/**
 * The deltas handed to a reconciler since its last run, folded slot by slot (the kernel's own
 * keys: neighbour IP, FDB MAC+dst, route dst+metric): a burst of N events costs O(N) here and
 * each slot is written once, with its last value.
 */
export class PendingDelta {
  private readonly neighbours = new Map<string, Slot<DesiredNeighbour>>();
  private readonly fdb = new Map<string, Slot<DesiredFdb>>();
  private readonly routes = new Map<string, Slot<DesiredRoute>>();

  get size(): number {
    return this.neighbours.size + this.fdb.size + this.routes.size;
  }

  /** Forget every slot (the reconciler reuses one PendingDelta once its changes are taken). */
  clear(): void {
    this.neighbours.clear();
    this.fdb.clear();
    this.routes.clear();
  }

  /**
   * Fold `d` in. `inKernel`: objects the native join path wrote to the kernel ahead of their
   * delta (Reconciler.noteNativeWrite), by slot and fingerprint. An added object found there is
   * taken as in the kernel already (its slot holds it before and after: no change) and removed
   * from the map.
   */
  add(d: DesiredDelta, inKernel?: NativeWritten): void {
    for (const n of d.remove.neighbours) leave(this.neighbours, neighbourSlot(n), n);
    for (const f of d.remove.fdb) leave(this.fdb, fdbSlot(f), f);
    for (const r of d.remove.routes) leave(this.routes, routeSlot(r), r);
    const native = inKernel !== undefined && inKernel.size > 0 ? inKernel : undefined;
    for (const n of d.add.neighbours) enter(this.neighbours, neighbourSlot(n), n, native, n.mac.toLowerCase());
    for (const f of d.add.fdb) enter(this.fdb, fdbSlot(f), f, native, '');
    for (const r of d.add.routes) enter(this.routes, routeSlot(r), r, native, routeFingerprint(r));
  }

  /**
   * The kernel changes, ordered as diffState orders its own (adds and updates neighbour → FDB →
   * route, then removals route → FDB → neighbour). `foreign`: main-table routes weft does not
   * own, from the last full run, by slot — a desired route whose slot one of them holds is left
   * out and reported in `conflicts` (a leftover DirectRouting route of ours, protocol boot via
   * the underlay, is replaced instead), as diffState does.
   */
  changes(overlayIndex: number, underlayIndex: number, foreign: ReadonlyMap<string, readonly RouteEntry[]>, conflicts?: RouteConflict[]): Change[] {
    const sets: Change[] = [];
    const removes: Change[] = [];
    for (const { before, after } of this.neighbours.values()) {
      const was = before === null ? null : before.mac.toLowerCase();
      const now = after === null ? null : after.mac.toLowerCase();
      if (was === now) continue;
      if (now === null) removes.push({ op: 'remove', kind: 'neighbour', ip: before!.ip, mac: was });
      else sets.push({ op: was === null ? 'add' : 'update', kind: 'neighbour', ip: after!.ip, mac: now });
    }
    for (const { before, after } of this.fdb.values()) {
      if ((before === null) === (after === null)) continue;
      if (after === null) removes.push({ op: 'remove', kind: 'fdb', mac: before!.mac.toLowerCase(), dst: before!.dst });
      else sets.push({ op: 'add', kind: 'fdb', mac: after.mac.toLowerCase(), dst: after.dst });
    }
    for (const [slot, { before, after }] of this.routes) {
      const was = before === null ? null : routeChange(before, overlayIndex, underlayIndex);
      const now = after === null ? null : routeChange(after, overlayIndex, underlayIndex);
      if (was !== null && now !== null && was.oif === now.oif && was.gateway === now.gateway && was.onlink === now.onlink) continue;
      if (was === null && now === null) continue;
      const held = foreign.get(slot) ?? [];
      const blocking = held.find((r) => !leftoverDirectRoute(r, underlayIndex));
      if (blocking !== undefined) {
        // The slot is someone else's: ours is not in the kernel, so there is nothing to remove either.
        if (now !== null) conflicts?.push({ want: now, existing: blocking });
        continue;
      }
      if (now === null) removes.push({ ...was!, op: 'remove' });
      else sets.push({ ...now, op: was !== null || held.length > 0 ? 'update' : 'add' });
    }
    for (const c of removes) sets.push(c);
    // Ids only break ties of rank (a join's three changes never build one), each built once: a
    // comparator building them made O(n log n) strings in a burst.
    const ids = new Map<Change, string>();
    const idOf = (c: Change): string => {
      let id = ids.get(c);
      if (id === undefined) ids.set(c, (id = changeId(c)));
      return id;
    };
    if (sets.length > 1) sets.sort((a, b) => applicationRank(a) - applicationRank(b) || byText(idOf(a), idOf(b)));
    return sets;
  }
}

/** rtm_protocol of routes weft writes (diff.ts's RTPROT_BOOT). */
const RTPROT_BOOT = 3;

/** diff.ts's leftoverDirectRoute: a gatewayed boot-protocol underlay route, replaceable in place. */
function leftoverDirectRoute(r: RouteEntry, underlayIndex: number): boolean {
  return r.protocol === RTPROT_BOOT && r.oif === underlayIndex && r.gateway !== null && r.table === MAIN_TABLE;
}

/** Main-table unicast routes by the slot the kernel keys them by (dst, metric), as PendingDelta.changes wants them. */
export function routesBySlot(routes: readonly RouteEntry[]): Map<string, RouteEntry[]> {
  const out = new Map<string, RouteEntry[]>();
  for (const r of routes) {
    if (r.table !== MAIN_TABLE || r.type !== RTN_UNICAST) continue;
    const k = objectKey({ kind: 'route', dst: r.dst, priority: r.priority });
    const list = out.get(k);
    if (list) list.push(r);
    else out.set(k, [r]);
  }
  return out;
}

function neighbourSlot(n: DesiredNeighbour): string {
  return objectKey({ kind: 'neighbour', ip: n.ip });
}

function fdbSlot(f: DesiredFdb): string {
  return objectKey({ kind: 'fdb', mac: f.mac.toLowerCase(), dst: f.dst });
}

function routeSlot(r: DesiredRoute): string {
  const dst = maskNet(r.dst);
  return objectKey({ kind: 'route', dst, priority: routePriority(dst) });
}

function routeChange(r: DesiredRoute, overlayIndex: number, underlayIndex: number): Change & { readonly kind: 'route' } {
  const via = r.via ?? 'overlay';
  const dst = maskNet(r.dst);
  return {
    op: 'add', kind: 'route', dst, gateway: r.gateway, onlink: r.onlink,
    oif: via === 'underlay' ? underlayIndex : overlayIndex, via, priority: routePriority(dst),
  };
}

function leave<T>(slots: Map<string, Slot<T>>, k: string, v: T): void {
  const s = slots.get(k);
  if (s) s.after = null;
  else slots.set(k, { before: v, after: null });
}

function enter<T>(slots: Map<string, Slot<T>>, k: string, v: T, inKernel?: NativeWritten, fingerprint?: string): void {
  const written = inKernel !== undefined && inKernel.get(k) === fingerprint && inKernel.delete(k);
  const s = slots.get(k);
  if (s) {
    s.after = v;
    if (written) s.before = v;
  } else {
    slots.set(k, { before: written ? v : null, after: v });
  }
}

/** Objects the native join path wrote, by slot → fingerprint of what it holds (PendingDelta.add). */
export type NativeWritten = Map<string, string>;

function routeFingerprint(r: DesiredRoute): string {
  return `${r.gateway} ${r.onlink} ${r.via ?? 'overlay'}`;
}

/** Note `o`, written by the native join path, in `into`. */
export function noteNativeObjects(into: NativeWritten, o: PeerObjects): void {
  for (const n of o.neighbours) into.set(neighbourSlot(n), n.mac.toLowerCase());
  for (const f of o.fdb) into.set(fdbSlot(f), '');
  for (const r of o.routes) into.set(routeSlot(r), routeFingerprint(r));
}
