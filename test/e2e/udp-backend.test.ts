/**
 * flannel's legacy udp backend (`"Backend":{"Type":"udp"}`, compat §5) on a 3-host lab: TUN
 * flannel0, UDP 8285, raw IP in UDP, one route for the whole Network. Namespaces prefixed
 * wt<pid>u-, torn down at the end (also on failure).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab, hostUnderlayIp } from '../../src/lab';
import { waitUntil as pollUntil } from '../../src/lab/run';
import { containerAddr, deviceCounter, dropReports, icmpEcho, overlayAddr, sendDatagrams, tcpTransfer } from './helpers/datapath';
import { sh } from './helpers/shell';

const PREFIX = `wt${process.pid}u-`;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-udp-`));
let lab: Lab;

describe('a cluster on the legacy udp backend', { timeout: 180_000 }, () => {
  before(async () => {
    lab = await Lab.up({ prefix: PREFIX, name: `wt${process.pid}u`, stateDir: join(scratch, 'lab'), hosts: 3, backend: 'udp', healthzPort: 0 });
  });

  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('every container pings every other container, both ways', async () => {
    const m = await lab.pingMatrix();
    assert.ok(m.ok, JSON.stringify(m.results.filter((r) => !r.ok)));
    assert.equal(m.results.length, 6);
  });

  test('flannel0 is a TUN with MTU underlay − 28, the subnet\'s .0/32 and one route for the Network; leases are flannel\'s', async () => {
    for (const h of lab.hostNames()) {
      const link = await sh(lab, h, 'ip', '-d', 'link', 'show', 'flannel0');
      assert.match(link, /mtu 1472 /);
      assert.match(link, /tun type tun pi off vnet_hdr on persist on/);
      assert.match(await sh(lab, h, 'ip', '-4', 'addr', 'show', 'dev', 'flannel0'), new RegExp(`inet ${overlayAddr(lab, h).replace(/\./g, '\\.')}/32`));
      assert.match(await sh(lab, h, 'ip', 'route', 'show', 'dev', 'flannel0'), /^10\.5\.0\.0\/16 scope link/m);
      assert.equal(lab.subnetEnv(h)!.mtu, 1472);
      const key = lab.subnetEnv(h)!.subnetNetwork.replace('/', '-');
      const r = await lab.etcdctl(['get', `/coreos.com/network/subnets/${key}`, '--print-value-only']);
      assert.equal(r.stdout.trim(), `{"PublicIP":"${hostUnderlayIp(Number(h.slice(1)))}","PublicIPv6":null}`, 'no BackendType, no BackendData');
    }
  });

  test('100 MB over TCP arrive intact', async () => {
    const out = await tcpTransfer(lab, 'h1-c1', 'h3-c1', containerAddr(lab, 'h3'), 100, 7201);
    assert.match(out.sent, /^104857600 [0-9a-f]{64}$/);
    assert.equal(out.received, out.sent);
  });

  test('a destination in the Network that no host holds is answered with ICMP net unreachable', async () => {
    const taken = new Set(lab.hostNames().map((h) => lab.subnetEnv(h)!.subnetNetwork));
    let free = 200;
    while (taken.has(`10.5.${free}.0/24`)) free++;
    const script = `const s = require('net').connect(80, '10.5.${free}.2');
s.on('error', (e) => { console.log(e.code); process.exit(0); });
setTimeout(() => { console.log('no answer'); process.exit(0); }, 3000);`;
    const r = await lab.exec('h1-c1', [process.execPath, '-e', script]);
    assert.equal(r.stdout.trim(), 'ENETUNREACH');
  });

  test('datagrams from a non-peer are dropped and counted; nothing reaches the TUN', async () => {
    const packet = icmpEcho(containerAddr(lab, 'h2'), overlayAddr(lab, 'h1'));
    const before = await deviceCounter(lab, 'h1', 'flannel0', 'rx_packets');
    const reportsBefore = dropReports(lab, 'h1').length;
    await sendDatagrams(lab, 'etcd', '10.250.0.11', 8285, packet, 40);
    assert.ok(await pollUntil(() => dropReports(lab, 'h1').slice(reportsBefore).some((r) => (r.totals.dropNotPeer ?? 0) >= 40), 15_000, 100),
      'weftd on h1 reports 40 datagrams dropped from a non-peer');
    assert.equal(await deviceCounter(lab, 'h1', 'flannel0', 'rx_packets'), before, 'nothing written to the TUN');
    // flannel's udp backend would have taken them: the same packet from a peer goes through.
    await sendDatagrams(lab, 'h2', '10.250.0.11', 8285, packet, 3);
    assert.ok(await pollUntil(async () => (await deviceCounter(lab, 'h1', 'flannel0', 'rx_packets')) >= before + 3, 5000, 100));
  });
});
