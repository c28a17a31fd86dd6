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
