/**
 * vxlan's IPv6 device (flannel-v6.<VNI>): what it wants in the kernel from the leases' IPv6 half,
 * as flannel's AddV6ARP / AddV6FDB / v6VxlanRoute do, and the device parameters.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Underlay } from '../../src/backend/backend';
import { vxlanDesired } from '../../src/backend/vxlan/desired';
import { VxlanBackend, type VxlanNetlink } from '../../src/backend/vxlan/vxlan';
import { parseIPv6Cidr } from '../../src/ip';
import { parseSubnetKey } from '../../src/lease/codec';
import type { Lease } from '../../src/lease/types';
import type { LinkInfo, VxlanSpec } from '../../src/netlink/types';

function lease(key: string, pub: string, pub6: string | null, mac4: string | null, mac6: string | null): Lease {
  const k = parseSubnetKey(key)!;
  return {
    key, subnet: k.subnet, ipv6Subnet: k.ipv6Subnet,
    attrs: {
      PublicIP: pub, PublicIPv6: pub6, BackendType: 'vxlan',
      BackendData: mac4 === null ? undefined : { VNI: 1, VtepMAC: mac4 },
      ...(mac6 === null ? {} : { BackendV6Data: { VNI: 1, VtepMAC: mac6 } }),
    },
    expiration: null, etcdLeaseId: '7', modRevision: '1',
  };
}

const own = lease('10.5.1.0-24&fc00:0:0:1::-64', '10.250.0.1', 'fd00::1', '02:00:00:00:00:01', '02:00:00:00:06:01');
const peer = lease('10.5.2.0-24&fc00:0:0:2::-64', '10.250.0.2', 'fd00::2', '02:00:00:00:00:02', '02:00:00:00:06:02');
const v6only = lease('0.0.0.0-0&fc00:0:0:3::-64', '0.0.0.0', 'fd00::3', null, '02:00:00:00:06:03');
const ctx6 = { network: parseIPv6Cidr('fc00::/48')!, subnetLen: 64 };

describe('vxlanDesired, IPv6 half', () => {
  it('wants <own v6 subnet>::/128, NDP neighbour, FDB to PublicIPv6 and an onlink route per peer', () => {
    const d = vxlanDesired(own, [peer, v6only], { vni: 1, directRouting: false, family: 6 }, ctx6);
    assert.deepEqual(d.addresses, [{ ip: 'fc00:0:0:1::', prefixLen: 128 }]);
    // In key order: the IPv6-only lease's key starts with 0.0.0.0-0.
    assert.deepEqual(d.neighbours, [
      { ip: 'fc00:0:0:3::', mac: '02:00:00:00:06:03' },
      { ip: 'fc00:0:0:2::', mac: '02:00:00:00:06:02' },
    ]);
    assert.deepEqual(d.fdb, [{ mac: '02:00:00:00:06:03', dst: 'fd00::3' }, { mac: '02:00:00:00:06:02', dst: 'fd00::2' }]);
    assert.deepEqual(d.routes[1], { dst: { ip: 'fc00:0:0:2::', prefixLen: 64 }, gateway: 'fc00:0:0:2::', onlink: true, via: 'overlay' });
    assert.deepEqual(d.skipped, []);
  });

  it('skips a peer without an IPv6 half or without BackendV6Data, naming why', () => {
    const v4peer = lease('10.5.4.0-24', '10.250.0.4', null, '02:00:00:00:00:04', null);
    const noData = lease('10.5.5.0-24&fc00:0:0:5::-64', '10.250.0.5', 'fd00::5', '02:00:00:00:00:05', null);
    const d = vxlanDesired(own, [v4peer, noData], { vni: 1, directRouting: false, family: 6 }, ctx6);
    const why = new Map((d.skipped ?? []).map((s) => [s.key, s.reason]));
    assert.equal(why.get('10.5.4.0-24'), 'lease has no IPv6 subnet');
    assert.match(why.get('10.5.5.0-24&fc00:0:0:5::-64') ?? '', /^BackendV6Data: /);
    assert.equal(d.routes.length, 0);
  });

  it('refuses a PublicIPv6 that is ours, loopback or multicast', () => {
    const mine = lease('10.5.6.0-24&fc00:0:0:6::-64', '10.250.0.6', 'fd00::1', null, '02:00:00:00:06:06');
    const lo = lease('10.5.7.0-24&fc00:0:0:7::-64', '10.250.0.7', '::1', null, '02:00:00:00:06:07');
    const mc = lease('10.5.8.0-24&fc00:0:0:8::-64', '10.250.0.8', 'ff02::1', null, '02:00:00:00:06:08');
    const d = vxlanDesired(own, [mine, lo, mc], { vni: 1, directRouting: false, family: 6 }, ctx6);
    assert.deepEqual((d.skipped ?? []).map((s) => s.reason), [
      'PublicIPv6 fd00::1 is ours', 'PublicIPv6 ::1 is the loopback address', 'PublicIPv6 ff02::1 is a multicast address',
    ]);
  });

  it('with DirectRouting routes an on-link peer via its PublicIPv6 on the underlay', () => {
    const d = vxlanDesired(own, [peer], { vni: 1, directRouting: true, family: 6 }, { ...ctx6, onLinkPublicIPs: new Set(['fd00::2']) });
    assert.deepEqual(d.routes, [{ dst: { ip: 'fc00:0:0:2::', prefixLen: 64 }, gateway: 'fd00::2', onlink: false, via: 'underlay' }]);
    assert.deepEqual(d.neighbours, []);
  });

  it('leaves the IPv4 device unchanged by an IPv6-only peer', () => {
    const d = vxlanDesired(own, [v6only], { vni: 1, directRouting: false }, { network: { ip: 0x0a050000, prefixLen: 16 }, subnetLen: 24 });
    assert.deepEqual(d.routes, []);
    assert.equal(d.skipped?.length, 1);
  });
});

describe('VxlanBackend, family 6', () => {
  it('creates flannel-v6.<VNI> on the interface\'s IPv6 address with MTU underlay - 70', async () => {
    let created: VxlanSpec | null = null;
    const nl: VxlanNetlink = {
      getLink: async () => null,
      createVxlan: async (spec) => {
        created = spec;
        return { index: 9, name: spec.name, up: false, mtu: spec.mtu, mac: spec.mac, kind: 'vxlan', vxlan: null } satisfies LinkInfo;
      },
      setLinkUp: async () => {}, setLinkDown: async () => {}, setLinkMtu: async () => {}, setLinkMac: async () => {},
      deleteLink: async () => {}, isOnLink: async () => false,
    };
    const be = new VxlanBackend({ nl, family: 6, config: { vni: 4, port: 0, gbp: false, learning: false, directRouting: false, mtu: null } });
    const underlay: Underlay = { ifName: 'eth0', ifIndex: 2, ipv4: '10.0.0.5', ipv6: 'fd00::99', ifaceIPv6: 'fd00::5', mtu: 1500 };
    const setup = await be.ensureDevice(underlay);
    assert.equal(be.deviceName, 'flannel-v6.4');
    assert.equal(created!.localIP, 'fd00::5');
    assert.equal(created!.mtu, 1430);
    assert.equal(setup.mtu, 1430);
    await assert.rejects(
      new VxlanBackend({ nl, family: 6, config: { vni: 4, port: 0, gbp: false, learning: false, directRouting: false, mtu: null } })
        .ensureDevice({ ifName: 'eth0', ifIndex: 2, ipv4: '10.0.0.5', mtu: 1500 }),
      /interface eth0 has no IPv6 address/,
    );
  });
});

describe('ip6tables rules for the IPv6Network', () => {
  it('are flannel\'s masquerade and forward rules with IPv6 networks and ff00::/8 as the multicast exception', async () => {
    const { wantedRules } = await import('../../src/iptables/rules');
    const r = wantedRules({
      network: parseIPv6Cidr('fd00:5::/48')!, subnet: parseIPv6Cidr('fd00:5:0:22::/64')!, ipMasq: true, forwardRules: true, randomFully: true,
    });
    const masq = r.chains.find((c) => c.table === 'nat')!.rules;
    assert.ok(masq.includes('-A WEFT-POSTRTG -s fd00:5:0:22::/64 -d fd00:5::/48 -m comment --comment "weft masq" -j RETURN'), masq.join('\n'));
    assert.ok(masq.includes('-A WEFT-POSTRTG -s fd00:5::/48 ! -d ff00::/8 -m comment --comment "weft masq" -j MASQUERADE --random-fully'), masq.join('\n'));
    assert.deepEqual(r.chains.find((c) => c.table === 'filter')!.rules, [
      '-A WEFT-FWD -s fd00:5::/48 -m comment --comment "weft forward" -j ACCEPT',
      '-A WEFT-FWD -d fd00:5::/48 -m comment --comment "weft forward" -j ACCEPT',
    ]);
  });
});
