/**
 * weftd through etcd faults (issue #3), on a real etcd and the real kernel, in a lab of network
 * namespaces prefixed wt<pid>e- that is torn down at the end (also on failure):
 * etcd stopped for 30 s, lease keys deleted and leases revoked by hand, and a short TTL with etcd
 * frozen for longer than it. The figures measured are printed as test diagnostics.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab } from '../../src/lab';
import { sleep } from '../../src/lab/run';
import { cpuPercent, cpuTicks, describePing, getSubnetKey, keyOf, logSince, pingFor, waitFor } from './helpers/faults';

const PREFIX = `wt${process.pid}e-`;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-faults-etcd-`));
const OUTAGE_MS = 30_000;

let lab: Lab;

/** Poll etcd until `key` holds a lease of `publicIp`; resolves to the ms it took from `since`. */
async function waitKey(key: string, publicIp: string, since: number, timeoutMs: number, notLease?: string): Promise<number> {
  let took = -1;
  await waitFor(`${key} held by ${publicIp} again`, async () => {
    const kv = await getSubnetKey(lab, key);
    if (kv === null || !kv.value.includes(`"PublicIP":"${publicIp}"`) || kv.lease === '0' || kv.lease === notLease) return false;
    took = Date.now() - since;
    return true;
  }, timeoutMs, 20);
  return took;
}

