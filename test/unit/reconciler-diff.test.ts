import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DesiredState } from '../../src/backend/backend';
import { diffState, describeChange, type ActualState } from '../../src/daemon/diff';
import { parseIPv4, parseIPv4Cidr } from '../../src/ip';
import type { RouteEntry } from '../../src/netlink/types';

const OV = 9; // flannel.1
const UL = 3; // eth0
const OTHER = 4;
const net = (t: string) => parseIPv4Cidr(t)!;

const desired: DesiredState = {
  addresses: [{ ip: parseIPv4('10.5.1.0')!, prefixLen: 32 }],
  neighbours: [{ ip: '10.5.2.0', mac: '02:00:00:00:00:02' }],
  fdb: [{ mac: '02:00:00:00:00:02', dst: '10.250.0.2' }],
  routes: [{ dst: net('10.5.2.0/24'), gateway: '10.5.2.0', onlink: true, via: 'overlay' }],
};

function route(dst: string, over: Partial<RouteEntry> = {}): RouteEntry {
  return { dst: net(dst), gateway: null, oif: OV, onlink: false, table: 254, priority: 0, protocol: 3, type: 1, ...over };
}

const converged: ActualState = {
  overlayIndex: OV,
  underlayIndex: UL,
  addresses: [{ ifindex: OV, ip: '10.5.1.0', prefixLen: 32 }],
  neighbours: [{ ifindex: OV, ip: '10.5.2.0', mac: '02:00:00:00:00:02', permanent: true }],
  fdb: [{ ifindex: OV, mac: '02:00:00:00:00:02', dst: '10.250.0.2', permanent: true, self: true }],
  routes: [route('10.5.2.0/24', { gateway: '10.5.2.0', onlink: true })],
};

const empty: ActualState = { overlayIndex: OV, underlayIndex: UL, addresses: [], neighbours: [], fdb: [], routes: [] };
const lines = (d: DesiredState, a: ActualState, n: ReturnType<typeof net> | null = null) =>
  diffState(d, a, { directRoutingNetwork: n }).map(describeChange);

