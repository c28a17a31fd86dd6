/**
 * The reconciler's incremental path (a peer change written without dumping the kernel) and its
 * echo suppression, against an in-memory kernel and a manual clock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DesiredState, Underlay } from '../../src/backend/backend';
import { Reconciler, impliedState, diffState } from '../../src/daemon/reconciler';
import { formatIPv4Cidr, parseIPv4, parseIPv4Cidr } from '../../src/ip';
import { FakeBackend, ManualClock } from './helpers/fakes';
import { ScriptedKernel } from './helpers/scripted-kernel';

const UNDERLAY: Underlay = { ifName: 'eth0', ifIndex: 3, ipv4: '10.250.0.1', mtu: 1500 };

function peers(...ns: number[]): DesiredState {
  return {
    addresses: [{ ip: parseIPv4('10.5.1.0')!, prefixLen: 32 }],
    neighbours: ns.map((n) => ({ ip: `10.5.${n}.0`, mac: `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` })),
    fdb: ns.map((n) => ({ mac: `02:00:00:00:00:${n.toString(16).padStart(2, '0')}`, dst: `10.250.0.${n}` })),
    routes: ns.map((n) => ({ dst: parseIPv4Cidr(`10.5.${n}.0/24`)!, gateway: `10.5.${n}.0`, onlink: true, via: 'overlay' as const })),
  };
}

async function started(initial: DesiredState) {
  const k = new ScriptedKernel();
  k.createDevice();
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

  it('an idle reconciler writes a peer change in setDesired\'s own tick, without waiting for a timer', async () => {
    const { k, r } = await started(peers(2));
    r.setDesired(peers(2, 3));
    // The clock is not advanced: only microtasks and one macrotask turn pass.
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.deepEqual(k.calls, ['set neighbour 10.5.3.0', 'set fdb 02:00:00:00:00:03', 'set route 10.5.3.0/24']);
    assert.equal(r.isUpToDate, true);
    await r.stop();
  });

  it('changes made while a run is in flight share one follow-up run, which sees the last of them', async () => {
    const { k, clock, r } = await started(peers(2));
    const runsBefore = r.runCounts.runs;
    r.setDesired(peers(2, 3)); // starts at once
    r.setDesired(peers(2, 3, 4)); // the run above is in flight: scheduled
    r.setDesired(peers(2, 4, 5));
    await clock.advance(0);
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.equal(r.runCounts.runs - runsBefore, 2, 'one run now, one follow-up');
    assert.deepEqual(diffState(peers(2, 4, 5), impliedState(r.applied!, 10, 3)), []);
    assert.equal(r.isUpToDate, true);
    assert.ok(k.calls.includes('del route 10.5.3.0/24'), `calls: ${k.calls.join(', ')}`);
    await r.stop();
  });
});
