/**
 * Interop, flannel's host-gw backend: 2 real flanneld v0.20.2 hosts (h1, h2) and 2 weftd hosts
 * (h3, h4) on one L2 (lab namespaces helperE2-<pid>g-* and, dual stack, helperE2-<pid>h-*).
 * Traffic both ways, each host's route to every peer, lease JSON and subnet.env of both kinds,
 * replacement flanneld → weftd → flanneld while pings run, a host leaving.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { useMixedLab } from './helpers/mixed-lab';

describe('host-gw: 2 flanneld v0.20.2 + 2 weftd hosts', { timeout: 240_000 }, () => {
  const lab = useMixedLab({ id: 'g', kinds: ['flanneld', 'flanneld', 'weftd', 'weftd'], backend: 'host-gw' });

  test('every container reaches every other container, both ways (12 pairs)', async () => {
    assert.equal(await lab().assertPingMatrix(), 12);
  });

  test('every host has flannel\'s route <subnet> via <PublicIP> dev eth0 for every other host, and no overlay device', async () => {
    const m = lab();
    for (const host of m.hosts()) {
      for (const peer of m.hosts().filter((p) => p !== host)) assert.equal(await m.hostgwPeerProblems(host, peer), '');
      assert.doesNotMatch((await m.lab.exec(host, ['ip', '-o', 'link'])).stdout, /flannel/, `${host} (${m.kindOf(host)})`);
    }
  });

  test('lease JSON and subnet.env are the same from flanneld and weftd (no BackendData; FLANNEL_MTU = the underlay\'s)', async () => {
    const m = lab();
    for (const host of m.hosts()) {
      assert.equal((await m.leaseOf(host)).replace(m.publicIpOf(host), 'IP'), '{"PublicIP":"IP","PublicIPv6":null,"BackendType":"host-gw"}', `${host} (${m.kindOf(host)})`);
      assert.equal(m.subnetFileText(host).replace(m.lab.subnetEnv(host)!.subnet, 'SUBNET'),
        'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=SUBNET\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n', `${host} (${m.kindOf(host)})`);
    }
  });

  test('h1: flanneld → weftd and back while pings run: same subnet, routes everywhere, no ping lost', async () => {
    const m = lab();
    const subnet = m.subnetOf('h1');
    for (const to of ['weftd', 'flanneld'] as const) {
      const { flows } = await m.replaceWhilePinging('h1', to, 50);
      assert.equal(m.subnetOf('h1'), subnet, `${to} on h1`);
      for (const peer of ['h2', 'h3', 'h4']) {
        assert.equal(await m.hostgwPeerProblems(peer, 'h1'), '');
        assert.equal(await m.hostgwPeerProblems('h1', peer), '');
      }
      for (const f of flows) assert.equal(f.received, f.sent, `${f.name} (h1 → ${to}): ${f.out}`);
    }
  });

  test('a host of each kind leaves (stopped, lease deleted): flanneld and weftd hosts drop its route', async () => {
    const m = lab();
    for (const leaving of ['h4', 'h2']) {
      const subnet = m.subnetOf(leaving);
      await m.stop(leaving);
      await m.deleteLease(leaving);
      for (const host of ['h1', 'h2', 'h3'].filter((h) => h !== leaving)) {
        await m.settle(`${host} (${m.kindOf(host)}) still routes ${leaving}'s ${subnet}`, async () => {
          const route = await m.routeTo(host, subnet);
          return route === '' ? '' : `route "${route}"`;
        });
      }
    }
    assert.ok(await m.lab.ping('h1-c1', 'h3-c1'), 'flanneld h1 → weftd h3');
    assert.ok(await m.lab.ping('h3-c1', 'h1-c1'), 'weftd h3 → flanneld h1');
  });
});

describe('host-gw dual stack: 2 flanneld v0.20.2 + 2 weftd hosts', { timeout: 240_000 }, () => {
  const lab = useMixedLab({ id: 'h', kinds: ['flanneld', 'flanneld', 'weftd', 'weftd'], backend: 'host-gw', ipv6: 'dual' });

  test('every container reaches every other container over IPv4 and IPv6, both ways', async () => {
    const m = lab();
    assert.equal(await m.assertPingMatrix(4), 12);
    assert.equal(await m.assertPingMatrix(6), 12);
  });

  test('every host routes every peer\'s IPv4 subnet via its PublicIP and its IPv6 subnet via its PublicIPv6', async () => {
    const m = lab();
    for (const host of m.hosts()) {
      for (const peer of m.hosts().filter((p) => p !== host)) {
        assert.equal(await m.hostgwPeerProblems(host, peer, 4), '');
        assert.equal(await m.hostgwPeerProblems(host, peer, 6), '');
      }
    }
  });

  test('lease keys and JSON are the same from flanneld and weftd: PublicIPv6, no BackendData/BackendV6Data', async () => {
    const m = lab();
    const values = await m.leaseValues();
    for (const host of m.hosts()) {
      const key = `${m.subnetOf(host).replace('/', '-')}&${m.ipv6SubnetOf(host).replace('/', '-')}`;
      assert.equal(values.get(key)?.replace(`"${m.publicIpOf(host)}"`, '"IP"').replace(`"${m.publicIpv6Of(host)}"`, '"IP6"'),
        '{"PublicIP":"IP","PublicIPv6":"IP6","BackendType":"host-gw"}', `${host} (${m.kindOf(host)}) ${key}`);
    }
  });
});
