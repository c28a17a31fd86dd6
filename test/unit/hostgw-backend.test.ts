/**
 * host-gw: desired state (one route per on-L2 host-gw peer, nothing else), the checks that skip a
 * lease, our lease bytes, and the Reconciler driving a backend without a device.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DesiredContext, DesiredRoute, Underlay } from '../../src/backend/backend';
import { HostGwBackend, hostGwDesired } from '../../src/backend/hostgw';
import { diffState, Reconciler, type ReconcilerNetlink } from '../../src/daemon/reconciler';
import { formatCidr, formatIPv4Cidr, parseIPv4Cidr, parseIPv6Cidr } from '../../src/ip';
import { encodeLeaseAttrs } from '../../src/lease/codec';
import type { Lease } from '../../src/lease/types';
import type { LinkInfo, RouteEntry, RouteSpec } from '../../src/netlink/types';
import { peerLease } from './helpers/leases';

const net = (t: string) => parseIPv4Cidr(t)!;
const NETWORK = net('10.5.0.0/16');
const UNDERLAY: Underlay = { ifName: 'eth0', ifIndex: 3, ipv4: '10.250.0.11', ifaceIPv4: '10.250.0.11', mtu: 1500 };

const lease = (subnet: string, publicIp: string, backendType = 'host-gw'): Lease => peerLease(subnet, publicIp, { backendType });
const own = lease('10.5.1.0/24', '10.250.0.11');
const onL2 = (...ips: string[]): DesiredContext => ({ network: NETWORK, subnetLen: 24, onLinkPublicIPs: new Set(ips) });
const routeLines = (routes: readonly DesiredRoute[]) => routes.map((r) => `${formatCidr(r.dst)} via ${r.gateway} (${r.via})`);

describe('host-gw desired state', () => {
  it('routes each peer subnet via its PublicIP out of the underlay, and wants no address, neighbour or FDB entry', () => {
    const d = hostGwDesired(own, [own, lease('10.5.3.0/24', '10.250.0.13'), lease('10.5.2.0/24', '10.250.0.12')], onL2('10.250.0.12', '10.250.0.13'));
    assert.deepEqual(routeLines(d.routes), ['10.5.2.0/24 via 10.250.0.12 (underlay)', '10.5.3.0/24 via 10.250.0.13 (underlay)']);
    assert.deepEqual([d.addresses, d.neighbours, d.fdb, d.skipped], [[], [], [], []]);
    assert.ok(d.routes.every((r) => !r.onlink), 'no onlink: the kernel must refuse a gateway that is not on our L2');
  });

  it('skips a peer whose PublicIP is not on our L2, saying why, instead of a route that blackholes its subnet', () => {
    const d = hostGwDesired(own, [lease('10.5.2.0/24', '10.250.0.12'), lease('10.5.9.0/24', '192.168.7.9')], onL2('10.250.0.12'));
    assert.deepEqual(routeLines(d.routes), ['10.5.2.0/24 via 10.250.0.12 (underlay)']);
    assert.equal(d.skipped?.length, 1);
    assert.equal(d.skipped?.[0]?.key, '10.5.9.0-24');
    assert.match(d.skipped?.[0]?.reason ?? '', /PublicIP 192\.168\.7\.9 is not on our L2 .*gateway/);
  });

  it('skips hostile or foreign leases: outside the Network, wrong length, overlapping, other BackendType, bad or own PublicIP', () => {
    const peers = [
      lease('10.6.2.0/24', '10.250.0.12'),
      lease('10.5.0.0/20', '10.250.0.13'),
      lease('10.5.1.0/25', '10.250.0.14'),
      lease('10.5.4.0/24', '10.250.0.15', 'vxlan'),
      lease('10.5.5.0/24', 'not-an-ip'),
      lease('10.5.6.0/24', '10.250.0.11'),
      lease('10.5.7.0/24', '224.0.0.1'),
      lease('10.5.8.0/24', '10.250.0.18'),
    ];
    const d = hostGwDesired(own, peers, onL2('10.250.0.12', '10.250.0.13', '10.250.0.14', '10.250.0.15', '10.250.0.11', '224.0.0.1', '10.250.0.18'));
    assert.deepEqual(routeLines(d.routes), ['10.5.8.0/24 via 10.250.0.18 (underlay)']);
    const reasons = Object.fromEntries((d.skipped ?? []).map((s) => [s.key, s.reason]));
    assert.match(reasons['10.6.2.0-24']!, /outside the Network/);
    assert.match(reasons['10.5.0.0-20']!, /SubnetLen/);
    assert.match(reasons['10.5.4.0-24']!, /BackendType "vxlan" is not host-gw/);
    assert.match(reasons['10.5.5.0-24']!, /not an IPv4 address/);
    assert.match(reasons['10.5.6.0-24']!, /is ours/);
    assert.match(reasons['10.5.7.0-24']!, /multicast/);
    assert.equal(Object.keys(reasons).length, 7);
  });
});

/** A dual-stack lease: flannel's key `10.5.2.0-24&fd00:5:0:2::-64`, PublicIPv6 on the underlay. */
function dual(n: number, publicIpv6: string | null = `fd00:250::${n}`): Lease {
  const l = lease(`10.5.${n}.0/24`, `10.250.0.${10 + n}`);
  return { ...l, key: `${l.key}&fd00:5:0:${n}::-64`, ipv6Subnet: parseIPv6Cidr(`fd00:5:0:${n}::/64`)!, attrs: { ...l.attrs, PublicIPv6: publicIpv6 } };
}
const V6: DesiredContext = { network: parseIPv6Cidr('fd00:5::/48')!, subnetLen: 64, onLinkPublicIPs: new Set(['fd00:250::2', 'fd00:250::3']) };

