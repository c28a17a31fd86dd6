/**
 * The native join path (issue #14; addon/src/fastjoin.cc, docs/performance.md "The native join
 * path") on a 2-host lab: real etcd, the real kernel in namespaces prefixed wt<pid>n-, torn down
 * at the end. What it guards:
 *   - a new peer's lease is programmed by the addon on every host, and the books (peers,
 *     'programmed', /metrics) take it in afterwards;
 *   - a route deleted by hand right after a native join comes back at once: the kernel's
 *     notification reaches the books only after the join has (without that the route stayed
 *     gone until the periodic resync, five minutes);
 *   - the peer's departure removes what the addon wrote;
 *   - `--native-join=false` programs every join through the reconciler.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab } from '../../src/lab';
import { waitFor } from './helpers/faults';
import { parsePrometheusText, sampleValue } from './helpers/prometheus';

const PREFIX = `wt${process.pid}n-`;
const PORT = 8471;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-native-join-`));
const ETCD_PREFIX = '/coreos.com/network/subnets/';

let lab: Lab;

async function metric(host: string, name: string): Promise<number> {
  const script = `fetch('http://127.0.0.1:${PORT}/metrics').then(async r=>process.stdout.write(await r.text()),e=>{process.stdout.write('');process.exitCode=1})`;
  const r = await lab.exec(host, [process.execPath, '-e', script], { timeoutMs: 15000 });
  assert.equal(r.code, 0, `no /metrics on ${host}: ${r.stderr}`);
  return sampleValue(parsePrometheusText(r.stdout), name) ?? NaN;
}

async function etcdctl(...args: string[]): Promise<void> {
  const r = await lab.exec('etcd', ['etcdctl', `--endpoints=${lab.etcdEndpoint}`, ...args], { timeoutMs: 15000 });
  assert.equal(r.code, 0, `etcdctl ${args.join(' ')}: ${r.stderr}`);
}

/** A peer lease as flanneld writes it, outside every lab host's subnet (the lab's Network is 10.5.0.0/16). */
async function putPeer(third: number): Promise<string> {
  const key = `10.5.${third}.0-24`;
  const mac = `0e:be:00:00:${third.toString(16).padStart(2, '0')}:01`;
  await etcdctl('put', ETCD_PREFIX + key, JSON.stringify({ PublicIP: `10.251.0.${third}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } }));
  return key;
}

async function routeOn(host: string, third: number): Promise<boolean> {
  const r = await lab.exec(host, ['ip', 'route', 'show', `10.5.${third}.0/24`], { timeoutMs: 5000 });
  return r.stdout.includes(`via 10.5.${third}.0 dev flannel.1 onlink`);
}

/** A subnet no lab host holds (the lab picks theirs at random in 10.5.0.0/16). */
function freeThird(from: number): number {
  const taken = new Set(lab.hostNames().map((h) => lab.subnetEnv(h)?.subnetNetwork.split('.')[2]));
  let t = from;
  while (taken.has(String(t))) t++;
  return t;
}

describe('the native join path on a 2-host lab', { timeout: 120_000 }, () => {
  before(async () => {
    lab = await Lab.up({ prefix: PREFIX, name: `wt${process.pid}n`, stateDir: join(scratch, 'lab'), hosts: 2, healthzPort: PORT });
  });

  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('a new peer is programmed by the addon on every host, the books take it in, its departure removes it', async () => {
    const before = await Promise.all(lab.hostNames().map((h) => metric(h, 'weft_native_joins_total')));
    const third = freeThird(201);
    const key = await putPeer(third);
    for (const h of lab.hostNames()) await waitFor(`${h}'s route to ${key}`, () => routeOn(h, third), 5000);
    for (const [i, h] of lab.hostNames().entries()) {
      await waitFor(`${h}'s books to count the native join`, async () => (await metric(h, 'weft_native_joins_total')) === before[i]! + 1, 5000, 200);
      await waitFor(`${h} to list ${key} as programmed`, async () => (await metric(h, 'weft_peers_programmed')) === 2, 5000, 200);
    }
    await etcdctl('del', ETCD_PREFIX + key);
    // The departed-peer grace is 3 s: then the reconciler removes what the addon wrote.
    for (const h of lab.hostNames()) await waitFor(`${h} to remove the route to ${key}`, async () => !(await routeOn(h, third)), 10_000, 200);
  });

  test('a route deleted by hand right after a native join comes back at once', async () => {
    const third = freeThird(211);
    const key = await putPeer(third);
    await waitFor(`h1's route to ${key}`, () => routeOn('h1', third), 5000, 10);
    // Before the books take the join in (they do within 1.5 s): the deletion's notification must
    // not find them without it.
    const del = await lab.exec('h1', ['ip', 'route', 'del', `10.5.${third}.0/24`], { timeoutMs: 5000 });
    assert.equal(del.code, 0, del.stderr);
    await waitFor(`h1 to put the route to ${key} back`, () => routeOn('h1', third), 3000, 50);
    await etcdctl('del', ETCD_PREFIX + key);
    await waitFor(`h1 to remove the route to ${key}`, async () => !(await routeOn('h1', third)), 10_000, 200);
  });

  test('--native-join=false: every join goes through the reconciler', async () => {
    await lab.restartDaemon('h2', { extraArgs: ['--native-join=false'] });
    const third = freeThird(221);
    const key = await putPeer(third);
    await waitFor(`h2's route to ${key}`, () => routeOn('h2', third), 5000);
    await waitFor(`h2 to list ${key} as programmed`, async () => (await metric('h2', 'weft_peers_programmed')) === 2, 5000, 200);
    assert.equal(await metric('h2', 'weft_native_joins_total'), 0, 'h2 wrote a join natively with --native-join=false');
    await etcdctl('del', ETCD_PREFIX + key);
  });
});
