import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { NetworkConfig } from '../../src/config/types';
import { WeftError } from '../../src/errors';
import { formatIPv4Cidr, parseIPv4, parseIPv4Cidr } from '../../src/ip';
import { FREE_SUBNET_WINDOW, allocate, subnetFitsConfig } from '../../src/lease/allocate';
import { formatSubnetKey } from '../../src/lease/codec';
import type { IPv4Net, Lease } from '../../src/lease/types';

/** flannel's defaults: SubnetMin = second subnet, SubnetMax = last. */
function config(network: string, subnetLen = 24, min?: string, max?: string): NetworkConfig {
  const net = parseIPv4Cidr(network)!;
  const step = 2 ** (32 - subnetLen);
  return {
    enableIPv4: true,
    enableIPv6: false,
    network: net,
    subnetLen,
    subnetMin: min === undefined ? net.ip + step : parseIPv4(min)!,
    subnetMax: max === undefined ? net.ip + 2 ** (32 - net.prefixLen) - step : parseIPv4(max)!,
    ipv6Network: null,
    ipv6SubnetLen: 64,
    backend: { type: 'vxlan', raw: { Type: 'vxlan' } },
    source: '{}',
  };
}

function net(cidr: string): IPv4Net {
  return parseIPv4Cidr(cidr)!;
}

