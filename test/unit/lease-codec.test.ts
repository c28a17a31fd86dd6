import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WeftError } from '../../src/errors';
import { parseIPv4 } from '../../src/ip';
import {
  configKey,
  decodeLease,
  decodeLeaseAttrs,
  decodeVxlanLeaseData,
  encodeLeaseAttrs,
  formatSubnetKey,
  fullSubnetKey,
  parseSubnetKey,
  subnetKeyOf,
} from '../../src/lease/codec';

const FLANNEL_SAMPLE = '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}';
const meta = { etcdLeaseId: '7587869531230340363', modRevision: '42' };

function assertBadData(fn: () => unknown, key: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof WeftError, `expected a WeftError, got ${String(err)}`);
    assert.equal(err.code, 'BAD_DATA');
    assert.ok(err.message.includes(key), `message names the key: ${err.message}`);
    return true;
  });
}

describe('subnet keys', () => {
  it('formats an IPv4 subnet as flannel does', () => {
    assert.equal(formatSubnetKey({ ip: parseIPv4('10.5.52.0')!, prefixLen: 24 }), '10.5.52.0-24');
  });

  it('formats a dual-stack subnet with the IPv6 part after an ampersand', () => {
    const key = formatSubnetKey({ ip: parseIPv4('10.5.52.0')!, prefixLen: 24 }, { ip: 'fc00:0:0:34::', prefixLen: 64 });
    assert.equal(key, '10.5.52.0-24&fc00:0:0:34::-64');
  });

  it('parses both forms back', () => {
    assert.deepEqual(parseSubnetKey('10.5.52.0-24'), { subnet: { ip: parseIPv4('10.5.52.0'), prefixLen: 24 }, ipv6Subnet: null });
    assert.deepEqual(parseSubnetKey('10.5.52.0-24&fc00:0:0:34::-64'), {
      subnet: { ip: parseIPv4('10.5.52.0'), prefixLen: 24 },
      ipv6Subnet: { ip: 'fc00:0:0:34::', prefixLen: 64 },
    });
  });

  it('rejects keys that are not networks', () => {
    for (const bad of ['10.5.52.1-24', '10.5.52.0-33', '10.5.52.0', 'x10.5.52.0-24', '10.5.52.0-24&fc00::1-64', '10.5.52.0-24&zz::-64', '300.1.1.0-24', '']) {
      assert.equal(parseSubnetKey(bad), null, bad);
    }
  });

  it('builds and strips the full etcd key under the prefix', () => {
    assert.equal(fullSubnetKey('/coreos.com/network', '10.5.52.0-24'), '/coreos.com/network/subnets/10.5.52.0-24');
    assert.equal(fullSubnetKey('/coreos.com/network/', '10.5.52.0-24'), '/coreos.com/network/subnets/10.5.52.0-24');
    assert.equal(configKey('/coreos.com/network'), '/coreos.com/network/config');
    assert.equal(subnetKeyOf('/coreos.com/network', '/coreos.com/network/subnets/10.5.52.0-24'), '10.5.52.0-24');
    assert.equal(subnetKeyOf('/coreos.com/network', '/coreos.com/network/config'), null);
    assert.equal(subnetKeyOf('/coreos.com/network', '/coreos.com/network/subnets/a/b'), null);
  });
});

