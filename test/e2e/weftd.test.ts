/**
 * weftd end to end: the real daemon, a real etcd and the real kernel, in a lab of network
 * namespaces prefixed wt<pid>w- that is torn down at the end (also on failure).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab } from '../../src/lab';
import { sleep } from '../../src/lab/run';
import { sh, waitUntil } from './helpers/shell';

const WEFTD = resolve(__dirname, '..', '..', 'src', 'cli', 'weftd.js');
const PREFIX = `wt${process.pid}w-`;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-weftd-`));
const FLANNEL_LEASE = /^\{"PublicIP":"10\.250\.0\.\d+","PublicIPv6":null,"BackendType":"vxlan","BackendData":\{"VNI":1,"VtepMAC":"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}"\}\}$/;

let lab: Lab;

/** True when `pid` has exited (a zombie counts: the lab's detached children are not reaped by us). */
function isZombieOrGone(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

/** subnet key ("10.5.36.0-24") of a host, from its subnet.env. */
function keyOf(host: string): string {
  const env = lab.subnetEnv(host);
  assert.ok(env, `no subnet.env on ${host}`);
  return env.subnetNetwork.replace('/', '-');
}

function subnetOf(host: string): string {
  return keyOf(host).replace('-', '/');
}

async function leaseValue(key: string): Promise<string> {
  const r = await lab.etcdctl(['get', `/coreos.com/network/subnets/${key}`, '--print-value-only']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

function vtepOf(value: string): string {
  return (JSON.parse(value) as { BackendData: { VtepMAC: string } }).BackendData.VtepMAC;
}

/** Routes, neighbours and FDB entries for a peer subnet on `host`. */
async function peerEntries(host: string, peerSubnet: string, vtep: string): Promise<{ route: boolean; neigh: boolean; fdb: boolean }> {
  const gw = peerSubnet.split('/')[0]!;
  const [routes, neigh, fdb] = await Promise.all([
    sh(lab, host, 'ip', 'route', 'show', peerSubnet),
    sh(lab, host, 'ip', 'neigh', 'show', 'dev', 'flannel.1'),
    sh(lab, host, 'bridge', 'fdb', 'show', 'dev', 'flannel.1'),
  ]);
  return {
    route: routes.includes(`via ${gw} dev flannel.1 onlink`),
    neigh: neigh.split('\n').some((l) => l.startsWith(`${gw} `) && l.includes(vtep)),
    fdb: fdb.includes(vtep),
  };
}

/** Run weftd once in a host namespace (not as the lab's daemon) and collect its output. */
async function weftdOnce(host: string, args: string[], timeoutMs: number): Promise<{ code: number; out: string }> {
  const r = await lab.exec(host, [process.execPath, WEFTD, ...args], { timeoutMs, env: { ...process.env, WEFT_LOG_FORMAT: 'text' } });
  return { code: r.code, out: r.stdout + r.stderr };
}

describe('weftd on a 3-host lab', { timeout: 300_000 }, () => {
  before(async () => {
    lab = await Lab.up({ prefix: PREFIX, name: `wt${process.pid}`, stateDir: join(scratch, 'lab'), hosts: 3, healthzPort: 0 });
  });

  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('every container reaches every other container, both ways', async () => {
    const m = await lab.pingMatrix();
    assert.ok(m.ok, JSON.stringify(m.results));
    assert.equal(m.nodes.length, 3);
  });

  test('subnet.env has flannel\'s four lines for the leased subnet', async () => {
    for (const host of lab.hostNames()) {
      const text = (await sh(lab, host, 'cat', lab.subnetFile(host)));
      assert.match(text, /^FLANNEL_NETWORK=10\.5\.0\.0\/16\nFLANNEL_SUBNET=10\.5\.\d+\.1\/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n$/);
    }
  });

  test('the lease value in etcd is byte-compatible with flannel\'s JSON', async () => {
    for (const host of lab.hostNames()) {
      const value = await leaseValue(keyOf(host));
      assert.match(value, FLANNEL_LEASE);
      const mac = (await sh(lab, host, 'cat', '/sys/class/net/flannel.1/address')).trim();
      assert.equal(vtepOf(value), mac, 'VtepMAC in the lease is the device MAC');
    }
  });

  test('the VXLAN device is flannel.1 as flannel makes it', async () => {
    const link = await sh(lab, 'h1', 'ip', '-d', 'link', 'show', 'flannel.1');
    assert.match(link, /mtu 1450/);
    assert.match(link, /vxlan id 1 local 10\.250\.0\.11 dev eth0 .*dstport 8472 nolearning/);
    const addr = await sh(lab, 'h1', 'ip', '-4', 'addr', 'show', 'dev', 'flannel.1');
    assert.ok(addr.includes(`inet ${subnetOf('h1').replace('/24', '/32')}`), addr);
  });

  test('a fourth host joining later is reachable from all', async () => {
    const h4 = await lab.addHost();
    for (const from of ['h1-c1', 'h2-c1', 'h3-c1']) {
      assert.ok(await lab.ping(from, `${h4}-c1`), `${from} → ${h4}-c1`);
      assert.ok(await lab.ping(`${h4}-c1`, from), `${h4}-c1 → ${from}`);
    }
  });

  test('restarting weftd keeps its subnet and VtepMAC and does not interrupt traffic', async () => {
    const key = keyOf('h1');
    const vtep = vtepOf(await leaseValue(key));
    // 40 pings over 4 s across the restart.
    const pinging = lab.exec('h2-c1', ['ping', '-c', '40', '-i', '0.1', '-W', '1', subnetOf('h1').replace('.0/24', '.2')]);
    await sleep(500);
    await lab.restartDaemon('h1');
    const ping = await pinging;
    assert.equal(keyOf('h1'), key, 'same subnet after restart');
    assert.equal(vtepOf(await leaseValue(key)), vtep, 'same VtepMAC after restart');
    assert.match(ping.stdout, / 0% packet loss/, ping.stdout);
  });

  test('weft leases lists every lease as a table and as JSON', async () => {
    const WEFT = resolve(__dirname, '..', '..', 'src', 'cli', 'weft.js');
    const table = await sh(lab, 'h1', process.execPath, WEFT, 'leases', '--etcd-endpoints=http://10.250.0.2:2379');
    const lines = table.trim().split('\n');
    assert.match(lines[0]!, /^SUBNET\s+PUBLIC IP\s+BACKEND\s+VTEP MAC\s+EXPIRES IN$/);
    assert.equal(lines.length, 1 + lab.hostNames().length, table);
    for (const host of lab.hostNames()) {
      const row = lines.find((l) => l.startsWith(subnetOf(host) + ' '));
      assert.ok(row, `${host} (${subnetOf(host)}) missing from:\n${table}`);
      assert.match(row, /vxlan\s+([0-9a-f]{2}:){5}[0-9a-f]{2}\s+23h5\dm$/);
    }
    const json = JSON.parse(await sh(lab, 'h1', process.execPath, WEFT, 'leases', '--json', '-etcd-endpoints=http://10.250.0.2:2379')) as Array<Record<string, unknown>>;
    assert.equal(json.length, lab.hostNames().length);
    const h1 = json.find((r) => r.subnet === subnetOf('h1'));
    assert.ok(h1);
    assert.equal(h1.publicIp, '10.250.0.11');
    assert.equal(h1.backendType, 'vxlan');
    assert.equal(h1.vtepMac, vtepOf(await leaseValue(keyOf('h1'))));
    assert.ok(typeof h1.expiresInSeconds === 'number' && h1.expiresInSeconds > 86000, JSON.stringify(h1));
  });

  test('SIGTERM: weftd exits 0 within a second and leaves device, routes and lease in place', async () => {
    const pid = lab.daemonPid('h2');
    assert.ok(pid);
    const routesBefore = await sh(lab, 'h2', 'ip', 'route', 'show', 'dev', 'flannel.1');
    const started = Date.now();
    process.kill(pid, 'SIGTERM');
    await waitUntil(() => { try { process.kill(pid, 0); return isZombieOrGone(pid); } catch { return true; } }, 1000, 'weftd to exit after SIGTERM');
    const took = Date.now() - started;
    assert.ok(took < 1000, `exit took ${took} ms`);
    assert.match(lab.daemonLog('h2'), /shutting down/);
    assert.equal(await sh(lab, 'h2', 'ip', 'route', 'show', 'dev', 'flannel.1'), routesBefore);
    assert.match(await leaseValue(keyOf('h2')), FLANNEL_LEASE);
    await lab.restartDaemon('h2');
  });

  test('READY=1 reaches NOTIFY_SOCKET only once routes to every peer exist', async () => {
    const sock = join(scratch, 'notify.sock');
    // Python (already needed by node-gyp) receives the datagram and snapshots the routes at once.
    const listener: ChildProcess = spawn('ip', ['netns', 'exec', lab.nsName('h3'), 'python3', '-c', `
import socket, subprocess, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("listening", flush=True)
while True:
    msg = s.recv(4096).decode()
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    print("MSG " + msg.replace("\\n", "|"), flush=True)
    if "READY=1" in msg:
        print("ROUTES " + routes.replace("\\n", "|"), flush=True)
        break
`, sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    listener.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    try {
      await waitUntil(() => out.includes('listening'), 5000);
      await lab.stopDaemon('h3');
      // Remove h3's routes so the daemon must program them again before it may say READY.
      for (const peer of ['h1', 'h2', 'h4']) await sh(lab, 'h3', 'ip', 'route', 'del', subnetOf(peer));
      await lab.startDaemon('h3', { extraEnv: { NOTIFY_SOCKET: sock } });
      await waitUntil(() => out.includes('ROUTES'), 15000);
      const routes = out.split('ROUTES ')[1]!;
      for (const peer of ['h1', 'h2', 'h4']) {
        assert.ok(routes.includes(`${subnetOf(peer)} via`), `route to ${peer} (${subnetOf(peer)}) missing at READY=1: ${routes}`);
      }
      assert.match(out, /STATUS=/, 'STATUS= lines sent on the way');
    } finally {
      listener.kill('SIGKILL');
    }
  });

  test('deleting a peer\'s lease removes its route, neighbour and FDB entry on the others', async () => {
    const key = keyOf('h2');
    const vtep = vtepOf(await leaseValue(key));
    const subnet = subnetOf('h2');
    assert.deepEqual(await peerEntries('h1', subnet, vtep), { route: true, neigh: true, fdb: true });
    await lab.stopDaemon('h2'); // or it would take its subnet back at once
    const del = await lab.etcdctl(['del', `/coreos.com/network/subnets/${key}`]);
    assert.equal(del.code, 0, del.stderr);
    for (const host of ['h1', 'h3']) {
      await waitUntil(async () => {
        const e = await peerEntries(host, subnet, vtep);
        return !e.route && !e.neigh && !e.fdb;
      }, 5000);
    }
    // h2 comes back (preferring the subnet in its subnet.env) and is reachable again.
    await lab.restartDaemon('h2');
    assert.equal(keyOf('h2'), key);
    assert.ok(await lab.ping('h1-c1', 'h2-c1'));
  });

  test('a host programmed the way flanneld does it and the weft hosts reach each other', async () => {
    // No flanneld binary can be fetched here; h3 is turned into a "flanneld host" by hand, with
    // exactly the kernel objects and lease bytes flannel's vxlan backend produces (compat §1, §4).
    await lab.stopDaemon('h3', 'SIGKILL');
    const key = keyOf('h3');
    const subnet = subnetOf('h3');
    const gw = subnet.split('/')[0]!;
    const mac = '0e:11:22:33:44:55';
    await sh(lab, 'h3', 'ip', 'link', 'del', 'flannel.1');
    await sh(lab, 'h3', 'ip', 'link', 'add', 'flannel.1', 'address', mac, 'mtu', '1450', 'type', 'vxlan', 'id', '1', 'local', '10.250.0.13', 'dev', 'eth0', 'dstport', '8472', 'nolearning');
    await sh(lab, 'h3', 'ip', 'addr', 'add', `${gw}/32`, 'dev', 'flannel.1');
    await sh(lab, 'h3', 'ip', 'link', 'set', 'flannel.1', 'up');
    for (const peer of ['h1', 'h2', 'h4']) {
      const pv = await leaseValue(keyOf(peer));
      const peerMac = vtepOf(pv);
      const pub = (JSON.parse(pv) as { PublicIP: string }).PublicIP;
      const pgw = subnetOf(peer).split('/')[0]!;
      await sh(lab, 'h3', 'ip', 'neigh', 'replace', pgw, 'lladdr', peerMac, 'dev', 'flannel.1', 'nud', 'permanent');
      await sh(lab, 'h3', 'bridge', 'fdb', 'replace', peerMac, 'dev', 'flannel.1', 'dst', pub, 'self', 'permanent');
      await sh(lab, 'h3', 'ip', 'route', 'replace', subnetOf(peer), 'via', pgw, 'dev', 'flannel.1', 'onlink');
    }
    const grant = await lab.etcdctl(['lease', 'grant', '600']);
    const leaseId = /lease ([0-9a-f]+) granted/.exec(grant.stdout)?.[1];
    assert.ok(leaseId, grant.stdout + grant.stderr);
    const value = `{"PublicIP":"10.250.0.13","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;
    const put = await lab.etcdctl(['put', `/coreos.com/network/subnets/${key}`, value, `--lease=${leaseId}`]);
    assert.equal(put.code, 0, put.stderr);
    // The weft hosts pick up the new VtepMAC and drop the stale one.
    for (const host of ['h1', 'h2', 'h4']) {
      await waitUntil(async () => (await peerEntries(host, subnet, mac)).fdb, 5000);
    }
    for (const other of ['h1-c1', 'h2-c1', 'h4-c1']) {
      assert.ok(await lab.ping('h3-c1', other), `flannel-style h3 → ${other}`);
      assert.ok(await lab.ping(other, 'h3-c1'), `${other} → flannel-style h3`);
    }
  });

  describe('bad input: one line that names the problem, non-zero exit, nothing deleted', () => {
    test('an invalid network config stops weftd with flannel\'s message', async () => {
      await lab.etcdctl(['put', '/bad/config', '{"Network":"10.7.0.0/16","SubnetLen":31}']);
      const r = await weftdOnce('h1', ['--etcd-endpoints=http://10.250.0.2:2379', '--etcd-prefix=/bad', '--iface=eth0', `--subnet-file=${join(scratch, 'bad.env')}`], 20000);
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, /SubnetLen must be less than \/31/);
    });

    test('a missing network config is waited for with one log line, not a flood', async () => {
      const r = await weftdOnce('h1', ['--etcd-endpoints=http://10.250.0.2:2379', '--etcd-prefix=/missing', '--iface=eth0', `--subnet-file=${join(scratch, 'missing.env')}`], 4000);
      assert.equal(r.code, 137, 'still waiting when killed');
      assert.equal(r.out.match(/flannel config not found in etcd store/g)?.length, 1, r.out);
    });

    test('an unreachable etcd is reported once and retried', async () => {
      const r = await weftdOnce('h1', ['--etcd-endpoints=http://10.250.0.99:2379', '--iface=eth0', `--subnet-file=${join(scratch, 'unreach.env')}`], 15000);
      assert.equal(r.code, 137, 'still retrying when killed');
      assert.match(r.out, /cannot reach etcd at http:\/\/10\.250\.0\.99:2379.*check --etcd-endpoints/);
      assert.ok((r.out.match(/WARN|ERROR/g) ?? []).length <= 2, r.out);
    });

    test('an interface that does not exist is named, with the ones that do', async () => {
      const r = await weftdOnce('h1', ['--etcd-endpoints=http://10.250.0.2:2379', '--iface=eth9', `--subnet-file=${join(scratch, 'x.env')}`], 10000);
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, /eth9/);
      assert.match(r.out, /eth0/);
    });

    test('an exhausted pool says so and leaves every lease in place', async () => {
      // /28 → SubnetLen 30 → 4 subnets, the first skipped: 3 to lease; all taken by others.
      await lab.etcdctl(['put', '/tiny/config', '{"Network":"10.8.0.0/28","Backend":{"Type":"vxlan"}}']);
      for (const n of [4, 8, 12]) {
        await lab.etcdctl(['put', `/tiny/subnets/10.8.0.${n}-30`, `{"PublicIP":"10.250.0.${200 + n}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:0${n % 10}"}}`]);
      }
      const r = await weftdOnce('h1', ['--etcd-endpoints=http://10.250.0.2:2379', '--etcd-prefix=/tiny', '--iface=eth0', `--subnet-file=${join(scratch, 'tiny.env')}`], 20000);
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, /out of subnets/i);
      const left = await lab.etcdctl(['get', '--prefix', '/tiny/subnets/', '--keys-only']);
      assert.equal(left.stdout.split('\n').filter((l) => l.trim()).length, 3);
      // The running overlay of h1 is untouched.
      assert.ok(await lab.ping('h1-c1', 'h2-c1'));
    });

    test('not root: one line saying weftd needs root', async () => {
      const r = await lab.exec('h1', ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, WEFTD, '--iface=eth0']);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stdout + r.stderr, /needs root/);
    });
  });
});
