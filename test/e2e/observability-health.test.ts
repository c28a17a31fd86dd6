/**
 * Observability end to end (issue #6 must-shows): /readyz, /metrics and the overlay probes of the
 * real daemon, on a 3-host lab (real etcd, real kernel) in namespaces prefixed wt<pid>o-, torn
 * down at the end (also on failure).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StatusReport } from '../../src/health/status';
import { Lab } from '../../src/lab';
import { sleep } from '../../src/lab/run';
import { parsePrometheusText, sampleValue } from './helpers/prometheus';
import { waitUntil } from './helpers/shell';

const WEFT = resolve(__dirname, '..', '..', 'src', 'cli', 'weft.js');
const PREFIX = `wt${process.pid}o-`;
const PORT = 8471;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-obs-`));

let lab: Lab;

/** GET/POST on a host's health port from inside its namespace (Node's fetch, no curl needed). */
async function http(host: string, path: string, method = 'GET', port = PORT): Promise<{ status: number; body: string }> {
  const script = `fetch('http://127.0.0.1:${port}${path}',{method:'${method}'}).then(async r=>{process.stdout.write(r.status+'\\n'+await r.text())},e=>{process.stdout.write('0\\n'+e.message)})`;
  const r = await lab.exec(host, [process.execPath, '-e', script], { timeoutMs: 15000 });
  const nl = r.stdout.indexOf('\n');
  return { status: Number(r.stdout.slice(0, nl)), body: r.stdout.slice(nl + 1) };
}

async function metrics(host: string): Promise<ReturnType<typeof parsePrometheusText>> {
  const r = await http(host, '/metrics');
  assert.equal(r.status, 200, r.body);
  return parsePrometheusText(r.body);
}

async function weft(host: string, ...args: string[]): Promise<{ code: number; out: string }> {
  const r = await lab.exec(host, [process.execPath, WEFT, ...args], { timeoutMs: 30000 });
  return { code: r.code, out: r.stdout + r.stderr };
}

function subnetOf(host: string): string {
  const env = lab.subnetEnv(host);
  assert.ok(env, `no subnet.env on ${host}`);
  return env.subnetNetwork;
}

function keyOf(host: string): string {
  return subnetOf(host).replace('/', '-');
}

