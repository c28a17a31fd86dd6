/**
 * `weft leases --watch`, reserve/release/revoke and `weft config` against a running lab (real
 * etcd, real weftd). Namespaces prefixed wt<pid>l-, removed at the end.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab } from '../../src/lab';
import { waitUntil } from './helpers/shell';

const WEFT = resolve(__dirname, '..', '..', 'src', 'cli', 'weft.js');
const PREFIX = `wt${process.pid}l-`;
const ETCD = '--etcd-endpoints=http://10.250.0.2:2379';
const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-leases-`));
let lab: Lab;

function weft(...args: string[]) {
  return lab.exec('h1', [process.execPath, WEFT, ...args], { timeoutMs: 30_000 });
}

function subnetOf(host: string): string {
  return lab.subnetEnv(host)!.subnetNetwork;
}

/** The raw etcd record of a subnet key: value and lease ("0": none). */
async function record(subnet: string): Promise<{ value: string; lease: string } | null> {
  const r = await lab.etcdctl(['get', `/coreos.com/network/subnets/${subnet.replace('/', '-')}`, '-w', 'json']);
  assert.equal(r.code, 0, r.stderr);
  const kvs = (JSON.parse(r.stdout) as { kvs?: { value: string }[] }).kvs ?? [];
  if (kvs.length === 0) return null;
  // Lease IDs are 64-bit: read the digits, not a JSON number (which would round them).
  const lease = /"lease":(\d+)/.exec(r.stdout)?.[1] ?? '0';
  return { value: Buffer.from(kvs[0]!.value, 'base64').toString(), lease };
}

describe('weft leases and weft config on a running lab', { timeout: 180_000 }, () => {
  before(async () => {
    lab = await Lab.up({ prefix: PREFIX, name: `wt${process.pid}l`, stateDir: join(scratch, 'lab'), hosts: 2, healthzPort: 0 });
  });

  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('weft leases --watch prints a host joining and, when its lease runs out, leaving', async () => {
    const watcher: ChildProcess = spawn('ip', ['netns', 'exec', lab.nsName('h1'), process.execPath, WEFT, 'leases', '--watch', ETCD], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    watcher.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    watcher.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    try {
      await waitUntil(() => (out.match(/ present /g) ?? []).length === 2, 10_000, 'the two present leases');
      assert.match(out, /^TIME\s+EVENT\s+SUBNET\s+PUBLIC IP\s+BACKEND\s+VTEP MAC\s+EXPIRES IN\n/);
      // h3 joins with a short TTL, then its weftd stops and the lease runs out.
      const h3 = await lab.addHost({ extraArgs: ['--subnet-lease-ttl=12s'] });
      const sub = subnetOf(h3).replace(/\./g, '\\.').replace('/', '\\/');
      await waitUntil(() => new RegExp(`joined\\s+${sub}\\s+10\\.250\\.0\\.13\\s+vxlan`).test(out), 10_000, `a joined line for ${h3}:\n${out}`);
      await lab.stopDaemon(h3, 'SIGKILL');
      await waitUntil(() => new RegExp(`left\\s+${sub}\\s+10\\.250\\.0\\.13`).test(out), 30_000, `a left line for ${h3}:\n${out}`);
      await lab.removeHost(h3);
    } finally {
      watcher.kill('SIGINT');
    }
    await new Promise<void>((r) => (watcher.exitCode !== null ? r() : watcher.once('exit', () => r())));
    assert.equal(watcher.exitCode, 0, `weft leases --watch exits 0 on SIGINT:\n${out}`);
  });

  test('reserve writes a key without TTL, leases lists it as reserved, release removes it', async () => {
    const r = await weft('leases', 'reserve', '10.5.250.0/24', '--public-ip', '10.250.0.99', ETCD);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await record('10.5.250.0/24'), { value: '{"PublicIP":"10.250.0.99","PublicIPv6":null}', lease: '0' });
    const table = await weft('leases', ETCD);
    assert.match(table.stdout, /^10\.5\.250\.0\/24\s+10\.250\.0\.99\s+-\s+-\s+reserved$/m);
    const rel = await weft('leases', 'release', '10.5.250.0/24', ETCD);
    assert.equal(rel.code, 0, rel.stderr);
    assert.equal(await record('10.5.250.0/24'), null);
  });

  test('reserving a running host\'s subnet turns its lease into a reservation; releasing gives it a lease again', async () => {
    const subnet = subnetOf('h1');
    assert.notEqual((await record(subnet))!.lease, '0');
    const r = await weft('leases', 'reserve', subnet, '--public-ip', '10.250.0.11', ETCD);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /converted/);
    await waitUntil(async () => (await record(subnet))?.lease === '0', 5000, 'the key to lose its TTL');
    assert.ok(await lab.ping('h2-c1', 'h1-c1'), 'traffic keeps flowing');
    const rel = await weft('leases', 'release', subnet, ETCD);
    assert.equal(rel.code, 0, rel.stderr);
    // weftd on h1 sees its key gone and takes the same subnet again, as a lease.
    await waitUntil(async () => { const k = await record(subnet); return k !== null && k.lease !== '0'; }, 15_000, 'h1 to lease its subnet again');
    assert.equal(subnetOf('h1'), subnet);
  });

  test('revoke explains and does nothing without --yes; with --yes the key goes and a live weftd takes it back', async () => {
    const subnet = subnetOf('h2');
    const before = (await record(subnet))!;
    const dry = await weft('leases', 'revoke', subnet, ETCD);
    assert.equal(dry.code, 1);
    assert.match(dry.stderr, /not done.*--yes/s);
    assert.deepEqual(await record(subnet), before);
    const r = await weft('leases', 'revoke', subnet, '--yes', ETCD);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`revoked etcd lease ${BigInt(before.lease).toString(16)}`));
    await waitUntil(async () => { const k = await record(subnet); return k !== null && k.lease !== before.lease; }, 15_000, 'h2 to re-acquire');
    assert.ok(await lab.ping('h1-c1', 'h2-c1'));
  });

  test('weft config set refuses a bad config with the validation message and leaves the old one', async () => {
    const file = join(scratch, 'bad.json');
    writeFileSync(file, '{"Network":"10.5.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}\n');
    const r = await weft('config', 'set', file, ETCD);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /SubnetLen must be less than \/31/);
    assert.equal((await weft('config', 'get', ETCD)).stdout.trim(), CONFIG);
  });

  test('weft config set refuses a new Network while leases exist, saying what would break', async () => {
    const file = join(scratch, 'moved.json');
    writeFileSync(file, '{"Network":"10.6.0.0/16","Backend":{"Type":"vxlan"}}\n');
    const r = await weft('config', 'set', file, ETCD);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Network 10\.5\.0\.0\/16 -> 10\.6\.0\.0\/16 while 2 lease\(s\) exist/);
    assert.equal((await weft('config', 'get', ETCD)).stdout.trim(), CONFIG);
    const valid = await weft('config', 'validate', file);
    assert.equal(valid.code, 0);
    assert.match(valid.stdout, /^valid: Network 10\.6\.0\.0\/16/);
  });
});