describe('lease values', () => {
  it("round-trips flannel's sample value byte for byte", () => {
    const attrs = decodeLeaseAttrs('10.5.52.0-24', FLANNEL_SAMPLE);
    assert.equal(encodeLeaseAttrs(attrs), FLANNEL_SAMPLE);
  });

  it('encodes vxlan BackendData in Go field order whatever the caller wrote', () => {
    const text = encodeLeaseAttrs({
      PublicIP: '192.168.64.3',
      PublicIPv6: null,
      BackendType: 'vxlan',
      BackendData: { VtepMAC: 'c6:d2:32:6f:8f:44', VNI: 1 },
    });
    assert.equal(text, FLANNEL_SAMPLE);
  });

  it('decodes a full lease with its subnet, etcd lease and revision', () => {
    const lease = decodeLease('/coreos.com/network/subnets/10.5.52.0-24', FLANNEL_SAMPLE, meta);
    assert.equal(lease.key, '10.5.52.0-24');
    assert.deepEqual(lease.subnet, { ip: parseIPv4('10.5.52.0'), prefixLen: 24 });
    assert.equal(lease.ipv6Subnet, null);
    assert.equal(lease.attrs.PublicIP, '192.168.64.3');
    assert.equal(lease.attrs.BackendType, 'vxlan');
    assert.deepEqual(decodeVxlanLeaseData(lease.attrs.BackendData), { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' });
    assert.equal(lease.etcdLeaseId, '7587869531230340363');
    assert.equal(lease.modRevision, '42');
    assert.equal(lease.expiration, null);
  });

  it('treats etcd lease "0" as no lease (a reservation)', () => {
    assert.equal(decodeLease('10.5.52.0-24', FLANNEL_SAMPLE, { etcdLeaseId: '0', modRevision: '1' }).etcdLeaseId, null);
  });

  it("accepts flannel v0.12's vxlan value without VNI and keeps it that way when re-encoded", () => {
    const v012 = '{"PublicIP":"10.250.0.2","BackendType":"vxlan","BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"}}';
    const attrs = decodeLeaseAttrs('10.5.53.0-24', v012);
    assert.deepEqual(decodeVxlanLeaseData(attrs.BackendData), { VtepMAC: 'aa:bb:cc:dd:ee:ff' });
    assert.equal(attrs.PublicIPv6, null);
    assert.equal(encodeLeaseAttrs(attrs), '{"PublicIP":"10.250.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"}}');
  });

  it("accepts the udp backend's value with only a PublicIP", () => {
    const attrs = decodeLeaseAttrs('10.5.54.0-24', '{"PublicIP":"10.250.0.3"}');
    assert.deepEqual(attrs, { PublicIP: '10.250.0.3', PublicIPv6: null, BackendType: '', BackendData: undefined });
    assert.equal(encodeLeaseAttrs(attrs), '{"PublicIP":"10.250.0.3","PublicIPv6":null}');
  });

  it('keeps a dual-stack PublicIPv6 and BackendV6Data', () => {
    const text =
      '{"PublicIP":"10.250.0.1","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}';
    assert.equal(encodeLeaseAttrs(decodeLeaseAttrs('k', text)), text);
  });

  it('rejects garbage with a BAD_DATA error naming the key', () => {
    const key = '10.5.52.0-24';
    for (const garbage of [
      'not json',
      '',
      '[]',
      'null',
      '"x"',
      '{}',
      '{"PublicIP":"10.1.1"}',
      '{"PublicIP":42}',
      '{"PublicIP":"10.1.1.1","PublicIPv6":"nope"}',
      '{"PublicIP":"10.1.1.1","BackendType":7}',
      '{"PublicIP":"10.1.1.1","BackendType":"vxlan"}',
      '{"PublicIP":"10.1.1.1","BackendType":"vxlan","BackendData":{"VNI":1}}',
      '{"PublicIP":"10.1.1.1","BackendType":"vxlan","BackendData":{"VNI":-1,"VtepMAC":"c6:d2:32:6f:8f:44"}}',
      '{"PublicIP":"10.1.1.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f"}}',
    ]) {
      assertBadData(() => decodeLease(`/coreos.com/network/subnets/${key}`, garbage, meta), key);
    }
  });

  it('rejects a malformed key with a BAD_DATA error naming it', () => {
    assertBadData(() => decodeLease('/coreos.com/network/subnets/garbage', FLANNEL_SAMPLE, meta), 'garbage');
  });

  it('returns null from decodeVxlanLeaseData for anything unusable', () => {
    for (const v of [null, undefined, 1, 'x', [], {}, { VNI: 1 }, { VtepMAC: 5 }, { VNI: 1.5, VtepMAC: 'c6:d2:32:6f:8f:44' }, { VNI: 2 ** 24, VtepMAC: 'c6:d2:32:6f:8f:44' }]) {
      assert.equal(decodeVxlanLeaseData(v), null, JSON.stringify(v));
    }
    assert.deepEqual(decodeVxlanLeaseData({ VNI: 4096, VtepMAC: 'C6:D2:32:6F:8F:44' }), { VNI: 4096, VtepMAC: 'c6:d2:32:6f:8f:44' });
  });
});
