/**
 * The per-peer desired state (src/daemon/desired-delta.ts) against the whole recompute: random
 * lease event sequences (seeded, replayable from the seed in the message), conflicting and hostile
 * leases included, applied through the delta path to a model kernel; after every reconcile step the
 * model must hold exactly what diffState says the whole desired state wants (no change left), and
 * the engine's state must equal vxlanDesired()/hostGwDesired() of all current peers. Plus the
 * O(change) proof: a join judges one lease and writes three objects, with 10 or 1000 peers.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DesiredContext, DesiredState, PeerRules } from '../../src/backend/backend';
import { hostGwDesired, hostGwPeerRules } from '../../src/backend/hostgw/desired';
import { vxlanDesired, vxlanPeerRules, type VxlanDesiredParams } from '../../src/backend/vxlan/desired';
import { IncrementalDesired, PendingDelta, routesBySlot, type PeerEdit } from '../../src/daemon/desired-delta';
import { diffState, objectKey, ownsRoute, routePriority, type ActualState, type Change, type Ownership } from '../../src/daemon/diff';
import { maskNet, parseIPv4Cidr, type IPNet } from '../../src/ip';
import type { Lease } from '../../src/lease/types';
import { MAIN_TABLE, RTN_UNICAST, type RouteEntry } from '../../src/netlink/types';
import { prng } from '../e2e/helpers/prng';

const OV = 5; // overlay ifindex
const UL = 2; // underlay ifindex
const net = (t: string): IPNet => parseIPv4Cidr(t)!;
const NETWORK = net('10.0.0.0/8');

function lease(key: string, subnet: string, publicIp: string, backendType: string, data: unknown): Lease {
  return {
    key, subnet: parseIPv4Cidr(subnet)!, ipv6Subnet: null,
    attrs: { PublicIP: publicIp, PublicIPv6: null, BackendType: backendType, BackendData: data },
    expiration: null, etcdLeaseId: '7', modRevision: '1',
  };
}

const own = lease('10.5.0.0-24', '10.5.0.0/24', '192.168.50.1', 'vxlan', { VNI: 1, VtepMAC: '02:00:00:00:00:01' });
const ctxBase = { network: NETWORK, subnetLen: 24, underlayNetworks: [net('192.168.50.0/24')], protectedIPs: ['10.99.0.7'] };

/** A kernel as MemoryKernel keeps it (neighbour by IP, one FDB remote per MAC, route by dst+metric), changed as the reconciler's applyChange does. */
class ModelKernel {
  readonly neighbours = new Map<string, string>();
  fdb: { mac: string; dst: string }[] = [];
  readonly routes = new Map<string, RouteEntry>();

  constructor(foreign: readonly RouteEntry[]) {
    for (const r of foreign) this.routes.set(objectKey({ kind: 'route', dst: r.dst, priority: r.priority }), r);
  }

  apply(changes: readonly Change[]): void {
    for (const c of changes) {
      switch (c.kind) {
        case 'address':
          break; // our own address never changes here
        case 'neighbour':
          if (c.op === 'remove') this.neighbours.delete(c.ip);
          else this.neighbours.set(c.ip, c.mac!);
          break;
        case 'fdb':
          if (c.op === 'remove') this.fdb = this.fdb.filter((f) => !(f.mac === c.mac && (c.dst === null || f.dst === c.dst)));
          else this.fdb = [...this.fdb.filter((f) => f.mac !== c.mac), { mac: c.mac, dst: c.dst! }];
          break;
        case 'route': {
          const slot = objectKey({ kind: 'route', dst: c.dst, priority: c.priority });
          if (c.op === 'remove') {
            const cur = this.routes.get(slot);
            if (cur && cur.oif === c.oif) this.routes.delete(slot);
            break;
          }
          // addRoute is NLM_F_EXCL: an add onto a taken slot would fail on a real kernel.
          if (c.op === 'add') assert.equal(this.routes.has(slot), false, `add onto a taken route slot ${slot}`);
          this.routes.set(slot, {
            dst: c.dst, gateway: c.gateway, oif: c.oif, onlink: c.onlink, table: MAIN_TABLE, priority: c.priority, protocol: 3, type: RTN_UNICAST,
          });
          break;
        }
      }
    }
  }

  actual(addresses: readonly IPNet[]): ActualState {
    return {
      overlayIndex: OV, underlayIndex: UL,
      addresses: addresses.map((a) => ({ ifindex: OV, ip: `10.5.0.0`, prefixLen: a.prefixLen })),
      neighbours: [...this.neighbours].map(([ip, mac]) => ({ ifindex: OV, ip, mac, permanent: true })),
      fdb: this.fdb.map((f) => ({ ifindex: OV, mac: f.mac, dst: f.dst, permanent: true, self: true })),
      routes: [...this.routes.values()],
    };
  }
}

