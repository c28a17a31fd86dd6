/**
 * The native join path's configuration (src/daemon/native-join-config.ts): the template of the
 * reconciler's three writes, patched where the configuration says, must be byte for byte what
 * wire.ts encodes for the real peer — what the addon (addon/src/fastjoin.cc Apply) sends.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nativeJoinConfig, nativeJoinInputKey, nativePeerOf, type NativeJoinInput } from '../../src/daemon/native-join-config';
import { routePriority } from '../../src/daemon/diff';
import { parseIPv4, parseIPv4Cidr } from '../../src/ip';
import { parseSubnetKey } from '../../src/lease/codec';
import type { IPv4Net, Lease } from '../../src/lease/types';
import type { NativeJoinConfig } from '../../src/native';
import { ipToBuffer, macToBuffer } from '../../src/netlink/codec';
import { encodeWrites } from '../../src/netlink/wire';

const cidr = (t: string): IPv4Net => parseIPv4Cidr(t)!;

function lease(key: string, publicIp: string, data: unknown): Lease {
  const parsed = parseSubnetKey(key);
  if (parsed === null) throw new Error(`bad test key ${key}`);
  return {
    key, subnet: parsed.subnet, ipv6Subnet: null,
    attrs: { PublicIP: publicIp, PublicIPv6: null, BackendType: 'vxlan', BackendData: data },
    expiration: null, etcdLeaseId: '7', modRevision: '1',
  };
}

const INPUT: NativeJoinInput = {
  subnetsPrefix: '/coreos.com/network/subnets/',
  own: lease('10.5.1.0-24', '10.250.0.11', { VNI: 1, VtepMAC: '0e:be:00:00:00:01' }),
  network: cidr('10.5.0.0/16'),
  subnetLen: 24,
  backendData: { VNI: 1, VtepMAC: '0e:be:00:00:00:01' },
  device: { index: 7, name: 'flannel.1' },
  underlayNetworks: [cidr('10.250.0.0/24')],
  protectedIPs: ['10.250.0.2', 'fd00::2'],
};

/** What addon/src/fastjoin.cc Apply does to the template for one peer. */
function patch(cfg: NativeJoinConfig, subnet: IPv4Net, publicIp: string, mac: string, seq: number, pid: number): Buffer {
  const b = Buffer.from(cfg.template);
  for (const at of cfg.atGw) ipToBuffer(formatNet(subnet)).copy(b, at);
  for (const at of cfg.atPub) ipToBuffer(publicIp).copy(b, at);
  for (const at of cfg.atDst) ipToBuffer(formatNet(subnet)).copy(b, at);
  for (const at of cfg.atDstLen) b[at] = subnet.prefixLen;
  for (const at of cfg.atMac) macToBuffer(mac).copy(b, at);
  // The addon numbers the three requests seq, seq + 1, seq + 2 (0: leave them at the encoder's 0).
  cfg.atSeq.forEach((at, i) => b.writeUInt32LE(seq === 0 ? 0 : seq + i, at));
  for (const at of cfg.atPid) b.writeUInt32LE(pid, at);
  return b;
}

function formatNet(n: IPv4Net): string {
  return [n.ip >>> 24, (n.ip >>> 16) & 255, (n.ip >>> 8) & 255, n.ip & 255].join('.');
}

describe('native join path: configuration', () => {
  it('the patched template is byte for byte what the reconciler sends for the peer', () => {
    const cfg = nativeJoinConfig(INPUT);
    assert.ok(cfg !== null);
    assert.deepEqual([cfg.atGw.length, cfg.atPub.length, cfg.atDst.length, cfg.atMac.length, cfg.atDstLen.length, cfg.atSeq.length], [2, 1, 1, 2, 1, 3]);
    const subnet = cidr('10.5.77.0/24');
    const link = INPUT.device;
    const want = Buffer.from(encodeWrites([
      { op: 'replaceNeighbour', link, ip: '10.5.77.0', mac: '0e:be:12:34:56:01' },
      { op: 'replaceFdb', link, mac: '0e:be:12:34:56:01', dst: '10.251.3.4' },
      { op: 'addRoute', spec: { dst: subnet, gateway: '10.5.77.0', oif: 7, onlink: true, priority: routePriority(subnet) } },
    ], (i, err) => assert.fail(`write ${i}: ${err.message}`)).buffer);
    const got = patch(cfg, subnet, '10.251.3.4', '0e:be:12:34:56:01', 0, 0);
    assert.deepEqual(got, want);
    // Sequence numbers and port id go where the nlmsghdr has them, nowhere else.
    const stamped = patch(cfg, subnet, '10.251.3.4', '0e:be:12:34:56:01', 0x11223344, 0x55667788);
    const diff = [...stamped.keys()].filter((i) => stamped[i] !== got[i]);
    assert.equal(diff.length, 3 * 8, 'only seq and pid of the three requests differ');
  });

  it('tells the addon our own lease, network, underlay and the IPv4 etcd endpoints', () => {
    const cfg = nativeJoinConfig(INPUT)!;
    assert.equal(cfg.ownKey, '10.5.1.0-24');
    assert.equal(cfg.ownPublicIp, parseIPv4('10.250.0.11'));
    assert.deepEqual([cfg.networkIp, cfg.networkLen, cfg.subnetLen, cfg.vni, cfg.ifindex], [parseIPv4('10.5.0.0'), 16, 24, 1, 7]);
    assert.deepEqual(cfg.ownMac, Buffer.from('0ebe00000001', 'hex'));
    assert.deepEqual(cfg.underlay, [parseIPv4('10.250.0.0'), 24]);
    assert.deepEqual(cfg.protectedIps, [parseIPv4('10.250.0.2')]);
  });

  it('none for an own lease without an IPv4 PublicIP; a new key whenever an input moves', () => {
    assert.equal(nativeJoinConfig({ ...INPUT, own: lease('10.5.1.0-24', 'fd00::1', {}) }), null);
    const key = nativeJoinInputKey(INPUT);
    assert.equal(nativeJoinInputKey({ ...INPUT }), key);
    for (const moved of [
      { ...INPUT, device: { index: 8, name: 'flannel.1' } },
      { ...INPUT, backendData: { VNI: 1, VtepMAC: '0e:be:00:00:00:02' } },
      { ...INPUT, own: lease('10.5.2.0-24', '10.250.0.11', {}) },
      { ...INPUT, underlayNetworks: [cidr('10.251.0.0/24')] },
      { ...INPUT, protectedIPs: ['10.250.0.3'] },
    ]) assert.notEqual(nativeJoinInputKey(moved), key);
  });

  it('a known lease: subnet, PublicIP, VtepMAC (null when it is none)', () => {
    assert.deepEqual(nativePeerOf(lease('10.5.9.0-24', '10.251.0.9', { VtepMAC: '0E:BE:00:00:09:01' })),
      [parseIPv4('10.5.9.0'), 24, parseIPv4('10.251.0.9'), Buffer.from('0ebe00000901', 'hex')]);
    assert.deepEqual(nativePeerOf(lease('10.5.9.0-24', 'garbage', { VtepMAC: 'nope' })), [parseIPv4('10.5.9.0'), 24, 0, null]);
  });
});
