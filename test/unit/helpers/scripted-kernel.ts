/**
 * A kernel the test scripts by hand, for the reconciler's own tests: one device, every call
 * recorded in `calls` ("set route 10.5.2.0/24"), dumps counted, change events delivered only when
 * the test calls `listener` itself, and faults on demand. For whole daemons, where the kernel's
 * rules and automatic notifications matter, use src/netlink/memory-kernel.ts instead.
 */
import type { ReconcilerNetlink } from '../../../src/daemon/reconciler';
import { formatIPv4Cidr } from '../../../src/ip';
import type { LinkRef } from '../../../src/netlink/client';
import { NetlinkError } from '../../../src/netlink/errors';
import type { AddressEntry, ChangeBatch, FdbEntry, LinkInfo, Monitor, NeighbourEntry, RouteEntry, RouteSpec } from '../../../src/netlink/types';
import type { KernelWrite, WriteOutcomes } from '../../../src/netlink/types';
import { applyWritesOneByOne } from '../../../src/netlink/writes';

const idx = (l: LinkRef): number => (typeof l === 'number' ? l : l.index);

export class ScriptedKernel implements ReconcilerNetlink {
  link: LinkInfo | null = null;
  nextIndex = 10;
  addresses: AddressEntry[] = [];
  neighbours: NeighbourEntry[] = [];
  fdb: FdbEntry[] = [];
  routes: RouteEntry[] = [];
  calls: string[] = [];
  listener: ((b: ChangeBatch) => void) | null = null;
  /** Deletions of neighbours, FDB entries and routes reject with this errno. */
  failDeletesWith: string | null = null;
  /** Route writes reject (with a plain Error 'EPERM'). */
  failRoutes = false;
  /** Writes of the route to this destination ("10.5.3.0/24") reject with EEXIST; the others succeed. */
  failRouteTo: string | null = null;
  /** The size of each applyWrites batch, in order (one per reconcile phase). */
  batches: number[] = [];
  /** The address dump (the first of a full reconcile) waits for this. */
  dumpDelay: Promise<void> | null = null;
  dumps = 0;

  /** (Re)create flannel.1 (a new index) with nothing on it. */
  createDevice(): void {
    this.link = { index: this.nextIndex++, name: 'flannel.1', up: true, mtu: 1450, mac: '02:00:00:00:00:01', kind: 'vxlan', vxlan: null };
    this.addresses = [];
    this.neighbours = [];
    this.fdb = [];
    this.routes = this.routes.filter((r) => r.oif !== this.link!.index);
  }
  async getLink(name: string): Promise<LinkInfo | null> {
    return this.link && this.link.name === name ? this.link : null;
  }
  async listAddresses(): Promise<AddressEntry[]> {
    this.dumps++;
    if (this.dumpDelay) await this.dumpDelay;
    return [...this.addresses];
  }
  async listNeighbours(): Promise<NeighbourEntry[]> {
    return [...this.neighbours];
  }
  async listFdb(): Promise<FdbEntry[]> {
    return [...this.fdb];
  }
  async listRoutes(): Promise<RouteEntry[]> {
    return [...this.routes];
  }
  async addAddress(l: LinkRef, ip: string, prefixLen: number): Promise<void> {
    this.calls.push(`add address ${ip}/${prefixLen}`);
    this.addresses.push({ ifindex: idx(l), ip, prefixLen });
  }
  async deleteAddress(_l: LinkRef, ip: string): Promise<void> {
    this.calls.push(`del address ${ip}`);
    this.addresses = this.addresses.filter((a) => a.ip !== ip);
  }
  async replaceNeighbour(l: LinkRef, ip: string, mac: string): Promise<void> {
    this.calls.push(`set neighbour ${ip}`);
    this.neighbours = [...this.neighbours.filter((n) => n.ip !== ip), { ifindex: idx(l), ip, mac, permanent: true }];
  }
  async deleteNeighbour(_l: LinkRef, ip: string): Promise<void> {
    this.calls.push(`del neighbour ${ip}`);
    if (this.failDeletesWith) throw new NetlinkError(`delete neighbour ${ip}`, this.failDeletesWith, new Error('x'));
    this.neighbours = this.neighbours.filter((n) => n.ip !== ip);
  }
  async replaceFdb(l: LinkRef, mac: string, dst: string): Promise<void> {
    this.calls.push(`set fdb ${mac}`);
    this.fdb = [...this.fdb.filter((f) => f.mac !== mac), { ifindex: idx(l), mac, dst, permanent: true, self: true }];
  }
  async deleteFdb(_l: LinkRef, mac: string): Promise<void> {
    this.calls.push(`del fdb ${mac}`);
    if (this.failDeletesWith) throw new NetlinkError(`delete fdb ${mac}`, this.failDeletesWith, new Error('x'));
    this.fdb = this.fdb.filter((f) => f.mac !== mac);
  }
  async replaceRoute(s: RouteSpec): Promise<void> {
    this.calls.push(`set route ${formatIPv4Cidr(s.dst)}`);
    if (this.failRoutes) throw new Error('EPERM');
    if (this.failRouteTo === formatIPv4Cidr(s.dst)) throw new NetlinkError(`add route ${this.failRouteTo}`, 'EEXIST', new Error('x'));
    this.routes = [
      ...this.routes.filter((r) => formatIPv4Cidr(r.dst) !== formatIPv4Cidr(s.dst)),
      { dst: s.dst, gateway: s.gateway, oif: s.oif, onlink: s.onlink, table: 254, priority: 0, protocol: 3, type: 1 },
    ];
  }
  async deleteRoute(s: RouteSpec): Promise<void> {
    this.calls.push(`del route ${formatIPv4Cidr(s.dst)}`);
    if (this.failDeletesWith) throw new NetlinkError(`delete route`, this.failDeletesWith, new Error('x'));
    this.routes = this.routes.filter((r) => formatIPv4Cidr(r.dst) !== formatIPv4Cidr(s.dst));
  }
  async applyWrites(writes: readonly KernelWrite[]): Promise<WriteOutcomes> {
    this.batches.push(writes.length);
    return applyWritesOneByOne(this, writes);
  }
  monitor(onChange: (b: ChangeBatch) => void): Monitor {
    this.listener = onChange;
    return { close: () => (this.listener = null) };
  }
}