/** Order-free view of a desired state, for equality. */
function normal(d: DesiredState): unknown {
  const by = <T>(f: (x: T) => string) => (a: T, b: T): number => (f(a) < f(b) ? -1 : f(a) > f(b) ? 1 : 0);
  return {
    addresses: d.addresses,
    neighbours: [...d.neighbours].sort(by((n) => n.ip)),
    fdb: [...d.fdb].sort(by((f) => `${f.mac} ${f.dst}`)),
    routes: [...d.routes].map((r) => ({ ...r, dst: maskNet(r.dst) })).sort(by((r) => `${String(r.dst.ip)}`)),
    skipped: [...(d.skipped ?? [])],
  };
}

interface Scenario {
  readonly name: string;
  readonly rules: (ctx: DesiredContext) => PeerRules;
  readonly whole: (peers: readonly Lease[], ctx: DesiredContext) => DesiredState;
  readonly ownership: Ownership;
  readonly backendType: string;
}

const vxlanParams: VxlanDesiredParams = { vni: 1, directRouting: true };
const scenarios: Scenario[] = [
  {
    name: 'vxlan with DirectRouting',
    rules: (ctx) => vxlanPeerRules(own, vxlanParams, ctx),
    whole: (peers, ctx) => vxlanDesired(own, peers, vxlanParams, ctx),
    ownership: { directRoutingNetwork: NETWORK },
    backendType: 'vxlan',
  },
  {
    name: 'vxlan',
    rules: (ctx) => vxlanPeerRules(own, { vni: 1, directRouting: false }, ctx),
    whole: (peers, ctx) => vxlanDesired(own, peers, { vni: 1, directRouting: false }, ctx),
    ownership: { directRoutingNetwork: null },
    backendType: 'vxlan',
  },
  {
    name: 'host-gw',
    rules: (ctx) => hostGwPeerRules(ctx),
    whole: (peers, ctx) => hostGwDesired(own, peers, ctx),
    ownership: { directRoutingNetwork: NETWORK },
    backendType: 'host-gw',
  },
];

/** A random lease for `key` (10.5.<i>.0-24): mostly good, sometimes conflicting or hostile. */
function randomLease(rand: () => number, key: string, backendType: string): Lease {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const i = Number(key.split('.')[2]);
  const r = rand();
  // The subnet: its own (the key's), another key's (a conflict), a wrong length, outside the Network, ours.
  const subnet = r < 0.8 ? `10.5.${i}.0/24` : r < 0.9 ? `10.5.${1 + Math.floor(rand() * 12)}.0/24` : r < 0.94 ? `10.5.${i}.0/25` : r < 0.97 ? `11.5.${i}.0/24` : '10.5.0.0/24';
  const publicIp = rand() < 0.93 ? `172.16.0.${1 + Math.floor(rand() * 30)}` : pick(['192.168.50.1', '192.168.50.9', '10.5.3.3', '127.0.0.1']);
  const mac = rand() < 0.9 ? `0a:00:00:00:00:${(1 + Math.floor(rand() * 20)).toString(16).padStart(2, '0')}` : pick(['02:00:00:00:00:01', 'FF:FF:FF:FF:FF:FF', '0A:00:00:00:00:03']);
  const type = rand() < 0.92 ? backendType : pick(['udp', 'vxlan', 'host-gw']);
  const data = type === 'host-gw' ? undefined : rand() < 0.95 ? { VNI: rand() < 0.95 ? 1 : 2, VtepMAC: mac } : { VtepMAC: 'nonsense' };
  return lease(key, subnet, publicIp, type, data);
}

/**
 * Run `steps` random steps of events through the engine and PendingDelta into a model kernel;
 * after every reconcile, check the kernel against the whole recompute. `corrupt` alters the
 * delta path's changes (the negative control: the check must then fail).
 */
