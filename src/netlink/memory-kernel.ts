/**
 * An in-process kernel with the same methods as `NetlinkClient` (the `Netlink` type): links
 * (vxlan devices included), addresses, neighbours, the vxlan FDB and routes of both families,
 * and change notifications. It lives in src/ beside `lease/memory-registry.ts` so that the
 * reconciler, the backends and a whole `Weftd` run without root (test/unit/two-daemons.test.ts),
 * as wireguard-go's tuntest does for its devices.
 *
 * It keeps the kernel rules weft relies on, not all of them:
 * - a deleted link takes its addresses, neighbours, FDB entries and routes with it;
 * - an address with a prefix shorter than the host's adds its connected route (protocol kernel);
 * - routes are keyed by (table, dst, metric): `addRoute` rejects a taken key with EEXIST; an IPv6
 *   route given no metric gets 1024;
 * - deleting what is not there rejects with ENODEV / EADDRNOTAVAIL / ENOENT / ESRCH, as netlink does;
 * - every change, ours or another program's, is notified (asynchronously, in one batch per tick),
 *   so the reconciler sees the echoes of its own writes as it does on a real host.
 * Faults: `failNext(op, errno)` makes the next call of one method reject.
 */
import { WeftError } from '../errors';
import { addressFamily, familyOf, formatCidr, ipNetContainsAddress, parseCidr, type IPFamily, type IPNet } from '../ip';
import type { LinkRef, Netlink } from './client';
import { NetlinkError } from './errors';
import { MAIN_TABLE, RTN_UNICAST, RTPROT_KERNEL } from './types';
import type { AddressEntry, ChangeBatch, ChangeEvent, FdbEntry, LinkInfo, Monitor } from './types';
import type { NeighbourEntry, RouteEntry, RouteLookup, RouteSpec, VxlanSpec } from './types';
import type { KernelWrite, MonitorInterest, WriteOutcomes } from './types';
import { applyWritesOneByOne } from './writes';

/** rtm_protocol of routes written by a program (`ip route` writes "boot"). */
const RTPROT_BOOT = 3;

export interface MemoryLinkSpec {
  readonly name: string;
  readonly mtu?: number;
  readonly mac?: string | null;
  readonly up?: boolean;
  readonly kind?: string | null;
}

type Method = keyof Netlink;

interface Listener {
  readonly onChange: (batch: ChangeBatch) => void;
  readonly family: IPFamily;
  pending: ChangeEvent[];
}

export class MemoryKernel implements Netlink {
  private readonly links = new Map<number, LinkInfo>();
  private addresses: AddressEntry[] = [];
  private neighbours: NeighbourEntry[] = [];
  private fdb: FdbEntry[] = [];
  private routes: RouteEntry[] = [];
  private readonly listeners = new Set<Listener>();
  private readonly faults = new Map<Method, string>();
  private nextIndex = 1;
  /** Every mutating call, in order ("replaceRoute 10.5.2.0/24"): what a test may assert on. */
  readonly calls: string[] = [];

  constructor() {
    this.addLink({ name: 'lo', mtu: 65536, mac: null, up: true });
  }

  // ---- test controls -------------------------------------------------------------------------

  /** A plain device (an underlay NIC, a bridge...) as another program would create it. */
  addLink(spec: MemoryLinkSpec): LinkInfo {
    if ([...this.links.values()].some((l) => l.name === spec.name)) throw this.error(`add link ${spec.name}`, 'EEXIST');
    const link: LinkInfo = {
      index: this.nextIndex++, name: spec.name, up: spec.up ?? true, mtu: spec.mtu ?? 1500,
      mac: spec.mac === undefined ? randomishMac(this.nextIndex) : spec.mac, kind: spec.kind ?? null, vxlan: null,
    };
    this.links.set(link.index, link);
    this.notify({ kind: 'link', removed: false, ifindex: link.index, name: link.name });
    return link;
  }

  /** The next call of `method` rejects with a NetlinkError carrying `errno` (once). */
  failNext(method: Method, errno: string): void {
    this.faults.set(method, errno);
  }

  // ---- links ---------------------------------------------------------------------------------

  async getLink(name: string): Promise<LinkInfo | null> {
    this.fault('getLink');
    return [...this.links.values()].find((l) => l.name === name) ?? null;
  }

  async getLinkByIndex(index: number): Promise<LinkInfo | null> {
    this.fault('getLinkByIndex');
    return this.links.get(index) ?? null;
  }

  async listLinks(): Promise<LinkInfo[]> {
    this.fault('listLinks');
    return [...this.links.values()];
  }