describe('observability on a 3-host lab', { timeout: 170_000 }, () => {
  before(async () => {
    lab = await Lab.up({ prefix: PREFIX, name: `wt${process.pid}o`, stateDir: join(scratch, 'lab'), hosts: 3, healthzPort: PORT });
  });

  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('/healthz answers ok and /readyz is 200 on a converged host', async () => {
    assert.deepEqual(await http('h1', '/healthz'), { status: 200, body: 'ok\n' });
    assert.deepEqual(await http('h1', '/readyz'), { status: 200, body: 'ready\n' });
  });

  test('/readyz is 503 with the reason before peers are programmed, and 200 only once they are', async () => {
    // A weftd on h3 under a prefix whose config does not exist yet: it serves /healthz and
    // /readyz (503) while it waits; the peers it will program are h1's and h2's leases, copied.
    const prefix = '/obs-ready';
    for (const h of ['h1', 'h2']) {
      const v = await lab.etcdctl(['get', `/coreos.com/network/subnets/${keyOf(h)}`, '--print-value-only']);
      assert.equal(v.code, 0, v.stderr);
      assert.equal((await lab.etcdctl(['put', `${prefix}/subnets/${keyOf(h)}`, v.stdout.trim()])).code, 0);
    }
    await lab.stopDaemon('h3');
    for (const h of ['h1', 'h2']) await lab.exec('h3', ['ip', 'route', 'del', subnetOf(h)]);
    await lab.startDaemon('h3', { wait: false, extraArgs: [`--etcd-prefix=${prefix}`, `--healthz-port=${PORT + 1}`, `--subnet-file=${join(scratch, 'ready.env')}`] });
    try {
      await waitUntil(async () => (await http('h3', '/healthz', 'GET', PORT + 1)).status === 200, 15000, 'h3 /healthz');
      const waiting = await http('h3', '/readyz', 'GET', PORT + 1);
      assert.equal(waiting.status, 503, waiting.body);
      assert.match(waiting.body, /^not ready: waiting for the network config/);
      const metricsWhileWaiting = parsePrometheusText((await http('h3', '/metrics', 'GET', PORT + 1)).body);
      assert.equal(sampleValue(metricsWhileWaiting, 'weft_ready'), 0);

      assert.equal((await lab.etcdctl(['put', `${prefix}/config`, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'])).code, 0);
      // Sample /readyz, then the routes: routes only ever get added here, so a 200 followed by a
      // missing route would prove /readyz said ready too early.
      let sawReady = false;
      const deadline = Date.now() + 20000;
      while (!sawReady && Date.now() < deadline) {
        const r = await http('h3', '/readyz', 'GET', PORT + 1);
        const routes = (await lab.exec('h3', ['ip', 'route'])).stdout;
        if (r.status === 200) {
          sawReady = true;
          for (const h of ['h1', 'h2']) assert.ok(routes.includes(`${subnetOf(h)} via`), `/readyz 200 but no route to ${h}: ${routes}`);
        } else {
          assert.equal(r.status, 503, r.body);
          assert.match(r.body, /^not ready: /);
        }
      }
      assert.ok(sawReady, '/readyz never became 200');
      const m = parsePrometheusText((await http('h3', '/metrics', 'GET', PORT + 1)).body);
      assert.equal(sampleValue(m, 'weft_ready'), 1);
      assert.equal(sampleValue(m, 'weft_peers_known'), 2);
      assert.equal(sampleValue(m, 'weft_peers_programmed'), 2);
      // The 'programmed' event (no polling) timed the peers from their change to the kernel.
      assert.ok((sampleValue(m, 'weft_peer_programming_seconds_count') ?? 0) >= 1, 'weft_peer_programming_seconds observed nothing');
    } finally {
      await lab.stopDaemon('h3');
      await lab.etcdctl(['del', '--prefix', prefix]);
    }
    await lab.restartDaemon('h3');
  });

  test('/metrics parses strictly and its repair counters move when a route is deleted and repaired', async () => {
    const before = await metrics('h1');
    for (const name of ['weft_lease_held', 'weft_peers_known', 'weft_peers_programmed', 'weft_reconcile_runs_total', 'weft_probe_echoes_sent_total',
      'process_resident_memory_bytes']) {
      assert.notEqual(sampleValue(before, name), undefined, `${name} missing`);
    }
    assert.equal(sampleValue(before, 'weft_lease_held'), 1);
    assert.equal(sampleValue(before, 'weft_peers_known'), 2);
    assert.equal(sampleValue(before, 'weft_peers_programmed'), 2);
    const repairsBefore = sampleValue(before, 'weft_reconcile_repairs_total', { kind: 'route' })!;
    const runsBefore = sampleValue(before, 'weft_reconcile_runs_total')!;
    const target = subnetOf('h2');
    const del = await lab.exec('h1', ['ip', 'route', 'del', target]);
    assert.equal(del.code, 0, del.stderr);
    await waitUntil(async () => (await lab.exec('h1', ['ip', 'route', 'show', target])).stdout.includes('via'), 5000, 'the route to come back');
    await waitUntil(async () => sampleValue(await metrics('h1'), 'weft_reconcile_repairs_total', { kind: 'route' })! >= repairsBefore + 1, 5000, 'the repair counter');
    const after = await metrics('h1');
    assert.ok(sampleValue(after, 'weft_reconcile_runs_total')! > runsBefore);
    assert.equal(sampleValue(after, 'weft_peers_programmed'), 2);
  });

  test('a probe reports a peer unreachable when its VXLAN port is blocked, reachable again when unblocked; weft status shows it', async () => {
    const h2 = keyOf('h2');
    const ok = await weft('h1', 'status', '--probe', '--json');
    assert.equal(ok.code, 0, ok.out);
    const okReport = JSON.parse(ok.out) as StatusReport;
    assert.equal(okReport.peers.find((p) => p.key === h2)?.probe?.state, 'reachable', ok.out);

    const rule = ['INPUT', '-p', 'udp', '--dport', '8472', '-j', 'DROP'];
    const add = await lab.exec('h2', ['iptables', '-w', '-A', ...rule]);
    assert.equal(add.code, 0, `iptables in h2: ${add.stderr} (apt-get install -y iptables)`);
    try {
      const blocked = await weft('h1', 'status', '--probe', '--json');
      assert.equal(blocked.code, 1, 'weft status exits 1 when a peer is unreachable');
      const report = JSON.parse(blocked.out) as StatusReport;
      const p = report.peers.find((x) => x.key === h2);
      assert.equal(p?.probe?.state, 'unreachable', blocked.out);
      assert.equal(p?.probe?.lastError, 'timeout');
      assert.ok(p?.probe?.loss !== null && p!.probe!.loss! > 0);
      // h3 is not blocked.
      assert.equal(report.peers.find((x) => x.key === keyOf('h3'))?.probe?.state, 'reachable');
      const text = await weft('h1', 'status');
      assert.match(text.out, new RegExp(`${subnetOf('h2').replace(/\./g, '\\.')}\\s+10\\.250\\.0\\.12\\s+yes\\s+UNREACHABLE`), text.out);
      assert.match(text.out, /1 unreachable/);
      assert.match(lab.daemonLog('h1'), new RegExp(`peer ${h2} unreachable over the overlay`));
      const m = await metrics('h1');
      assert.equal(sampleValue(m, 'weft_probe_peers', { family: '4', state: 'unreachable' }), 1);
    } finally {
      await lab.exec('h2', ['iptables', '-w', '-D', ...rule]);
    }
    const again = await weft('h1', 'status', '--probe');
    assert.equal(again.code, 0, again.out);
    assert.match(again.out, /2 reachable, 0 unreachable/);
    assert.match(again.out, /lease\s+10\.5\.\d+\.0\/24 .* held, expires \d{4}-/);
    await sleep(100);
    assert.match(lab.daemonLog('h1'), new RegExp(`peer ${h2} reachable again over the overlay`));
  });

  test('--probe-interval=0: no periodic echo, weft status says so, and an on-demand probe still runs', async () => {
    const echoes = async (): Promise<number> => sampleValue(await metrics('h1'), 'weft_probe_echoes_sent_total')!;
    await lab.stopDaemon('h1');
    await lab.startDaemon('h1', { extraArgs: ['--probe-interval=0'] });
    await lab.waitConverged();
    try {
      // The first cycle of a prober on a cycle runs 1 s after ready (the check below sees it on the default).
      await sleep(2500);
      assert.equal(await echoes(), 0, 'an echo went out with --probe-interval=0');
      const status = await weft('h1', 'status');
      assert.match(status.out, /^probes\s+on demand only \(--probe-interval=0\): weft status --probe$/m, status.out);
      const probed = await weft('h1', 'status', '--probe');
      assert.equal(probed.code, 0, probed.out);
      assert.match(probed.out, /2 reachable, 0 unreachable/);
      assert.equal(await echoes(), 6, 'one on-demand round: 3 echoes to each of 2 peers');
      await sleep(1500);
      assert.equal(await echoes(), 6, 'nothing more after the round');
    } finally {
      await lab.restartDaemon('h1');
    }
    // The default cycle: its first echoes go out ~1 s after ready.
    await waitUntil(async () => (await echoes()) >= 2, 5000, 'the default probe cycle to send its first echoes');
  });

  test('weft status says how to turn the health port on when nothing answers', async () => {
    const r = await weft('h1', 'status', '--healthz-port=1');
    assert.equal(r.code, 1);
    assert.match(r.out, /cannot reach weftd at 127\.0\.0\.1:1.*\n.*--healthz-port=1/);
  });
});
