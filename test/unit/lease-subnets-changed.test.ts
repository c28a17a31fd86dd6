/**
 * The "subnet changed" check on a re-acquired lease (weftd's adoptLease): both halves of a
 * dual-stack lease count, so a lease that comes back with only its IPv6 subnet changed is
 * reported (containers must be restarted), not taken for "re-acquired, same subnet".
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseIPv4Cidr, parseIPv6Cidr } from '../../src/ip';
import { formatLeaseSubnets, sameLeaseSubnets } from '../../src/lease/family';
import type { Lease } from '../../src/lease/types';

function lease(v4: string | null, v6: string | null): Lease {
  return {
    key: 'k', subnet: v4 === null ? { ip: 0, prefixLen: 0 } : parseIPv4Cidr(v4)!, ipv6Subnet: v6 === null ? null : parseIPv6Cidr(v6)!,
    attrs: { PublicIP: v4 === null ? '0.0.0.0' : '10.250.0.1', PublicIPv6: v6 === null ? null : 'fd00:250::1', BackendType: 'vxlan', BackendData: {} },
    expiration: null, etcdLeaseId: '7', modRevision: '1',
  };
}

describe('a re-acquired lease\'s subnets compared with the previous ones', () => {
  test('the same IPv4 and IPv6 subnets are the same', () => {
    assert.equal(sameLeaseSubnets(lease('10.5.34.0/24', 'fd00:5:0:22::/64'), lease('10.5.34.0/24', 'fd00:5:0:22::/64')), true);
    assert.equal(sameLeaseSubnets(lease('10.5.34.0/24', null), lease('10.5.34.0/24', null)), true);
    assert.equal(sameLeaseSubnets(lease(null, 'fd00:5:0:22::/64'), lease(null, 'fd00:5:0:22::/64')), true);
  });

  test('dual stack: the IPv6 subnet changed alone is a change', () => {
    assert.equal(sameLeaseSubnets(lease('10.5.34.0/24', 'fd00:5:0:22::/64'), lease('10.5.34.0/24', 'fd00:5:0:23::/64')), false);
    assert.equal(sameLeaseSubnets(lease('10.5.34.0/24', 'fd00:5:0:22::/64'), lease('10.5.34.0/24', 'fd00:5:0:22::/80')), false);
  });

  test('the IPv4 subnet changed, or a half gained or lost, is a change', () => {
    assert.equal(sameLeaseSubnets(lease('10.5.34.0/24', 'fd00:5:0:22::/64'), lease('10.5.35.0/24', 'fd00:5:0:22::/64')), false);
    assert.equal(sameLeaseSubnets(lease('10.5.34.0/24', 'fd00:5:0:22::/64'), lease('10.5.34.0/24', null)), false);
    assert.equal(sameLeaseSubnets(lease(null, 'fd00:5:0:22::/64'), lease(null, 'fd00:5:0:23::/64')), false);
  });

  test('the message names both halves', () => {
    assert.equal(formatLeaseSubnets(lease('10.5.34.0/24', 'fd00:5:0:22::/64')), '10.5.34.0/24 + fd00:5:0:22::/64');
    assert.equal(formatLeaseSubnets(lease(null, 'fd00:5:0:22::/64')), 'fd00:5:0:22::/64');
    assert.equal(formatLeaseSubnets(lease('10.5.34.0/24', null)), '10.5.34.0/24');
  });
});