describe('diffState', () => {
  it('adds everything on an empty device: address, then neighbour, FDB, route (the route last, so the kernel never ARPs)', () => {
    assert.deepEqual(lines(desired, empty), [
      'add address 10.5.1.0/32',
      'add neighbour 10.5.2.0 lladdr 02:00:00:00:00:02',
      'add fdb 02:00:00:00:00:02 dst 10.250.0.2',
      'add route 10.5.2.0/24 via 10.5.2.0 (overlay) onlink',
    ]);
  });

  it('proposes nothing when the kernel matches', () => {
    assert.deepEqual(diffState(desired, converged), []);
  });

  it('removes a departed peer route first, then its FDB entry, then its neighbour', () => {
    const none: DesiredState = { addresses: desired.addresses, neighbours: [], fdb: [], routes: [] };
    assert.deepEqual(lines(none, converged), [
      'remove route 10.5.2.0/24 via 10.5.2.0 (overlay) onlink',
      'remove fdb 02:00:00:00:00:02 dst 10.250.0.2',
      'remove neighbour 10.5.2.0 lladdr 02:00:00:00:00:02',
    ]);
  });

  it('puts all adds before all removals (a peer changing VtepMAC keeps a working entry throughout)', () => {
    const moved: DesiredState = { ...desired, neighbours: [{ ip: '10.5.2.0', mac: '02:00:00:00:00:22' }], fdb: [{ mac: '02:00:00:00:00:22', dst: '10.250.0.2' }] };
    assert.deepEqual(lines(moved, converged), [
      'update neighbour 10.5.2.0 lladdr 02:00:00:00:00:22',
      'add fdb 02:00:00:00:00:22 dst 10.250.0.2',
      'remove fdb 02:00:00:00:00:02 dst 10.250.0.2',
    ]);
  });

  it('our subnet moved and a peer took the old one: our old address goes before the route via it (the kernel refuses a local gateway)', () => {
    // We were 10.5.1.0/24 (address 10.5.1.0/32), now 10.5.7.0/24; the peer that took 10.5.1.0/24
    // is reached via 10.5.1.0 onlink, which must no longer be ours when its route is added.
    const moved: DesiredState = {
      addresses: [{ ip: parseIPv4('10.5.7.0')!, prefixLen: 32 }],
      neighbours: [...desired.neighbours, { ip: '10.5.1.0', mac: '02:00:00:00:00:01' }],
      fdb: [...desired.fdb, { mac: '02:00:00:00:00:01', dst: '10.250.0.1' }],
      routes: [...desired.routes, { dst: net('10.5.1.0/24'), gateway: '10.5.1.0', onlink: true, via: 'overlay' }],
    };
    assert.deepEqual(lines(moved, converged), [
      'add address 10.5.7.0/32',
      'remove address 10.5.1.0/32',
      'add neighbour 10.5.1.0 lladdr 02:00:00:00:00:01',
      'add fdb 02:00:00:00:00:01 dst 10.250.0.1',
      'add route 10.5.1.0/24 via 10.5.1.0 (overlay) onlink',
    ]);
  });

  it('updates an FDB entry whose peer moved to another PublicIP and removes the old destination', () => {
    const moved: DesiredState = { ...desired, fdb: [{ mac: '02:00:00:00:00:02', dst: '10.250.0.7' }] };
    assert.deepEqual(lines(moved, converged), ['update fdb 02:00:00:00:00:02 dst 10.250.0.7', 'remove fdb 02:00:00:00:00:02 dst 10.250.0.2']);
  });

  it('makes a kernel-learned (non-permanent) neighbour for a peer permanent', () => {
    const a = { ...converged, neighbours: [{ ifindex: OV, ip: '10.5.2.0', mac: '02:00:00:00:00:02', permanent: false }] };
    assert.deepEqual(lines(desired, a), ['update neighbour 10.5.2.0 lladdr 02:00:00:00:00:02']);
  });

  it('never touches objects on other links, the kernel own routes or non-permanent entries', () => {
    const a: ActualState = {
      ...converged,
      addresses: [...converged.addresses, { ifindex: UL, ip: '10.250.0.1', prefixLen: 24 }, { ifindex: OTHER, ip: '10.5.9.1', prefixLen: 24 }],
      neighbours: [
        ...converged.neighbours,
        { ifindex: UL, ip: '10.250.0.2', mac: '02:aa:00:00:00:02', permanent: true },
        { ifindex: OV, ip: '10.5.7.0', mac: null, permanent: false }, // an ARP attempt: the kernel's
      ],
      fdb: [
        ...converged.fdb,
        { ifindex: UL, mac: '33:33:00:00:00:01', dst: null, permanent: true, self: true },
        { ifindex: OV, mac: '02:00:00:00:00:55', dst: '10.250.0.5', permanent: false, self: true }, // learned
      ],
      routes: [
        ...converged.routes,
        route('10.250.0.0/24', { oif: UL, protocol: 2 }),
        route('0.0.0.0/0', { oif: UL, gateway: '10.250.0.254' }),
        route('10.5.9.0/24', { oif: OTHER }), // e.g. a docker bridge inside the Network
        route('10.5.3.0/24', { oif: UL, gateway: '10.250.0.3' }), // inside the Network, but DirectRouting is off
        route('10.5.1.0/24', { oif: OV, protocol: 2 }), // kernel route of an address
        route('10.5.8.0/24', { oif: OV, table: 100 }), // another table
        route('10.5.6.0/24', { oif: OV, type: 6 }), // blackhole
      ],
    };
    assert.deepEqual(diffState(desired, a), []);
  });

  it('removes stray objects on the overlay device: addresses, permanent neighbours and FDB entries, routes of any metric', () => {
    const a: ActualState = {
      ...converged,
      addresses: [...converged.addresses, { ifindex: OV, ip: '10.5.1.1', prefixLen: 24 }],
      neighbours: [...converged.neighbours, { ifindex: OV, ip: '10.5.5.0', mac: '02:00:00:00:00:05', permanent: true }],
      fdb: [...converged.fdb, { ifindex: OV, mac: '00:00:00:00:00:00', dst: '10.250.0.99', permanent: true, self: true }],
      routes: [...converged.routes, route('10.5.2.0/24', { priority: 100, gateway: '10.5.2.0', onlink: true }), route('10.99.0.0/16')],
    };
    assert.deepEqual(lines(desired, a), [
      'remove address 10.5.1.1/24',
      'remove route 10.5.2.0/24 via 10.5.2.0 (overlay) onlink metric 100',
      'remove route 10.99.0.0/16 (overlay)',
      'remove fdb 00:00:00:00:00:00 dst 10.250.0.99',
      'remove neighbour 10.5.5.0 lladdr 02:00:00:00:00:05',
    ]);
  });

  it('replaces a route for a peer in place when it goes through the wrong device or gateway, without removing it', () => {
    const a = { ...converged, routes: [route('10.5.2.0/24', { oif: UL, gateway: '10.250.0.2' })] };
    assert.deepEqual(lines(desired, a), ['update route 10.5.2.0/24 via 10.5.2.0 (overlay) onlink']);
    const notOnlink = { ...converged, routes: [route('10.5.2.0/24', { gateway: '10.5.2.0', onlink: false })] };
    assert.deepEqual(lines(desired, notOnlink), ['update route 10.5.2.0/24 via 10.5.2.0 (overlay) onlink']);
  });

  it('never replaces a route weft did not create for a peer subnet that a hostile lease puts over it: proto kernel, static, another device', () => {
    // A lease for 10.250.0.0/24 (the underlay) that got past the lease screen must not take the
    // connected route: NLM_F_REPLACE would swap the underlay's route for one into the tunnel.
    const hostile: DesiredState = { ...desired, routes: [{ dst: net('10.250.0.0/24'), gateway: '10.250.0.0', onlink: true, via: 'overlay' }] };
    for (const existing of [
      route('10.250.0.0/24', { oif: UL, protocol: 2 }), // proto kernel: the connected network
      route('10.250.0.0/24', { oif: UL, protocol: 4, gateway: '10.250.0.254' }), // proto static
      route('10.250.0.0/24', { oif: OTHER, protocol: 3 }), // another device
    ]) {
      const conflicts: Parameters<typeof diffState>[3] = [];
      const changes = diffState(hostile, { ...empty, routes: [existing] }, { directRoutingNetwork: null }, conflicts);
      assert.deepEqual(changes.filter((c) => c.kind === 'route'), [], `kept ${JSON.stringify(existing)}`);
      assert.equal(conflicts!.length, 1);
      assert.equal(conflicts![0]!.existing, existing);
    }
  });

  describe('with DirectRouting (the Network is 10.5.0.0/16)', () => {
    const network = net('10.5.0.0/16');
    const direct: DesiredState = {
      ...desired,
      neighbours: [],
      fdb: [],
      routes: [{ dst: net('10.5.2.0/24'), gateway: '10.250.0.2', onlink: false, via: 'underlay' }],
    };

    it('routes an on-link peer over the underlay, replacing the overlay route in place', () => {
      assert.deepEqual(lines(direct, converged, network), [
        'update route 10.5.2.0/24 via 10.250.0.2 (underlay)',
        'remove fdb 02:00:00:00:00:02 dst 10.250.0.2',
        'remove neighbour 10.5.2.0 lladdr 02:00:00:00:00:02',
      ]);
    });

    it('owns underlay routes with a gateway strictly inside the Network, and nothing else on the underlay', () => {
      const a: ActualState = {
        ...empty,
        addresses: converged.addresses,
        routes: [
          route('10.5.2.0/24', { oif: UL, gateway: '10.250.0.2' }),
          route('10.5.3.0/24', { oif: UL, gateway: '10.250.0.3' }), // departed peer: ours
          route('10.5.0.0/16', { oif: UL, gateway: '10.250.0.254' }), // the whole Network: not ours
          route('10.5.4.0/24', { oif: UL }), // connected, no gateway: not ours
          route('10.6.0.0/24', { oif: UL, gateway: '10.250.0.254' }), // outside: not ours
        ],
      };
      assert.deepEqual(lines(direct, a, network), ['remove route 10.5.3.0/24 via 10.250.0.3 (underlay)']);
    });
  });
});
