/**
 * IPv6 and dual stack in the lease layer, against flannel's exact strings: ip.ts arithmetic for
 * both families, the subnet key (MakeSubnetKey/ParseSubnetKey), the lease JSON with PublicIPv6 and
 * BackendV6Data, the config's IPv6 checks and messages, and IPv6 allocation in flannel's order.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseNetworkConfig } from '../../src/config/network';
import { WeftError } from '../../src/errors';
import {
  addressFamily, familyOf, formatCidr, hostAddress, ipNetContainsAddress, ipNetContainsNet, ipNetsOverlap, parseCidr,
  parseIPv4Cidr, parseIPv6Cidr, walkSubnets,
} from '../../src/ip';
import { EMPTY_IPV4_NET, allocate, leaseFitsConfig } from '../../src/lease/allocate';
import { decodeLease, encodeLeaseAttrs, formatSubnetKey, parseSubnetKey } from '../../src/lease/codec';
import type { IPv6Net, Lease } from '../../src/lease/types';

const DUAL = '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}';
const V6ONLY = '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}';

function v6(cidr: string): IPv6Net {
  return parseIPv6Cidr(cidr)!;
}

function lease(key: string, publicIP: string, publicIPv6: string | null): Lease {
  const k = parseSubnetKey(key)!;
  return {
    key, subnet: k.subnet, ipv6Subnet: k.ipv6Subnet,
    attrs: { PublicIP: publicIP, PublicIPv6: publicIPv6, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' } },
    expiration: null, etcdLeaseId: '7', modRevision: '3',
  };
}

describe('ip: both families', () => {
  it('parses and prints IPv6 networks in Go net.IP form (RFC 5952)', () => {
    assert.equal(formatCidr(v6('fc00:0000:0000:0022:0000::/64')), 'fc00:0:0:22::/64');
    assert.equal(parseIPv6Cidr('fc00::1/64'), null, 'host bits set');
    assert.equal(formatCidr(parseIPv6Cidr('fc00::1/64', false)!), 'fc00::/64');
    assert.equal(parseIPv6Cidr('10.0.0.0/8'), null);
    assert.equal(familyOf(parseCidr('10.5.0.0/16')!), 4);
    assert.equal(familyOf(parseCidr('fd00::/64')!), 6);
    assert.equal(addressFamily('fd00::1'), 6);
    assert.equal(addressFamily('10.0.0.1'), 4);
    assert.equal(addressFamily('fd00::1%eth0'), null);
  });

  it('gives the first host of either family', () => {
    assert.equal(hostAddress(parseIPv4Cidr('10.5.34.0/24')!, 1), '10.5.34.1');
    assert.equal(hostAddress(v6('fc00:0:0:22::/64'), 1), 'fc00:0:0:22::1');
  });

  it('answers containment and overlap, never across families', () => {
    assert.ok(ipNetContainsNet(v6('fc00::/48'), v6('fc00:0:0:22::/64')));
    assert.ok(!ipNetContainsNet(v6('fc00::/48'), v6('fc00:1::/64')));
    assert.ok(ipNetsOverlap(v6('fc00::/48'), v6('fc00:0:0:22::/64')));
    assert.ok(!ipNetsOverlap(parseIPv4Cidr('0.0.0.0/0')!, v6('::/0')));
    assert.ok(ipNetContainsAddress(v6('fc00:0:0:22::/64'), 'fc00:0:0:22::9'));
    assert.ok(!ipNetContainsAddress(v6('fc00:0:0:22::/64'), '10.0.0.1'));
  });

  it('walks IPv6 subnets in order, as flannel sn6.Next() does', () => {
    const out = walkSubnets(6, v6('fc00:0:0:1::/64'), v6('fc00:0:0:ffff::/64'), 64, 3, (c) => formatCidr(c) === 'fc00:0:0:2::/64');
    assert.deepEqual(out.map(formatCidr), ['fc00:0:0:1::/64', 'fc00:0:0:3::/64', 'fc00:0:0:4::/64']);
  });
});

describe('lease key and JSON: flannel byte for byte', () => {
  it('makes and parses 10.5.34.0-24&fc00:0:0:22::-64', () => {
    const key = formatSubnetKey(parseIPv4Cidr('10.5.34.0/24')!, v6('fc00:0:0:22::/64'));
    assert.equal(key, '10.5.34.0-24&fc00:0:0:22::-64');
    const back = parseSubnetKey(key)!;
    assert.equal(formatCidr(back.subnet), '10.5.34.0/24');
    assert.equal(formatCidr(back.ipv6Subnet!), 'fc00:0:0:22::/64');
  });

  it('makes the IPv6-only key with the empty IPv4 half, as MakeSubnetKey does', () => {
    assert.equal(formatSubnetKey(EMPTY_IPV4_NET, v6('fc00:0:0:22::/64')), '0.0.0.0-0&fc00:0:0:22::-64');
    assert.deepEqual(parseSubnetKey('0.0.0.0-0&fc00:0:0:22::-64'), { subnet: EMPTY_IPV4_NET, ipv6Subnet: v6('fc00:0:0:22::/64') });
  });

  it('rejects an IPv6 half with host bits set', () => {
    assert.equal(parseSubnetKey('10.5.34.0-24&fc00:0:0:22::1-64'), null);
  });

  it('encodes and decodes a dual-stack lease value as flanneld writes it', () => {
    const text = '{"PublicIP":"10.250.0.1","PublicIPv6":"fd00::1","BackendType":"vxlan",' +
      '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:d2:32:6f:8f:45"}}';
    const l = decodeLease('/coreos.com/network/subnets/10.5.34.0-24&fc00:0:0:22::-64', text, { etcdLeaseId: '5', modRevision: '9' });
    assert.equal(l.attrs.PublicIPv6, 'fd00::1');
    assert.deepEqual(l.attrs.BackendV6Data, { VNI: 1, VtepMAC: 'aa:d2:32:6f:8f:45' });
    assert.equal(encodeLeaseAttrs(l.attrs), text);
  });

  it('encodes an IPv6-only lease value without BackendData, as Go omitempty does', () => {
    const attrs = {
      PublicIP: '0.0.0.0', PublicIPv6: 'fd00::3', BackendType: 'vxlan', BackendData: undefined,
      BackendV6Data: { VtepMAC: 'aa:d2:32:6f:8f:45', VNI: 1 },
    };
    assert.equal(
      encodeLeaseAttrs(attrs),
      '{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::3","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"aa:d2:32:6f:8f:45"}}',
    );
  });
});

describe('config: IPv6 with flannel\'s checks', () => {
  it('fills IPv6SubnetLen 64 and the min/max of the IPv6Network', () => {
    const c = parseNetworkConfig(DUAL);
    assert.equal(c.ipv6SubnetLen, 64);
    assert.equal(c.ipv6SubnetMin, 'fc00:0:0:1::');
    assert.equal(c.ipv6SubnetMax, 'fc00:0:0:ffff::');
  });

  it('accepts IPv6-only (EnableIPv4 false) without a Network', () => {
    const c = parseNetworkConfig(V6ONLY);
    assert.equal(c.enableIPv4, false);
    assert.equal(c.network, null);
    assert.equal(formatCidr(c.ipv6Network!), 'fc00::/48');
  });

  it('rejects EnableIPv6 without IPv6Network with flannel\'s message', () => {
    assert.throws(() => parseNetworkConfig('{"Network":"10.5.0.0/16","EnableIPv6":true}'),
      (e: unknown) => e instanceof WeftError && e.message === 'please define a correct IPv6Network parameter in the flannel config');
  });

  it('rejects a too small IPv6Network and a too long IPv6SubnetLen with flannel\'s messages', () => {
    assert.throws(() => parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/125"}'),
      /IPv6Network is too small. Minimum useful network prefix is \/124/);
    assert.throws(() => parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":127}'),
      /SubnetLen must be less than \/127/);
    assert.throws(() => parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fd00::"}'),
      /IPv6SubnetMin is not in the range of the IPv6Network/);
  });
});

describe('allocate: IPv6 in flannel\'s order', () => {
  const ME = '192.168.0.10';
  const ME6 = 'fd00::10';

  it('allocates an IPv6 subnet beside the IPv4 one: first free of each walk', () => {
    const cfg = parseNetworkConfig(DUAL);
    const taken = lease('10.5.1.0-24&fc00:0:0:1::-64', '192.168.0.11', 'fd00::11');
    const d = allocate({ config: cfg, leases: [taken], publicIP: ME, publicIPv6: ME6, preferredSubnet: null, random: () => 0 });
    assert.equal(d.kind, 'create');
    if (d.kind !== 'create') return;
    assert.equal(formatSubnetKey(d.subnet, d.ipv6Subnet), '10.5.2.0-24&fc00:0:0:2::-64');
  });

  it('picks at random among the first 100 free IPv6 subnets, independently of IPv4', () => {
    const cfg = parseNetworkConfig(DUAL);
    const draws = [0, 0.999];
    const d = allocate({ config: cfg, leases: [], publicIP: ME, publicIPv6: ME6, preferredSubnet: null, random: () => draws.shift()! });
    assert.ok(d.kind === 'create');
    assert.equal(formatSubnetKey(d.subnet, d.ipv6Subnet), '10.5.1.0-24&fc00:0:0:64::-64'); // 100th: 0x64
  });

  it('reuses our dual-stack lease only when both halves fit (isIPv6SubnetConfigCompat)', () => {
    const cfg = parseNetworkConfig(DUAL);
    const mine = lease('10.5.7.0-24&fc00:0:0:7::-64', ME, ME6);
    const d = allocate({ config: cfg, leases: [mine], publicIP: ME, publicIPv6: ME6, preferredSubnet: null });
    assert.ok(d.kind === 'reuse' && d.lease === mine);

    const v4only = lease('10.5.8.0-24', ME, null); // written before IPv6 was enabled
    const d2 = allocate({ config: cfg, leases: [v4only], publicIP: ME, publicIPv6: ME6, preferredSubnet: null, random: () => 0 });
    assert.ok(d2.kind === 'create');
    assert.deepEqual(d2.toDelete, [v4only]);
    assert.ok(!leaseFitsConfig(cfg, v4only.subnet, null));
  });

  it('prefers the subnets from subnet.env when both are free', () => {
    const cfg = parseNetworkConfig(DUAL);
    const d = allocate({
      config: cfg, leases: [], publicIP: ME, publicIPv6: ME6,
      preferredSubnet: parseIPv4Cidr('10.5.72.0/24')!, preferredIPv6Subnet: v6('fc00:0:0:48::/64'),
    });
    assert.ok(d.kind === 'create' && d.source === 'preferred');
    assert.equal(formatSubnetKey(d.subnet, d.ipv6Subnet), '10.5.72.0-24&fc00:0:0:48::-64');
  });

  it('on an IPv6-only network leases 0.0.0.0-0&<ipv6> and finds our lease by PublicIPv6', () => {
    const cfg = parseNetworkConfig(V6ONLY);
    const other = lease('0.0.0.0-0&fc00:0:0:1::-64', '0.0.0.0', 'fd00::11');
    const d = allocate({ config: cfg, leases: [other], publicIP: '0.0.0.0', publicIPv6: ME6, preferredSubnet: null, random: () => 0 });
    assert.ok(d.kind === 'create', 'another host\'s lease with PublicIP 0.0.0.0 is not ours');
    assert.equal(formatSubnetKey(d.subnet, d.ipv6Subnet), '0.0.0.0-0&fc00:0:0:2::-64');

    const mine = lease('0.0.0.0-0&fc00:0:0:5::-64', '0.0.0.0', 'fd00:0::10');
    const d2 = allocate({ config: cfg, leases: [other, mine], publicIP: '0.0.0.0', publicIPv6: ME6, preferredSubnet: null });
    assert.ok(d2.kind === 'reuse' && d2.lease === mine);
  });

  it('says which IPv6 range is exhausted', () => {
    const cfg = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/62","IPv6SubnetLen":64}');
    const leases = ['1', '2', '3'].map((n) => lease(`0.0.0.0-0&fc00:0:0:${n}::-64`, '0.0.0.0', `fd00::${n}`));
    assert.throws(
      () => allocate({ config: cfg, leases, publicIP: '0.0.0.0', publicIPv6: ME6, preferredSubnet: null }),
      (e: unknown) => e instanceof WeftError && e.code === 'SUBNETS_EXHAUSTED' &&
        e.message.startsWith('out of subnets: all 3 /64 subnets between IPv6SubnetMin fc00:0:0:1:: and IPv6SubnetMax fc00:0:0:3:: of fc00::/62'),
    );
  });
});

describe('weft leases: IPv6 halves', () => {
  it('shows both subnets and addresses of a dual-stack lease, the IPv6 ones of an IPv6-only lease', async () => {
    const { leaseRow, formatLeaseTable } = await import('../../src/cli/leases');
    const text = '{"PublicIP":"10.250.0.1","PublicIPv6":"fd00::1","BackendType":"vxlan",' +
      '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:d2:32:6f:8f:45"}}';
    const dual = decodeLease('10.5.34.0-24&fc00:0:0:22::-64', text, { etcdLeaseId: null, modRevision: '1' });
    const only = decodeLease('0.0.0.0-0&fc00:0:0:23::-64',
      '{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::3","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"aa:d2:32:6f:8f:46"}}',
      { etcdLeaseId: null, modRevision: '1' });
    const rows = [leaseRow(dual, 0), leaseRow(only, 0)];
    assert.equal(rows[0]!.ipv6Subnet, 'fc00:0:0:22::/64');
    assert.equal(rows[0]!.vtepMacV6, 'aa:d2:32:6f:8f:45');
    const table = formatLeaseTable(rows).split('\n');
    assert.match(table[1]!, /^10\.5\.34\.0\/24,fc00:0:0:22::\/64\s+10\.250\.0\.1,fd00::1\s+vxlan\s+c6:d2:32:6f:8f:44/);
    assert.match(table[2]!, /^fc00:0:0:23::\/64\s+fd00::3\s+vxlan\s+aa:d2:32:6f:8f:46/);
  });
});

describe('status and metrics: IPv6 halves', () => {
  it('counts a peer as programmed from the IPv6 path\'s applied state (IPv6-only) and names its IPv6 subnet', async () => {
    const { countProgrammed, leaseSubnets } = await import('../../src/health/status');
    const peer = lease('0.0.0.0-0&fc00:0:0:5::-64', '0.0.0.0', 'fd00::5');
    assert.deepEqual(leaseSubnets(peer), ['fc00:0:0:5::/64']);
    assert.deepEqual(leaseSubnets(lease('10.5.1.0-24&fc00:0:0:1::-64', '10.0.0.1', 'fd00::1')), ['10.5.1.0/24', 'fc00:0:0:1::/64']);
    const applied = { addresses: [], neighbours: [], fdb: [], routes: [{ dst: v6('fc00:0:0:5::/64'), gateway: 'fc00:0:0:5::', onlink: true }] };
    assert.equal(countProgrammed([peer], null, applied), 1);
    assert.equal(countProgrammed([peer], null, null), 0);
  });
});
