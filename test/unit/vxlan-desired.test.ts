import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeVxlanData, vxlanDesired } from '../../src/backend/vxlan/desired';
import { randomMac, incompatibility } from '../../src/backend/vxlan/vxlan';
import { parseIPv4, parseIPv4Cidr } from '../../src/ip';
import type { Lease } from '../../src/lease/types';
import { peerLease } from './helpers/leases';

const lease = (subnet: string, publicIp: string, data: unknown, backendType = 'vxlan'): Lease => peerLease(subnet, publicIp, { backendType, data });

const own = lease('10.5.1.0/24', '10.250.0.1', { VNI: 1, VtepMAC: '02:00:00:00:00:01' });
const peerB = lease('10.5.2.0/24', '10.250.0.2', { VNI: 1, VtepMAC: '0A:BB:CC:DD:EE:02' });
const peerC = lease('10.5.3.0/24', '192.168.7.3', { VNI: 1, VtepMAC: '02:00:00:00:00:03' });
const params = { vni: 1, directRouting: false };
const net = (t: string) => parseIPv4Cidr(t)!;

describe('vxlanDesired', () => {
  it('wants <own subnet>.0/32 on the device even without peers', () => {
    const d = vxlanDesired(own, [], params);
    assert.deepEqual(d.addresses, [{ ip: parseIPv4('10.5.1.0'), prefixLen: 32 }]);
    assert.deepEqual([d.neighbours, d.fdb, d.routes, d.skipped], [[], [], [], []]);
  });

  it('wants neighbour, FDB entry and onlink route per vxlan peer, MACs lower-cased', () => {
    const d = vxlanDesired(own, [peerB], params);
    assert.deepEqual(d.neighbours, [{ ip: '10.5.2.0', mac: '0a:bb:cc:dd:ee:02' }]);
    assert.deepEqual(d.fdb, [{ mac: '0a:bb:cc:dd:ee:02', dst: '10.250.0.2' }]);
    assert.deepEqual(d.routes, [{ dst: net('10.5.2.0/24'), gateway: '10.5.2.0', onlink: true, via: 'overlay' }]);
  });

  it('ignores our own lease among the peers without reporting it', () => {
    const d = vxlanDesired(own, [own, peerB], params);
    assert.equal(d.routes.length, 1);
    assert.deepEqual(d.skipped, []);
  });

  it('does not depend on the order peers are given in', () => {
    assert.deepEqual(vxlanDesired(own, [peerC, peerB], params), vxlanDesired(own, [peerB, peerC], params));
  });

  it('skips and reports peers it cannot program', () => {
    const peers = [
      lease('10.5.10.0/24', '10.250.0.10', undefined, 'udp'),
      lease('10.5.11.0/24', '10.250.0.11', { VNI: 1, VtepMAC: 'nonsense' }),
      lease('10.5.12.0/24', '10.250.0.12', null),
      lease('10.5.13.0/24', 'not-an-ip', { VNI: 1, VtepMAC: '02:00:00:00:00:13' }),
      lease('10.5.14.0/24', '10.250.0.14', { VNI: 2, VtepMAC: '02:00:00:00:00:14' }),
      lease('10.5.15.0/24', '10.250.0.1', { VNI: 1, VtepMAC: '02:00:00:00:00:15' }),
      lease('10.5.1.128/25', '10.250.0.16', { VNI: 1, VtepMAC: '02:00:00:00:00:16' }),
    ];
    const d = vxlanDesired(own, peers, params);
    assert.deepEqual([d.neighbours, d.fdb, d.routes], [[], [], []]);
    assert.deepEqual(d.skipped, [
      { key: '10.5.1.128-25', reason: 'subnet overlaps ours (10.5.1.0/24)' },
      { key: '10.5.10.0-24', reason: 'BackendType "udp" is not vxlan' },
      { key: '10.5.11.0-24', reason: 'VtepMAC "nonsense" is not a MAC address' },
      { key: '10.5.12.0-24', reason: 'BackendData null is not an object' },
      { key: '10.5.13.0-24', reason: 'PublicIP "not-an-ip" is not an IPv4 address' },
      { key: '10.5.14.0-24', reason: 'VNI 2 differs from ours (1)' },
      { key: '10.5.15.0-24', reason: 'PublicIP 10.250.0.1 is ours' },
    ]);
  });

  it('accepts flannel v0.12 leases, which carry no VNI', () => {
    const d = vxlanDesired(own, [lease('10.5.4.0/24', '10.250.0.4', { VtepMAC: '02:00:00:00:00:04' })], params);
    assert.equal(d.routes.length, 1);
  });

  it('programs only the first of two leases sharing a VtepMAC and reports the second', () => {
    const twin = lease('10.5.3.0/24', '10.250.0.3', { VNI: 1, VtepMAC: '0a:bb:cc:dd:ee:02' });
    const d = vxlanDesired(own, [peerB, twin], params);
    assert.equal(d.fdb.length, 1);
    assert.deepEqual(d.skipped, [{ key: '10.5.3.0-24', reason: "VtepMAC 0a:bb:cc:dd:ee:02 is also lease 10.5.2.0-24's" }]);
  });

  it('with DirectRouting, routes on-link peers via their PublicIP on the underlay and nothing else', () => {
    const d = vxlanDesired(own, [peerB, peerC], { vni: 1, directRouting: true }, { onLinkPublicIPs: new Set(['10.250.0.2']) });
    assert.deepEqual(d.routes, [
      { dst: net('10.5.2.0/24'), gateway: '10.250.0.2', onlink: false, via: 'underlay' },
      { dst: net('10.5.3.0/24'), gateway: '10.5.3.0', onlink: true, via: 'overlay' },
    ]);
    assert.deepEqual(d.neighbours, [{ ip: '10.5.3.0', mac: '02:00:00:00:00:03' }]);
    assert.deepEqual(d.fdb, [{ mac: '02:00:00:00:00:03', dst: '192.168.7.3' }]);
  });

  it('without DirectRouting, ignores the on-link set', () => {
    const d = vxlanDesired(own, [peerB], params, { onLinkPublicIPs: new Set(['10.250.0.2']) });
    assert.equal(d.routes[0]!.via, 'overlay');
  });
});

