/** flannel's legacy udp backend: options, desired state (one route, peer table in the pump), lease. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeUdpConfig, udpDesired, UdpBackend } from '../../src/backend/udp';
import type { PumpFactory } from '../../src/backend/userspace';
import { parseIPv4, parseIPv4Cidr } from '../../src/ip';
import { encodeLeaseAttrs } from '../../src/lease/codec';
import type { Lease } from '../../src/lease/types';
import type { NativePump, NativePumpOptions } from '../../src/native';
import type { LinkInfo } from '../../src/netlink/types';
import { peerLease } from './helpers/leases';

const net = (t: string) => parseIPv4Cidr(t)!;
const NETWORK = net('10.5.0.0/16');

const lease = (subnet: string, publicIp: string, backendType = ''): Lease => peerLease(subnet, publicIp, { backendType });
const own = lease('10.5.1.0/24', '10.250.0.11');

describe('udp backend options', () => {
  it('defaults Port to 8285 and matches the field name case-insensitively, as Go does', () => {
    assert.deepEqual(decodeUdpConfig({ type: 'udp', raw: { Type: 'udp' } }), { port: 8285 });
    assert.deepEqual(decodeUdpConfig({ type: 'udp', raw: { Type: 'udp', port: 9000 } }), { port: 9000 });
  });

  it('rejects a port that is not 1..65535, naming it', () => {
    assert.throws(() => decodeUdpConfig({ type: 'udp', raw: { Port: 0 } }), /Backend \(udp\): Port must be an integer from 1 to 65535, got 0/);
    assert.throws(() => decodeUdpConfig({ type: 'udp', raw: { Port: '8285' } }), /got "8285"/);
  });
});

describe('udpDesired', () => {
  it('wants <subnet>.0/32 on flannel0 and one route for the whole Network, even without peers', () => {
    const d = udpDesired(own, [], { network: NETWORK });
    assert.deepEqual(d.addresses, [{ ip: parseIPv4('10.5.1.0'), prefixLen: 32 }]);
    assert.deepEqual(d.routes, [{ dst: NETWORK, gateway: null, onlink: false, via: 'overlay' }]);
    assert.deepEqual([d.neighbours, d.fdb, d.pump], [[], [], []]);
  });

  it('puts each peer subnet → PublicIP in the pump, for leases without BackendType (flannel udp) or "udp"', () => {
    const d = udpDesired(own, [lease('10.5.3.0/24', '10.250.0.13', 'udp'), lease('10.5.2.0/24', '10.250.0.12'), own], { network: NETWORK });
    assert.deepEqual(d.pump, [
      { kind: 'subnet', subnet: net('10.5.2.0/24'), dst: '10.250.0.12' },
      { kind: 'subnet', subnet: net('10.5.3.0/24'), dst: '10.250.0.13' },
    ]);
    assert.deepEqual(d.skipped, []);
  });

  it('skips and names leases that must not capture traffic', () => {
    const d = udpDesired(own, [
      lease('10.6.0.0/24', '10.250.0.20'),
      lease('10.5.4.0/24', '10.250.0.21', 'vxlan'),
      lease('10.5.5.0/24', '127.0.0.1'),
      lease('10.5.6.0/24', '10.250.0.11'),
      lease('10.5.8.0/23', '10.250.0.22'),
    ], { network: NETWORK }, { subnetLen: 24 });
    assert.deepEqual(d.pump, []);
    assert.deepEqual(d.skipped!.map((s) => `${s.key}: ${s.reason}`), [
      '10.5.4.0-24: BackendType "vxlan" is not udp\'s (a udp host cannot reach it)',
      '10.5.5.0-24: PublicIP 127.0.0.1 is a loopback address',
      '10.5.6.0-24: PublicIP 10.250.0.11 is ours',
      '10.5.8.0-23: subnet length /23 is not the configured SubnetLen /24',
      '10.6.0.0-24: subnet is outside the Network 10.5.0.0/16',
    ]);
  });
});

describe('UdpBackend', () => {
  it('opens a TUN flannel0 with MTU underlay − 28 on port 8285 and leases like flannel\'s udp backend', async () => {
    const links = new Map<string, LinkInfo>();
    const opened: NativePumpOptions[] = [];
    const pumps: PumpFactory = (o) => {
      opened.push(o);
      links.set(o.device, { index: 9, name: o.device, up: false, mtu: 1500, mac: null, kind: 'tun', vxlan: null });
      return { setPeers() {}, counters: () => ({}) as ReturnType<NativePump['counters']>, status: () => ({ running: true, error: null, lastNotPeer: null, vnetHdr: true }), close() {} };
    };
    const set = (patch: Partial<LinkInfo>) => async () => { links.set('flannel0', { ...links.get('flannel0')!, ...patch }); };
    const nl = {
      getLink: async (n: string) => links.get(n) ?? null,
      deleteLink: async () => {}, setLinkDown: set({ up: false }), setLinkUp: set({ up: true }),
      setLinkMtu: async (_l: unknown, mtu: number) => set({ mtu })(),
      setLinkMac: async () => { throw new Error('a TUN has no MAC'); },
    };
    const b = new UdpBackend({ nl, config: { port: 8285 }, network: NETWORK, pumps, reportIntervalMs: 0 });
    const setup = await b.ensureDevice({ ifName: 'eth0', ifIndex: 2, ipv4: '10.250.0.11', mtu: 1500 });
    assert.deepEqual(opened.map((o) => [o.mode, o.device, o.localIp, o.port, o.mtu]), [['udp', 'flannel0', '10.250.0.11', 8285, 1472]]);
    assert.deepEqual(setup, { backendType: '', backendData: undefined, mtu: 1472 });
    assert.deepEqual([links.get('flannel0')!.mtu, links.get('flannel0')!.up], [1472, true]);
    assert.equal(b.dataPath, 'udp');
    const text = encodeLeaseAttrs({ PublicIP: '10.250.0.11', PublicIPv6: null, BackendType: setup.backendType, BackendData: setup.backendData });
    assert.equal(text, '{"PublicIP":"10.250.0.11","PublicIPv6":null}');
    await b.close();
  });
});
