/**
 * Hostile input on the health port (issue #9 findings 1, 2, 4 and 6), end to end on a 2-host lab
 * (real etcd, real kernel, real weftd) in namespaces prefixed wt<pid>s-, torn down at the end
 * (also on failure). Requests come from the container of h2 — a tenant of the overlay — to h1's
 * health port on the underlay, or from h1's own loopback (an operator on the host).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StatusReport } from '../../src/health/status';
import { Lab } from '../../src/lab';
import { hostUnderlayIp } from '../../src/lab/lab';
import { sleep } from '../../src/lab/run';
import { parsePrometheusText, sampleValue } from './helpers/prometheus';
import { waitUntil } from './helpers/shell';

const WEFT = resolve(__dirname, '..', '..', 'src', 'cli', 'weft.js');
const PREFIX = `wt${process.pid}s-`;
const PORT = 8471;
const H1 = hostUnderlayIp(1);
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-sec-`));

let lab: Lab;

/**
 * Raw bytes to addr:port from inside `ns`, whatever comes back until the server closes or
 * `waitMs` passes (a plain TCP client: no HTTP library normalises the request line).
 */
const RAW_CLIENT = `
const net = require('net');
const [host, port, b64, waitMs] = [process.argv[1], Number(process.argv[2]), process.argv[3], Number(process.argv[4])];
const chunks = []; let closed = false;
const s = net.connect(port, host, () => s.write(Buffer.from(b64, 'base64')));
s.on('data', (d) => chunks.push(d));
s.on('error', (e) => chunks.push(Buffer.from('\\nSOCKET ERROR ' + e.code)));
s.on('close', () => { closed = true; done(); });
const t = setTimeout(() => { s.destroy(); done(); }, waitMs);
function done() { clearTimeout(t); process.stdout.write(JSON.stringify({ closed, text: Buffer.concat(chunks).toString('latin1') })); process.exit(0); }`;

async function raw(ns: string, host: string, request: string, waitMs = 2000): Promise<{ closed: boolean; text: string }> {
  const r = await lab.exec(ns, [process.execPath, '-e', RAW_CLIENT, host, String(PORT), Buffer.from(request, 'latin1').toString('base64'), String(waitMs)], { timeoutMs: waitMs + 10000 });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { closed: boolean; text: string };
}

/** HTTP status and body of one request from `ns` (Node's fetch), 0 when it failed. */
async function http(ns: string, host: string, path: string, method = 'GET'): Promise<{ status: number; body: string }> {
  const script = `fetch('http://${host}:${PORT}${path}',{method:'${method}'}).then(async r=>{process.stdout.write(r.status+'\\n'+await r.text())},e=>{process.stdout.write('0\\n'+e.message)})`;
  const r = await lab.exec(ns, [process.execPath, '-e', script], { timeoutMs: 20000 });
  const nl = r.stdout.indexOf('\n');
  return { status: Number(r.stdout.slice(0, nl)), body: r.stdout.slice(nl + 1) };
}

/** `n` requests at once from `ns`; their statuses. */
async function concurrent(ns: string, host: string, path: string, method: string, n: number): Promise<number[]> {
  const script = `Promise.all(Array.from({length:${n}},()=>fetch('http://${host}:${PORT}${path}',{method:'${method}'}).then(r=>r.text().then(()=>r.status),()=>0))).then(s=>process.stdout.write(JSON.stringify(s)))`;
  const r = await lab.exec(ns, [process.execPath, '-e', script], { timeoutMs: 30000 });
  return JSON.parse(r.stdout) as number[];
}

/** `n` requests one after the other from one process in `ns`; their statuses. */
async function serial(ns: string, host: string, path: string, method: string, n: number): Promise<number[]> {
  const script = `(async()=>{const s=[];for(let i=0;i<${n};i++){const r=await fetch('http://${host}:${PORT}${path}',{method:'${method}'});await r.text();s.push(r.status)}process.stdout.write(JSON.stringify(s))})()`;
  const r = await lab.exec(ns, [process.execPath, '-e', script], { timeoutMs: 60000 });
  return JSON.parse(r.stdout) as number[];
}

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const r = await http('h1', '127.0.0.1', '/metrics');
  assert.equal(r.status, 200, r.body);
  return sampleValue(parsePrometheusText(r.body), name, labels) ?? NaN;
}

