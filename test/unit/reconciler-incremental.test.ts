/**
 * The reconciler's incremental path (a peer change written without dumping the kernel) and its
 * echo suppression, against an in-memory kernel and a manual clock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Backend, BackendSetup, DesiredState, Underlay } from '../../src/backend/backend';
import { Reconciler, impliedState, diffState, type Clock, type ReconcilerNetlink } from '../../src/daemon/reconciler';
import { formatIPv4Cidr, parseIPv4, parseIPv4Cidr } from '../../src/ip';
import type { Lease } from '../../src/lease/types';
import type { LinkRef } from '../../src/netlink/client';
import type { AddressEntry, ChangeBatch, FdbEntry, LinkInfo, Monitor, NeighbourEntry, RouteEntry, RouteSpec } from '../../src/netlink/types';

const UNDERLAY: Underlay = { ifName: 'eth0', ifIndex: 3, ipv4: '10.250.0.1', mtu: 1500 };
const idx = (l: LinkRef): number => (typeof l === 'number' ? l : l.index);

class Kernel implements ReconcilerNetlink {
  link: LinkInfo = { index: 10, name: 'flannel.1', up: true, mtu: 1450, mac: '02:00:00:00:00:01', kind: 'vxlan', vxlan: null };
  addresses: AddressEntry[] = [];
  neighbours: NeighbourEntry[] = [];
  fdb: FdbEntry[] = [];
  routes: RouteEntry[] = [];
  calls: string[] = [];
  dumps = 0;
  failRoutes = false;
  listener: ((b: ChangeBatch) => void) | null = null;
  async getLink(name: string) { return name === this.link.name ? this.link : null; }
  async listAddresses() { this.dumps++; return [...this.addresses]; }
  async listNeighbours() { return [...this.neighbours]; }
  async listFdb() { return [...this.fdb]; }
  async listRoutes() { return [...this.routes]; }
  async addAddress(l: LinkRef, ip: string, prefixLen: number) { this.calls.push(`add address ${ip}`); this.addresses.push({ ifindex: idx(l), ip, prefixLen }); }
  async deleteAddress(_l: LinkRef, ip: string) { this.calls.push(`del address ${ip}`); this.addresses = this.addresses.filter((a) => a.ip !== ip); }
  async replaceNeighbour(l: LinkRef, ip: string, mac: string) {
    this.calls.push(`set neighbour ${ip}`);
    this.neighbours = [...this.neighbours.filter((n) => n.ip !== ip), { ifindex: idx(l), ip, mac, permanent: true }];
  }
  async deleteNeighbour(_l: LinkRef, ip: string) { this.calls.push(`del neighbour ${ip}`); this.neighbours = this.neighbours.filter((n) => n.ip !== ip); }
  async replaceFdb(l: LinkRef, mac: string, dst: string) {
    this.calls.push(`set fdb ${mac}`);
    this.fdb = [...this.fdb.filter((f) => f.mac !== mac), { ifindex: idx(l), mac, dst, permanent: true, self: true }];
  }
  async deleteFdb(_l: LinkRef, mac: string) { this.calls.push(`del fdb ${mac}`); this.fdb = this.fdb.filter((f) => f.mac !== mac); }
  async replaceRoute(s: RouteSpec) {
    this.calls.push(`set route ${formatIPv4Cidr(s.dst)}`);
    if (this.failRoutes) throw new Error('EPERM');
    this.routes = [...this.routes.filter((r) => formatIPv4Cidr(r.dst) !== formatIPv4Cidr(s.dst)),
      { dst: s.dst, gateway: s.gateway, oif: s.oif, onlink: s.onlink, table: 254, priority: 0, protocol: 3, type: 1 }];
  }
  async deleteRoute(s: RouteSpec) { this.calls.push(`del route ${formatIPv4Cidr(s.dst)}`); this.routes = this.routes.filter((r) => formatIPv4Cidr(r.dst) !== formatIPv4Cidr(s.dst)); }
  monitor(onChange: (b: ChangeBatch) => void): Monitor { this.listener = onChange; return { close: () => (this.listener = null) }; }
}

class FakeBackend implements Backend {
  readonly type = 'vxlan';
  readonly deviceName = 'flannel.1';
  async ensureDevice(): Promise<BackendSetup> { return { backendType: 'vxlan', backendData: {}, mtu: 1450 }; }
  desired(_own: Lease, _peers: readonly Lease[]): DesiredState { throw new Error('not used'); }
  async close(): Promise<void> {}
}

class ManualClock implements Clock {
  t = 0;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private nextId = 1;
  now() { return this.t; }
  setTimeout(fn: () => void, ms: number) { const id = this.nextId++; this.timers.push({ at: this.t + ms, fn, id }); return id; }
  clearTimeout(h: unknown) { this.timers = this.timers.filter((x) => x.id !== h); }
  async advance(ms: number) {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

function peers(...ns: number[]): DesiredState {
  return {
    addresses: [{ ip: parseIPv4('10.5.1.0')!, prefixLen: 32 }],
    neighbours: ns.map((n) => ({ ip: `10.5.${n}.0`, mac: `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` })),
    fdb: ns.map((n) => ({ mac: `02:00:00:00:00:${n.toString(16).padStart(2, '0')}`, dst: `10.250.0.${n}` })),
    routes: ns.map((n) => ({ dst: parseIPv4Cidr(`10.5.${n}.0/24`)!, gateway: `10.5.${n}.0`, onlink: true, via: 'overlay' as const })),
  };
}

async function started(initial: DesiredState) {
  const k = new Kernel();
  const clock = new ManualClock();
  const r = new Reconciler({ nl: k, backend: new FakeBackend(), underlay: UNDERLAY, clock, resyncIntervalMs: 10_000, debounceMs: 20 });
  r.setDesired(initial);
  await r.reconcile();
  r.start();
  await clock.advance(1);
  k.calls = [];
  k.dumps = 0;
  return { k, clock, r };
}

describe('reconciler, incremental path', () => {
  it('the state a desired state implies diffs to nothing against it', () => {
    const d = peers(2, 3);
    assert.deepEqual(diffState(d, impliedState(d, 10, 3)), []);
  });

  it('writes a joining peer\'s neighbour, FDB entry and route without dumping the kernel', async () => {
    const { k, clock, r } = await started(peers(2));
    r.setDesired(peers(2, 3));
    await clock.advance(0);
    assert.deepEqual(k.calls, ['set neighbour 10.5.3.0', 'set fdb 02:00:00:00:00:03', 'set route 10.5.3.0/24']);
    assert.equal(k.dumps, 0, 'no dump for a peer change');
    assert.equal(r.isUpToDate, true);
    k.calls = [];
    r.setDesired(peers(3));
    await clock.advance(0);
    assert.deepEqual(k.calls, ['del route 10.5.2.0/24', 'del fdb 02:00:00:00:00:02', 'del neighbour 10.5.2.0']);
    assert.equal(k.dumps, 0);
    await r.stop();
  });

  it('never replaces a route it did not create on the incremental path (a proto kernel route at a joining peer\'s subnet)', async () => {
    const { k, clock, r } = await started(peers(2));
    // What the last full run saw: the underlay's connected route, 10.5.3.0/24 here for the test.
    k.routes.push({ dst: parseIPv4Cidr('10.5.3.0/24')!, gateway: null, oif: 3, onlink: false, table: 254, priority: 0, protocol: 2, type: 1 });
    await r.reconcile(); // full run: reads the kernel, remembers the foreign route
    k.calls = [];
    r.setDesired(peers(2, 3));
    await clock.advance(0);
    assert.ok(!k.calls.includes('set route 10.5.3.0/24'), `calls: ${k.calls.join(', ')}`);
    assert.ok(k.routes.some((rt) => rt.protocol === 2 && formatIPv4Cidr(rt.dst) === '10.5.3.0/24'), 'the kernel route is still there');
    await r.stop();
  });

  it('takes notifications of exactly what it just wrote for echoes, but never removals or anything else', async () => {
    const { k, clock, r } = await started(peers(2));
    r.setDesired(peers(2, 3));
    await clock.advance(0);
    k.listener!({ resync: false, events: [{ kind: 'route', removed: false, table: 254, oif: 10, dst: parseIPv4Cidr('10.5.3.0/24')!, gateway: '10.5.3.0' }] });
    await clock.advance(50);
    assert.equal(k.dumps, 0, 'echo ignored');
    // An FDB entry added by hand right after our own changes is not an echo: reconciled at once.
    k.listener!({ resync: false, events: [{ kind: 'fdb', removed: false, ifindex: 10, mac: '02:00:00:00:00:99', dst: '10.250.0.9', permanent: true }] });
    await clock.advance(50);
    assert.equal(k.dumps, 1, 'a foreign addition is reconciled at once');
    k.dumps = 0;
    // Someone deletes a route: a full reconcile reads the kernel and puts it back.
    k.routes = k.routes.filter((x) => formatIPv4Cidr(x.dst) !== '10.5.2.0/24');
    k.listener!({ resync: false, events: [{ kind: 'route', removed: true, table: 254, oif: 10, dst: parseIPv4Cidr('10.5.2.0/24')! }] });
    await clock.advance(50);
    assert.equal(k.dumps, 1);
    assert.ok(k.calls.includes('set route 10.5.2.0/24'));
    assert.equal(r.repairCounts.route, 1);
    // Past the echo TTL even our own value is a change by someone else again.
    k.calls = [];
    await clock.advance(2500);
    k.listener!({ resync: false, events: [{ kind: 'route', removed: false, table: 254, oif: 10, dst: parseIPv4Cidr('10.5.3.0/24')!, gateway: '10.5.3.0' }] });
    await clock.advance(50);
    assert.equal(k.dumps, 2);
    await r.stop();
  });

  it('after a failed incremental change the next run reads the kernel', async () => {
    const { k, clock, r } = await started(peers(2));
    k.failRoutes = true;
    r.setDesired(peers(2, 3));
    await clock.advance(0);
    assert.notEqual(r.lastError, null);
    assert.equal(k.dumps, 0);
    k.failRoutes = false;
    await clock.advance(200); // retry after the backoff: a full run
    assert.ok(k.dumps >= 1);
    assert.equal(r.lastError, null);
    assert.ok(k.routes.some((x) => formatIPv4Cidr(x.dst) === '10.5.3.0/24'));
    await r.stop();
  });
});
