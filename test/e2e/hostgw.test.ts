/**
 * host-gw end to end: real weftd, a real etcd and the real kernel, in a lab of network namespaces
 * prefixed wt<pid>g- on one underlay bridge (one L2), torn down at the end (also on failure).
 * flannel's host-gw wants `<peer subnet> via <PublicIP> dev <underlay>` per peer and nothing else.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab } from '../../src/lab';
import { sleep } from '../../src/lab/run';
import { containerAddr, requireTool, tcpTransfer } from './helpers/datapath';
import { sh, waitUntil } from './helpers/shell';

const PREFIX = `wt${process.pid}g-`;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-hostgw-`));
/** flannel v0.20's host-gw lease: no BackendData (json.RawMessage, omitempty). */
const FLANNEL_HOSTGW_LEASE = /^\{"PublicIP":"10\.250\.0\.\d+","PublicIPv6":null,"BackendType":"host-gw"\}$/;
const SUBNETS = '/coreos.com/network/subnets';

let lab: Lab;

function subnetOf(host: string): string {
  const env = lab.subnetEnv(host);
  assert.ok(env, `no subnet.env on ${host}`);
  return env.subnetNetwork;
}
const keyOf = (host: string): string => subnetOf(host).replace('/', '-');
const publicIpOf = (host: string): string => `10.250.0.${10 + Number(host.slice(1))}`;

/** The main-table route for `subnet` on `host`, as `ip route` prints it (empty when none). */
async function routeTo(host: string, subnet: string): Promise<string> {
  return (await sh(lab, host, 'ip', 'route', 'show', 'exact', subnet)).trim();
}

/** Exactly the route flannel's host-gw adds (netlink.RouteAdd{Dst, Gw, LinkIndex}): no onlink, no metric. */
const hostGwRoute = (subnet: string, gw: string): string => `${subnet} via ${gw} dev eth0`;

async function putLease(key: string, value: string, ttl = 600): Promise<void> {
  const grant = await lab.etcdctl(['lease', 'grant', String(ttl)]);
  const id = /lease ([0-9a-f]+) granted/.exec(grant.stdout)?.[1];
  assert.ok(id, grant.stdout + grant.stderr);
  const put = await lab.etcdctl(['put', `${SUBNETS}/${key}`, value, `--lease=${id}`]);
  assert.equal(put.code, 0, put.stderr);
}

const skipWarnings = (host: string, key: string): number =>
  lab.daemonLog(host).split('\n').filter((l) => l.includes('peer lease skipped') && l.includes(key)).length;