  async createVxlan(spec: VxlanSpec): Promise<LinkInfo> {
    this.record('createVxlan', spec.name);
    if (!this.links.has(spec.underlayIndex)) throw this.error(`create vxlan device ${spec.name}`, 'ENODEV');
    const link = this.addLink({ name: spec.name, mtu: spec.mtu, mac: spec.mac, up: false, kind: 'vxlan' });
    const vx: LinkInfo = {
      ...link,
      vxlan: { vni: spec.vni, local: spec.localIP, underlayIndex: spec.underlayIndex, port: spec.port, learning: spec.learning, gbp: spec.gbp },
    };
    this.links.set(vx.index, vx);
    return vx;
  }

  async setLinkUp(link: LinkRef): Promise<void> {
    this.updateLink('setLinkUp', link, { up: true });
  }

  async setLinkDown(link: LinkRef): Promise<void> {
    this.updateLink('setLinkDown', link, { up: false });
  }

  async setLinkMtu(link: LinkRef, mtu: number): Promise<void> {
    this.updateLink('setLinkMtu', link, { mtu });
  }

  async setLinkMac(link: LinkRef, mac: string): Promise<void> {
    this.updateLink('setLinkMac', link, { mac });
  }

  async deleteLink(link: LinkRef): Promise<void> {
    const l = this.linkOf('deleteLink', link);
    this.links.delete(l.index);
    // The kernel takes everything on the device with it (and notifies each).
    for (const a of this.addresses.filter((x) => x.ifindex === l.index)) this.notify({ kind: 'address', removed: true, ifindex: l.index, ip: a.ip, prefixLen: a.prefixLen });
    for (const n of this.neighbours.filter((x) => x.ifindex === l.index)) this.notify({ kind: 'neighbour', removed: true, ifindex: l.index, ip: n.ip, mac: n.mac });
    for (const f of this.fdb.filter((x) => x.ifindex === l.index)) this.notify({ kind: 'fdb', removed: true, ifindex: l.index, mac: f.mac, dst: f.dst });
    for (const r of this.routes.filter((x) => x.oif === l.index)) this.notifyRoute(r, true);
    this.addresses = this.addresses.filter((x) => x.ifindex !== l.index);
    this.neighbours = this.neighbours.filter((x) => x.ifindex !== l.index);
    this.fdb = this.fdb.filter((x) => x.ifindex !== l.index);
    this.routes = this.routes.filter((x) => x.oif !== l.index);
    this.notify({ kind: 'link', removed: true, ifindex: l.index, name: l.name });
  }

  // ---- addresses -----------------------------------------------------------------------------

  async listAddresses(ifindex?: number, family: IPFamily = 4): Promise<AddressEntry[]> {
    this.fault('listAddresses');
    return this.addresses.filter((a) => addressFamily(a.ip) === family && (ifindex === undefined || a.ifindex === ifindex));
  }

  async addAddress(link: LinkRef, ip: string, prefixLen: number): Promise<void> {
    const l = this.linkOf('addAddress', link, `${ip}/${prefixLen}`);
    const family = this.familyOfIp(ip);
    this.addresses = [...this.addresses.filter((a) => !(a.ifindex === l.index && a.ip === ip)), { ifindex: l.index, ip, prefixLen }];
    this.notify({ kind: 'address', removed: false, ifindex: l.index, ip, prefixLen });
    if (prefixLen < (family === 4 ? 32 : 128)) {
      const dst = parseCidr(`${ip}/${prefixLen}`, false)!;
      const route: RouteEntry = { dst, gateway: null, oif: l.index, onlink: false, table: MAIN_TABLE, priority: 0, protocol: RTPROT_KERNEL, type: RTN_UNICAST };
      this.putRoute(route);
    }
  }

  async deleteAddress(link: LinkRef, ip: string, prefixLen: number): Promise<void> {
    const l = this.linkOf('deleteAddress', link, `${ip}/${prefixLen}`);
    const found = this.addresses.find((a) => a.ifindex === l.index && a.ip === ip && a.prefixLen === prefixLen);
    if (!found) throw this.error(`delete address ${ip}/${prefixLen}`, 'EADDRNOTAVAIL');
    this.addresses = this.addresses.filter((a) => a !== found);
    this.notify({ kind: 'address', removed: true, ifindex: l.index, ip, prefixLen });
    for (const r of this.routes.filter((x) => x.oif === l.index && x.protocol === RTPROT_KERNEL && ipNetContainsAddress(x.dst, ip))) {
      this.routes = this.routes.filter((x) => x !== r);
      this.notifyRoute(r, true);
    }
  }

  // ---- neighbours ----------------------------------------------------------------------------

  async listNeighbours(ifindex?: number, family: IPFamily = 4): Promise<NeighbourEntry[]> {
    this.fault('listNeighbours');
    return this.neighbours.filter((n) => addressFamily(n.ip) === family && (ifindex === undefined || n.ifindex === ifindex));
  }

