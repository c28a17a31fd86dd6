/**
 * Two dual-stack hosts allocating at the same moment (the lab's hosts start together) must never
 * end up with the same IPv4 or the same IPv6 subnet. Their keys are "<IPv4>&<IPv6>": when both
 * list before either writes and they pick the same IPv4 subnet but different IPv6 ones, the keys
 * differ and etcd's create-if-absent lets both through (the e2e ipv6 flake: h2-c1 → h1-c1 failed
 * for good, two hosts held 10.5.51.0/24 and every peer routed it to only one of them).
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { parseNetworkConfig } from '../../src/config/network';
import { ipNetsOverlap } from '../../src/ip';
import { silentLogger } from '../../src/log';
import { LeaseManager, type AcquireRequest } from '../../src/lease/manager';
import { MemoryLeaseRegistry } from '../../src/lease/memory-registry';
import type { Lease } from '../../src/lease/types';

const DUAL = '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}';

function request(n: number): AcquireRequest {
  return {
    config: parseNetworkConfig(DUAL),
    publicIP: `10.250.0.${10 + n}`,
    publicIPv6: `fd00:250::${10 + n}`,
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: `0e:00:00:00:00:0${n}` },
    backendV6Data: { VNI: 1, VtepMAC: `0e:00:00:00:06:0${n}` },
    subnetFromFile: null,
    ttlSeconds: 86400,
  };
}

/**
 * Holds every createSubnet until `n` of them are waiting, once: each host has listed (and
 * allocated from) a registry without the others' keys — the lab's start on a busy machine.
 */
function createsMeetAt(reg: MemoryLeaseRegistry, n: number): void {
  const create = reg.createSubnet.bind(reg);
  const waiting: (() => void)[] = [];
  let open = false;
  reg.createSubnet = async (...a) => {
    if (!open) {
      await new Promise<void>((resolve) => {
        waiting.push(resolve);
        if (waiting.length === n) {
          open = true;
          for (const w of waiting) w();
        }
      });
    }
    return create(...a);
  };
}

/** random() for allocate(): one value per family per allocation (IPv4 first), in turn. */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length]!;
}

const managers: LeaseManager[] = [];
afterEach(async () => {
  for (const m of managers.splice(0)) await m.close();
});

function manager(reg: MemoryLeaseRegistry, random: () => number): LeaseManager {
  const m = new LeaseManager({ registry: reg, log: silentLogger, random, configPollMs: 5, retryMinMs: 5, retryMaxMs: 20 });
  managers.push(m);
  return m;
}

function assertDisjoint(leases: readonly Lease[]): void {
  for (const [i, a] of leases.entries()) {
    for (const b of leases.slice(i + 1)) {
      assert.ok(!ipNetsOverlap(a.subnet, b.subnet), `${a.key} and ${b.key} hold the same IPv4 subnet`);
      assert.ok(a.ipv6Subnet && b.ipv6Subnet && !ipNetsOverlap(a.ipv6Subnet, b.ipv6Subnet), `${a.key} and ${b.key} hold the same IPv6 subnet`);
    }
  }
}

describe('dual-stack allocation racing another host', () => {
  it('same IPv4 subnet picked, different IPv6 subnets: the hosts end up with different IPv4 subnets', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.setConfig(DUAL);
    createsMeetAt(reg, 2);
    // Both take the first free IPv4 subnet; IPv6: the first free one and one further in.
    const [a, b] = await Promise.all([manager(reg, sequence(0, 0)).acquire(request(1)), manager(reg, sequence(0, 0.5)).acquire(request(2))]);
    assertDisjoint([a, b]);
    const listed = (await reg.listSubnets()).leases;
    assert.equal(listed.length, 2, listed.map((l) => l.key).join(' '));
    assertDisjoint(listed);
    assert.deepEqual(new Set(listed.map((l) => l.key)), new Set([a.key, b.key]));
  });

  it('same IPv6 subnet picked, different IPv4 subnets: the hosts end up with different IPv6 subnets', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.setConfig(DUAL);
    createsMeetAt(reg, 2);
    const [a, b] = await Promise.all([manager(reg, sequence(0, 0)).acquire(request(1)), manager(reg, sequence(0.5, 0)).acquire(request(2))]);
    assertDisjoint([a, b]);
    const listed = (await reg.listSubnets()).leases;
    assert.equal(listed.length, 2, listed.map((l) => l.key).join(' '));
    assertDisjoint(listed);
  });

  it('three hosts, all on the same IPv4 subnet at first: three disjoint leases', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.setConfig(DUAL);
    createsMeetAt(reg, 3);
    const got = await Promise.all([0, 0.3, 0.6].map((v6, i) => manager(reg, sequence(0, v6)).acquire(request(i + 1))));
    assertDisjoint(got);
    const listed = (await reg.listSubnets()).leases;
    assert.equal(listed.length, 3, listed.map((l) => l.key).join(' '));
    assertDisjoint(listed);
  });
});
