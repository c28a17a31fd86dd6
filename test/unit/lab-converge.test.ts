/**
 * The lab's convergence check (src/lab/converge.ts) over kernel dumps in the shapes `ip -j` and
 * `bridge -j` print (as a dual-stack lab's hosts print them, trimmed to the entries that
 * matter plus some noise): converged only when each host can send to each other host's subnets
 * and the reply can come back, per family.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCidr, type IPNet } from '../../src/ip';
import { convergenceGaps, type HostKernelState } from '../../src/lab/converge';

const net = (cidr: string): IPNet => parseCidr(cidr)!;

/** Host n (1, 2) of a converged dual-stack vxlan lab: subnets 10.5.(10n).0/24 and fd00:5:0:n::/64. */
function host(n: number, peers: readonly number[]): HostKernelState {
  const mac4 = (k: number): string => `0e:00:00:00:04:0${k}`;
  const mac6 = (k: number): string => `0e:00:00:00:06:0${k}`;
  return {
    name: `h${n}`,
    underlayDevice: 'eth0',
    underlay: { 4: `10.250.0.${10 + n}`, 6: `fd00:250::${10 + n}` },
    subnets: [net(`10.5.${10 * n}.0/24`), net(`fd00:5:0:${n}::/64`)],
    links: [
      { ifname: 'lo', address: '00:00:00:00:00:00' },
      { ifname: 'eth0', address: `22:dc:f0:60:7f:1${n}`, linkinfo: { info_kind: 'veth' } },
      { ifname: 'flannel.1', address: mac4(n), linkinfo: { info_kind: 'vxlan' } },
      { ifname: 'flannel-v6.1', address: mac6(n), linkinfo: { info_kind: 'vxlan' } },
      { ifname: 'weft0', address: `2a:18:95:7e:26:2${n}`, linkinfo: { info_kind: 'bridge' } },
    ],
    routes: [
      ...peers.map((k) => ({ dst: `10.5.${10 * k}.0/24`, gateway: `10.5.${10 * k}.0`, dev: 'flannel.1', flags: ['onlink'] })),
      { dst: `10.5.${10 * n}.0/24`, dev: 'weft0', flags: [] },
      { dst: '10.250.0.0/24', dev: 'eth0', flags: [] },
      ...peers.map((k) => ({ dst: `fd00:5:0:${k}::/64`, gateway: `fd00:5:0:${k}::`, dev: 'flannel-v6.1', flags: ['onlink'] })),
      { dst: `fd00:5:0:${n}::`, dev: 'flannel-v6.1', flags: [] },
      { dst: `fd00:5:0:${n}::/64`, dev: 'weft0', flags: [] },
      { dst: 'fd00:250::/64', dev: 'eth0', flags: [] },
      { dst: 'fe80::/64', dev: 'eth0', flags: [] },
    ],
    neighbours: [
      { dst: '10.250.0.2', dev: 'eth0', lladdr: '56:06:dd:07:6f:4a', state: ['REACHABLE'] },
      ...peers.map((k) => ({ dst: `10.5.${10 * k}.0`, dev: 'flannel.1', lladdr: mac4(k), state: ['PERMANENT'] })),
      ...peers.map((k) => ({ dst: `fd00:5:0:${k}::`, dev: 'flannel-v6.1', lladdr: mac6(k), state: ['PERMANENT'] })),
    ],
    fdb: [
      { mac: '33:33:00:00:00:01', ifname: 'eth0', state: 'permanent' },
      ...peers.map((k) => ({ mac: mac4(k), ifname: 'flannel.1', dst: `10.250.0.${10 + k}`, state: 'permanent' })),
      ...peers.map((k) => ({ mac: mac6(k), ifname: 'flannel-v6.1', dst: `fd00:250::${10 + k}`, state: 'permanent' })),
      { mac: '2a:18:95:7e:26:21', ifname: 'c1', state: 'permanent' },
    ],
  };
}

function lab(): [HostKernelState, HostKernelState] {
  return [host(1, [2]), host(2, [1])];
}