describe('decodeVxlanData', () => {
  it('rejects a VNI that is not a 24-bit integer', () => {
    assert.deepEqual(decodeVxlanData({ VNI: 1.5, VtepMAC: '02:00:00:00:00:01' }), { ok: false, reason: 'VNI 1.5 is not a 24-bit integer' });
    assert.equal(decodeVxlanData({ VNI: 2 ** 24, VtepMAC: '02:00:00:00:00:01' }).ok, false);
  });
});

describe('vxlanDesired with hostile or broken leases', () => {
  const ctx = { network: net('10.5.0.0/16'), subnetLen: 24 };

  it('skips, naming why, leases outside the Network, of another length, or with unusable addresses; programs the rest', () => {
    const peers = [
      peerB,
      lease('10.250.0.0/24', '10.250.0.20', { VNI: 1, VtepMAC: '02:00:00:00:00:20' }),   // the underlay
      lease('10.5.0.0/16', '10.250.0.21', { VNI: 1, VtepMAC: '02:00:00:00:00:21' }),     // covers everyone
      lease('10.5.22.0/24', '0.0.0.0', { VNI: 1, VtepMAC: '02:00:00:00:00:22' }),
      lease('10.5.23.0/24', '127.0.0.1', { VNI: 1, VtepMAC: '02:00:00:00:00:23' }),
      lease('10.5.24.0/24', '239.1.1.1', { VNI: 1, VtepMAC: '02:00:00:00:00:24' }),
      lease('10.5.25.0/24', '10.250.0.25', { VNI: 1, VtepMAC: 'ff:ff:ff:ff:ff:ff' }),
      lease('10.5.26.0/24', '10.250.0.26', { VNI: 1, VtepMAC: '02:00:00:00:00:01' }),    // our VtepMAC
      peerC,
    ];
    const d = vxlanDesired(own, peers, params, ctx);
    assert.deepEqual(d.routes.map((r) => r.gateway), ['10.5.2.0', '10.5.3.0']);
    assert.deepEqual(d.fdb.map((f) => f.dst), ['10.250.0.2', '192.168.7.3']);
    assert.deepEqual(
      (d.skipped ?? []).map((s) => `${s.key}: ${s.reason}`).sort(),
      [
        '10.250.0.0-24: subnet is outside the Network 10.5.0.0/16',
        '10.5.0.0-16: subnet length /16 is not the configured SubnetLen /24',
        '10.5.22.0-24: PublicIP 0.0.0.0 is the unspecified address',
        '10.5.23.0-24: PublicIP 127.0.0.1 is a loopback address',
        '10.5.24.0-24: PublicIP 239.1.1.1 is a multicast address',
        '10.5.25.0-24: VtepMAC ff:ff:ff:ff:ff:ff is a multicast or broadcast MAC',
        '10.5.26.0-24: VtepMAC 02:00:00:00:00:01 is our own VtepMAC',
      ],
    );
  });
});

describe('randomMac', () => {
  it('makes locally administered unicast MACs', () => {
    assert.equal(randomMac(() => Buffer.from([0xff, 1, 2, 3, 4, 5])), 'fe:01:02:03:04:05');
    assert.equal(randomMac(() => Buffer.from([0x00, 0, 0, 0, 0, 0])), '02:00:00:00:00:00');
    for (let i = 0; i < 50; i++) assert.equal(parseInt(randomMac().slice(0, 2), 16) & 3, 2);
  });
});

describe('incompatibility', () => {
  const want = { name: 'flannel.1', vni: 1, localIP: '10.250.0.1', underlayIndex: 3, port: 8472, learning: false, gbp: false, mtu: 1450 };
  const vx = { vni: 1, local: '10.250.0.1', underlayIndex: 3, port: 8472, learning: false, gbp: false };
  const link = { index: 9, name: 'flannel.1', up: true, mtu: 1400, mac: '02:00:00:00:00:01', kind: 'vxlan', vxlan: vx };

  it('accepts a device differing only in MTU or state (fixed in place)', () => {
    assert.equal(incompatibility({ ...link, up: false }, want), null);
  });

  it('names every difference of a vxlan device', () => {
    assert.equal(
      incompatibility({ ...link, vxlan: { ...vx, vni: 7, local: '10.0.0.9', port: 4789 } }, want),
      'VNI 7, want 1; local 10.0.0.9, want 10.250.0.1; dstport 4789, want 8472',
    );
  });

  it('rejects a device of another kind', () => {
    assert.equal(incompatibility({ ...link, kind: 'bridge', vxlan: null }, want), 'it is a bridge device');
  });
});
