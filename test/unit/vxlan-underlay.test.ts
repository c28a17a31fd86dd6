import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resolveUnderlay, type UnderlayNetlink } from '../../src/netlink/underlay';
import type { AddressEntry, LinkInfo } from '../../src/netlink/types';

function link(index: number, name: string, mtu = 1500): LinkInfo {
  return { index, name, up: true, mtu, mac: null, kind: null, vxlan: null };
}

function fakeNl(defaultIndex: number | null = 2): UnderlayNetlink {
  const links = [link(1, 'lo', 65536), link(2, 'eth0'), link(3, 'eth1', 9000), link(4, 'wg0', 1420)];
  const addrs: AddressEntry[] = [
    { ifindex: 1, ip: '127.0.0.1', prefixLen: 8 },
    { ifindex: 2, ip: '169.254.3.3', prefixLen: 16 },
    { ifindex: 2, ip: '10.0.0.5', prefixLen: 24 },
    { ifindex: 3, ip: '192.168.50.7', prefixLen: 24 },
    { ifindex: 3, ip: '192.168.51.7', prefixLen: 24 },
  ];
  return {
    listLinks: async () => links,
    listAddresses: async () => addrs,
    defaultRouteInterface: async () => defaultIndex,
  };
}

const none = { iface: [], ifaceRegex: [], publicIp: null };

describe('resolveUnderlay', () => {
  it('takes the interface of the default route and its first global IPv4 address', async () => {
    assert.deepEqual(await resolveUnderlay(none, fakeNl()), { ifName: 'eth0', ifIndex: 2, ipv4: '10.0.0.5', ifaceIPv4: '10.0.0.5', mtu: 1500 });
  });

  it('takes --iface by name, trying values in order', async () => {
    const u = await resolveUnderlay({ ...none, iface: ['eth9', 'eth1'] }, fakeNl());
    assert.deepEqual([u.ifName, u.ipv4, u.mtu], ['eth1', '192.168.50.7', 9000]);
  });

  it('takes --iface by IP, keeping that very address', async () => {
    const u = await resolveUnderlay({ ...none, iface: ['192.168.51.7'] }, fakeNl());
    assert.deepEqual([u.ifName, u.ipv4], ['eth1', '192.168.51.7']);
  });

  it('matches --iface-regex against addresses before names', async () => {
    const byIp = await resolveUnderlay({ ...none, ifaceRegex: ['^192\\.168\\.51\\.'] }, fakeNl());
    assert.deepEqual([byIp.ifName, byIp.ipv4], ['eth1', '192.168.51.7']);
    const byName = await resolveUnderlay({ ...none, ifaceRegex: ['^nomatch$', '^eth1$'] }, fakeNl());
    assert.deepEqual([byName.ifName, byName.ipv4], ['eth1', '192.168.50.7']);
  });

  it('uses --public-ip as PublicIP and keeps the interface address for the VXLAN device', async () => {
    const u = await resolveUnderlay({ ...none, publicIp: '203.0.113.9' }, fakeNl());
    assert.deepEqual([u.ipv4, u.ifaceIPv4], ['203.0.113.9', '10.0.0.5']);
  });

  it('names the missing interface and lists the available ones', async () => {
    await assert.rejects(resolveUnderlay({ ...none, iface: ['eth9'] }, fakeNl()), {
      name: 'WeftError',
      code: 'INTERFACE',
      message: 'interface "eth9" not found; available: lo, eth0, eth1, wg0 (use --iface NAME or --iface IP)',
    });
    await assert.rejects(resolveUnderlay({ ...none, iface: ['10.9.9.9'] }, fakeNl()), {
      message: 'no interface has address 10.9.9.9; available: lo (127.0.0.1), eth0 (169.254.3.3 10.0.0.5), eth1 (192.168.50.7 192.168.51.7), wg0 (no IPv4) (use --iface NAME or --iface IP)',
    });
  });

  it('says when the chosen interface has no IPv4 address', async () => {
    await assert.rejects(resolveUnderlay({ ...none, iface: ['wg0'] }, fakeNl()), {
      code: 'INTERFACE',
      message: 'interface wg0 has no IPv4 address; give it one or pick another interface (use --iface NAME or --iface IP)',
    });
  });

  it('says when there is no default route to pick from', async () => {
    await assert.rejects(resolveUnderlay(none, fakeNl(null)), {
      message: 'no default route to pick the interface from; available: lo, eth0, eth1, wg0 (use --iface NAME or --iface IP)',
    });
  });

  it('rejects a malformed --public-ip and --iface-regex as configuration errors', async () => {
    await assert.rejects(resolveUnderlay({ ...none, publicIp: '10.0.0' }, fakeNl()), { code: 'CONFIG_INVALID' });
    await assert.rejects(resolveUnderlay({ ...none, ifaceRegex: ['('] }, fakeNl()), { code: 'CONFIG_INVALID' });
  });
});