describe('host-gw over IPv6 (one instance per family)', () => {
  it('routes each peer\'s IPv6 subnet via its PublicIPv6 out of the underlay (flannel\'s GetV6Route)', () => {
    const d = hostGwDesired(dual(1), [dual(1), dual(2), dual(3)], V6, 6);
    assert.deepEqual(routeLines(d.routes), ['fd00:5:0:2::/64 via fd00:250::2 (underlay)', 'fd00:5:0:3::/64 via fd00:250::3 (underlay)']);
    assert.deepEqual([d.addresses, d.neighbours, d.fdb, d.skipped], [[], [], [], []]);
  });

  it('skips a peer without a PublicIPv6 or whose PublicIPv6 is off our L2', () => {
    const d = hostGwDesired(dual(1), [dual(2), dual(4, 'fd00:999::4'), dual(5, null)], V6, 6);
    assert.deepEqual(routeLines(d.routes), ['fd00:5:0:2::/64 via fd00:250::2 (underlay)']);
    const reasons = (d.skipped ?? []).map((x) => x.reason).join('\n');
    assert.match(reasons, /PublicIPv6 fd00:999::4 is not on our L2/);
    assert.equal(d.skipped?.length, 2);
  });

  it('looks up PublicIPv6 addresses, and refuses to start without one', async () => {
    const asked: string[] = [];
    const b = new HostGwBackend({ family: 6, nl: { isOnLink: async (ip) => { asked.push(ip); return true; } } });
    await assert.rejects(b.ensureDevice(UNDERLAY), /no global IPv6 address/);
    const setup = await b.ensureDevice({ ...UNDERLAY, ipv6: 'fd00:250::1', ifaceIPv6: 'fd00:250::1' });
    assert.deepEqual(setup, { backendType: 'host-gw', backendData: undefined, mtu: 1500 });
    assert.deepEqual([...await b.onLinkPeers([dual(2), dual(3)], UNDERLAY)].sort(), ['fd00:250::2', 'fd00:250::3']);
    assert.deepEqual(asked.sort(), ['fd00:250::2', 'fd00:250::3']);
  });
});

