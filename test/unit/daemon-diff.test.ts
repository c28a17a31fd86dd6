/**
 * daemon/diff.ts, the pure half of the reconciler: the one object-key format and the three uses
 * that must agree (diff slots, change ids for repair accounting, echo keys of notifications),
 * impliedState as diffState's fixed point, and phases.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DesiredState } from '../../src/backend/backend';
import {
  changeEchoKey, changeId, describeChange, desiredIds, diffState, eventEchoKey, impliedState, objectKey, phases, routePriority,
  type ActualState, type Change,
} from '../../src/daemon/diff';
import { parseCidr, parseIPv4 } from '../../src/ip';

const OV = 9;
const UL = 3;
const net = (t: string) => parseCidr(t)!;
const desired: DesiredState = {
  addresses: [{ ip: parseIPv4('10.5.1.0')!, prefixLen: 32 }],
  neighbours: [{ ip: '10.5.2.0', mac: '02:00:00:00:00:0A' }],
  fdb: [{ mac: '02:00:00:00:00:0A', dst: '10.250.0.2' }],
  routes: [
    { dst: net('10.5.2.0/24'), gateway: '10.5.2.0', onlink: true, via: 'overlay' },
    { dst: net('10.5.3.0/24'), gateway: '10.250.0.3', onlink: false, via: 'underlay' },
    { dst: net('fd00:5:2::/64'), gateway: 'fd00:5:2::', onlink: true },
  ],
};
const empty: ActualState = { overlayIndex: OV, underlayIndex: UL, addresses: [], neighbours: [], fdb: [], routes: [] };

describe('objectKey', () => {
  it('writes only the fields given: slot, slot and value, device and value', () => {
    assert.equal(objectKey({ kind: 'neighbour', ip: '10.5.2.0' }), 'neighbour 10.5.2.0');
    assert.equal(objectKey({ kind: 'neighbour', ip: '10.5.2.0', mac: 'aa' }), 'neighbour 10.5.2.0 aa');
    assert.equal(objectKey({ kind: 'neighbour', ifindex: 9, ip: '10.5.2.0', mac: 'aa' }), 'neighbour 9 10.5.2.0 aa');
    assert.equal(objectKey({ kind: 'route', dst: net('10.5.2.0/24'), priority: 0 }), 'route 10.5.2.0/24 0');
    assert.equal(objectKey({ kind: 'route', oif: 9, dst: net('10.5.2.0/24'), gateway: null }), 'route 9 10.5.2.0/24 ');
  });

  it('tells apart what the kernel tells apart: another metric, another gateway, onlink', () => {
    const base = { kind: 'route' as const, dst: net('10.5.2.0/24'), priority: 0, via: 'overlay', gateway: '10.5.2.0', onlink: true };
    const keys = new Set([
      objectKey(base), objectKey({ ...base, priority: 1024 }), objectKey({ ...base, gateway: '10.5.9.0' }), objectKey({ ...base, onlink: false }),
    ]);
    assert.equal(keys.size, 4);
  });
});

describe('changeId and desiredIds agree', () => {
  it('every change that builds a desired state from nothing has an id desiredIds knows, and no other', () => {
    const changes = diffState(desired, empty);
    assert.deepEqual(new Set(changes.map(changeId)), desiredIds(desired));
  });

  it('a removal of an object that is no longer desired has an id desiredIds does not know (repair accounting)', () => {
    const removed = diffState({ ...desired, neighbours: [] }, impliedState(desired, OV, UL)).filter((c) => c.op === 'remove');
    assert.deepEqual(removed.map(describeChange), ['remove neighbour 10.5.2.0 lladdr 02:00:00:00:00:0a']);
    assert.equal(desiredIds({ ...desired, neighbours: [] }).has(changeId(removed[0]!)), false);
    assert.equal(desiredIds(desired).has(changeId(removed[0]!)), true);
  });
});

describe('echo keys', () => {
  it("the notification an add causes has the add's echo key (address, neighbour, FDB, route)", () => {
    const changes = diffState(desired, empty);
    const key = (c: Change) => changeEchoKey(c, OV);
    const events = [
      eventEchoKey({ kind: 'address', removed: false, ifindex: OV, ip: '10.5.1.0', prefixLen: 32 }),
      eventEchoKey({ kind: 'neighbour', removed: false, ifindex: OV, ip: '10.5.2.0', mac: '02:00:00:00:00:0a', permanent: true }),
      eventEchoKey({ kind: 'fdb', removed: false, ifindex: OV, mac: '02:00:00:00:00:0a', dst: '10.250.0.2', permanent: true }),
      eventEchoKey({ kind: 'route', removed: false, table: 254, oif: OV, dst: net('10.5.2.0/24'), gateway: '10.5.2.0' }),
      eventEchoKey({ kind: 'route', removed: false, table: 254, oif: UL, dst: net('10.5.3.0/24'), gateway: '10.250.0.3' }),
      eventEchoKey({ kind: 'route', removed: false, table: 254, oif: OV, dst: net('fd00:5:2::/64'), gateway: 'fd00:5:2::' }),
    ];
    assert.deepEqual(new Set(events), new Set(changes.map(key)));
  });

  it('a notification that cannot be ours has no key; one with another MAC has another key', () => {
    assert.equal(eventEchoKey({ kind: 'neighbour', removed: false, ifindex: OV, ip: '10.5.2.0', mac: 'aa', permanent: false }), null);
    assert.equal(eventEchoKey({ kind: 'route', removed: false, table: 255, oif: OV, dst: net('10.5.2.0/24') }), null);
    const ours = changeEchoKey({ op: 'add', kind: 'neighbour', ip: '10.5.2.0', mac: '02:00:00:00:00:0a' }, OV);
    assert.notEqual(eventEchoKey({ kind: 'neighbour', removed: false, ifindex: OV, ip: '10.5.2.0', mac: '02:00:00:00:00:0b', permanent: true }), ours);
  });
});

describe('impliedState', () => {
  it('is what diffState takes for converged (no change), for both families and both devices', () => {
    assert.deepEqual(diffState(desired, impliedState(desired, OV, UL), { directRoutingNetwork: net('10.5.0.0/16') }), []);
  });

  it('gives IPv6 routes the metric the kernel stores them at (1024), IPv4 routes 0', () => {
    const routes = impliedState(desired, OV, UL).routes;
    assert.deepEqual(routes.map((r) => [r.priority, r.oif]), [[0, OV], [0, UL], [1024, OV]]);
    assert.equal(routePriority(net('fd00::/64')), 1024);
  });
});

describe('phases', () => {
  it('splits adds from removals and kinds from each other, in order', () => {
    const changes = diffState(
      { ...desired, neighbours: [{ ip: '10.5.4.0', mac: '02:00:00:00:00:04' }] },
      { ...impliedState(desired, OV, UL), addresses: [] },
    );
    assert.deepEqual(phases(changes).map((p) => p.map(describeChange)), [
      ['add address 10.5.1.0/32'],
      ['add neighbour 10.5.4.0 lladdr 02:00:00:00:00:04'],
      ['remove neighbour 10.5.2.0 lladdr 02:00:00:00:00:0a'],
    ]);
    assert.deepEqual(phases([]), []);
  });
});
