/**
 * The reconciler's incremental path (a peer change written without dumping the kernel) and its
 * echo suppression, against an in-memory kernel and a manual clock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DesiredState, PeerObjects, Underlay } from '../../src/backend/backend';
import type { DesiredDelta } from '../../src/daemon/desired-delta';
import { Reconciler, impliedState, diffState } from '../../src/daemon/reconciler';
import { formatIPv4Cidr, parseIPv4, parseIPv4Cidr } from '../../src/ip';
import type { KernelWrite, WriteOutcomes } from '../../src/netlink/types';
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

/** The delta from `from` (peers `had`) to the peers `now`: what IncrementalDesired hands over. */
function deltaOf(from: DesiredState, had: number[], now: number[]): DesiredDelta {
  const objects = (ns: number[]): PeerObjects => {
    const d = peers(...ns);
    return { neighbours: d.neighbours, fdb: d.fdb, routes: d.routes };
  };
  return { from, remove: objects(had.filter((n) => !now.includes(n))), add: objects(now.filter((n) => !had.includes(n))) };
}

/** A scripted kernel whose batches are answered only when the test says (`answer()`). */
class HeldKernel extends ScriptedKernel {
  private held: (() => void)[] = [];
  /** Off while the test sets the reconciler up. */
  holding = false;
  override applyWrites(writes: readonly KernelWrite[]): Promise<WriteOutcomes> {
    const written = super.applyWrites(writes); // the writes are issued now, as a real batch's sendmsg
    if (!this.holding) return written;
    // Answered with the outcomes themselves (no promise in between): the reconciler's own steps are what is counted.
    return new Promise((resolve) => void written.then((outcomes) => this.held.push(() => resolve(outcomes))));
  }
  get waiting(): number {
    return this.held.length;
  }
  answer(): void {
    for (const a of this.held.splice(0)) a();
  }
}

describe('reconciler, a delta in one synchronous pass (issue #14)', () => {
  async function startedWith(k: ScriptedKernel, initial: DesiredState) {
    k.createDevice();
    const clock = new ManualClock();
    let upToDate = 0;
    const r = new Reconciler({ nl: k, backend: new FakeBackend(), underlay: UNDERLAY, clock, resyncIntervalMs: 10_000, debounceMs: 20, onUpToDate: () => upToDate++ });
    r.setDesired(initial);
    await r.reconcile();
    r.start();
    await clock.advance(1);
    k.calls = [];
    k.batches = [];
    k.dumps = 0;
    if (k instanceof HeldKernel) k.holding = true;
    return { clock, r, upToDate: () => upToDate };
  }

  it('writes a delta handed to an idle, converged reconciler within setDesired, and completes it after the batch\'s answer', async () => {
    const k = new HeldKernel();
    const s2 = peers(2);
    const { r, upToDate } = await startedWith(k, s2);
    const before = upToDate();
    const s23 = peers(2, 3);
    r.setDesired(s23, deltaOf(s2, [2], [2, 3]));
    // Nothing awaited yet: no microtask has run since setDesired.
    assert.deepEqual(k.calls, ['set neighbour 10.5.3.0', 'set fdb 02:00:00:00:00:03', 'set route 10.5.3.0/24']);
    assert.deepEqual(k.batches, [3], 'one batch');
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.equal(k.waiting, 1);
    assert.equal(r.isUpToDate, false, 'not before the kernel answered');
    k.answer();
    // One promise step from the batch's answer to the run's end (an async chain of layers took ten).
    await Promise.resolve();
    assert.equal(r.isUpToDate, true);
    assert.equal(upToDate() - before, 1, 'onUpToDate once');
    assert.equal(k.dumps, 0, 'no dump');
    await r.stop();
  });

  it('folds deltas that arrive while its batch is unanswered into one follow-up run', async () => {
    const k = new HeldKernel();
    const s2 = peers(2);
    const { clock, r } = await startedWith(k, s2);
    const runsBefore = r.runCounts.runs;
    const s23 = peers(2, 3);
    r.setDesired(s23, deltaOf(s2, [2], [2, 3]));
    const s234 = peers(2, 3, 4);
    r.setDesired(s234, deltaOf(s23, [2, 3], [2, 3, 4]));
    const s45 = peers(4, 5);
    r.setDesired(s45, deltaOf(s234, [2, 3, 4], [4, 5]));
    assert.equal(k.batches.length, 1, 'one batch in flight; the others wait');
    await new Promise<void>((resolve) => setImmediate(resolve));
    k.answer();
    await clock.advance(0); // the follow-up's timer
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.equal(k.waiting, 1, 'the follow-up batch is out');
    k.answer();
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.equal(r.runCounts.runs - runsBefore, 2, 'one run, one follow-up');
    assert.deepEqual(k.batches, [3, 12], 'the follow-up: from the first run\'s 2 and 3 to the last state, 4 and 5 (4\'s add folded in once)');
    assert.deepEqual(diffState(s45, impliedState(r.applied!, 10, 3)), []);
    assert.equal(r.isUpToDate, true);
    assert.equal(k.dumps, 0);
    await r.stop();
  });

  it('after a change of the synchronous pass fails, retries with a full run (the kernel read) after the backoff', async () => {
    const k = new ScriptedKernel();
    const s2 = peers(2);
    const { clock, r } = await startedWith(k, s2);
    k.failRouteTo = '10.5.3.0/24';
    r.setDesired(peers(2, 3), deltaOf(s2, [2], [2, 3]));
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.ok(r.lastError instanceof Error && /1 of 3 changes failed/.test(r.lastError.message), String(r.lastError));
    assert.equal(r.isUpToDate, false);
    k.failRouteTo = null;
    await clock.advance(100);
    assert.ok(k.dumps > 0, 'the retry read the kernel');
    assert.equal(r.lastError, null);
    assert.equal(r.isUpToDate, true);
    assert.ok(k.routes.some((rt) => formatIPv4Cidr(rt.dst) === '10.5.3.0/24'));
    await r.stop();
  });

  it('takes the general path for a full run: a notification before the delta makes it read the kernel', async () => {
    const k = new ScriptedKernel();
    const s2 = peers(2);
    const { clock, r } = await startedWith(k, s2);
    // Someone deleted our route by hand: a full run is due (debounced).
    k.listener!({ resync: false, events: [{ kind: 'route', removed: true, table: 254, oif: 10, dst: parseIPv4Cidr('10.5.2.0/24')!, gateway: '10.5.2.0' }] });
    r.setDesired(peers(2, 3), deltaOf(s2, [2], [2, 3]));
    assert.deepEqual(k.calls, [], 'nothing written before the due run');
    await clock.advance(20);
    assert.ok(k.dumps > 0, 'the run read the kernel');
    assert.equal(r.isUpToDate, true);
    await r.stop();
  });
});