function lease(cidr: string, publicIP: string, opts: { reservation?: boolean } = {}): Lease {
  const subnet = net(cidr);
  return {
    key: formatSubnetKey(subnet),
    subnet,
    ipv6Subnet: null,
    attrs: { PublicIP: publicIP, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' } },
    expiration: null,
    etcdLeaseId: opts.reservation === true ? null : '100',
    modRevision: '5',
  };
}

const ME = '192.168.0.10';
const first = (): number => 0;

describe('allocate', () => {
  it('reuses the lease that holds our PublicIP when it fits the config', () => {
    const mine = lease('10.5.7.0/24', ME);
    const d = allocate({ config: config('10.5.0.0/16'), leases: [lease('10.5.1.0/24', '192.168.0.11'), mine], publicIP: ME, preferredSubnet: null });
    assert.equal(d.kind, 'reuse');
    assert.equal(d.kind === 'reuse' && d.lease, mine);
    assert.deepEqual(d.toDelete, []);
  });

  it('deletes our leases that no longer fit the config and allocates a new one', () => {
    const stale = lease('10.6.7.0/24', ME); // outside the Network now
    const wrongLen = lease('10.5.8.0/25', ME);
    const d = allocate({ config: config('10.5.0.0/16'), leases: [stale, wrongLen], publicIP: ME, preferredSubnet: null, random: first });
    assert.equal(d.kind, 'create');
    assert.deepEqual(d.toDelete, [stale, wrongLen]);
    // the /25 being deleted no longer blocks 10.5.8.0/24, but 10.5.1.0 comes first anyway
    assert.equal(d.kind === 'create' && formatIPv4Cidr(d.subnet), '10.5.1.0/24');
  });

  it('keeps one of several fitting leases of ours and deletes the rest', () => {
    const a = lease('10.5.3.0/24', ME);
    const b = lease('10.5.9.0/24', ME);
    const d = allocate({ config: config('10.5.0.0/16'), leases: [b, a], publicIP: ME, preferredSubnet: net('10.5.9.0/24') });
    assert.equal(d.kind === 'reuse' && d.lease, b, 'the subnet.env one wins');
    assert.deepEqual(d.toDelete, [a]);
  });

  it('takes the subnet from subnet.env when it is free and fits', () => {
    const d = allocate({ config: config('10.5.0.0/16'), leases: [lease('10.5.1.0/24', '192.168.0.11')], publicIP: ME, preferredSubnet: net('10.5.72.0/24') });
    assert.deepEqual(d.kind === 'create' && [d.source, formatIPv4Cidr(d.subnet)], ['preferred', '10.5.72.0/24']);
  });

  it('does not take the subnet.env subnet when another host holds it', () => {
    const d = allocate({
      config: config('10.5.0.0/16'),
      leases: [lease('10.5.72.0/24', '192.168.0.11')],
      publicIP: ME,
      preferredSubnet: net('10.5.72.0/24'),
      random: first,
    });
    assert.deepEqual(d.kind === 'create' && [d.source, formatIPv4Cidr(d.subnet)], ['allocated', '10.5.1.0/24']);
  });

  it('ignores a subnet.env subnet that does not fit the config', () => {
    for (const bad of ['10.6.72.0/24', '10.5.72.0/25', '10.5.0.0/24' /* below SubnetMin */]) {
      const d = allocate({ config: config('10.5.0.0/16'), leases: [], publicIP: ME, preferredSubnet: net(bad), random: first });
      assert.deepEqual(d.kind === 'create' && [d.source, formatIPv4Cidr(d.subnet)], ['allocated', '10.5.1.0/24'], bad);
    }
  });

  it('walks from SubnetMin, skipping leased subnets, and picks within the first free window at random', () => {
    const leases = [lease('10.5.1.0/24', '192.168.0.11'), lease('10.5.2.0/24', '192.168.0.12')];
    const cfg = config('10.5.0.0/16');
    const pick = (r: number): string => {
      const d = allocate({ config: cfg, leases, publicIP: ME, preferredSubnet: null, random: () => r });
      assert.equal(d.kind, 'create');
      return d.kind === 'create' ? formatIPv4Cidr(d.subnet) : '';
    };
    assert.equal(pick(0), '10.5.3.0/24');
    // the window holds 100 free subnets: 10.5.3.0 .. 10.5.102.0
    assert.equal(FREE_SUBNET_WINDOW, 100);
    assert.equal(pick(0.999999), '10.5.102.0/24');
    assert.equal(pick(0.5), '10.5.53.0/24');
    assert.equal(pick(1), '10.5.102.0/24', 'a random() of exactly 1 stays in range');
  });

  it('treats a lease of another length that overlaps a candidate as occupied', () => {
    const d = allocate({ config: config('10.5.0.0/16'), leases: [lease('10.5.0.0/22', '192.168.0.11')], publicIP: ME, preferredSubnet: null, random: first });
    assert.equal(d.kind === 'create' && formatIPv4Cidr(d.subnet), '10.5.4.0/24');
  });

  it('respects SubnetMin and SubnetMax', () => {
    const cfg = config('10.5.0.0/16', 24, '10.5.10.0', '10.5.11.0');
    const d = allocate({ config: cfg, leases: [lease('10.5.10.0/24', '192.168.0.11')], publicIP: ME, preferredSubnet: null, random: () => 0.9 });
    assert.equal(d.kind === 'create' && formatIPv4Cidr(d.subnet), '10.5.11.0/24');
    assert.equal(subnetFitsConfig(cfg, net('10.5.12.0/24')), false);
  });

  it('fails with SUBNETS_EXHAUSTED and an actionable message when every subnet is leased', () => {
    const cfg = config('10.5.0.0/22'); // subnets 10.5.1.0, .2.0, .3.0
    const leases = [lease('10.5.1.0/24', 'a'), lease('10.5.2.0/24', 'b'), lease('10.5.3.0/24', 'c')];
    assert.throws(
      () => allocate({ config: cfg, leases, publicIP: ME, preferredSubnet: null }),
      (err: unknown) => {
        assert.ok(err instanceof WeftError);
        assert.equal(err.code, 'SUBNETS_EXHAUSTED');
        assert.match(err.message, /^out of subnets: all 3 \/24 subnets between SubnetMin 10\.5\.1\.0 and SubnetMax 10\.5\.3\.0 of 10\.5\.0\.0\/22 are leased/);
        assert.match(err.message, /weft leases/);
        return true;
      },
    );
  });

  it('counts reservations of other hosts as occupied', () => {
    const d = allocate({ config: config('10.5.0.0/16'), leases: [lease('10.5.1.0/24', '192.168.0.11', { reservation: true })], publicIP: ME, preferredSubnet: net('10.5.1.0/24'), random: first });
    assert.equal(d.kind === 'create' && formatIPv4Cidr(d.subnet), '10.5.2.0/24');
  });

  it('reuses a reservation holding our PublicIP in preference to a leased key of ours', () => {
    const leased = lease('10.5.3.0/24', ME);
    const reserved = lease('10.5.40.0/24', ME, { reservation: true });
    const d = allocate({ config: config('10.5.0.0/16'), leases: [leased, reserved], publicIP: ME, preferredSubnet: net('10.5.3.0/24') });
    assert.equal(d.kind === 'reuse' && d.lease, reserved);
    assert.deepEqual(d.toDelete, [leased]);
  });

  it('never deletes a reservation of ours that does not fit, but reports it', () => {
    const reserved = lease('10.9.0.0/24', ME, { reservation: true });
    const d = allocate({ config: config('10.5.0.0/16'), leases: [reserved], publicIP: ME, preferredSubnet: null, random: first });
    assert.equal(d.kind, 'create');
    assert.deepEqual(d.toDelete, []);
    assert.deepEqual(d.ignoredReservations, [reserved]);
  });

  it('refuses a config without an IPv4 network', () => {
    const cfg = { ...config('10.5.0.0/16'), enableIPv4: false, network: null };
    assert.throws(() => allocate({ config: cfg, leases: [], publicIP: ME, preferredSubnet: null }), { code: 'CONFIG_INVALID' });
  });
});