describe('host-gw on a 3-host lab', { timeout: 170_000 }, () => {
  before(async () => {
    requireTool('etcd');
    lab = await Lab.up({ prefix: PREFIX, name: `wt${process.pid}g`, stateDir: join(scratch, 'lab'), hosts: 3, backend: 'host-gw', healthzPort: 0 });
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

  test('each peer gets flannel\'s route <subnet> via <PublicIP> dev eth0, no device, and the underlay MTU in subnet.env', async () => {
    for (const host of lab.hostNames()) {
      for (const peer of lab.hostNames().filter((p) => p !== host)) {
        assert.equal(await routeTo(host, subnetOf(peer)), hostGwRoute(subnetOf(peer), publicIpOf(peer)), `${host} → ${peer}`);
      }
      const links = await sh(lab, host, 'ip', '-o', 'link', 'show');
      assert.doesNotMatch(links, /flannel/, `${host} has no overlay device`);
      const text = await sh(lab, host, 'cat', lab.subnetFile(host));
      assert.match(text, /^FLANNEL_NETWORK=10\.5\.0\.0\/16\nFLANNEL_SUBNET=10\.5\.\d+\.1\/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n$/);
    }
  });

  test('the lease value in etcd is byte for byte flannel\'s host-gw lease', async () => {
    for (const host of lab.hostNames()) {
      const r = await lab.etcdctl(['get', `${SUBNETS}/${keyOf(host)}`, '--print-value-only']);
      assert.match(r.stdout.trim(), FLANNEL_HOSTGW_LEASE);
      assert.ok(r.stdout.includes(`"PublicIP":"${publicIpOf(host)}"`));
    }
  });

  test('a TCP stream of 8 MiB arrives intact, without encapsulation', async () => {
    const t = await tcpTransfer(lab, 'h1-c1', 'h2-c1', containerAddr(lab, 'h2'), 8, 7301);
    assert.equal(t.received, t.sent);
    assert.match(t.sent, /^8388608 [0-9a-f]{64}$/);
  });

  test('a route deleted by hand comes back within a second (netlink notification, not the resync)', async () => {
    const peer = subnetOf('h2');
    await sh(lab, 'h1', 'ip', 'route', 'del', peer);
    const started = Date.now();
    await waitUntil(async () => (await routeTo('h1', peer)) === hostGwRoute(peer, publicIpOf('h2')), 1000, 'the route to come back');
    assert.ok(Date.now() - started < 1000);
    // Replaced by hand with a wrong gateway: put right again too.
    await sh(lab, 'h1', 'ip', 'route', 'replace', peer, 'via', publicIpOf('h3'), 'dev', 'eth0');
    await waitUntil(async () => (await routeTo('h1', peer)) === hostGwRoute(peer, publicIpOf('h2')), 1000, 'the gateway to be corrected');
    assert.ok(await lab.ping('h1-c1', 'h2-c1'));
    assert.match(lab.daemonLog('h1'), /repaired: add route .* via 10\.250\.0\.12 \(underlay\)/);
  });

  test('a peer whose PublicIP is not on our L2 gets no route and one warning per host, not a blackhole', async () => {
    // 10.251.0.7 is outside the underlay's 10.250.0.0/24: the kernel would need a gateway.
    const key = '10.5.250.0-24';
    await putLease(key, '{"PublicIP":"10.251.0.7","PublicIPv6":null,"BackendType":"host-gw"}');
    for (const host of lab.hostNames()) await waitUntil(() => skipWarnings(host, key) >= 1, 5000, `${host} to warn about ${key}`);
    assert.match(lab.daemonLog('h1'), /PublicIP 10\.251\.0\.7 is not on our L2/);
    // A renewal of the same lease (a new etcd event) is not warned about again.
    await putLease(key, '{"PublicIP":"10.251.0.7","PublicIPv6":null,"BackendType":"host-gw"}');
    await sleep(1000);
    for (const host of lab.hostNames()) {
      assert.equal(await routeTo(host, '10.5.250.0/24'), '', `${host} has no route to the off-L2 peer`);
      assert.equal(skipWarnings(host, key), 1, `${host} warned once`);
    }
    // A lease with an unusable PublicIP (inside the Network) is skipped the same way.
    await putLease('10.5.251.0-24', '{"PublicIP":"10.5.12.9","PublicIPv6":null,"BackendType":"host-gw"}');
    await waitUntil(() => skipWarnings('h1', '10.5.251.0-24') === 1, 5000, 'h1 to warn about 10.5.251.0-24');
    assert.equal(await routeTo('h1', '10.5.251.0/24'), '');
    await lab.etcdctl(['del', `${SUBNETS}/${key}`]);
    await lab.etcdctl(['del', `${SUBNETS}/10.5.251.0-24`]);
    const m = await lab.pingMatrix();
    assert.ok(m.ok, JSON.stringify(m.results));
  });

  test('a fourth host joining later is reachable from all, both ways', async () => {
    const h4 = await lab.addHost();
    for (const from of ['h1-c1', 'h2-c1', 'h3-c1']) {
      assert.ok(await lab.ping(from, `${h4}-c1`), `${from} → ${h4}-c1`);
      assert.ok(await lab.ping(`${h4}-c1`, from), `${h4}-c1 → ${from}`);
    }
  });

  test('restarting weftd keeps its subnet and the routes, and does not interrupt traffic', async () => {
    const key = keyOf('h1');
    const before = await sh(lab, 'h1', 'ip', 'route', 'show');
    const pinging = lab.exec('h2-c1', ['ping', '-c', '40', '-i', '0.1', '-W', '1', containerAddr(lab, 'h1')]);
    const out = lab.exec('h1-c1', ['ping', '-c', '40', '-i', '0.1', '-W', '1', containerAddr(lab, 'h3')]);
    await sleep(500);
    await lab.restartDaemon('h1');
    const [inbound, outbound] = await Promise.all([pinging, out]);
    assert.equal(keyOf('h1'), key, 'same subnet after restart');
    assert.match(inbound.stdout, / 0% packet loss/, inbound.stdout);
    assert.match(outbound.stdout, / 0% packet loss/, outbound.stdout);
    assert.equal(await sh(lab, 'h1', 'ip', 'route', 'show'), before, 'routes untouched by the restart');
  });

  test('a host programmed the way flanneld does it (routes and lease bytes by hand) and the weft hosts reach each other', async () => {
    // No flanneld binary can be fetched here; h3 becomes a "flanneld host" by hand, with exactly
    // the kernel objects (one route per peer, nothing else) and lease bytes flannel's host-gw
    // writes, under a subnet the weft hosts have never seen.
    await lab.stopDaemon('h3', 'SIGKILL');
    const oldKey = keyOf('h3');
    const subnet = '10.5.222.0/24';
    await sh(lab, 'h3', 'ip', 'addr', 'flush', 'dev', 'weft0');
    await sh(lab, 'h3', 'ip', 'addr', 'add', '10.5.222.1/24', 'dev', 'weft0');
    await sh(lab, 'h3-c1', 'ip', 'addr', 'flush', 'dev', 'eth0');
    await sh(lab, 'h3-c1', 'ip', 'addr', 'add', '10.5.222.2/24', 'dev', 'eth0');
    await sh(lab, 'h3-c1', 'ip', 'route', 'replace', 'default', 'via', '10.5.222.1');
    const peers = ['h1', 'h2', 'h4'];
    for (const peer of peers) await sh(lab, 'h3', 'ip', 'route', 'replace', subnetOf(peer), 'via', publicIpOf(peer), 'dev', 'eth0');
    await lab.etcdctl(['del', `${SUBNETS}/${oldKey}`]);
    await putLease('10.5.222.0-24', '{"PublicIP":"10.250.0.13","PublicIPv6":null,"BackendType":"host-gw"}');
    for (const host of peers) {
      await waitUntil(async () => (await routeTo(host, subnet)) === hostGwRoute(subnet, '10.250.0.13'), 5000, `${host}'s route to the flanneld host`);
      // The departed lease's route goes after the grace period.
      await waitUntil(async () => (await routeTo(host, oldKey.replace('-', '/'))) === '', 8000, `${host} to drop ${oldKey}`);
    }
    for (const peer of peers) {
      const to = containerAddr(lab, peer);
      const r = await lab.exec('h3-c1', ['ping', '-c', '2', '-W', '1', to]);
      assert.equal(r.code, 0, `flanneld h3 → ${peer}: ${r.stdout}`);
      const back = await lab.exec(`${peer}-c1`, ['ping', '-c', '2', '-W', '1', '10.5.222.2']);
      assert.equal(back.code, 0, `${peer} → flanneld h3: ${back.stdout}`);
    }
  });
});