describe('hostile input on the health port, 2-host lab', { timeout: 170_000 }, () => {
  before(async () => {
    lab = await Lab.up({ prefix: PREFIX, name: `wt${process.pid}s`, stateDir: join(scratch, 'lab'), hosts: 2, healthzPort: PORT });
  });

  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('finding 1: "GET //x:abc/" from a container leaves weftd running and answering /healthz', async () => {
    const pid = lab.daemonPid('h1');
    assert.ok(pid !== null, 'weftd runs on h1');
    const r = await raw('h2-c1', H1, 'GET //x:abc/ HTTP/1.1\r\nHost: a\r\n\r\n');
    assert.match(r.text, /^HTTP\/1\.1 [45]\d\d /, `weftd answered with an HTTP error: ${JSON.stringify(r.text)}`);
    await sleep(300);
    assert.equal(lab.daemonPid('h1'), pid, `weftd on h1 died:\n${lab.daemonLog('h1').slice(-2000)}`);
    assert.deepEqual(await http('h2-c1', H1, '/healthz'), { status: 200, body: 'ok\n' });
    assert.doesNotMatch(lab.daemonLog('h1'), /ERR_INVALID_URL/);
  });

  test('finding 4: a container gets /healthz and /readyz only; /status, /metrics and POST /probe answer loopback clients', async () => {
    assert.deepEqual(await http('h2-c1', H1, '/healthz'), { status: 200, body: 'ok\n' });
    assert.deepEqual(await http('h2-c1', H1, '/readyz'), { status: 200, body: 'ready\n' });
    for (const [path, method] of [['/status', 'GET'], ['/metrics', 'GET'], ['/probe', 'POST']] as const) {
      const r = await http('h2-c1', H1, path, method);
      assert.equal(r.status, 403, `${method} ${path} from a container: ${r.status} ${r.body}`);
      assert.doesNotMatch(r.body, /10\.250\.0\.|PublicIP|publicIp|weft_/, 'no cluster detail in the refusal');
    }
    assert.ok((await metric('weft_http_rejected_total', { reason: 'forbidden' })) >= 3, 'refusals are counted');
    const status = await http('h1', '127.0.0.1', '/status');
    assert.equal(status.status, 200);
    assert.equal((JSON.parse(status.body) as StatusReport).ready, true);
    const cli = await lab.exec('h1', [process.execPath, WEFT, 'status'], { timeoutMs: 30000 });
    assert.equal(cli.code, 0, cli.stdout + cli.stderr);
    assert.match(cli.stdout, /peers: 1 known, 1 programmed/);
    // The host talking to its own underlay address is local too (--healthz-ip=<that address>).
    const own = await lab.exec('h1', [process.execPath, WEFT, 'status', `--healthz-ip=${H1}`], { timeoutMs: 30000 });
    assert.equal(own.code, 0, own.stdout + own.stderr);
    // Another host asking is refused, and told where to ask.
    const other = await lab.exec('h2', [process.execPath, WEFT, 'status', `--healthz-ip=${H1}`], { timeoutMs: 30000 });
    assert.equal(other.code, 1);
    assert.match(other.stderr, /weftd at 10\.250\.0\.11:8471: HTTP 403: .*\nRun weft status on the host weftd runs on/);
  });

  test('finding 4: /readyz tells other machines "not ready" without the reason; the host gets the reason', async () => {
    await lab.stopDaemon('h2');
    // Under a prefix with no network config, weftd waits (not ready) with its health port up.
    await lab.startDaemon('h2', { wait: false, extraArgs: [`--etcd-prefix=/wt${process.pid}-none`, `--subnet-file=${join(scratch, 'none.env')}`] });
    try {
      await waitUntil(async () => (await http('h2', '127.0.0.1', '/readyz')).status === 503, 15000, 'h2 /readyz 503');
      assert.match((await http('h2', '127.0.0.1', '/readyz')).body, /^not ready: waiting for the network config/);
      assert.deepEqual(await http('h1-c1', hostUnderlayIp(2), '/readyz'), { status: 503, body: 'not ready\n' });
    } finally {
      await lab.stopDaemon('h2');
      await lab.restartDaemon('h2');
    }
  });

  test('finding 4: --healthz-expose-details opens /metrics and /status to other machines, never POST /probe', async () => {
    await lab.restartDaemon('h2', { extraArgs: ['--healthz-expose-details'] });
    const H2 = hostUnderlayIp(2);
    const m = await http('h1-c1', H2, '/metrics');
    assert.equal(m.status, 200, m.body);
    assert.ok(parsePrometheusText(m.body).has('weft_ready'));
    assert.equal((await http('h1-c1', H2, '/status')).status, 200);
    assert.equal((await http('h1-c1', H2, '/probe', 'POST')).status, 403);
  });

  test('weftd pings the systemd watchdog (WATCHDOG=1 every WATCHDOG_USEC/3) from its main loop, and not while stopped', async () => {
    const sock = join(scratch, 'notify.sock');
    // Python (already needed by node-gyp) receives the datagrams: Node has no AF_UNIX datagrams.
    const listener = spawn('python3', ['-c', `
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(0.1)
print("listening", flush=True)
while True:
    try:
        msg = s.recv(4096).decode()
    except socket.timeout:
        continue
    if "WATCHDOG=1" in msg:
        print("PING %.3f" % time.monotonic(), flush=True)
`, sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    listener.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const pings = (): number => out.split('\n').filter((l) => l.startsWith('PING')).length;
    try {
      await waitUntil(() => out.includes('listening'), 5000, 'the notify listener');
      await lab.restartDaemon('h2', { extraEnv: { NOTIFY_SOCKET: sock, WATCHDOG_USEC: '600000' } });
      const pid = lab.daemonPid('h2')!;
      await waitUntil(() => pings() >= 5, 5000, 'five watchdog pings (one per 200 ms)');
      process.kill(pid, 'SIGSTOP');
      await sleep(300);
      const stopped = pings();
      await sleep(1000);
      assert.equal(pings(), stopped, 'no ping while weftd is stopped');
      process.kill(pid, 'SIGCONT');
      await waitUntil(() => pings() >= stopped + 3, 5000, 'pings again once weftd runs');
      assert.match(lab.daemonLog('h2'), /event loop was blocked for \d+ ms/);
    } finally {
      listener.kill('SIGKILL');
    }
    await lab.restartDaemon('h2');
  });

  test('finding 2: concurrent POST /probe share one round; beyond the rate limit callers get 429', async () => {
    const before = await metric('weft_probe_echoes_sent_total');
    const statuses = await concurrent('h1', '127.0.0.1', '/probe', 'POST', 20);
    assert.deepEqual(statuses, Array(20).fill(200), 'every caller of the shared round gets its report');
    const sent = (await metric('weft_probe_echoes_sent_total')) - before;
    // One peer, 3 echoes per on-demand round: 20 callers at once share one round (two if a
    // slow machine lets a few arrive after the first ended), not 20 rounds (60 echoes).
    assert.ok(sent >= 3 && sent <= 6, `echoes sent for 20 concurrent POST /probe: ${sent} (one round is 3)`);
    // Rounds one after the other: the budget (a burst, then one round per 2 s) runs out.
    const statuses2 = await serial('h1', '127.0.0.1', '/probe', 'POST', 10);
    assert.ok(statuses2.includes(429), `10 back-to-back POST /probe: ${statuses2.join(' ')}: expected 429 once the budget is spent`);
    assert.ok(statuses2.filter((x) => x === 200).length <= 6, statuses2.join(' '));
    assert.ok((await metric('weft_http_rejected_total', { reason: 'rate_limited' })) >= 1);
  });

  test('finding 6: the prober probes only peers the backend accepted, not every key in etcd', async () => {
    const prefix = '/coreos.com/network/subnets';
    const mac = '{"VtepMAC":"ee:11:22:33:44:55"}';
    // Outside the Network, and inside it with another subnet length: both well-formed leases
    // (the watch delivers them) that the backend skips.
    await lab.etcdctl(['put', `${prefix}/10.99.0.0-24`, `{"PublicIP":"10.250.0.99","BackendType":"vxlan","BackendData":${mac}}`]);
    await lab.etcdctl(['put', `${prefix}/10.5.250.0-25`, `{"PublicIP":"10.250.0.98","BackendType":"vxlan","BackendData":${mac.replace('55', '56')}}`]);
    try {
      await waitUntil(async () => {
        const s = JSON.parse((await http('h1', '127.0.0.1', '/status')).body) as StatusReport;
        return s.peers.length === 3;
      }, 10000, 'h1 to see both hostile leases');
      await sleep(4100); // past the probe rate limit spent by the previous test (one round per 2 s)
      const r = await http('h1', '127.0.0.1', '/probe', 'POST');
      assert.equal(r.status, 200, r.body);
      const report = JSON.parse(r.body) as StatusReport;
      const probed = report.peers.filter((p) => p.probe !== null).map((p) => p.key);
      assert.deepEqual(probed, [lab.subnetEnv('h2')!.subnetNetwork.replace('/', '-')], `probed: ${probed.join(', ')}`);
    } finally {
      await lab.etcdctl(['del', `${prefix}/10.99.0.0-24`]);
      await lab.etcdctl(['del', `${prefix}/10.5.250.0-25`]);
    }
  });
});