describe('resolveUnderlay: IPv6', () => {
  function dualNl(): UnderlayNetlink {
    const links = [link(1, 'lo', 65536), link(2, 'eth0'), link(3, 'v6only')];
    const v4: AddressEntry[] = [{ ifindex: 2, ip: '10.0.0.5', prefixLen: 24 }];
    const v6: AddressEntry[] = [
      { ifindex: 2, ip: 'fe80::1', prefixLen: 64 },
      { ifindex: 2, ip: 'fd00::5', prefixLen: 64 },
      { ifindex: 3, ip: 'fd01::7', prefixLen: 64 },
    ];
    return {
      listLinks: async () => links,
      listAddresses: async (_i?: number, family?: 4 | 6) => (family === 6 ? v6 : v4),
      defaultRouteInterface: async (family?: 4 | 6) => (family === 6 ? 3 : 2),
      getRouteTo: async (ip: string) => (ip.includes(':') ? { oif: 3, gateway: null, prefsrc: 'fd01::7' } : { oif: 2, gateway: '10.0.0.1', prefsrc: '10.0.0.5' }),
    };
  }
  const none6 = { iface: [], ifaceRegex: [], publicIp: null, ipv6: true };

  it('takes the interface\'s global IPv6 address (never the link-local one) when IPv6 is enabled', async () => {
    const u = await resolveUnderlay(none6, dualNl());
    assert.equal(u.ifName, 'eth0');
    assert.equal(u.ipv6, 'fd00::5');
    assert.equal(u.ifaceIPv6, 'fd00::5');
  });

  it('uses --public-ipv6 in canonical form as PublicIPv6 and keeps the interface address for the device', async () => {
    const u = await resolveUnderlay({ ...none6, publicIpv6: 'fd00:0:0::99' }, dualNl());
    assert.equal(u.ipv6, 'fd00::99');
    assert.equal(u.ifaceIPv6, 'fd00::5');
    await assert.rejects(resolveUnderlay({ ...none6, publicIpv6: '10.0.0.1' }, dualNl()), /--public-ipv6 "10.0.0.1" is not an IPv6 address/);
  });

  it('picks the interface by an IPv6 --iface address and by --iface-regex on IPv6 addresses', async () => {
    assert.equal((await resolveUnderlay({ ...none6, ipv4: false, iface: ['fd01::7'] }, dualNl())).ifName, 'v6only');
    assert.equal((await resolveUnderlay({ ...none6, ipv4: false, ifaceRegex: ['^fd01:'] }, dualNl())).ifName, 'v6only');
  });

  it('on an IPv6-only network follows the IPv6 default route and writes PublicIP 0.0.0.0 without IPv4', async () => {
    const u = await resolveUnderlay({ ...none6, ipv4: false }, dualNl());
    assert.equal(u.ifName, 'v6only');
    assert.equal(u.ipv4, '0.0.0.0');
    assert.equal(u.ipv6, 'fd01::7');
  });

  it('implements --iface-can-reach for both families with the route\'s interface and source address', async () => {
    const u4 = await resolveUnderlay({ ...none6, ipv6: false, ifaceCanReach: '192.0.2.1' }, dualNl());
    assert.equal(u4.ifName, 'eth0');
    assert.equal(u4.ipv4, '10.0.0.5');
    const u6 = await resolveUnderlay({ ...none6, ipv4: false, ifaceCanReach: '2001:db8::1' }, dualNl());
    assert.equal(u6.ifName, 'v6only');
    assert.equal(u6.ifaceIPv6, 'fd01::7');
  });

  it('says which interface lacks a global IPv6 address when IPv6 is enabled', async () => {
    await assert.rejects(resolveUnderlay({ ...none6, iface: ['lo'] }, dualNl()), /interface lo has no IPv4 address/);
    const nl = dualNl();
    const noV6: UnderlayNetlink = { ...nl, listAddresses: async (_i?: number, f?: 4 | 6) => (f === 6 ? [{ ifindex: 2, ip: 'fe80::1', prefixLen: 64 }] : nl.listAddresses()) };
    await assert.rejects(resolveUnderlay(none6, noV6), /interface eth0 has no global IPv6 address and the network config enables IPv6/);
  });
});