function runSequence(s: Scenario, seed: number, steps: number, corrupt?: (changes: Change[]) => Change[]): { fullPasses: number; deltas: number } {
  const rand = prng(seed);
  const keys = Array.from({ length: 24 }, (_, i) => `10.5.${i + 1}.0-24`);
  const onLink = new Set(Array.from({ length: 30 }, (_, i) => `172.16.0.${i + 1}`).filter((_, i) => i % 2 === 0));
  const ctx: DesiredContext = { ...ctxBase, onLinkPublicIPs: onLink };
  const peers = new Map<string, Lease>();
  for (const k of keys) if (rand() < 0.5) peers.set(k, randomLease(rand, k, s.backendType));
  // A route weft did not create holds one peer's slot (out of another interface); another is a
  // leftover DirectRouting route of ours (boot, via the underlay: weft's to replace).
  const foreign: RouteEntry[] = [
    { dst: net('10.5.7.0/24'), gateway: '192.168.60.254', oif: 9, onlink: false, table: MAIN_TABLE, priority: 0, protocol: 4, type: RTN_UNICAST },
    { dst: net('10.5.9.0/24'), gateway: '192.168.50.253', oif: UL, onlink: false, table: MAIN_TABLE, priority: 0, protocol: 3, type: RTN_UNICAST },
  ];
  // What the reconciler keeps from its last full run: the routes it does not own.
  const foreignBySlot = routesBySlot(foreign.filter((r) => !ownsRoute(r, { overlayIndex: OV, underlayIndex: UL }, s.ownership)));
  const kernel = new ModelKernel(foreign);
  const engine = new IncrementalDesired(s.rules(ctx), own, ctx, peers.values());
  // The start: a full run from what the kernel holds.
  kernel.apply(diffState(engine.state, kernel.actual(engine.state.addresses), s.ownership));
  let pending: PendingDelta | null = new PendingDelta();
  let deltas = 0;
  for (let step = 0; step < steps; step++) {
    const burst = rand() < 0.1 ? 2 + Math.floor(rand() * 15) : 1;
    const edits: PeerEdit[] = [];
    for (let b = 0; b < burst; b++) {
      const key = keys[Math.floor(rand() * keys.length)]!;
      if (rand() < 0.3) peers.delete(key);
      else peers.set(key, randomLease(rand, key, s.backendType));
      edits.push({ key, lease: peers.get(key) ?? null });
    }
    // The caller passes each key's latest lease for every mention (weftd dedups by key).
    const latest = edits.map((e) => ({ key: e.key, lease: peers.get(e.key) ?? null }));
    const { state, delta } = engine.apply(latest);
    if (delta !== null && pending !== null) {
      pending.add(delta);
      deltas++;
    } else {
      pending = null;
    }
    const where = `${s.name}, seed ${seed}, step ${step}`;
    assert.deepEqual(normal(state), normal(s.whole([...peers.values()], ctx)), `engine state differs from the whole recompute (${where})`);
    if (rand() < 0.6) continue; // events coalesce until the reconciler's next run
    const actual = kernel.actual(state.addresses);
    let changes = pending !== null
      ? pending.changes(OV, UL, foreignBySlot)
      : diffState(state, { ...actual }, s.ownership); // a state without delta: the whole-state path
    if (corrupt && pending !== null) changes = corrupt(changes);
    kernel.apply(changes);
    pending = new PendingDelta();
    const left = diffState(s.whole([...peers.values()], ctx), kernel.actual(state.addresses), s.ownership);
    assert.deepEqual(left, [], `kernel after the delta path differs from the whole recompute (${where})`);
  }
  return { fullPasses: engine.stats.fullPasses, deltas };
}

describe('IncrementalDesired + PendingDelta against the whole recompute (property, seeded)', () => {
  for (const s of scenarios) {
    it(`${s.name}: random event sequences leave the kernel exactly as a full recompute`, () => {
      let fullPasses = 0;
      let deltas = 0;
      for (let seed = 1; seed <= 40; seed++) {
        const r = runSequence(s, seed, 150);
        fullPasses += r.fullPasses;
        deltas += r.deltas;
      }
      // Both paths were exercised: conflicts forced full passes, ordinary events gave deltas.
      assert.ok(fullPasses > 40, `conflicts exercised (${fullPasses} full passes)`);
      assert.ok(deltas > 1000, `deltas exercised (${deltas})`);
    });
  }

  it('fails when the delta path drops a change (the check is not vacuous)', () => {
    const dropRemovals = (changes: Change[]): Change[] => changes.filter((c) => c.op !== 'remove');
    assert.throws(() => {
      for (let seed = 1; seed <= 10; seed++) runSequence(scenarios[1]!, seed, 150, dropRemovals);
    }, /differs from the whole recompute/);
    const stalePeer = (changes: Change[]): Change[] => changes.map((c) => (c.kind === 'neighbour' && c.op !== 'remove' ? { ...c, mac: '0a:00:00:00:00:ee' } : c));
    assert.throws(() => {
      for (let seed = 1; seed <= 10; seed++) runSequence(scenarios[1]!, seed, 150, stalePeer);
    }, /differs from the whole recompute/);
  });
});

