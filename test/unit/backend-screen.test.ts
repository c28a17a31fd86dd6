import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { screenPeer, screenPeers } from '../../src/backend/screen';
import { udpDesired } from '../../src/backend/udp/desired';
import { vxlanDesired } from '../../src/backend/vxlan/desired';
import { decodeVxlanBackendData, decodeVxlanLeaseData } from '../../src/lease/codec';
import { parseIPv4Cidr } from '../../src/ip';
import type { Lease } from '../../src/lease/types';

function lease(subnet: string, publicIp: string, mac: string, backendType = 'vxlan'): Lease {
  return {
    key: subnet.replace('/', '-'),
    subnet: parseIPv4Cidr(subnet)!,
    ipv6Subnet: null,
    attrs: { PublicIP: publicIp, PublicIPv6: null, BackendType: backendType, BackendData: backendType === 'vxlan' ? { VNI: 1, VtepMAC: mac } : undefined },
    expiration: null,
    etcdLeaseId: '7',
    modRevision: '1',
  };
}
const net = (t: string) => parseIPv4Cidr(t)!;

// Underlay 192.168.50.0/24 (our PublicIP .1), etcd at 10.249.0.5 (another site, reached through
// the underlay's gateway); a careless or hostile config makes the Network 10.0.0.0/8, which
// covers the etcd address.
const ctx = {
  network: net('10.0.0.0/8'),
  subnetLen: 24,
  underlayNetworks: [net('192.168.50.0/24')],
  protectedIPs: ['10.249.0.5'],
};
const own = lease('10.5.1.0/24', '192.168.50.1', '02:00:00:00:00:01');
const good = lease('10.5.2.0/24', '192.168.50.2', '02:00:00:00:00:02');
const hostile = [
  lease('10.249.0.0/24', '192.168.50.10', '02:00:00:00:00:10'), // covers the etcd endpoint
  lease('10.7.0.0/24', '10.7.0.5', '02:00:00:00:00:11'),        // PublicIP inside the Network
];
// Without a Network (or with one that overlaps the underlay, which weftd refuses at start-up), the
// underlay's own network is refused by the underlay check.
const onUnderlay = lease('192.168.50.0/24', '192.168.50.9', '02:00:00:00:00:09');

describe('screenPeer: one screen for every backend', () => {
  it('never lets a lease route the underlay network, an etcd endpoint or a PublicIP into the overlay (vxlan)', () => {
    const d = vxlanDesired(own, [good, ...hostile], { vni: 1, directRouting: false }, ctx);
    assert.deepEqual(d.routes.map((r) => r.dst), [net('10.5.2.0/24')]);
    assert.deepEqual(d.skipped?.map((s) => s.key), ['10.249.0.0-24', '10.7.0.0-24']);
    assert.match(d.skipped![0]!.reason, /covers 10\.249\.0\.5, an etcd endpoint/);
    assert.match(d.skipped![1]!.reason, /PublicIP 10\.7\.0\.5 lies inside the Network/);
    const { network: _n, ...noNetwork } = ctx;
    const u = vxlanDesired(own, [good, onUnderlay], { vni: 1, directRouting: false }, noNetwork);
    assert.deepEqual(u.routes.map((r) => r.dst), [net('10.5.2.0/24')]);
    assert.match(u.skipped![0]!.reason, /overlaps the underlay network 192\.168\.50\.0\/24/);
  });

  it('applies the same screen in the legacy udp backend', () => {
    const udp = (l: Lease): Lease => ({ ...l, attrs: { ...l.attrs, BackendType: '', BackendData: undefined } });
    const d = udpDesired(udp(own), [udp(good), ...hostile.map(udp)], { network: ctx.network }, ctx);
    assert.deepEqual(d.pump?.map((p) => p.kind === 'subnet' && p.dst), ['192.168.50.2']);
    assert.equal(d.skipped?.length, 2);
  });

  it('refuses a subnet covering another host\'s PublicIP, and a fake PublicIP cannot get a good peer skipped', () => {
    const noNet = { subnetLen: 24 };
    // Without a Network: 172.16.0.0/24 would capture another host's tunnel endpoint 172.16.0.2.
    const why = screenPeer(lease('172.16.0.0/24', '192.168.1.1', '02:00:00:00:00:21'), {
      own, ctx: noNet, peerPublicIPs: new Set(['172.16.0.2']),
    });
    assert.match(why ?? '', /covers 172\.16\.0\.2, another host's PublicIP/);
    // With a Network: a lease claiming PublicIP 10.5.2.7 (inside good's subnet) is refused itself.
    const liar = lease('10.5.9.0/24', '10.5.2.7', '02:00:00:00:00:22');
    const s = screenPeers(own, [good, liar], ctx);
    assert.deepEqual(s.accepted.map((l) => l.key), ['10.5.2.0-24']);
    assert.deepEqual(s.skipped.map((l) => l.key), ['10.5.9.0-24']);
  });

  it('refuses a subnet covering our own PublicIP or interface address', () => {
    const why = screenPeer(lease('192.168.50.0/24', '192.168.1.1', '02:00:00:00:00:21'), { own, ctx: {} });
    assert.equal(why, 'subnet covers our own address 192.168.50.1');
    const natWhy = screenPeer(lease('192.168.9.0/24', '192.168.50.3', '02:00:00:00:00:23'), { own, ctx: {}, ownIfaceIP: '192.168.9.4' });
    assert.equal(natWhy, 'subnet covers our own address 192.168.9.4');
  });

  it('passes a good peer', () => {
    assert.equal(screenPeer(good, { own, ctx }), null);
  });
});

describe('decodeVxlanBackendData: the one vxlan BackendData decoder (flannel\'s rules)', () => {
  it('takes VNI null as absent, like Go\'s encoding/json, and never trims the MAC', () => {
    assert.deepEqual(decodeVxlanBackendData({ VNI: null, VtepMAC: 'AA:bb:cc:dd:ee:ff' }), { ok: true, value: { VtepMAC: 'aa:bb:cc:dd:ee:ff' } });
    assert.equal(decodeVxlanLeaseData({ VNI: null, VtepMAC: 'aa:bb:cc:dd:ee:ff' })?.VtepMAC, 'aa:bb:cc:dd:ee:ff');
    assert.equal(decodeVxlanBackendData({ VNI: 1, VtepMAC: ' aa:bb:cc:dd:ee:ff ' }).ok, false);
    // vxlanDesired agrees with the codec: a MAC with spaces is not a peer.
    const spaced = { ...good, attrs: { ...good.attrs, BackendData: { VNI: 1, VtepMAC: ' 02:00:00:00:00:02' } } };
    assert.equal(vxlanDesired(own, [spaced], { vni: 1, directRouting: false }).routes.length, 0);
  });

  it('keeps a reason short whatever the size of the value', () => {
    const d = decodeVxlanBackendData({ VtepMAC: 'x'.repeat(1_000_000) });
    assert.equal(d.ok, false);
    assert.ok(!d.ok && d.reason.length < 200, 'reason is clipped');
  });
});
