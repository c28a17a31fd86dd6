/**
 * The lab against the real kernel and a real etcd, in namespaces prefixed wt<pid>… that are
 * removed at the end (also on failure). weftd itself is replaced here by a 20-line fake that
 * writes subnet.env like the real one, so these tests exercise the lab's own machinery; the
 * daemon's author adds the tests with the real weftd on top of the same API.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  INSTALL_HINT, Lab, NOT_ROOT_MESSAGE, findTools, formatLeaseTable, formatPingMatrix, parseLeaseDump, parseSubnetEnv,
} from '../../src/lab';
import { Netns } from '../../src/lab/netns';
import { isAlive, readStartTime, run, sleep, waitUntil } from '../../src/lab/run';
import { initStateDir, loadState, saveState, type LabState } from '../../src/lab/state';

const CLI = resolve(__dirname, '..', '..', 'src', 'cli', 'lab.js');
const BASE = `wt${process.pid}`;
const scratch = mkdtempSync(join(tmpdir(), `${BASE}-lab-`));
let serial = 0;

/** A fresh prefix and state dir per lab. */
function fresh(): { prefix: string; stateDir: string } {
  serial++;
  return { prefix: `${BASE}${String.fromCharCode(96 + serial)}-`, stateDir: join(scratch, `lab${serial}`) };
}

function tools() {
  // A missing prerequisite fails the test with the install hint (never skip).
  return findTools();
}

async function ourNamespaces(): Promise<string[]> {
  // wt<pid><letter>-: the letter keeps pid 123 from matching another run's pid 1234.
  const ours = new RegExp(`^${BASE}[a-z]-`);
  return (await new Netns(tools().ip).list()).filter((n) => ours.test(n));
}

/** Spawn the lab CLI; resolves with exit code and output. */
function cli(args: string[], opts: { env?: NodeJS.ProcessEnv; wrapper?: string[] } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const [file, ...pre] = opts.wrapper ?? [];
  return run(file ?? process.execPath, [...pre, ...(file ? [process.execPath] : []), CLI, ...args], { env: opts.env, timeoutMs: 60000 });
}

/** Stand-in for weftd: writes subnet.env (10.5.N.1/24 for host N) atomically, then idles. */
const FAKE_WEFTD = `
const fs = require('fs');
const os = require('os');
const args = Object.fromEntries(process.argv.slice(2).map((a) => { const m = /^--([^=]+)=(.*)$/.exec(a); return m ? [m[1], m[2]] : [a, '']; }));
if (process.env.FAKE_WEFTD_FAIL) { console.error('fake weftd: failing on purpose'); process.exit(3); }
const addr = (os.networkInterfaces()[args.iface] || []).find((a) => a.family === 'IPv4');
const n = Number(addr.address.split('.')[3]) - 10;
fs.writeFileSync(args['subnet-file'] + '.argv', JSON.stringify(process.argv.slice(2)));
fs.writeFileSync(args['subnet-file'] + '.tmp', 'FLANNEL_NETWORK=10.5.0.0/16\\nFLANNEL_SUBNET=10.5.' + n + '.1/24\\nFLANNEL_MTU=1450\\nFLANNEL_IPMASQ=false\\n');
fs.renameSync(args['subnet-file'] + '.tmp', args['subnet-file']);
console.log('fake weftd ready on', addr.address);
process.on('SIGTERM', () => process.exit(0));
setInterval(() => {}, 1 << 30);
`;

function writeFakeWeftd(): string {
  const file = join(scratch, 'fake-weftd.js');
  writeFileSync(file, FAKE_WEFTD);
  return file;
}

/** Host-gw style routes between hosts over the underlay, standing in for the overlay. */
async function routeHostGw(lab: Lab): Promise<void> {
  for (const h of lab.hostNames()) {
    for (const peer of lab.hostNames().filter((p) => p !== h)) {
      const env = lab.subnetEnv(peer);
      assert.ok(env, `subnet.env of ${peer}`);
      const via = `10.250.0.${10 + Number(peer.slice(1))}`;
      const r = await lab.exec(h, [tools().ip, 'route', 'replace', env.subnetNetwork, 'via', via]);
      assert.equal(r.code, 0, r.stderr);
    }
  }
}

