/**
 * ICMPv6 peer probes end to end: a real dual-stack lab (2 hosts, etcd, real kernel, namespaces
 * prefixed wt<pid>p-), `weft status --probe` on h1 probes h2 over both families through the
 * overlay (<subnet>.0 on flannel.1, <IPv6 subnet>:: on flannel-v6.1); with h2 dropping VXLAN over
 * its IPv6 underlay, the IPv6 half shows loss and the IPv4 half stays reachable.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StatusReport } from '../../src/health/status';
import { Lab } from '../../src/lab';
import { waitUntil } from '../../src/lab/run';

const WEFT = resolve(__dirname, '..', '..', 'src', 'cli', 'weft.js');
const PORT = 18_471;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-ipv6probe-`));

describe('ICMPv6 probes on a dual-stack vxlan lab of 2 hosts', { timeout: 90_000 }, () => {
  let lab: Lab;
  before(async () => {
    lab = await Lab.up({ prefix: `wt${process.pid}p-`, name: `wt${process.pid}p`, stateDir: join(scratch, 'lab'), hosts: 2, healthzPort: PORT, ipv6: 'dual' });
    // flannel-v6.1's <subnet>:: is tentative (duplicate address detection) for ~1-2 s after the
    // device is set up: until then the peer drops echoes to it (docs/ipv6.md).
    const settled = await waitUntil(async () => {
      for (const h of ['h1', 'h2']) if ((await lab.exec(h, ['ip', '-6', 'addr', 'show', 'dev', 'flannel-v6.1', 'tentative'])).stdout.trim() !== '') return false;
      return true;
    }, 10_000, 50);
    assert.ok(settled, 'flannel-v6.1 addresses still tentative after 10 s');
  });
  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  async function probe(): Promise<{ code: number; report: StatusReport; text: string }> {
    const r = await lab.exec('h1', [process.execPath, WEFT, 'status', '--probe', '--json', `--healthz-port=${PORT}`], { timeoutMs: 30_000 });
    let report: StatusReport;
    try {
      report = JSON.parse(r.stdout) as StatusReport;
    } catch {
      assert.fail(`weft status --probe on h1 did not print a report (exit ${r.code}): ${r.stdout}${r.stderr}`);
    }
    const text = await lab.exec('h1', [process.execPath, WEFT, 'status', `--healthz-port=${PORT}`], { timeoutMs: 30_000 });
    return { code: r.code, report, text: text.stdout };
  }

  test('weft status --probe reports the peer reachable over IPv4 and IPv6, each with an RTT', async () => {
    const { code, report, text } = await probe();
    assert.equal(code, 0, JSON.stringify(report.peers));
    assert.equal(report.peers.length, 1);
    const p = report.peers[0]!;
    assert.equal(p.probe?.family, 4);
    assert.equal(p.probe?.state, 'reachable', JSON.stringify(p));
    assert.equal(p.probeV6?.family, 6);
    assert.equal(p.probeV6?.address, p.ipv6Subnet?.split('/')[0], 'ICMPv6 to <IPv6 subnet>:: (flannel-v6.1)');
    assert.equal(p.probeV6?.state, 'reachable', JSON.stringify(p));
    assert.ok(p.probeV6!.lastRttMs !== null && p.probeV6!.lastRttMs > 0 && p.probeV6!.lastRttMs < 1000, JSON.stringify(p.probeV6));
    // The window may still hold a cycle echo sent while the address was tentative.
    assert.ok(p.probeV6!.loss !== null && p.probeV6!.loss < 1, JSON.stringify(p.probeV6));
    const m = await lab.exec('h1', ['curl', '-s', `http://127.0.0.1:${PORT}/metrics`]);
    assert.match(m.stdout, /^weft_probe_peers\{family="6",state="reachable"\} 1$/m, m.stdout);
    assert.match(text, new RegExp(`^${p.ipv6Subnet!.replace(/\./g, '\\.')}\\s+yes\\s+reachable\\s+\\d+\\.\\d{3} ms\\s+\\d+%`, 'm'), text);
  });

  test('with VXLAN over IPv6 dropped at the peer, its IPv6 half shows loss and its IPv4 half stays reachable', async () => {
    // flannel-v6.1 encapsulates over the IPv6 underlay, flannel.1 over IPv4: drop only the former.
    const rule = ['INPUT', '-p', 'udp', '--dport', '8472', '-j', 'DROP'];
    const add = await lab.exec('h2', ['ip6tables', '-w', '-A', ...rule]);
    assert.equal(add.code, 0, `ip6tables in h2: ${add.stderr} (apt-get install -y iptables)`);
    try {
      const { code, report } = await probe();
      assert.equal(code, 1, 'weft status exits 1 when an IPv6 half is unreachable');
      const p = report.peers[0]!;
      assert.equal(p.probe?.state, 'reachable', JSON.stringify(p));
      assert.equal(p.probeV6?.state, 'unreachable', JSON.stringify(p));
      assert.equal(p.probeV6?.lastError, 'timeout');
      assert.ok((p.probeV6?.loss ?? 0) > 0, JSON.stringify(p.probeV6));
    } finally {
      await lab.exec('h2', ['ip6tables', '-w', '-D', ...rule]);
    }
    const again = await probe();
    assert.equal(again.report.peers[0]?.probeV6?.state, 'reachable', JSON.stringify(again.report.peers[0]));
  });
});

describe('probes on a dual-stack host-gw lab of 2 hosts', { timeout: 60_000 }, () => {
  let lab: Lab;
  const dir = mkdtempSync(join(tmpdir(), `wt${process.pid}-hgprobe-`));
  before(async () => {
    lab = await Lab.up({ prefix: `wt${process.pid}q-`, name: `wt${process.pid}q`, stateDir: join(dir, 'lab'), hosts: 2, backend: 'host-gw', healthzPort: PORT, ipv6: 'dual' });
  });
  after(async () => {
    await lab?.down();
    rmSync(dir, { recursive: true, force: true });
  });

  test('host-gw peers are probed at their container bridge (<subnet>.1, <IPv6 subnet>::1) over both families', async () => {
    const r = await lab.exec('h1', [process.execPath, WEFT, 'status', '--probe', '--json', `--healthz-port=${PORT}`], { timeoutMs: 30_000 });
    const report = JSON.parse(r.stdout) as StatusReport;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const p = report.peers[0]!;
    assert.equal(p.probe?.address, p.subnet.replace(/0\/\d+$/, '1'));
    assert.equal(p.probe?.state, 'reachable', JSON.stringify(p));
    assert.equal(p.probeV6?.address, `${p.ipv6Subnet!.split('/')[0]}1`);
    assert.equal(p.probeV6?.state, 'reachable', JSON.stringify(p));
    assert.ok(p.probeV6!.lastRttMs !== null && p.probeV6!.lastRttMs > 0, JSON.stringify(p.probeV6));
  });
});
