/**
 * Interop, vxlan dual stack (`EnableIPv6`): 2 real flanneld v0.20.2 hosts (h1, h2) and 2 weftd
 * hosts (h3, h4), IPv4 and IPv6 overlay over an IPv4+IPv6 underlay (lab namespaces
 * helperE2-<pid>d-*). Both families both ways, flannel.1 and flannel-v6.1 state for every peer,
 * lease keys/JSON and subnet.env of both kinds compared, and h1 replaced flanneld → weftd while
 * pings run. docs/flannel-compat.md, "Tested against a real flanneld".
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { useMixedLab, type MixedLab } from './helpers/mixed-lab';

/** flannel-v6.1 as `ip -d link` prints it, minus index, MAC, local address and queue length (see vxlan-mixed). */
async function v6DeviceShape(m: MixedLab, host: string): Promise<string> {
  const out = (await m.lab.exec(host, ['ip', '-d', 'link', 'show', 'flannel-v6.1'])).stdout;
  return out.replace(/^\d+: /, '').replace(/link\/ether \S+ brd \S+/, 'link/ether MAC brd BRD')
    .replace(/local fd00:250::\d+/, 'local IP').replace(/ qlen \d+/, '').replace(/\s+/g, ' ').trim();
}

describe('vxlan dual stack: 2 flanneld v0.20.2 + 2 weftd hosts', { timeout: 240_000 }, () => {
  const lab = useMixedLab({ id: 'd', kinds: ['flanneld', 'flanneld', 'weftd', 'weftd'], ipv6: 'dual' });

  test('every container reaches every other container over IPv4 and over IPv6, both ways', async () => {
    const m = lab();
    assert.equal(await m.assertPingMatrix(4), 12);
    assert.equal(await m.assertPingMatrix(6), 12);
  });

  test('every host has flannel\'s IPv4 and IPv6 route, neighbour and FDB entry for every other host', async () => {
    const m = lab();
    for (const host of m.hosts()) {
      for (const peer of m.hosts().filter((p) => p !== host)) {
        assert.equal(await m.vxlanPeerProblems(host, peer, 4), '');
        assert.equal(await m.vxlanPeerProblems(host, peer, 6), '');
      }
    }
  });

  test('flannel-v6.1 is the same device on both kinds: local = the IPv6 underlay address, MTU 1430, <IPv6 subnet>::/128', async () => {
    const m = lab();
    const flannel = await v6DeviceShape(m, 'h1');
    assert.match(flannel, /mtu 1430 .*vxlan id 1 local IP dev eth0 .*dstport 8472 nolearning/);
    assert.equal(await v6DeviceShape(m, 'h3'), flannel);
    for (const host of m.hosts()) {
      const addr = (await m.lab.exec(host, ['ip', '-6', '-o', 'addr', 'show', 'dev', 'flannel-v6.1', 'scope', 'global'])).stdout;
      assert.match(addr, new RegExp(`inet6 ${m.ipv6SubnetOf(host).replace('/64', '/128')} scope global`), `${host}: ${addr}`);
    }
  });

  test('lease keys and JSON are the same from flanneld and weftd: <v4>-24&<v6>-64, PublicIPv6, BackendV6Data', async () => {
    const m = lab();
    const values = await m.leaseValues();
    const shapes = new Map<string, string>();
    for (const host of m.hosts()) {
      const key = `${m.subnetOf(host).replace('/', '-')}&${m.ipv6SubnetOf(host).replace('/', '-')}`;
      const value = values.get(key);
      assert.ok(value, `${host} (${m.kindOf(host)}): no key ${key} in ${[...values.keys()].join(', ')}`);
      shapes.set(host, value.replace(`"${m.publicIpOf(host)}"`, '"IP"').replace(`"${m.publicIpv6Of(host)}"`, '"IP6"')
        .replace(await m.vtepMacOf(host), 'MAC').replace(await m.vtepMacOf(host, 'BackendV6Data'), 'MAC6'));
    }
    assert.equal(shapes.get('h1'), '{"PublicIP":"IP","PublicIPv6":"IP6","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"MAC"},"BackendV6Data":{"VNI":1,"VtepMAC":"MAC6"}}');
    for (const host of ['h2', 'h3', 'h4']) assert.equal(shapes.get(host), shapes.get('h1'), host);
  });

  test('subnet.env is the same from flanneld and weftd (but for the subnets): IPv6 lines between SUBNET and MTU', async () => {
    const m = lab();
    const shape = (host: string): string => m.subnetFileText(host)
      .replace(m.lab.subnetEnv(host)!.subnet, 'SUBNET').replace(m.lab.subnetEnv(host)!.ipv6Subnet!, 'SUBNET6');
    const flannel = shape('h1');
    assert.equal(flannel, 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=SUBNET\nFLANNEL_IPV6_NETWORK=fd00:5::/48\nFLANNEL_IPV6_SUBNET=SUBNET6\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
    for (const host of ['h2', 'h3', 'h4']) assert.equal(shape(host), flannel, host);
  });

  test('h1: flanneld → weftd while pings run keeps both subnets and both VtepMACs; no ping lost', async () => {
    const m = lab();
    const before = [m.subnetOf('h1'), m.ipv6SubnetOf('h1'), await m.vtepMacOf('h1'), await m.vtepMacOf('h1', 'BackendV6Data')];
    const { flows } = await m.replaceWhilePinging('h1', 'weftd', 50);
    assert.deepEqual([m.subnetOf('h1'), m.ipv6SubnetOf('h1'), await m.vtepMacOf('h1'), await m.vtepMacOf('h1', 'BackendV6Data')], before);
    for (const f of flows) assert.equal(f.received, f.sent, `${f.name}: ${f.out}`);
    assert.equal(await m.assertPingMatrix(6), 12);
  });
});
