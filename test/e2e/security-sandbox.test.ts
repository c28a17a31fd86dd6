/**
 * The sandbox of systemd/weftd.service fits what weftd really does (issue #9, systemd
 * hardening). systemd is not PID 1 on the test machines, so the unit cannot be started; instead a
 * 2-host lab (namespaces wt<pid>x-, torn down at the end, also on failure) runs weftd under
 * `strace -f` through what a host does — start, --ip-masq (iptables), the health port, an
 * on-demand probe, /metrics, a restart onto the user-space fallback (TUN, the pump) — and the
 * trace is checked against the unit: every system call is in its SystemCallFilter=, every socket
 * family in RestrictAddressFamilies=, and every file opened for writing is the subnet file's
 * directory, /run or /dev/net/tun (ProtectSystem=strict, ReadWritePaths=/run, DeviceAllow=).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab } from '../../src/lab';

const UNIT = resolve(__dirname, '..', '..', '..', 'systemd', 'weftd.service');
const PREFIX = `wt${process.pid}x-`;
const PORT = 8471;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-sandbox-`));
const TRACES = join(scratch, 'traces');
process.env.WEFT_TRACE_DIR = TRACES;

let lab: Lab;

function need(tool: string, pkg: string): void {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
  } catch {
    assert.fail(`${tool} is not installed: apt-get install -y ${pkg}`);
  }
}

/** The values of `Key=` in the unit (the last assignment wins, as in systemd, for these keys). */
function unitValue(key: string): string {
  const lines = readFileSync(UNIT, 'utf8').split('\n').filter((l) => l.startsWith(`${key}=`));
  assert.ok(lines.length > 0, `systemd/weftd.service has no ${key}=`);
  return lines[lines.length - 1]!.slice(key.length + 1).trim();
}

/** System calls a SystemCallFilter= allow list admits, groups expanded by systemd-analyze. */
function allowedSyscalls(filter: string): Set<string> {
  const groups = new Map<string, string[]>();
  let cur: string | null = null;
  for (const line of execFileSync('systemd-analyze', ['syscall-filter'], { encoding: 'utf8' }).split('\n')) {
    const t = line.trim();
    if (line.startsWith('@')) groups.set((cur = t), []);
    else if (cur !== null && t !== '' && !t.startsWith('#')) groups.get(cur)!.push(t);
  }
  const expand = (name: string, seen: Set<string>): string[] => {
    if (!name.startsWith('@')) return [name];
    if (seen.has(name)) return [];
    seen.add(name);
    assert.ok(groups.has(name), `unknown syscall group ${name}`);
    return groups.get(name)!.flatMap((x) => expand(x, seen));
  };
  return new Set(filter.split(/\s+/).flatMap((x) => expand(x, new Set())));
}

describe('the systemd unit\'s sandbox fits what weftd does (strace)', { timeout: 170_000 }, () => {
  before(async () => {
    need('strace', 'strace');
    need('systemd-analyze', 'systemd');
    execFileSync('mkdir', ['-p', TRACES]);
    lab = await Lab.up({
      prefix: PREFIX, name: `wt${process.pid}x`, stateDir: join(scratch, 'lab'), hosts: 2, healthzPort: PORT,
      weftdPath: resolve(__dirname, 'helpers', 'traced-weftd.js'), extraWeftdArgs: ['--ip-masq'],
      readyTimeoutMs: 60_000,
    });
  });

  after(async () => {
    await lab?.down();
    // Should a wrapper have died first, its strace and weftd must not outlive the test.
    let groups: number[] = [];
    try {
      groups = readFileSync(join(TRACES, 'groups'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      // none started
    }
    for (const g of groups) {
      try {
        process.kill(-g, 'SIGKILL');
      } catch {
        // gone
      }
    }
    rmSync(scratch, { recursive: true, force: true });
  });

  test('system calls, socket families and written paths stay within the unit\'s sandbox', async () => {
    const probe = `fetch('http://127.0.0.1:${PORT}/probe',{method:'POST'}).then(r=>r.text()).then(()=>fetch('http://127.0.0.1:${PORT}/metrics')).then(r=>process.stdout.write(String(r.status)))`;
    assert.equal((await lab.exec('h1', [process.execPath, '-e', probe], { timeoutMs: 30000 })).stdout, '200');
    await lab.restartDaemon('h2', { extraArgs: ['--vxlan-fallback=force'] });
    assert.match(lab.daemonLog('h2'), /shutting down/, 'the traced weftd took SIGTERM');
    assert.ok(await lab.ping('h1-c1', 'h2-c1'), 'h1 reaches h2 on the fallback');
    await lab.stopDaemon('h1');
    await lab.stopDaemon('h2');

    const trace = readdirSync(TRACES).filter((f) => f.startsWith('trace-')).map((f) => readFileSync(join(TRACES, f), 'utf8')).join('\n');
    const calls = [...trace.matchAll(/^\d+ +([a-z_0-9]+)\(/gm)].map((m) => m[1]!);
    assert.ok(calls.length > 1000, `the trace has ${calls.length} calls`);

    const allowed = allowedSyscalls(unitValue('SystemCallFilter'));
    const outside = [...new Set(calls)].filter((c) => !allowed.has(c)).sort();
    assert.deepEqual(outside, [], `system calls outside SystemCallFilter=: ${outside.join(' ')}`);

    const families = new Set(unitValue('RestrictAddressFamilies').split(/\s+/));
    const used = new Set([...trace.matchAll(/\bsocket\((AF_[A-Z0-9]+)/g)].map((m) => m[1]!));
    const badFamilies = [...used].filter((f) => !families.has(f));
    assert.deepEqual(badFamilies, [], `socket families outside RestrictAddressFamilies=: ${badFamilies.join(' ')}`);

    // Opened for writing, created, renamed (failed attempts aside).
    const writable = [lab.subnetFile('h1'), lab.subnetFile('h2')].map(dirname);
    const written = new Set<string>();
    for (const line of trace.split('\n')) {
      if (/= -1 E/.test(line)) continue;
      const m = /(?:openat\([^,]+, "([^"]+)", [^)]*O_(?:WRONLY|RDWR|CREAT)|mkdir\("([^"]+)"|rename\("[^"]+", "([^"]+)")/.exec(line);
      const path = m?.[1] ?? m?.[2] ?? m?.[3];
      if (path !== undefined) written.add(path);
    }
    // The lab's stand-in for CacheDirectory=weft (the warm code cache): its WEFT_CACHE_DIR.
    assert.equal(unitValue('CacheDirectory'), 'weft');
    writable.push(join(lab.stateDir, 'cache'));
    const ok = (p: string): boolean => p === '/dev/net/tun' || p === '/dev/null' || p.startsWith('/run/') ||
      writable.some((d) => p === d || p.startsWith(d + '/'));
    const badPaths = [...written].filter((p) => !ok(p));
    assert.deepEqual(badPaths, [], `written outside ReadWritePaths=/run, the subnet file and /dev/net/tun: ${badPaths.join(' ')}`);
    assert.ok(written.has('/dev/net/tun'), 'the fallback opened /dev/net/tun (DeviceAllow=)');
    assert.match(unitValue('DeviceAllow'), /^\/dev\/net\/tun rw$/);
  });
});
