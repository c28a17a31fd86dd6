/**
 * Hostile etcd data (issue #9, finding 3 and the lease fuzz): a Network over the underlay is
 * refused at start-up; a lease over a network connected to the underlay never replaces the
 * kernel's route for it; 10 000 garbage keys (random JSON, wrong types, huge values, malformed
 * keys) leave weftd up, good peers routed and memory bounded. Real etcd, real kernel, namespaces
 * prefixed wt<pid>s-, torn down at the end (also on failure).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab } from '../../src/lab';
import { sleep } from '../../src/lab/run';
import { keyOf, waitFor } from './helpers/faults';

const PREFIX = `wt${process.pid}s-`;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-security-leases-`));
const FUZZ_HELPER = resolve(__dirname, 'helpers', 'lease-fuzz.js');
const WEFTD = resolve(__dirname, '..', '..', 'src', 'cli', 'weftd.js');
const FUZZ_KEYS = 10_000;

let lab: Lab;

async function sh(host: string, script: string, timeoutMs = 20_000): Promise<{ code: number; out: string }> {
  const r = await lab.exec(host, ['sh', '-c', script], { timeoutMs });
  return { code: r.code ?? -1, out: `${r.stdout}${r.stderr}` };
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? NaN);
}

describe('hostile etcd data', { timeout: 170_000 }, () => {
  before(async () => {
    lab = await Lab.up({
      prefix: PREFIX, name: `wt${process.pid}s`, stateDir: join(scratch, 'lab'), hosts: 2, healthzPort: 0,
      // Leases below 10.5.100.0: the test's hostile ones live above.
      networkConfig: { Network: '10.5.0.0/16', SubnetMax: '10.5.100.0', Backend: { Type: 'vxlan' } },
      readyTimeoutMs: 60_000, convergeTimeoutMs: 30_000,
    });
  });

  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('weftd refuses a Network that overlaps its underlay, saying what overlaps and what to do', async () => {
    // Another prefix, so the running cluster is untouched; `timeout` ends a weftd that would run.
    const put = await lab.etcdctl(['put', '/hostile/config', '{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}']);
    assert.equal(put.code, 0, put.stderr);
    const r = await sh('h2', `timeout 15 ${process.execPath} ${WEFTD} --etcd-endpoints=${lab.etcdEndpoint} --etcd-prefix=/hostile ` +
      `--iface=eth0 --subnet-file=${join(scratch, 'hostile.env')} --healthz-port=0; echo "exit=$?"`, 30_000);
    assert.match(r.out, /Network 10\.0\.0\.0\/8 overlaps 10\.250\.0\.0\/24, the network of this host's underlay interface eth0/, r.out);
    assert.doesNotMatch(r.out, /exit=(0|124)\b/, 'weftd exited with an error, not killed by timeout');
    const none = await lab.etcdctl(['get', '--prefix', '/hostile/subnets/', '--keys-only']);
    assert.equal(none.stdout.trim(), '', 'no lease taken under the refused config');
  });

  test('a lease over a network connected to the underlay does not replace the kernel\'s route; the underlay keeps working', async () => {
    // Both hosts get a second underlay network, 10.5.200.0/24, after weftd started: only the
    // reconciler stands between a lease for it and the `proto kernel` route.
    for (const [h, ip] of [['h1', '10.5.200.11'], ['h2', '10.5.200.12']] as const) {
      const r = await sh(h, `ip addr add ${ip}/24 dev eth0`);
      assert.equal(r.code, 0, r.out);
    }
    assert.equal((await sh('h1', 'ping -c1 -W1 10.5.200.12')).code, 0, 'the second underlay network works');
    const logAt = lab.daemonLog('h1').length;
    const value = '{"PublicIP":"10.250.0.99","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:cc:00:00:00:01"}}';
    const put = await lab.etcdctl(['put', '/coreos.com/network/subnets/10.5.200.0-24', value]);
    assert.equal(put.code, 0, put.stderr);
    // Until weftd says it left the route alone, or has taken it (the old code did: flannel.1).
    await waitFor('weftd on h1 to deal with the lease', async () =>
      /a route weft did not create holds that destination/.test(lab.daemonLog('h1').slice(logAt)) ||
      /flannel/.test((await sh('h1', 'ip -4 route show 10.5.200.0/24')).out), 15_000, 200);
    for (const h of ['h1', 'h2']) {
      const route = (await sh(h, 'ip -4 route show 10.5.200.0/24')).out;
      assert.match(route, /dev eth0 proto kernel/, `${h}: ${route}`);
      assert.doesNotMatch(route, /flannel/, `${h}: ${route}`);
    }
    assert.equal((await sh('h1', 'ping -c2 -W1 10.5.200.12')).code, 0, 'pings over the underlay network still work');
    assert.equal((await sh('h1', `ping -c1 -W1 ${lab.etcdEndpoint.replace(/^http:\/\/|:\d+$/g, '')}`)).code, 0, 'etcd is reachable');
    assert.ok(await lab.ping('h1-c1', 'h2-c1'), 'the overlay still works');
    await lab.etcdctl(['del', '/coreos.com/network/subnets/10.5.200.0-24']);
  });

  test('10 000 garbage keys and values in etcd: weftd stays up, good peers keep their routes, memory stays bounded', async (t) => {
    const hosts = lab.hostNames();
    const pids = hosts.map((h) => lab.daemonPid(h)!);
    const peerKey = keyOf(lab, 'h2').replace('-', '/');
    const rssBefore = pids.map(rssKb);
    const seed = Date.now() % 1_000_000;
    const w = await lab.exec('etcd', [process.execPath, FUZZ_HELPER, 'put', lab.etcdEndpoint, String(FUZZ_KEYS), String(seed)], { timeoutMs: 90_000 });
    assert.equal(w.code, 0, w.stderr);
    const wrote = JSON.parse(w.stdout) as { keys: number; bytes: number; ms: number };
    // Let the watch deliver it all and the daemons digest it.
    await sleep(5000);
    for (const [i, h] of hosts.entries()) assert.equal(lab.daemonPid(h), pids[i], `weftd on ${h} still runs (same pid)`);
    const route = (await sh('h1', `ip -4 route show ${peerKey}`)).out;
    assert.match(route, /dev flannel\.1/, `h1 keeps its route to h2: ${route}`);
    const m = await lab.pingMatrix();
    assert.ok(m.ok, JSON.stringify(m.results.filter((r) => !r.ok)));
    const rssAfter = pids.map(rssKb);
    const d = await lab.exec('etcd', [process.execPath, FUZZ_HELPER, 'del', lab.etcdEndpoint, String(FUZZ_KEYS), String(seed)], { timeoutMs: 90_000 });
    assert.equal(d.code, 0, d.stderr);
    await sleep(3000);
    const rssEnd = pids.map(rssKb);
    for (const [i, h] of hosts.entries()) assert.equal(lab.daemonPid(h), pids[i], `weftd on ${h} still runs after the keys went`);
    t.diagnostic(`lease fuzz: seed ${seed}, ${wrote.keys} keys, ${(wrote.bytes / 1e6).toFixed(1)} MB written in ${wrote.ms} ms; ` +
      `RSS kB before/after/after delete: ${hosts.map((h, i) => `${h} ${rssBefore[i]}/${rssAfter[i]}/${rssEnd[i]}`).join(', ')}`);
    // Bounded: weftd keeps no copy of what it cannot use; the JSON it parsed is garbage by now.
    for (const [i, h] of hosts.entries()) assert.ok(rssAfter[i]! < rssBefore[i]! + 150_000, `${h}: RSS ${rssBefore[i]} → ${rssAfter[i]} kB`);
    for (const h of hosts) assert.doesNotMatch(lab.daemonLog(h), /FATAL ERROR|heap out of memory/, `${h} log`);
  });
});
