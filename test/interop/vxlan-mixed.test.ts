/**
 * Interop, vxlan: a mixed cluster of 2 real flanneld v0.20.2 hosts (h1, h2) and 2 weftd hosts
 * (h3, h4) on one etcd, the real kernel, lab namespaces helperE2-<pid>v-*. Traffic both ways,
 * each host's kernel state for every peer, leases and subnet.env of both compared, then hosts
 * of each kind leave. docs/flannel-compat.md, "Tested against a real flanneld".
 */
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, test } from 'node:test';
import { useMixedLab, type MixedLab } from './helpers/mixed-lab';

const WEFT = resolve(__dirname, '..', '..', 'src', 'cli', 'weft.js');

/** flannel.1 as `ip -d link` prints it, minus what differs per host (index, MAC, local IP). */
async function deviceShape(m: MixedLab, host: string): Promise<string> {
  const out = (await m.lab.exec(host, ['ip', '-d', 'link', 'show', 'flannel.1'])).stdout;
  return out.replace(/^\d+: /, '').replace(/link\/ether \S+ brd \S+/, 'link/ether MAC brd BRD')
    .replace(/local 10\.250\.0\.\d+/, 'local IP')
    // flanneld creates flannel.1 with txqueuelen 0, weft leaves the kernel's 1000; both devices
    // run qdisc noqueue, where the queue length is never used (docs/flannel-compat.md).
    .replace(/ qlen \d+/, '')
    .replace(/\s+/g, ' ').trim();
}

describe('vxlan: 2 flanneld v0.20.2 + 2 weftd hosts', { timeout: 240_000 }, () => {
  const lab = useMixedLab({ id: 'v', kinds: ['flanneld', 'flanneld', 'weftd', 'weftd'] });

  test('every container reaches every other container, both ways (12 pairs)', async () => {
    const m = lab();
    assert.equal(await m.assertPingMatrix(), 12);
  });

  test('every host has flannel\'s route, permanent neighbour and FDB entry for every other host', async () => {
    const m = lab();
    for (const host of m.hosts()) {
      for (const peer of m.hosts().filter((p) => p !== host)) {
        assert.equal(await m.vxlanPeerProblems(host, peer), '');
      }
    }
  });

  test('flannel.1 is the same device on both kinds: VNI 1, dstport 8472, nolearning, MTU 1450, <subnet>.0/32', async () => {
    const m = lab();
    const flannel = await deviceShape(m, 'h1');
    assert.match(flannel, /mtu 1450 .*vxlan id 1 local IP dev eth0 .*dstport 8472 nolearning/);
    assert.equal(await deviceShape(m, 'h3'), flannel);
    // The one difference deviceShape() leaves out: flanneld's txqueuelen 0 (`ip` prints no qlen), weft's 1000.
    for (const host of m.hosts()) {
      const qlen = / qlen (\d+)/.exec((await m.lab.exec(host, ['ip', 'link', 'show', 'flannel.1'])).stdout)?.[1] ?? '0';
      assert.equal(qlen, m.kindOf(host) === 'weftd' ? '1000' : '0', `${host} (${m.kindOf(host)}) txqueuelen`);
    }
    for (const host of m.hosts()) {
      const addr = (await m.lab.exec(host, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'flannel.1'])).stdout;
      assert.match(addr, new RegExp(`inet ${m.subnetOf(host).replace('/24', '/32').replace(/\./g, '\\.')} scope global flannel\\.1`), `${host}: ${addr}`);
    }
  });

  test('weft leases lists flanneld\'s leases as it lists weftd\'s (subnet, public IP, backend, VtepMAC)', async () => {
    const m = lab();
    const r = await m.lab.exec('h3', [process.execPath, WEFT, 'leases', '-o', 'json', '--etcd-endpoints=http://10.250.0.2:2379'], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as { subnet: string; publicIp: string; backendType: string; vtepMac: string | null }[];
    assert.equal(rows.length, 4, r.stdout);
    for (const host of m.hosts()) {
      const row = rows.find((x) => x.subnet === m.subnetOf(host));
      assert.ok(row, `${host} (${m.kindOf(host)}) ${m.subnetOf(host)} missing from weft leases: ${r.stdout}`);
      assert.deepEqual([row.publicIp, row.backendType, row.vtepMac], [m.publicIpOf(host), 'vxlan', await m.vtepMacOf(host)], host);
    }
  });

  test('lease JSON is byte for byte the same from flanneld and weftd (but for the host\'s own values)', async () => {
    const m = lab();
    const shape = async (host: string): Promise<string> => (await m.leaseOf(host))
      .replace(`"${m.publicIpOf(host)}"`, '"PUBLIC_IP"').replace(await m.vtepMacOf(host), 'MAC');
    const flannel = await shape('h1');
    assert.equal(flannel, '{"PublicIP":"PUBLIC_IP","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"MAC"}}');
    for (const host of ['h2', 'h3', 'h4']) assert.equal(await shape(host), flannel, host);
  });

  test('subnet.env is byte for byte the same from flanneld and weftd (but for FLANNEL_SUBNET), mode 0644', async () => {
    const m = lab();
    const shape = (host: string): string => m.subnetFileText(host).replace(m.lab.subnetEnv(host)!.subnet, 'SUBNET');
    const flannel = shape('h1');
    assert.equal(flannel, 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=SUBNET\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
    for (const host of ['h2', 'h3', 'h4']) assert.equal(shape(host), flannel, host);
    for (const host of m.hosts()) assert.equal(statSync(m.lab.subnetFile(host)).mode & 0o777, 0o644, `${host} (${m.kindOf(host)})`);
  });

  test('a weftd host leaves (stopped, lease deleted): flanneld and weftd hosts drop its route, neighbour and FDB entry', async () => {
    const m = lab();
    const subnet = m.subnetOf('h4');
    const mac = await m.vtepMacOf('h4');
    await m.stop('h4');
    await m.deleteLease('h4');
    for (const host of ['h1', 'h2', 'h3']) {
      await m.settle(`${host} (${m.kindOf(host)}) still has h4's ${subnet}`, () => m.vxlanLeftovers(host, subnet, subnet.split('/')[0]!, mac));
      for (const peer of ['h1', 'h2', 'h3'].filter((p) => p !== host)) assert.equal(await m.vxlanPeerProblems(host, peer), '');
    }
  });

  test('a flanneld host leaves (stopped, lease deleted): the other flanneld and the weftd host drop it; the rest still ping', async () => {
    const m = lab();
    const subnet = m.subnetOf('h2');
    const mac = await m.vtepMacOf('h2');
    await m.stop('h2');
    await m.deleteLease('h2');
    for (const host of ['h1', 'h3']) {
      await m.settle(`${host} (${m.kindOf(host)}) still has h2's ${subnet}`, () => m.vxlanLeftovers(host, subnet, subnet.split('/')[0]!, mac));
    }
    assert.ok(await m.lab.ping('h1-c1', 'h3-c1'), 'flanneld h1 → weftd h3');
    assert.ok(await m.lab.ping('h3-c1', 'h1-c1'), 'weftd h3 → flanneld h1');
  });
});
