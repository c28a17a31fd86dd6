import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DepartedPeers } from '../../src/daemon/departed';
import { parseIPv4Cidr } from '../../src/ip';
import type { Lease } from '../../src/lease/types';

function lease(subnet: string, publicIp: string): Lease {
  return {
    key: subnet.replace('/', '-'),
    subnet: parseIPv4Cidr(subnet)!,
    ipv6Subnet: null,
    attrs: { PublicIP: publicIp, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' } },
    expiration: null,
    etcdLeaseId: '7',
    modRevision: '1',
  };
}

const a = lease('10.5.1.0/24', '10.250.0.1');
const b = lease('10.5.2.0/24', '10.250.0.2');

describe('DepartedPeers', () => {
  it('keeps a vanished peer programmed for the grace period, then drops it', () => {
    let now = 1000;
    const d = new DepartedPeers(3000, () => now);
    d.update([a, b], [a]);
    assert.deepEqual(d.withHeld([a]).map((l) => l.key), ['10.5.1.0-24', '10.5.2.0-24']);
    assert.equal(d.nextExpiryMs(), 3000);
    now += 3000;
    assert.deepEqual(d.withHeld([a]).map((l) => l.key), ['10.5.1.0-24']);
    assert.equal(d.nextExpiryMs(), null);
  });

  it('releases the hold when the key comes back (its new value wins)', () => {
    const d = new DepartedPeers(3000, () => 0);
    d.update([a, b], [a]);
    const b2 = { ...b, attrs: { ...b.attrs, PublicIP: '10.250.0.22' } };
    d.update([a], [a, b2]);
    assert.deepEqual(d.withHeld([a, b2]), [a, b2]);
    assert.equal(d.size, 0);
  });

  it('drops a held peer at once when another lease overlaps its subnet', () => {
    const d = new DepartedPeers(3000, () => 0);
    d.update([a, b], [a]);
    const taker = { ...lease('10.5.2.0/24', '10.250.0.9'), key: '10.5.2.0-24&fc00::-64' };
    assert.deepEqual(d.withHeld([a, taker]), [a, taker]);
    assert.equal(d.size, 0);
  });

  it('holds nothing on the first snapshot or with a zero grace', () => {
    const d = new DepartedPeers(0, () => 0);
    d.update([a, b], []);
    assert.deepEqual(d.withHeld([]), []);
    const e = new DepartedPeers(3000, () => 0);
    e.update([], [a]);
    assert.equal(e.size, 0);
  });

  it('per change (added/removed/heldNow): the same holds, at O(held) per step', () => {
    let now = 0;
    const d = new DepartedPeers(3000, () => now);
    d.update([], [a, b]);
    d.removed(b);
    assert.deepEqual([...d.heldNow().keys()], ['10.5.2.0-24']);
    // Back within the grace: released, with its new value in the current set.
    const b2 = { ...b, attrs: { ...b.attrs, PublicIP: '10.250.0.22' } };
    d.added(b2);
    assert.equal(d.heldNow().size, 0);
    d.removed(b2);
    now += 3000;
    assert.equal(d.heldNow().size, 0, 'the grace ended');
    assert.equal(d.nextExpiryMs(), null);
  });

  it('per change: a current lease overlapping a held subnet drops the hold, whatever its length', () => {
    const d = new DepartedPeers(3000, () => 0);
    d.update([], [a, b]);
    d.removed(b);
    const taker = { ...lease('10.5.2.0/24', '10.250.0.9'), key: '10.5.2.0-24&fc00::-64' };
    d.added(taker);
    assert.equal(d.heldNow().size, 0);
    const e = new DepartedPeers(3000, () => 0);
    e.update([], [a, b]);
    e.removed(b);
    e.added(lease('10.5.0.0/16', '10.250.0.8'));
    assert.equal(e.heldNow().size, 0, 'a wider lease covers it');
    const f = new DepartedPeers(3000, () => 0);
    f.update([], [a, b]);
    f.removed(b);
    const narrow = lease('10.5.2.128/25', '10.250.0.7');
    f.added(narrow);
    assert.equal(f.heldNow().size, 0, 'a narrower lease inside it');
    f.removed(narrow);
    const g = new DepartedPeers(3000, () => 0);
    g.update([], [a, b]);
    g.removed(b);
    g.added(lease('10.5.3.0/25', '10.250.0.6'));
    assert.deepEqual([...g.heldNow().keys()], ['10.5.2.0-24'], 'no overlap, still held');
  });

  it('per change: each step learns only the keys whose hold began or ended (O(change), not O(held))', () => {
    let now = 0;
    const d = new DepartedPeers(3000, () => now);
    const many = Array.from({ length: 50 }, (_, i) => lease(`10.6.${i}.0/24`, `10.250.1.${i}`));
    d.update([], many);
    for (const l of many) d.removed(l);
    assert.equal(d.takeChanges().length, 50);
    d.added(many[3]!);
    assert.deepEqual(d.takeChanges(), ['10.6.3.0-24'], 'one back: one change');
    now += 1000;
    d.removed(lease('10.6.99.0/24', '10.250.1.99'));
    d.takeChanges();
    now += 2000;
    d.expire();
    assert.equal(d.takeChanges().length, 49, 'the first 49 holds ended together');
    assert.equal(d.nextExpiryMs(), 1000);
    // A snapshot whose leases overlap a held one ends that hold.
    d.update([], [lease('10.6.99.0/24', '10.250.1.98')].map((l) => ({ ...l, key: 'other' })));
    assert.equal(d.size, 0);
  });
});