describe('lab convergence check', () => {
  it('a converged dual-stack vxlan pair: no gaps', () => {
    assert.deepEqual(convergenceGaps(lab()), []);
  });

  it('the reply path counts: h2 without its route back to h1 is not converged, though h1 → h2 is complete', () => {
    const [h1, h2] = lab();
    const gaps = convergenceGaps([h1, { ...h2, routes: h2.routes.filter((r) => r.dst !== '10.5.10.0/24') }]);
    assert.deepEqual(gaps, ['h2 → h1\'s 10.5.10.0/24: no route']);
  });

  it('a route without its neighbour (the kernel would ARP on a nolearning device) or with the neighbour not PERMANENT', () => {
    const [h1, h2] = lab();
    assert.match(convergenceGaps([{ ...h1, neighbours: h1.neighbours.filter((n) => n.dst !== '10.5.20.0') }, h2]).join(), /h1 → h2's 10\.5\.20\.0\/24: .*no neighbour for 10\.5\.20\.0 on flannel\.1/);
    const failed = h1.neighbours.map((n) => (n.dst === '10.5.20.0' ? { dst: n.dst, dev: n.dev, state: ['FAILED'] } : n));
    assert.match(convergenceGaps([{ ...h1, neighbours: failed }, h2]).join(), /neighbour 10\.5\.20\.0 on flannel\.1 is FAILED, not PERMANENT/);
    const stale = h1.neighbours.map((n) => (n.dst === '10.5.20.0' ? { ...n, state: ['STALE'] } : n));
    assert.match(convergenceGaps([{ ...h1, neighbours: stale }, h2]).join(), /neighbour 10\.5\.20\.0 on flannel\.1 is STALE, not PERMANENT/);
  });

  it('a neighbour resolving to another MAC than the peer device\'s (an old VtepMAC)', () => {
    const [h1, h2] = lab();
    const old = h1.neighbours.map((n) => (n.dst === 'fd00:5:0:2::' ? { ...n, lladdr: '0e:99:99:99:99:99' } : n));
    assert.deepEqual(convergenceGaps([{ ...h1, neighbours: old }, h2]), [
      'h1 → h2\'s fd00:5:0:2::/64: neighbour fd00:5:0:2:: on flannel-v6.1 is 0e:99:99:99:99:99, h2\'s flannel-v6.1 is 0e:00:00:00:06:02',
    ]);
  });

  it('an FDB entry missing, or sending the MAC to another underlay address', () => {
    const [h1, h2] = lab();
    assert.deepEqual(convergenceGaps([{ ...h1, fdb: h1.fdb.filter((f) => f.ifname !== 'flannel-v6.1') }, h2]), [
      'h1 → h2\'s fd00:5:0:2::/64: no permanent FDB entry for 0e:00:00:00:06:02 on flannel-v6.1',
    ]);
    const moved = h1.fdb.map((f) => (f.ifname === 'flannel.1' ? { ...f, dst: '10.250.0.99' } : f));
    assert.deepEqual(convergenceGaps([{ ...h1, fdb: moved }, h2]), [
      'h1 → h2\'s 10.5.20.0/24: FDB sends 0e:00:00:00:04:02 to 10.250.0.99, not to h2\'s 10.250.0.12',
    ]);
  });

  it('two hosts holding the same IPv4 subnet (with different IPv6 ones): never converged', () => {
    const [h1, h2] = lab();
    const dup = { ...h2, subnets: [net('10.5.10.0/24'), net('fd00:5:0:2::/64')] };
    const gaps = convergenceGaps([h1, dup]);
    assert.ok(gaps.includes('h1 (10.5.10.0/24) and h2 (10.5.10.0/24) hold overlapping subnets'), gaps.join('\n'));
  });

  it('host-gw / DirectRouting: the route must go via the peer\'s underlay address', () => {
    const [h1, h2] = lab();
    const direct = (h: HostKernelState, peer: number, gw: string): HostKernelState => ({
      ...h, routes: h.routes.map((r) => (r.dst === `10.5.${10 * peer}.0/24` ? { dst: r.dst, gateway: gw, dev: 'eth0', flags: [] } : r)),
    });
    assert.deepEqual(convergenceGaps([direct(h1, 2, '10.250.0.12'), direct(h2, 1, '10.250.0.11')]), []);
    assert.deepEqual(convergenceGaps([direct(h1, 2, '10.250.0.13'), direct(h2, 1, '10.250.0.11')]), [
      'h1 → h2\'s 10.5.20.0/24: route 10.5.20.0/24 via 10.250.0.13 dev eth0, not via h2\'s 10.250.0.12',
    ]);
  });

  it('a default route is not a route to a peer; a whole-network route through a TUN (udp) is', () => {
    const [h1, h2] = lab();
    const noPeer = h1.routes.filter((r) => r.dst !== '10.5.20.0/24');
    assert.match(convergenceGaps([{ ...h1, routes: [...noPeer, { dst: 'default', gateway: '10.250.0.1', dev: 'eth0' }] }, h2]).join(),
      /h1 → h2's 10\.5\.20\.0\/24: route default via 10\.250\.0\.1 dev eth0, not via h2's 10\.250\.0\.12/);
    const udp = { ...h1, routes: [...noPeer, { dst: '10.5.0.0/16', dev: 'flannel0' }], links: [...h1.links, { ifname: 'flannel0', linkinfo: { info_kind: 'tun' } }] };
    assert.deepEqual(convergenceGaps([udp, h2]), []);
  });

  it('an unreachable route is no route', () => {
    const [h1, h2] = lab();
    const routes = h1.routes.map((r) => (r.dst === '10.5.20.0/24' ? { dst: r.dst, type: 'unreachable', flags: [] } : r));
    assert.match(convergenceGaps([{ ...h1, routes }, h2]).join(), /route 10\.5\.20\.0\/24 is of type unreachable/);
  });
});