describe('a join costs the same with 10 or 1000 peers (O(change))', () => {
  const peerN = (n: number): Lease => lease(`10.${1 + (n >> 8)}.${n & 255}.0-24`, `10.${1 + (n >> 8)}.${n & 255}.0/24`, `172.16.${n >> 8}.${(n & 255) || 1}`,
    'vxlan', { VNI: 1, VtepMAC: `0a:00:00:00:${(n >> 8).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}` });
  const ownFar = lease('10.200.0.0-24', '10.200.0.0/24', '192.168.50.1', 'vxlan', { VNI: 1, VtepMAC: '02:00:00:00:00:01' });

  for (const n of [10, 1000]) {
    it(`${n} peers: one lease judged, one peer's objects in the delta, three kernel changes`, () => {
      const ctx: DesiredContext = { ...ctxBase, onLinkPublicIPs: new Set() };
      const peers = Array.from({ length: n }, (_, i) => peerN(i));
      const engine = new IncrementalDesired(vxlanPeerRules(ownFar, { vni: 1, directRouting: false }, ctx), ownFar, ctx, peers);
      assert.equal(engine.stats.judged, n);
      const judged0 = engine.stats.judged;
      const passes0 = engine.stats.fullPasses;
      const joiner = peerN(n);
      const { delta } = engine.apply([{ key: joiner.key, lease: joiner }]);
      assert.equal(engine.stats.judged - judged0, 1, 'one lease judged');
      assert.equal(engine.stats.fullPasses, passes0, 'no full pass');
      assert.ok(delta !== null);
      assert.deepEqual([delta.add.neighbours.length, delta.add.fdb.length, delta.add.routes.length], [1, 1, 1]);
      assert.deepEqual([delta.remove.neighbours.length, delta.remove.fdb.length, delta.remove.routes.length], [0, 0, 0]);
      const pending = new PendingDelta();
      pending.add(delta);
      const changes = pending.changes(OV, UL, new Map());
      assert.deepEqual(changes.map((c) => `${c.op} ${c.kind}`), ['add neighbour', 'add fdb', 'add route']);
      // And a departure: one judged (none: a removal judges nothing), three removals.
      const leaving = peers[n >> 1]!;
      const judged1 = engine.stats.judged;
      const gone = engine.apply([{ key: leaving.key, lease: null }]);
      assert.equal(engine.stats.judged, judged1);
      const p2 = new PendingDelta();
      p2.add(gone.delta!);
      assert.deepEqual(p2.changes(OV, UL, new Map()).map((c) => `${c.op} ${c.kind}`), ['remove route', 'remove fdb', 'remove neighbour']);
    });
  }

  it('a burst of N joins folded into one step costs O(N): N judged, 3N changes', () => {
    const ctx: DesiredContext = { ...ctxBase, onLinkPublicIPs: new Set() };
    const engine = new IncrementalDesired(vxlanPeerRules(ownFar, { vni: 1, directRouting: false }, ctx), ownFar, ctx, []);
    const pending = new PendingDelta();
    for (let i = 0; i < 500; i++) {
      const l = peerN(i);
      pending.add(engine.apply([{ key: l.key, lease: l }]).delta!);
    }
    assert.equal(engine.stats.judged, 500);
    assert.equal(engine.stats.fullPasses, 1); // the construction's
    assert.equal(pending.changes(OV, UL, new Map()).length, 1500);
  });

  it('a route slot held by a foreign route is reported as a conflict, never added or removed', () => {
    const ctx: DesiredContext = { ...ctxBase, onLinkPublicIPs: new Set() };
    const engine = new IncrementalDesired(vxlanPeerRules(ownFar, { vni: 1, directRouting: false }, ctx), ownFar, ctx, []);
    const l = peerN(7);
    const foreign: RouteEntry = { dst: l.subnet, gateway: '192.168.50.254', oif: UL, onlink: false, table: MAIN_TABLE, priority: routePriority(l.subnet), protocol: 4, type: RTN_UNICAST };
    const pending = new PendingDelta();
    pending.add(engine.apply([{ key: l.key, lease: l }]).delta!);
    const conflicts: { want: Change }[] = [];
    const changes = pending.changes(OV, UL, routesBySlot([foreign]), conflicts as never);
    assert.deepEqual(changes.map((c) => c.kind), ['neighbour', 'fdb']);
    assert.equal(conflicts.length, 1);
    const p2 = new PendingDelta();
    p2.add(engine.apply([{ key: l.key, lease: null }]).delta!);
    assert.deepEqual(p2.changes(OV, UL, routesBySlot([foreign])).map((c) => c.kind), ['fdb', 'neighbour']);
  });
});