  async replaceNeighbour(link: LinkRef, ip: string, mac: string): Promise<void> {
    const l = this.linkOf('replaceNeighbour', link, ip);
    this.familyOfIp(ip);
    this.neighbours = [...this.neighbours.filter((n) => !(n.ifindex === l.index && n.ip === ip)), { ifindex: l.index, ip, mac, permanent: true }];
    this.notify({ kind: 'neighbour', removed: false, ifindex: l.index, ip, mac, permanent: true });
  }

  async deleteNeighbour(link: LinkRef, ip: string): Promise<void> {
    const l = this.linkOf('deleteNeighbour', link, ip);
    const found = this.neighbours.find((n) => n.ifindex === l.index && n.ip === ip);
    if (!found) throw this.error(`delete neighbour ${ip}`, 'ENOENT');
    this.neighbours = this.neighbours.filter((n) => n !== found);
    this.notify({ kind: 'neighbour', removed: true, ifindex: l.index, ip, mac: found.mac });
  }

  // ---- FDB -----------------------------------------------------------------------------------

  async listFdb(ifindex?: number): Promise<FdbEntry[]> {
    this.fault('listFdb');
    return this.fdb.filter((f) => ifindex === undefined || f.ifindex === ifindex);
  }

  /** As `bridge fdb replace ... self` on a vxlan device: one remote per MAC. */
  async replaceFdb(link: LinkRef, mac: string, dst: string): Promise<void> {
    const l = this.linkOf('replaceFdb', link, `${mac} dst ${dst}`);
    this.fdb = [...this.fdb.filter((f) => !(f.ifindex === l.index && f.mac === mac)), { ifindex: l.index, mac, dst, permanent: true, self: true }];
    this.notify({ kind: 'fdb', removed: false, ifindex: l.index, mac, dst, permanent: true });
  }

  async deleteFdb(link: LinkRef, mac: string, dst: string | null): Promise<void> {
    const l = this.linkOf('deleteFdb', link, mac);
    const found = this.fdb.find((f) => f.ifindex === l.index && f.mac === mac && (dst === null || f.dst === dst));
    if (!found) throw this.error(`delete FDB entry ${mac}`, 'ENOENT');
    this.fdb = this.fdb.filter((f) => f !== found);
    this.notify({ kind: 'fdb', removed: true, ifindex: l.index, mac, dst: found.dst });
  }

  // ---- routes --------------------------------------------------------------------------------

  async listRoutes(table: number = MAIN_TABLE, family: IPFamily = 4): Promise<RouteEntry[]> {
    this.fault('listRoutes');
    return this.routes.filter((r) => r.table === table && familyOf(r.dst) === family);
  }

  async replaceRoute(spec: RouteSpec): Promise<void> {
    this.checkRoute('replaceRoute', spec);
    this.putRoute(routeOf(spec));
  }

  async addRoute(spec: RouteSpec): Promise<void> {
    this.checkRoute('addRoute', spec);
    const r = routeOf(spec);
    if (this.routes.some((x) => sameRouteKey(x, r))) throw this.error(`add route ${formatCidr(spec.dst)}`, 'EEXIST');
    this.putRoute(r);
  }

  async deleteRoute(spec: RouteSpec): Promise<void> {
    this.record('deleteRoute', formatCidr(spec.dst));
    const r = routeOf(spec);
    const found = this.routes.find((x) => sameRouteKey(x, r) && (x.oif === spec.oif || spec.oif === 0));
    if (!found) throw this.error(`delete route ${formatCidr(spec.dst)}`, 'ESRCH');
    this.routes = this.routes.filter((x) => x !== found);
    this.notifyRoute(found, true);
  }

  /** Longest prefix match in the main table, as `ip route get`. */
  async getRouteTo(ip: string): Promise<RouteLookup | null> {
    this.fault('getRouteTo');
    const family = addressFamily(ip);
    const best = this.routes
      .filter((r) => r.table === MAIN_TABLE && familyOf(r.dst) === family && ipNetContainsAddress(r.dst, ip))
      .sort((a, b) => b.dst.prefixLen - a.dst.prefixLen || a.priority - b.priority)[0];
    if (!best) return null;
    const prefsrc = this.addresses.find((a) => a.ifindex === best.oif && addressFamily(a.ip) === family)?.ip ?? null;
    return { oif: best.oif, gateway: best.gateway, prefsrc };
  }

  async isOnLink(ip: string, viaIndex?: number): Promise<boolean> {
    const r = await this.getRouteTo(ip);
    if (!r || r.gateway !== null || r.oif === null) return false;
    return viaIndex === undefined || r.oif === viaIndex;
  }

  async defaultRouteInterface(family: IPFamily = 4): Promise<number | null> {
    const defaults = (await this.listRoutes(MAIN_TABLE, family)).filter((r) => r.dst.prefixLen === 0 && r.oif !== null);
    return defaults.sort((a, b) => a.priority - b.priority)[0]?.oif ?? null;
  }

