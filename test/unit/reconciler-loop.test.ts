/**
 * The Reconciler's loop against an in-memory kernel (FakeKernel) and a manual clock: ordering,
 * coalescing, repair accounting, device healing, scheduling on netlink changes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DesiredState, Underlay } from '../../src/backend/backend';
import { Reconciler } from '../../src/daemon/reconciler';
import { parseIPv4, parseIPv4Cidr } from '../../src/ip';
import { NetlinkError } from '../../src/netlink/errors';
import type { RouteSpec } from '../../src/netlink/types';
import { FakeBackend, ManualClock, settle } from './helpers/fakes';
import { ScriptedKernel } from './helpers/scripted-kernel';

const UNDERLAY: Underlay = { ifName: 'eth0', ifIndex: 3, ipv4: '10.250.0.1', mtu: 1500 };

const peer = (n: number): DesiredState => ({
  addresses: [{ ip: parseIPv4('10.5.1.0')!, prefixLen: 32 }],
  neighbours: [{ ip: `10.5.${n}.0`, mac: `02:00:00:00:00:0${n}` }],
  fdb: [{ mac: `02:00:00:00:00:0${n}`, dst: `10.250.0.${n}` }],
  routes: [{ dst: parseIPv4Cidr(`10.5.${n}.0/24`)!, gateway: `10.5.${n}.0`, onlink: true, via: 'overlay' }],
});
const noPeers: DesiredState = { ...peer(2), neighbours: [], fdb: [], routes: [] };

function setup() {
  const k = new ScriptedKernel();
  k.createDevice();
  // ensureDevice recreates the device when it is gone (and brings it up), as vxlan's does.
  const backend = new FakeBackend({ backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' }, mtu: 1450 }, () => {
    if (!k.link) k.createDevice();
    k.link = { ...k.link!, up: true };
  });
  const clock = new ManualClock();
  const r = new Reconciler({ nl: k, backend, underlay: UNDERLAY, clock, resyncIntervalMs: 10_000, debounceMs: 20 });
  return { k, backend, clock, r };
}

describe('Reconciler', () => {
  it('does nothing before it has a desired state', async () => {
    const { k, r } = setup();
    assert.deepEqual(await r.reconcile(), { changes: 0, repairs: { device: 0, address: 0, neighbour: 0, fdb: 0, route: 0 } });
    assert.deepEqual(k.calls, []);
  });

  it('adds neighbour, FDB entry, route in that order and removes them in reverse', async () => {
    const { k, r } = setup();
    r.setDesired(peer(2));
    assert.equal((await r.reconcile()).changes, 4);
    assert.deepEqual(k.calls, ['add address 10.5.1.0/32', 'set neighbour 10.5.2.0', 'set fdb 02:00:00:00:00:02', 'set route 10.5.2.0/24']);
    k.calls = [];
    r.setDesired(noPeers);
    await r.reconcile();
    assert.deepEqual(k.calls, ['del route 10.5.2.0/24', 'del fdb 02:00:00:00:00:02', 'del neighbour 10.5.2.0']);
  });

  it('is idempotent: a second run changes nothing', async () => {
    const { k, r } = setup();
    r.setDesired(peer(2));
    await r.reconcile();
    k.calls = [];
    assert.equal((await r.reconcile()).changes, 0);
    assert.deepEqual(k.calls, []);
  });

  it('counts restoring a converged state as repairs, by kind, but not first programming or peer changes', async () => {
    const { k, r } = setup();
    r.setDesired(peer(2));
    assert.equal((await r.reconcile()).repairs.route, 0);
    k.routes = [];
    k.neighbours = [];
    const res = await r.reconcile();
    assert.equal(res.repairs.route, 1);
    assert.equal(res.repairs.neighbour, 1);
    r.setDesired(peer(3));
    const moved = await r.reconcile();
    assert.deepEqual(moved.repairs, { device: 0, address: 0, neighbour: 0, fdb: 0, route: 0 });
    k.fdb.push({ ifindex: k.link!.index, mac: '02:00:00:00:00:99', dst: '10.250.0.99', permanent: true, self: true });
    assert.equal((await r.reconcile()).repairs.fdb, 1, 'an entry added by hand is pruned as a repair');
    assert.deepEqual(r.repairCounts, { device: 0, address: 0, neighbour: 1, fdb: 1, route: 1 });
  });

  it('sets the device up again through the backend when it is missing, then restores what was on it', async () => {
    const { k, backend, r } = setup();
    r.setDesired(peer(2));
    await r.reconcile();
    // The kernel drops a device's routes with it.
    const gone = k.link!.index;
    k.link = null;
    k.routes = k.routes.filter((rt) => rt.oif !== gone);
    const res = await r.reconcile();
    assert.equal(backend.ensured, 1);
    assert.equal(res.repairs.device, 1);
    assert.equal(k.routes.length, 1);
    assert.equal(k.routes[0]!.oif, k.link!.index);
  });

  it('coalesces calls made while a reconcile runs into one follow-up run', async () => {
    const { k, r } = setup();
    r.setDesired(peer(2));
    let release!: () => void;
    k.dumpDelay = new Promise((res) => (release = res));
    const first = r.reconcile();
    await settle();
    const second = r.reconcile();
    const third = r.reconcile();
    assert.equal(second, third, 'one shared follow-up');
    k.dumpDelay = null;
    release();
    await Promise.all([first, second, third]);
    assert.equal(k.dumps, 2);
  });

  it('treats "already gone" on removal as done', async () => {
    const { k, r } = setup();
    r.setDesired(peer(2));
    await r.reconcile();
    k.failDeletesWith = 'ENOENT';
    r.setDesired(noPeers);
    assert.equal((await r.reconcile()).changes, 3);
  });

  it('applies what it can and rejects with the failures, retryable', async () => {
    const { k, r } = setup();
    r.setDesired(peer(2));
    await r.reconcile();
    k.failDeletesWith = 'EPERM';
    r.setDesired(noPeers);
    await assert.rejects(r.reconcile(), (err: Error & { code?: string; retryable?: boolean }) => {
      assert.equal(err.code, 'NETLINK');
      assert.equal(err.retryable, true);
      assert.match(err.message, /reconcile flannel\.1: 3 of 3 changes failed: delete route: EPERM/);
      return true;
    });
    assert.ok(r.lastError !== null);
  });

  it('once started, reconciles within the debounce after a relevant netlink change, and periodically', async () => {
    const { k, clock, r } = setup();
    r.setDesired(peer(2));
    r.start();
    await clock.advance(0);
    assert.equal(k.routes.length, 1);
    k.routes = [];
    k.listener!({ events: [{ kind: 'route', removed: true, table: 254, oif: k.link!.index, dst: parseIPv4Cidr('10.5.2.0/24')! }], resync: false });
    await clock.advance(19);
    assert.equal(k.routes.length, 0, 'not before the debounce');
    await clock.advance(1);
    assert.equal(k.routes.length, 1, 'restored 20 ms after the event');
    k.neighbours = [];
    k.listener!({ events: [{ kind: 'neighbour', removed: true, ifindex: 77 }], resync: false });
    await clock.advance(100);
    assert.equal(k.neighbours.length, 0, 'a change on another link is ignored');
    await clock.advance(10_000);
    assert.equal(k.neighbours.length, 1, 'the periodic resync catches it');
    await r.stop();
    assert.equal(k.listener, null, 'monitor closed');
  });

  it('retries a failed scheduled reconcile with backoff', async () => {
    const { k, clock, r } = setup();
    r.setDesired(peer(2));
    const real = k.replaceRoute.bind(k);
    let failures = 2;
    k.replaceRoute = async (s: RouteSpec) => {
      if (failures-- > 0) throw new NetlinkError('replace route', 'EBUSY', new Error('busy'));
      return real(s);
    };
    r.start();
    await clock.advance(0);
    assert.equal(k.routes.length, 0);
    await clock.advance(100); // first retry, fails again
    assert.equal(k.routes.length, 0);
    await clock.advance(200); // second retry
    assert.equal(k.routes.length, 1);
    assert.equal(r.isConverged, true);
    await r.stop();
  });
});
