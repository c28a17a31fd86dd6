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
});