  // ---- notifications -------------------------------------------------------------------------

  /** Links, neighbours and FDB of every family; addresses and routes of `family` (as monitor.ts). */
  /** NetlinkClient.applyWrites: each write through its single method (so failNext and `calls` see them), outcomes in order. */
  async applyWrites(writes: readonly KernelWrite[]): Promise<WriteOutcomes> {
    return applyWritesOneByOne(this, writes);
  }

  monitor(onChange: (batch: ChangeBatch) => void, family: IPFamily = 4, _interest?: MonitorInterest): Monitor {
    const listener: Listener = { onChange, family, pending: [] };
    this.listeners.add(listener);
    return { close: () => void this.listeners.delete(listener) };
  }

  close(): void {
    this.listeners.clear();
  }

  // ---- internals -----------------------------------------------------------------------------

  private putRoute(r: RouteEntry): void {
    this.routes = [...this.routes.filter((x) => !sameRouteKey(x, r)), r];
    this.notifyRoute(r, false);
  }

  private checkRoute(method: Method, spec: RouteSpec): void {
    this.record(method, formatCidr(spec.dst));
    if (!this.links.has(spec.oif)) throw this.error(`${method} ${formatCidr(spec.dst)}`, 'ENODEV');
  }

  private notifyRoute(r: RouteEntry, removed: boolean): void {
    this.notify({ kind: 'route', removed, table: r.table, oif: r.oif, dst: r.dst, gateway: r.gateway });
  }

  private notify(event: ChangeEvent): void {
    for (const l of this.listeners) {
      const family = event.kind === 'route' ? familyOf(event.dst) : event.kind === 'address' ? (event.ip ? addressFamily(event.ip) : null) : null;
      if (family !== null && family !== l.family) continue;
      l.pending.push(event);
      // One batch per tick, delivered later, as the real monitor coalesces its messages.
      if (l.pending.length === 1) {
        setImmediate(() => {
          const events = l.pending;
          l.pending = [];
          if (this.listeners.has(l) && events.length > 0) l.onChange({ events, resync: false });
        });
      }
    }
  }

  private updateLink(method: Method, ref: LinkRef, change: Partial<Pick<LinkInfo, 'up' | 'mtu' | 'mac'>>): void {
    const l = this.linkOf(method, ref, JSON.stringify(change));
    const next: LinkInfo = { ...l, ...change };
    this.links.set(l.index, next);
    this.notify({ kind: 'link', removed: false, ifindex: l.index, name: l.name });
  }

  private linkOf(method: Method, ref: LinkRef, what = ''): LinkInfo {
    const index = typeof ref === 'number' ? ref : ref.index;
    this.record(method, `#${index}${what ? ` ${what}` : ''}`);
    const l = this.links.get(index);
    if (!l) throw this.error(`${method} on link #${index}`, 'ENODEV');
    return l;
  }

  private familyOfIp(ip: string): IPFamily {
    const family = addressFamily(ip);
    if (family === null) throw new WeftError('INTERNAL', `memory kernel: ${JSON.stringify(ip)} is not an IP address`);
    return family;
  }

  private record(method: Method, what: string): void {
    this.fault(method);
    this.calls.push(`${method} ${what}`);
  }

  private fault(method: Method): void {
    const errno = this.faults.get(method);
    if (errno === undefined) return;
    this.faults.delete(method);
    throw this.error(method, errno);
  }

  private error(operation: string, errno: string): NetlinkError {
    return new NetlinkError(operation, errno, new Error(`Request rejected: ${errno}`));
  }
}

function routeOf(spec: RouteSpec): RouteEntry {
  return {
    dst: spec.dst, gateway: spec.gateway, oif: spec.oif, onlink: spec.onlink, table: MAIN_TABLE,
    // The kernel gives an IPv6 route added without a metric 1024 (IP6_RT_PRIO_USER).
    priority: spec.priority || (familyOf(spec.dst) === 6 ? 1024 : 0), protocol: RTPROT_BOOT, type: RTN_UNICAST,
  };
}

function sameRouteKey(a: RouteEntry, b: RouteEntry): boolean {
  return a.table === b.table && a.priority === b.priority && sameDst(a.dst, b.dst);
}

function sameDst(a: IPNet, b: IPNet): boolean {
  return familyOf(a) === familyOf(b) && a.prefixLen === b.prefixLen && formatCidr(a) === formatCidr(b);
}

/** A locally administered MAC that differs per device (no randomness: tests are repeatable). */
function randomishMac(n: number): string {
  return `02:00:00:00:${((n >> 8) & 0xff).toString(16).padStart(2, '0')}:${(n & 0xff).toString(16).padStart(2, '0')}`;
}