describe('HostGwBackend', () => {
  it('writes flannel\'s host-gw lease (no BackendData) and the underlay\'s MTU', async () => {
    const b = new HostGwBackend({ nl: { isOnLink: async () => true } });
    const setup = await b.ensureDevice(UNDERLAY);
    assert.deepEqual(setup, { backendType: 'host-gw', backendData: undefined, mtu: 1500 });
    assert.equal(b.deviceName, 'eth0');
    const attrs = { PublicIP: '10.250.0.11', PublicIPv6: null, BackendType: setup.backendType, BackendData: setup.backendData };
    assert.equal(encodeLeaseAttrs(attrs), '{"PublicIP":"10.250.0.11","PublicIPv6":null,"BackendType":"host-gw"}');
  });

  it('refuses a PublicIP that differs from the interface address (NAT), as flannel does', async () => {
    const b = new HostGwBackend({ nl: { isOnLink: async () => true } });
    await assert.rejects(b.ensureDevice({ ...UNDERLAY, ipv4: '203.0.113.5' }), /differs from eth0's address 10\.250\.0\.11 .*NAT/);
  });

  it('looks up each distinct host-gw PublicIP once, through the underlay', async () => {
    const asked: string[] = [];
    const b = new HostGwBackend({ nl: { isOnLink: async (ip, via) => { asked.push(`${ip} ${via}`); return ip !== '192.168.7.9'; } } });
    const got = await b.onLinkPeers([lease('10.5.2.0/24', '10.250.0.12'), lease('10.5.3.0/24', '10.250.0.12'),
      lease('10.5.9.0/24', '192.168.7.9'), lease('10.5.4.0/24', '10.250.0.14', 'vxlan')], UNDERLAY);
    assert.deepEqual([...got], ['10.250.0.12']);
    assert.deepEqual(asked.sort(), ['10.250.0.12 3', '192.168.7.9 3']);
  });
});

/** A kernel with only an underlay and main-table routes; every other dump is a failure. */
class RoutesOnlyKernel implements ReconcilerNetlink {
  underlay: LinkInfo | null = { index: 3, name: 'eth0', up: true, mtu: 1500, mac: '02:00:00:00:00:0b', kind: null, vxlan: null };
  routes: RouteEntry[] = [
    { dst: net('0.0.0.0/0'), gateway: '10.250.0.1', oif: 3, onlink: false, table: 254, priority: 0, protocol: 3, type: 1 },
    { dst: net('10.250.0.0/24'), gateway: null, oif: 3, onlink: false, table: 254, priority: 0, protocol: 2, type: 1 },
    // An operator's route into the Network through another router on the underlay: not ours.
    { dst: net('10.5.0.0/16'), gateway: '10.250.0.1', oif: 3, onlink: false, table: 254, priority: 0, protocol: 3, type: 1 },
  ];
  async getLink(name: string) { return this.underlay && name === this.underlay.name ? this.underlay : null; }
  async listRoutes() { return [...this.routes]; }
  async replaceRoute(s: RouteSpec) {
    this.routes = [...this.routes.filter((r) => formatIPv4Cidr(r.dst) !== formatIPv4Cidr(s.dst)),
      { dst: s.dst, gateway: s.gateway, oif: s.oif, onlink: s.onlink, table: 254, priority: 0, protocol: 3, type: 1 }];
  }
  async deleteRoute(s: RouteSpec) { this.routes = this.routes.filter((r) => formatIPv4Cidr(r.dst) !== formatIPv4Cidr(s.dst)); }
  private none = async (): Promise<never> => { throw new Error('a deviceless backend must not read or write device objects'); };
  listAddresses = this.none; listNeighbours = this.none; listFdb = this.none;
  addAddress = this.none; deleteAddress = this.none; replaceNeighbour = this.none; deleteNeighbour = this.none;
  replaceFdb = this.none; deleteFdb = this.none;
  monitor() { return { close: () => undefined }; }
  show(): string[] {
    return this.routes.map((r) => `${formatIPv4Cidr(r.dst)}${r.gateway ? ` via ${r.gateway}` : ''} dev #${r.oif}`).sort();
  }
}

describe('Reconciler with host-gw (no device)', () => {
  const setup = async () => {
    const k = new RoutesOnlyKernel();
    const backend = new HostGwBackend({ nl: { isOnLink: async () => true } });
    await backend.ensureDevice(UNDERLAY);
    const r = new Reconciler({ nl: k, backend, underlay: UNDERLAY, directRoutingNetwork: NETWORK });
    return { k, backend, r };
  };
  const peers = [lease('10.5.2.0/24', '10.250.0.12'), lease('10.5.3.0/24', '10.250.0.13')];

  it('adds the peer routes on the underlay, puts a deleted one back, removes a departed one, and leaves the host\'s routes alone', async () => {
    const { k, backend, r } = await setup();
    r.setDesired(backend.desired(own, peers, onL2('10.250.0.12', '10.250.0.13')));
    await r.reconcile();
    assert.deepEqual(k.show(), ['0.0.0.0/0 via 10.250.0.1 dev #3', '10.250.0.0/24 dev #3', '10.5.0.0/16 via 10.250.0.1 dev #3',
      '10.5.2.0/24 via 10.250.0.12 dev #3', '10.5.3.0/24 via 10.250.0.13 dev #3']);
    k.routes = k.routes.filter((x) => formatIPv4Cidr(x.dst) !== '10.5.2.0/24');
    const healed = await r.reconcile();
    assert.equal(healed.repairs.route, 1);
    r.setDesired(backend.desired(own, peers.slice(1), onL2('10.250.0.13')));
    await r.reconcile();
    assert.deepEqual(k.show(), ['0.0.0.0/0 via 10.250.0.1 dev #3', '10.250.0.0/24 dev #3', '10.5.0.0/16 via 10.250.0.1 dev #3',
      '10.5.3.0/24 via 10.250.0.13 dev #3']);
  });

  it('fails retryably, naming the underlay, when it is down (weft never brings the host\'s interface up)', async () => {
    const { k, backend, r } = await setup();
    k.underlay = { ...k.underlay!, up: false };
    r.setDesired(backend.desired(own, peers, onL2('10.250.0.12')));
    await assert.rejects(r.reconcile(), /underlay eth0 is down/);
    assert.equal(k.underlay.up, false);
  });
});

describe('IPv6 host-gw routes in the diff', () => {
  it('take the kernel\'s metric 1024 (where a route added without a metric lands), so a converged kernel means no change', () => {
    const d = hostGwDesired(dual(1), [dual(2)], V6, 6);
    const have: RouteEntry = { dst: parseIPv6Cidr('fd00:5:0:2::/64')!, gateway: 'fd00:250::2', oif: 3, onlink: false, table: 254, priority: 1024, protocol: 3, type: 1 };
    const actual = { overlayIndex: 0, underlayIndex: 3, addresses: [], neighbours: [], fdb: [], routes: [have] };
    assert.deepEqual(diffState(d, actual, { directRoutingNetwork: parseIPv6Cidr('fd00:5::/48')! }), []);
    const fresh = diffState(d, { ...actual, routes: [] }, { directRoutingNetwork: parseIPv6Cidr('fd00:5::/48')! });
    assert.equal(fresh.length, 1);
    assert.equal(fresh[0]?.kind === 'route' ? fresh[0].priority : -1, 1024);
  });
});
