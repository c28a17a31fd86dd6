/**
 * weftd works with only the capabilities its systemd unit leaves it (issue #9, systemd hardening):
 * a 2-host lab (namespaces wt<pid>p-, torn down at the end, also on failure) whose weftds run
 * under `setpriv --bounding-set=-all,+net_admin,+net_raw --no-new-privs` (what
 * CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW and NoNewPrivileges=yes give a root service),
 * with --ip-masq (iptables) and the health port (ICMP probes on a raw socket) on. The hosts'
 * containers reach each other, the iptables rules exist and the probes see the peer.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StatusReport } from '../../src/health/status';
import { Lab } from '../../src/lab';

const PREFIX = `wt${process.pid}p-`;
const PORT = 8471;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-caps-`));
const PIDFILE = join(scratch, 'weftd.pids');
process.env.WEFT_CAPPED_PIDFILE = PIDFILE;

let lab: Lab;

function cappedPids(): number[] {
  try {
    return readFileSync(PIDFILE, 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('weftd with only CAP_NET_ADMIN and CAP_NET_RAW (the systemd unit\'s bounding set)', { timeout: 120_000 }, () => {
  before(async () => {
    try {
      execFileSync('sh', ['-c', 'command -v setpriv'], { stdio: 'ignore' });
    } catch {
      assert.fail('setpriv is not installed: apt-get install -y util-linux');
    }
    lab = await Lab.up({
      prefix: PREFIX, name: `wt${process.pid}p`, stateDir: join(scratch, 'lab'), hosts: 2, healthzPort: PORT,
      weftdPath: resolve(__dirname, 'helpers', 'capped-weftd.js'), extraWeftdArgs: ['--ip-masq'],
    });
  });

  after(async () => {
    await lab?.down();
    // The wrapper forwards SIGTERM; should it have died first, its weftd must not outlive the test.
    for (const pid of cappedPids()) if (alive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(scratch, { recursive: true, force: true });
  });

  test('the overlay, iptables masquerading and the probes work, and weftd holds no other capability', async () => {
    const pids = cappedPids();
    assert.equal(pids.length, 2, 'two weftds under setpriv');
    for (const pid of pids) {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const eff = BigInt('0x' + /^CapEff:\s+([0-9a-f]+)$/m.exec(status)![1]!);
      const bnd = BigInt('0x' + /^CapBnd:\s+([0-9a-f]+)$/m.exec(status)![1]!);
      // CAP_NET_ADMIN = 12, CAP_NET_RAW = 13.
      assert.equal(eff, (1n << 12n) | (1n << 13n), `weftd ${pid} CapEff ${eff.toString(16)}`);
      assert.equal(bnd, eff);
      assert.match(status, /^NoNewPrivs:\s+1$/m);
    }
    const matrix = await lab.pingMatrix();
    assert.ok(matrix.ok, JSON.stringify(matrix));
    const nat = await lab.exec('h1', ['iptables', '-w', '-t', 'nat', '-S']);
    assert.match(nat.stdout, /MASQUERADE/, nat.stdout);
    const script = `fetch('http://127.0.0.1:${PORT}/probe',{method:'POST'}).then(r=>r.text()).then(t=>process.stdout.write(t))`;
    const r = await lab.exec('h1', [process.execPath, '-e', script], { timeoutMs: 20000 });
    const report = JSON.parse(r.stdout) as StatusReport;
    assert.equal(report.probes.error, null, `probe socket: ${report.probes.error}`);
    assert.deepEqual(report.peers.map((p) => p.probe?.state), ['reachable']);
    assert.doesNotMatch(lab.daemonLog('h1') + lab.daemonLog('h2'), /EPERM|Operation not permitted|"level":"error"/);
  });
});