describe('weftd through etcd faults', { timeout: 240_000 }, () => {
  before(async () => {
    lab = await Lab.up({ prefix: PREFIX, name: `wt${process.pid}e`, stateDir: join(scratch, 'lab'), hosts: 3, healthzPort: 0 });
  });

  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('etcd stopped for 30 s: pings keep flowing, weftd stays under 5 % of a core, a host joining afterwards is reachable from all', async (t) => {
    const hosts = lab.hostNames();
    const pids = hosts.map((h) => lab.daemonPid(h)!);
    const logAt = hosts.map((h) => lab.daemonLog(h).length);
    const pairs: [string, string][] = [['h1-c1', 'h2-c1'], ['h2-c1', 'h3-c1'], ['h3-c1', 'h1-c1']];
    const pinging = Promise.all(pairs.map(([from, to]) => pingFor(lab, from, to, OUTAGE_MS + 4000, 200)));
    await sleep(1000);

    await lab.stopEtcd();
    const t0 = Date.now();
    const cpu0 = pids.map(cpuTicks);
    await sleep(OUTAGE_MS);
    const cpu = pids.map((pid, i) => cpuPercent(cpu0[i]!, cpuTicks(pid), Date.now() - t0));
    const outageLog = hosts.map((h, i) => logSince(lab, h, logAt[i]!));
    await lab.startEtcd();
    const pings = await pinging;

    t.diagnostic(`weftd CPU during the ${OUTAGE_MS / 1000} s outage: ${cpu.map((c) => `${c.toFixed(2)} %`).join(', ')} of a core`);
    for (const p of pings) t.diagnostic(describePing(p));
    for (const [i, c] of cpu.entries()) assert.ok(c < 5, `weftd on ${hosts[i]} used ${c.toFixed(2)} % of a core during the outage`);
    for (const p of pings) assert.equal(p.received, p.sent, `${describePing(p)}\n${p.output}`);
    for (const [i, pid] of pids.entries()) assert.equal(lab.daemonPid(hosts[i]!), pid, `weftd on ${hosts[i]} still runs`);
    // No busy loop shows in the log either: a few lines per outage, not one per retry.
    for (const [i, text] of outageLog.entries()) {
      const lines = text.split('\n').filter((l) => l.trim() !== '').length;
      assert.ok(lines <= 12, `weftd on ${hosts[i]} logged ${lines} lines during the outage:\n${text}`);
    }

    const joinedAt = Date.now();
    const h4 = await lab.addHost();
    t.diagnostic(`${h4} joined and converged ${Date.now() - joinedAt} ms after etcd was back`);
    for (const from of ['h1-c1', 'h2-c1', 'h3-c1']) {
      assert.ok(await lab.ping(from, `${h4}-c1`), `${from} → ${h4}-c1`);
      assert.ok(await lab.ping(`${h4}-c1`, from), `${h4}-c1 → ${from}`);
    }
  });

  test('a lease key deleted by hand is re-created, same subnet, within 2 s, and weftd keeps running', async (t) => {
    const key = keyOf(lab, 'h1');
    const pid = lab.daemonPid('h1');
    const del = await lab.etcdctl(['del', `/coreos.com/network/subnets/${key}`]);
    assert.equal(del.stdout.trim(), '1', del.stderr);
    const took = await waitKey(key, '10.250.0.11', Date.now(), 5000);
    t.diagnostic(`deleted key ${key} re-created in ${took} ms`);
    assert.ok(took < 2000, `re-created after ${took} ms`);
    assert.equal(lab.daemonPid('h1'), pid);
    assert.equal(keyOf(lab, 'h1'), key, 'subnet.env unchanged');
    assert.ok(await lab.ping('h2-c1', 'h1-c1'));
    assert.match(lab.daemonLog('h1'), /was deleted from etcd; re-acquiring/);
  });

  test('an etcd lease revoked by hand: the key is re-created on a new lease, same subnet, within 2 s', async (t) => {
    const key = keyOf(lab, 'h2');
    const pid = lab.daemonPid('h2');
    const before = await getSubnetKey(lab, key);
    assert.ok(before && before.lease !== '0');
    const revoke = await lab.etcdctl(['lease', 'revoke', BigInt(before.lease).toString(16)]);
    assert.equal(revoke.code, 0, revoke.stderr);
    const took = await waitKey(key, '10.250.0.12', Date.now(), 5000, before.lease);
    t.diagnostic(`key ${key} re-created on a new lease ${took} ms after its lease was revoked`);
    assert.ok(took < 2000, `re-created after ${took} ms`);
    assert.equal(lab.daemonPid('h2'), pid);
    assert.ok(await lab.ping('h1-c1', 'h2-c1'));
  });

  test('cut off from etcd while leases change and history is compacted: the watch re-lists and misses nothing', async (t) => {
    const value = (ip: string, mac: string): string =>
      `{"PublicIP":"${ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;
    const subnets = '/coreos.com/network/subnets';
    assert.equal((await lab.etcdctl(['put', `${subnets}/10.5.240.0-24`, value('10.250.0.240', '02:aa:00:00:00:f0')])).code, 0);
    await waitFor('h1 routes to 10.5.240.0/24', async () => (await lab.exec('h1', ['ip', 'route', 'show', '10.5.240.0/24'])).stdout.includes('flannel.1'), 5000);
    const logAt = lab.daemonLog('h1').length;
    // Only h1's etcd traffic is cut (connections reset, as by a dead etcd); its data plane is untouched.
    for (const cmd of [
      'add table inet wtcut',
      'add chain inet wtcut out { type filter hook output priority 0 ; }',
      'add rule inet wtcut out ip daddr 10.250.0.2 tcp dport 2379 reject with tcp reset',
    ]) {
      const r = await lab.exec('h1', ['nft', ...cmd.split(' ')]);
      assert.equal(r.code, 0, `nft ${cmd}: ${r.stderr}`);
    }
    // Established connections see no packet to reject while idle: kill them, as a dead etcd would.
    const kill = await lab.exec('h1', ['ss', '-K', 'dst', '10.250.0.2', 'dport', '=', '2379']);
    assert.equal(kill.code, 0, kill.stderr);
    try {
      await waitFor('h1 notices', () => /etcd watch disconnected/.test(logSince(lab, 'h1', logAt)), 10_000);
      assert.equal((await lab.etcdctl(['put', `${subnets}/10.5.241.0-24`, value('10.250.0.241', '02:aa:00:00:00:f1')])).code, 0);
      assert.equal((await lab.etcdctl(['del', `${subnets}/10.5.240.0-24`])).code, 0);
      const rev = /"revision":(\d+)/.exec((await lab.etcdctl(['get', 'x', '-w', 'json'])).stdout)?.[1];
      assert.ok(rev);
      const c = await lab.etcdctl(['compact', rev]);
      assert.equal(c.code, 0, c.stderr);
    } finally {
      await lab.exec('h1', ['nft', 'delete', 'table', 'inet', 'wtcut']);
    }
    const backAt = Date.now();
    await waitFor('h1 has the lease added meanwhile and not the one deleted', async () => {
      const r = await lab.exec('h1', ['ip', 'route', 'show', 'dev', 'flannel.1']);
      return r.stdout.includes('10.5.241.0/24') && !r.stdout.includes('10.5.240.0/24');
    }, 15_000);
    t.diagnostic(`after the cut was lifted h1 caught up (re-list after compaction) in ${Date.now() - backAt} ms (incl. reconnect backoff and the 3 s departed-peer grace)`);
    assert.match(logSince(lab, 'h1', logAt), /lease watch reset .*re-listing/);
    await lab.etcdctl(['del', `${subnets}/10.5.241.0-24`]);
  });

  test('TTL 11 s and etcd frozen for 20 s: every lease expires, every host re-acquires its subnet, all pairs ping', async (t) => {
    const hosts = lab.hostNames();
    for (const h of hosts) await lab.restartDaemon(h, { extraArgs: ['--subnet-lease-ttl=11s'] });
    const keys = new Map(hosts.map((h) => [h, keyOf(lab, h)]));
    const leasesBefore = new Map<string, string>();
    for (const [h, key] of keys) leasesBefore.set(h, (await getSubnetKey(lab, key))!.lease);
    const pids = hosts.map((h) => lab.daemonPid(h));

    const pinging = Promise.all([pingFor(lab, 'h1-c1', 'h2-c1', 27_000, 200), pingFor(lab, 'h3-c1', 'h4-c1', 27_000, 200)]);
    await sleep(500);
    lab.pauseEtcd(); // a frozen etcd (as behind a partition) keeps its lease clock: the leases expire
    await sleep(20_000);
    lab.resumeEtcd();
    const resumedAt = Date.now();
    const took = await Promise.all(
      hosts.map((h, i) => waitKey(keys.get(h)!, `10.250.0.${11 + i}`, resumedAt, 15_000, leasesBefore.get(h))),
    );
    t.diagnostic(`after etcd resumed, each host held its subnet again on a new lease within ${took.join(', ')} ms`);
    const pings = await pinging;
    for (const p of pings) t.diagnostic(describePing(p));

    for (const [i, h] of hosts.entries()) {
      assert.equal(lab.daemonPid(h), pids[i], `weftd on ${h} still runs`);
      assert.equal(keyOf(lab, h), keys.get(h), `${h} kept its subnet`);
      assert.match(lab.daemonLog(h), /lost our lease/, `${h} noticed the loss`);
    }
    const m = await lab.pingMatrix();
    assert.ok(m.ok, JSON.stringify(m.results.filter((r) => !r.ok)));
    // The data plane never depended on etcd: at most a second of loss while all leases churn.
    for (const p of pings) assert.ok(p.longestGap <= 5, describePing(p));
  });
});
