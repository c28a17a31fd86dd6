/**
 * The pure half of the reconciler: what the kernel must change to match a desired state, and
 * the one key format every part of the reconciler names kernel objects by. No I/O, no clock:
 * the Reconciler (reconciler.ts) dumps the kernel, calls diffState() and applies the result
 * phase by phase (phases()).
 *
 * Ownership (diffState never proposes anything else):
 * - every address, permanent neighbour and permanent FDB entry on the overlay device (IPv6
 *   link-local addresses excepted: the kernel's);
 * - every main-table unicast route out of the overlay device (except the kernel's own);
 * - with DirectRouting or host-gw, main-table routes out of the underlay that have a gateway and
 *   whose destination lies strictly inside the flannel Network (`directRoutingNetwork`).
 * A backend without a device (host-gw, Backend.deviceless) owns only those underlay routes.
 * Non-permanent neighbours/FDB entries are the kernel's (ARP, learning) and left alone.
 * A route weft did not create is never replaced (see RouteConflict).
 */
import type { DesiredState } from '../backend/backend';
import { familyOf, formatIPv4Cidr, isIPv6LinkLocal, maskNet, netAddress, netContainsNet, type IPNet } from '../ip';
import {
  MAIN_TABLE,
  RTN_UNICAST,
  RTPROT_KERNEL,
  type AddressEntry,
  type ChangeEvent,
  type FdbEntry,
  type NeighbourEntry,
  type RouteEntry,
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
  /** Main-table routes of the reconciler's family. */
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

/** A desired route left out because a route weft does not own holds its (dst, metric). */
export interface RouteConflict {
  readonly want: Change & { readonly kind: 'route' };
  readonly existing: RouteEntry;
}

// ------------------------------------------------------------------------------ object keys

/**
 * A kernel object as far as one key needs it. Fields left undefined are not part of the key,
 * which is how the three uses differ:
 * - the slot the kernel keys the object by (an add there replaces): address ip/len, neighbour
 *   ip, FDB (MAC, dst), route (dst, metric) — diffState's maps;
 * - slot and value (changeId): ordering and repair accounting;
 * - device, slot and value as a notification reports them (echo suppression): `ifindex`/`oif`
 *   set, route metric and onlink absent (RTM_NEWROUTE events here carry neither).
 * Keys of different uses never meet in one map, so they need not be told apart.
 */
export type ObjectRef =
  | { readonly kind: 'address'; readonly ifindex?: number; readonly ip: string; readonly prefixLen: number }
  | { readonly kind: 'neighbour'; readonly ifindex?: number; readonly ip: string; readonly mac?: string | null }
  | { readonly kind: 'fdb'; readonly ifindex?: number; readonly mac: string; readonly dst: string | null }
  | {
      readonly kind: 'route';
      readonly oif?: number;
      readonly dst: IPNet;
      readonly priority?: number;
      readonly via?: string;
      readonly gateway?: string | null;
      readonly onlink?: boolean;
    };

/** The one key format for kernel objects (see ObjectRef). */
export function objectKey(o: ObjectRef): string {
  // Plain concatenation (no array, no filter): this runs for every object of every diff, the
  // largest share of a join's CPU at 1000 peers. Same text as joining the defined parts with ' '.
  const opt = (p: string | number | undefined): string => (p === undefined ? '' : ` ${p}`);
  switch (o.kind) {
    case 'address':
      return `address${opt(o.ifindex)} ${o.ip}/${o.prefixLen}`;
    case 'neighbour':
      return `neighbour${opt(o.ifindex)} ${o.ip}${opt(o.mac === undefined ? undefined : o.mac ?? '')}`;
    case 'fdb':
      return `fdb${opt(o.ifindex)} ${o.mac} ${o.dst ?? ''}`;
    case 'route':
      return `route${opt(o.oif)} ${formatIPv4Cidr(o.dst)}${opt(o.priority)}${opt(o.via)}${opt(o.gateway === undefined ? undefined : o.gateway ?? '')}${o.onlink ? ' onlink' : ''}`;
  }
}

/** Identity of the object a change is about, value included (used for ordering and repair accounting). */
export function changeId(c: Change): string {
  if (c.kind !== 'route') return objectKey(c);
  return objectKey({ kind: 'route', dst: c.dst, priority: c.priority, via: c.via, gateway: c.gateway, onlink: c.onlink });
}

/** The changeIds of every object in a desired state (what a converged kernel holds). */
export function desiredIds(d: DesiredState): Set<string> {
  const ids = new Set<string>();
  for (const a of d.addresses) ids.add(objectKey({ kind: 'address', ip: netAddress(a), prefixLen: a.prefixLen }));
  for (const n of d.neighbours) ids.add(objectKey({ kind: 'neighbour', ip: n.ip, mac: n.mac.toLowerCase() }));
  for (const f of d.fdb) ids.add(objectKey({ kind: 'fdb', mac: f.mac.toLowerCase(), dst: f.dst }));
  for (const r of d.routes) {
    const dst = maskNet(r.dst);
    ids.add(objectKey({ kind: 'route', dst, priority: routePriority(dst), via: r.via ?? 'overlay', gateway: r.gateway, onlink: r.onlink }));
  }
  return ids;
}

/**
 * The echo key of a notification about an added or changed object (null: one that cannot be
 * our echo — incomplete, not permanent, another table). Matches changeEchoKey() of the change
 * that caused it.
 */
export function eventEchoKey(e: Exclude<ChangeEvent, { kind: 'link' }>): string | null {
  switch (e.kind) {
    case 'address':
      return e.ip ? objectKey({ kind: 'address', ifindex: e.ifindex, ip: e.ip, prefixLen: e.prefixLen ?? 32 }) : null;
    case 'neighbour':
      return e.ip && e.mac && e.permanent === true ? objectKey({ kind: 'neighbour', ifindex: e.ifindex, ip: e.ip, mac: e.mac }) : null;
    case 'fdb':
      return e.mac && e.dst && e.permanent === true ? objectKey({ kind: 'fdb', ifindex: e.ifindex, mac: e.mac, dst: e.dst }) : null;
    case 'route':
      return e.oif !== null && e.table === MAIN_TABLE ? objectKey({ kind: 'route', oif: e.oif, dst: e.dst, gateway: e.gateway ?? null }) : null;
  }
}

/** The echo key of the notification `c` will cause. Addresses, neighbours and FDB entries are on `overlayIndex`. */
export function changeEchoKey(c: Change, overlayIndex: number): string {
  switch (c.kind) {
    case 'address':
      return objectKey({ kind: 'address', ifindex: overlayIndex, ip: c.ip, prefixLen: c.prefixLen });
    case 'neighbour':
      return objectKey({ kind: 'neighbour', ifindex: overlayIndex, ip: c.ip, mac: c.mac });
    case 'fdb':
      return objectKey({ kind: 'fdb', ifindex: overlayIndex, mac: c.mac, dst: c.dst });
    case 'route':
      return objectKey({ kind: 'route', oif: c.oif, dst: c.dst, gateway: c.gateway });
  }
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

// ------------------------------------------------------------------------------------- diff

/**
 * Where a change goes in a run (lower first): adds and updates by kind (address, neighbour, FDB,
 * route), then removals the other way round (route, FDB, neighbour) — a peer that changes its
 * VtepMAC keeps a working entry throughout. Addresses no longer wanted are removed right after
 * the address adds, before any route: when our subnet moved and a peer took the old one, our old
 * address is that peer's gateway, and a route via a local address is refused (EINVAL; seen in the
 * IPv6-only interop lab, where the retry then repaired it).
 */
export function applicationRank(c: Change): number {
  if (c.kind === 'address') return c.op === 'remove' ? 1 : 0;
  const kind = c.kind === 'neighbour' ? 0 : c.kind === 'fdb' ? 1 : 2;
  return c.op === 'remove' ? 7 - kind : 2 + kind;
}

/**
 * The changes that turn `actual` into `desired`, touching only objects weft owns (see the
 * module comment), in application order (applicationRank). Empty when the kernel already matches.
 * Desired routes held by a route weft does not own are left out and reported in `conflicts`.
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
  const slotOfAddr = (ip: string, prefixLen: number): string => objectKey({ kind: 'address', ip, prefixLen });
  const haveAddr = new Set(actual.addresses.filter((a) => a.ifindex === ov).map((a) => slotOfAddr(a.ip, a.prefixLen)));
  const wantAddr = new Set<string>();
  for (const a of desired.addresses) {
    const ip = netAddress(a);
    const k = slotOfAddr(ip, a.prefixLen);
    if (wantAddr.has(k)) continue;
    wantAddr.add(k);
    if (!haveAddr.has(k)) sets.push({ op: 'add', kind: 'address', ip, prefixLen: a.prefixLen });
  }
  for (const a of actual.addresses) {
    // IPv6 link-local addresses are the kernel's (every IPv6 link has one): never weft's to remove.
    if (a.ifindex === ov && !wantAddr.has(slotOfAddr(a.ip, a.prefixLen)) && !isIPv6LinkLocal(a.ip)) {
      removes.push({ op: 'remove', kind: 'address', ip: a.ip, prefixLen: a.prefixLen });
    }
  }

  // Permanent neighbours on the overlay device, keyed by IP.
  const haveNeigh = new Map<string, NeighbourEntry>();
  for (const n of actual.neighbours) if (n.ifindex === ov) haveNeigh.set(objectKey({ kind: 'neighbour', ip: n.ip }), n);
  const wantNeigh = new Map<string, { ip: string; mac: string }>();
  for (const n of desired.neighbours) wantNeigh.set(objectKey({ kind: 'neighbour', ip: n.ip }), { ip: n.ip, mac: n.mac.toLowerCase() });
  for (const [k, { ip, mac }] of wantNeigh) {
    const cur = haveNeigh.get(k);
    if (!cur) sets.push({ op: 'add', kind: 'neighbour', ip, mac });
    else if (!cur.permanent || cur.mac !== mac) sets.push({ op: 'update', kind: 'neighbour', ip, mac });
  }
  for (const [k, n] of haveNeigh) {
    if (n.permanent && !wantNeigh.has(k)) removes.push({ op: 'remove', kind: 'neighbour', ip: n.ip, mac: n.mac });
  }

  // Permanent FDB entries on the overlay device, keyed by (MAC, dst).
  const haveFdb = new Map<string, FdbEntry>();
  for (const f of actual.fdb) if (f.ifindex === ov) haveFdb.set(objectKey({ kind: 'fdb', mac: f.mac, dst: f.dst }), f);
  const wantFdb = new Map<string, { mac: string; dst: string }>();
  for (const f of desired.fdb) {
    const mac = f.mac.toLowerCase();
    wantFdb.set(objectKey({ kind: 'fdb', mac, dst: f.dst }), { mac, dst: f.dst });
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
  const routeSlot = (dst: IPNet, priority: number): string => objectKey({ kind: 'route', dst, priority });
  const unicast = actual.routes.filter((r) => r.table === MAIN_TABLE && r.type === RTN_UNICAST);
  // Each route's slot once (the removal loop below reuses it); lists grown in place.
  const unicastSlots = unicast.map((r) => routeSlot(r.dst, r.priority));
  const byKey = new Map<string, RouteEntry[]>();
  unicast.forEach((r, i) => {
    const k = unicastSlots[i]!;
    const list = byKey.get(k);
    if (list) list.push(r);
    else byKey.set(k, [r]);
  });
  const wantRoutes = new Map<string, Change & { kind: 'route' }>();
  for (const d of desired.routes) {
    const via = d.via ?? 'overlay';
    const dst = maskNet(d.dst);
    const oif = via === 'underlay' ? actual.underlayIndex : ov;
    const priority = routePriority(dst);
    wantRoutes.set(routeSlot(dst, priority), { op: 'add', kind: 'route', dst, gateway: d.gateway, onlink: d.onlink, oif, via, priority });
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
  for (const [i, r] of unicast.entries()) {
    if (!owned(r)) continue;
    // The desired route for this key replaces r in place (same dst and metric): no removal.
    if (wantRoutes.has(unicastSlots[i]!)) continue;
    removes.push({
      op: 'remove', kind: 'route', dst: r.dst, gateway: r.gateway, onlink: r.onlink, oif: r.oif!, via: viaOf(r), priority: r.priority,
    });
  }

  const all = [...sets, ...removes];
  all.sort((a, b) => applicationRank(a) - applicationRank(b) || cmp(changeId(a), changeId(b)));
  return all;
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

/** rtm_protocol of routes weft writes (RTPROT_BOOT, what the kernel records for a route without one). */
const RTPROT_BOOT = 3;

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

/**
 * Split an ordered change list (diffState's) into phases: runs of the same (set or remove, kind).
 * Phases are applied one after another (the ordering guarantee); the changes of one phase are
 * independent of each other and may be sent in parallel.
 */
export function phases(changes: readonly Change[]): Change[][] {
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