after(async () => {
  // Belt and braces: whatever a failed test left behind goes, by our own prefix only.
  const netns = new Netns(tools().ip);
  for (const ns of await ourNamespaces()) {
    for (const pid of await netns.pids(ns)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    await netns.delete(ns);
  }
  rmSync(scratch, { recursive: true, force: true });
});

describe('weft lab without daemons', () => {
  test('up with two hosts builds the underlay, etcd and a readable network config; down removes it all', async () => {
    const { prefix, stateDir } = fresh();
    const lab = await Lab.up({ prefix, stateDir, hosts: 2, startDaemons: false, tools: tools() });
    try {
      const names = ['net', 'etcd', 'h1', 'h2'].map((n) => prefix + n);
      const present = await ourNamespaces();
      for (const n of names) assert.ok(present.includes(n), `namespace ${n} exists`);

      const config = await lab.etcdctl(['get', '/coreos.com/network/config', '--print-value-only']);
      assert.equal(config.code, 0, config.stderr);
      assert.deepEqual(JSON.parse(config.stdout), { Network: '10.5.0.0/16', Backend: { Type: 'vxlan' } });

      const addr = await lab.exec('h2', [tools().ip, '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
      assert.match(addr.stdout, /inet 10\.250\.0\.12\/24/);
      assert.equal((await lab.exec('h1', ['cat', '/proc/sys/net/ipv4/ip_forward'])).stdout.trim(), '1');
      assert.ok(await lab.ping('h1', '10.250.0.12', { attempts: 3 }), 'h1 reaches h2 on the underlay');
      assert.ok(await lab.ping('h2', '10.250.0.2', { attempts: 3 }), 'h2 reaches etcd on the underlay');

      const state = loadState(stateDir);
      const etcd = state.processes.find((p) => p.role === 'etcd');
      assert.ok(etcd && isAlive(etcd), 'etcd recorded and running');
      assert.deepEqual(state.namespaces, names);

      const report = await lab.down();
      assert.deepEqual([...report.deletedNamespaces].sort(), [...names].sort());
      assert.equal(report.stateDirRemoved, true);
      assert.deepEqual(await ourNamespaces(), []);
      assert.equal(isAlive(etcd), false, 'etcd stopped');
      assert.equal(existsSync(stateDir), false);
      assert.equal(await Lab.downAt(stateDir), null, 'a second down has nothing to do');
    } finally {
      await Lab.downAt(stateDir);
    }
  });

  test('up refuses a lab name or namespace prefix already in use, and leaves the existing lab alone', async () => {
    const { prefix, stateDir } = fresh();
    await Lab.up({ prefix, stateDir, hosts: 1, startDaemons: false, tools: tools() });
    try {
      await assert.rejects(Lab.up({ prefix: `${prefix}x-`, stateDir, hosts: 1, startDaemons: false }), /already exists.*weft lab down/);
      await assert.rejects(Lab.up({ prefix, stateDir: `${stateDir}-other`, hosts: 1, startDaemons: false }),
        new RegExp(`namespace ${prefix}net.* already exists`));
      assert.ok((await ourNamespaces()).includes(`${prefix}h1`), 'the first lab is intact');
      assert.equal(existsSync(`${stateDir}-other`), false);
    } finally {
      await Lab.downAt(stateDir);
    }
  });

  test('containers take their address and MTU from subnet.env and the ping matrix reports each pair', async () => {
    const { prefix, stateDir } = fresh();
    const lab = await Lab.up({ prefix, stateDir, hosts: 2, startDaemons: false, tools: tools() });
    try {
      for (const [host, n] of [['h1', 1], ['h2', 2]] as const) {
        writeFileSync(lab.subnetFile(host), `FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.${n}.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n`);
        await lab.setupContainer(host);
      }
      await lab.setupContainer('h1'); // idempotent
      const link = await lab.exec('h1-c1', [tools().ip, '-o', 'link', 'show', 'dev', 'eth0']);
      assert.match(link.stdout, /mtu 1400/);
      const route = await lab.exec('h2-c1', [tools().ip, 'route', 'show', 'default']);
      assert.match(route.stdout, /default via 10\.5\.2\.1/);

      await routeHostGw(lab);
      const good = await lab.pingMatrix({ attempts: 3 });
      assert.equal(good.ok, true, formatPingMatrix(good));
      assert.deepEqual(good.nodes, ['h1-c1', 'h2-c1']);

      await lab.exec('h1', [tools().ip, 'route', 'del', '10.5.2.0/24']);
      const bad = await lab.pingMatrix({ attempts: 1 });
      assert.equal(bad.ok, false);
      assert.match(formatPingMatrix(bad), /0\/2 pairs reachable; FAILED: h1-c1 → h2-c1 \(10\.5\.2\.2\)/);

      const h3 = await lab.addHost();
      assert.equal(h3, 'h3');
      assert.ok(await lab.ping('h3', '10.250.0.11', { attempts: 3 }), 'the added host is on the underlay at .13');
      await lab.removeHost('h3');
      assert.equal((await ourNamespaces()).includes(`${prefix}h3`), false);
    } finally {
      await Lab.downAt(stateDir);
    }
    assert.deepEqual(await ourNamespaces(), []);
  });
});

describe('weft lab with a stand-in weftd', () => {
  test('starts one daemon per host with flannel flags, waits for subnet.env, and stops, kills and restarts it', async () => {
    const { prefix, stateDir } = fresh();
    const lab = await Lab.up({
      prefix, stateDir, hosts: 2, weftdPath: writeFakeWeftd(), extraWeftdArgs: ['--ip-masq=false'],
      convergeTimeoutMs: 300, tools: tools(),
    });
    try {
      const argv = JSON.parse(readFileSync(`${lab.subnetFile('h1')}.argv`, 'utf8')) as string[];
      assert.deepEqual(argv, ['--etcd-endpoints=http://10.250.0.2:2379', '--iface=eth0',
        `--subnet-file=${lab.subnetFile('h1')}`, '--healthz-port=8471', '--ip-masq=false']);
      assert.equal(lab.subnetEnv('h2')?.subnet, '10.5.2.1/24');
      assert.deepEqual(lab.containerNames(), ['h1-c1', 'h2-c1']);
      assert.match(lab.daemonLog('h1'), /fake weftd ready on 10\.250\.0\.11/);

      await routeHostGw(lab);
      assert.equal(await lab.waitConverged(5000), true);
      assert.equal((await lab.pingMatrix()).ok, true);

      const pid1 = lab.daemonPid('h1');
      assert.ok(pid1);
      await lab.stopDaemon('h1', 'SIGKILL');
      assert.equal(lab.daemonPid('h1'), null);
      const pid2 = await lab.restartDaemon('h2');
      assert.notEqual(pid2, null);

      await assert.rejects(lab.startDaemon('h1', { extraEnv: { FAKE_WEFTD_FAIL: '1' } }), /weftd on h1 .* exited[^]*failing on purpose/);
      const pid3 = await lab.startDaemon('h1');
      assert.equal(lab.daemonPid('h1'), pid3);
      await assert.rejects(lab.startDaemon('h1'), /already runs on h1/);

      const pids = loadState(stateDir).processes.map((p) => ({ pid: p.pid, startTime: p.startTime }));
      await lab.down();
      for (const p of pids) assert.equal(isAlive(p), false, `pid ${p.pid} stopped`);
      assert.deepEqual(await ourNamespaces(), []);
    } finally {
      await Lab.downAt(stateDir);
    }
  });
});

describe('weft lab down after a crash', () => {
  test('down removes the namespaces and etcd of an up that was killed half-way', async () => {
    const { prefix, stateDir } = fresh();
    const child = spawn(process.execPath, [CLI, 'up', '--no-daemons', '--hosts', '2', '--prefix', prefix, '--state-dir', stateDir],
      { stdio: 'ignore' });
    try {
      const etcdRecorded = await waitUntil(() => {
        try {
          return loadState(stateDir).processes.some((p) => p.role === 'etcd');
        } catch {
          return false;
        }
      }, 30000, 20);
      assert.ok(etcdRecorded, 'up got as far as starting etcd');
    } finally {
      child.kill('SIGKILL');
    }
    await new Promise((r) => child.once('exit', r));
    const etcd = loadState(stateDir).processes.find((p) => p.role === 'etcd');
    assert.ok(etcd && isAlive(etcd), 'etcd outlived the crashed up');

    const down = await cli(['down', '--state-dir', stateDir]);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stdout, /stopped [1-9]\d* process\(es\), deleted [1-9]\d* namespace\(s\)/);
    assert.equal(isAlive(etcd), false);
    assert.deepEqual(await ourNamespaces(), []);
    assert.equal(existsSync(stateDir), false);

    const again = await cli(['down', '--state-dir', stateDir]);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /nothing to do/);
  });

  test('down tolerates recorded namespaces that were never created and kills processes it never recorded', async () => {
    const { prefix, stateDir } = fresh();
    const t = tools();
    const netns = new Netns(t.ip);
    const real = `${prefix}h1`;
    const state: LabState = {
      version: 1, name: 'crash', prefix, stateDir, network: '10.5.0.0/16', backend: 'vxlan', networkConfig: '{}',
      etcdPrefix: '/coreos.com/network', weftdPath: '/nonexistent', extraWeftdArgs: [], healthzPort: 0, daemons: false,
      createdAt: new Date().toISOString(), namespaces: [`${prefix}net`, real], hosts: [],
      processes: [{ role: 'weftd', host: 'h1', ns: real, pid: 999999, startTime: '1' }],
    };
    initStateDir(stateDir);
    saveState(state);
    await netns.add(real);
    // A process in the namespace that no state entry mentions (crash between spawn and record).
    const sleeper = spawn(t.ip, ['netns', 'exec', real, 'sleep', '600'], { stdio: 'ignore' });
    await waitUntil(async () => (await netns.pids(real)).length > 0, 5000, 20);
    const sleeperId = { pid: sleeper.pid ?? 0, startTime: readStartTime(sleeper.pid ?? 0) };

    const report = await Lab.downAt(stateDir, { tools: t });
    assert.ok(report);
    assert.deepEqual(report.deletedNamespaces, [real]);
    await sleep(50);
    assert.equal(isAlive(sleeperId), false, 'the unrecorded process was stopped');
    assert.deepEqual(await ourNamespaces(), []);
    assert.equal(existsSync(stateDir), false);
  });
});

describe('weft lab prerequisites', () => {
  test('a user who is not root gets one line saying the lab needs root', async () => {
    const r = await cli(['up'], { wrapper: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `${NOT_ROOT_MESSAGE}\n`);
  });

  test('missing ip, etcd or ping is one line naming the Debian packages to install', async () => {
    const empty = join(scratch, 'empty-path');
    mkdirSync(empty, { recursive: true });
    const none = await cli(['up'], { env: { ...process.env, PATH: empty } });
    assert.equal(none.code, 1);
    assert.equal(none.stderr.trim().split('\n').length, 1, none.stderr);
    assert.match(none.stderr, /needs ip \(Debian package iproute2\), etcd \(Debian package etcd-server\), etcdctl \(Debian package etcd-client\), ping \(Debian package iputils-ping\)/);
    assert.ok(none.stderr.includes(INSTALL_HINT));

    const partial = join(scratch, 'partial-path');
    mkdirSync(partial, { recursive: true });
    const t = tools();
    for (const [name, target] of [['ip', t.ip], ['etcdctl', t.etcdctl], ['ping', t.ping]] as const) symlinkSync(target, join(partial, name));
    const noEtcd = await cli(['status'], { env: { ...process.env, PATH: partial } });
    assert.equal(noEtcd.code, 1);
    assert.match(noEtcd.stderr, /^weft lab needs etcd \(Debian package etcd-server\), not found in PATH: install with apt-get install -y/);
  });

  test('up while a lab of that name exists says to run weft lab down first', async () => {
    const { prefix, stateDir } = fresh();
    await Lab.up({ prefix, stateDir, hosts: 1, startDaemons: false, tools: tools() });
    try {
      const r = await cli(['up', '--no-daemons', '--state-dir', stateDir, '--prefix', `${prefix}y-`]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /a lab "default" already exists .*: run weft lab down --state-dir .* first/);
      const status = await cli(['status', '--state-dir', stateDir]);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, new RegExp(`h1 +${prefix}h1 +10\\.250\\.0\\.11 +not running`));
      const exec = await cli(['exec', '--state-dir', stateDir, 'h1', '--', 'sh', '-c', 'exit 7']);
      assert.equal(exec.code, 7, 'exec returns the command\'s exit code');
    } finally {
      await Lab.downAt(stateDir);
    }
  });
});

describe('weft lab output formats', () => {
  test('the lease table shows subnet, public IP, owning host, backend and VTEP MAC from etcdctl JSON', () => {
    const b64 = (s: string): string => Buffer.from(s).toString('base64');
    const dump = JSON.stringify({
      kvs: [{
        key: b64('/coreos.com/network/subnets/10.5.72.0-24'),
        value: b64('{"PublicIP":"10.250.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'),
      }],
    });
    const rows = parseLeaseDump(dump, new Map([['10.250.0.11', 'h1']]));
    assert.deepEqual(rows, [{ subnet: '10.5.72.0/24', publicIp: '10.250.0.11', backend: 'vxlan', vtepMac: 'c6:d2:32:6f:8f:44', host: 'h1' }]);
    assert.equal(formatLeaseTable(rows),
      'SUBNET        PUBLIC IP    HOST  BACKEND  VTEP MAC\n10.5.72.0/24  10.250.0.11  h1    vxlan    c6:d2:32:6f:8f:44');
    assert.equal(formatLeaseTable(parseLeaseDump('{"header":{}}')), 'no leases');
  });

  test('the ping matrix marks each ordered pair and names the failures', () => {
    const text = formatPingMatrix({
      nodes: ['h1-c1', 'h2-c1'], ok: false,
      results: [
        { from: 'h1-c1', to: 'h2-c1', target: '10.5.2.2', ok: true, attempts: 1 },
        { from: 'h2-c1', to: 'h1-c1', target: '10.5.1.2', ok: false, attempts: 5 },
      ],
    });
    assert.equal(text, [
      'from \\ to  h1-c1  h2-c1',
      'h1-c1        ·      ✓',
      'h2-c1        ✗      ·',
      '1/2 pairs reachable; FAILED: h2-c1 → h1-c1 (10.5.1.2)',
    ].join('\n'));
  });

  test('subnet.env gives the bridge address, the container address (.2) and the MTU', () => {
    const env = parseSubnetEnv('FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    assert.equal(env.subnet, '10.5.72.1/24');
    assert.equal(env.subnetNetwork, '10.5.72.0/24');
    assert.equal(env.containerAddress, '10.5.72.2/24');
    assert.equal(env.mtu, 1450);
    assert.equal(env.ipMasq, true);
    assert.throws(() => parseSubnetEnv('FLANNEL_NETWORK=10.5.0.0/16\n', 'x.env'), /x\.env: FLANNEL_SUBNET missing/);
  });
});
