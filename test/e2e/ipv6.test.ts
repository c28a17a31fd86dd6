/**
 * IPv6 and dual stack end to end: real weftd, a real etcd and the real kernel, in labs of network
 * namespaces prefixed wt<pid>6- / wt<pid>o- on an IPv4+IPv6 underlay (fd00:250::/64), torn down
 * at the end (also on failure).
 *
 *   dual stack (Network 10.5.0.0/16 + IPv6Network fd00:5::/48): flannel.1 and flannel-v6.1 per host
 *   IPv6-only  (EnableIPv4 false):                              flannel-v6.1 only, keys 0.0.0.0-0&...
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab } from '../../src/lab';
import { sleep, waitUntil as pollUntil } from '../../src/lab/run';
import { tcpTransfer } from './helpers/datapath';

const WEFT = resolve(__dirname, '..', '..', 'src', 'cli', 'weft.js');

async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  assert.ok(await pollUntil(check, timeoutMs, 50), `timed out after ${timeoutMs} ms waiting for ${what}`);
}

const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-ipv6-`));
const MAC = '(?:[0-9a-f]{2}:){5}[0-9a-f]{2}';
/** flanneld's dual-stack lease value: both halves, field order of its LeaseAttrs. */
const DUAL_LEASE = new RegExp(
  `^\\{"PublicIP":"10\\.250\\.0\\.\\d+","PublicIPv6":"fd00:250::\\d+","BackendType":"vxlan",` +
  `"BackendData":\\{"VNI":1,"VtepMAC":"${MAC}"\\},"BackendV6Data":\\{"VNI":1,"VtepMAC":"${MAC}"\\}\\}$`,
);
/** flanneld's IPv6-only lease value: PublicIP is its zero IP4, no BackendData. */
const V6ONLY_LEASE = new RegExp(`^\\{"PublicIP":"0\\.0\\.0\\.0","PublicIPv6":"fd00:250::\\d+","BackendType":"vxlan","BackendV6Data":\\{"VNI":1,"VtepMAC":"${MAC}"\\}\\}$`);

async function sh(lab: Lab, host: string, ...cmd: string[]): Promise<string> {
  const r = await lab.exec(host, cmd);
  assert.equal(r.code, 0, `${host}: ${cmd.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** The subnet key of a host ("10.5.36.0-24&fd00:5:0:22::-64"), from etcd by its PublicIPv6. */
async function keyOf(lab: Lab, host: string): Promise<string> {
  const pub6 = `fd00:250::${10 + Number(host.slice(1))}`;
  const r = await lab.etcdctl(['get', '--prefix', '/coreos.com/network/subnets/']);
  const lines = r.stdout.trim().split('\n');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    if (lines[i + 1]!.includes(`"PublicIPv6":"${pub6}"`)) return lines[i]!.slice('/coreos.com/network/subnets/'.length);
  }
  assert.fail(`no lease with PublicIPv6 ${pub6}:\n${r.stdout}`);
}

async function leaseValue(lab: Lab, key: string): Promise<string> {
  const r = await lab.etcdctl(['get', `/coreos.com/network/subnets/${key}`, '--print-value-only']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

/** The IPv6 half of a key: "fd00:5:0:22::/64". */
function v6SubnetOf(key: string): string {
  return key.split('&')[1]!.replace(/-(\d+)$/, '/$1');
}

/** Route, NDP neighbour and FDB entry on `host`'s flannel-v6.1 for a peer's IPv6 subnet. */
async function v6Entries(lab: Lab, host: string, subnet: string, vtep: string): Promise<{ route: boolean; neigh: boolean; fdb: boolean }> {
  const gw = subnet.split('/')[0]!;
  const [routes, neigh, fdb] = await Promise.all([
    sh(lab, host, 'ip', '-6', 'route', 'show', subnet),
    sh(lab, host, 'ip', '-6', 'neigh', 'show', 'dev', 'flannel-v6.1'),
    sh(lab, host, 'bridge', 'fdb', 'show', 'dev', 'flannel-v6.1'),
  ]);
  return {
    route: routes.includes(`via ${gw} dev flannel-v6.1`) && routes.includes('onlink'),
    neigh: neigh.split('\n').some((l) => l.startsWith(`${gw} `) && l.includes(vtep) && l.includes('PERMANENT')),
    fdb: fdb.split('\n').some((l) => l.startsWith(vtep) && l.includes('permanent')),
  };
}

/**
 * Turn `host` into a flanneld host by hand (no flanneld binary can be fetched here): weftd killed,
 * flannel-v6.1 re-created with `mac` and flannel's IPv6 objects for each peer (AddV6ARP,
 * AddV6FDB, v6 route), the lease value `value(mac)` written under its key with an etcd lease; then
 * the weft peers must program the new VtepMAC and containers must reach each other both ways.
 */
async function flanneldStyleV6Host(lab: Lab, host: string, peers: readonly string[], mac: string, value: (mac: string) => string): Promise<void> {
  await lab.stopDaemon(host, 'SIGKILL');
  const key = await keyOf(lab, host);
  const subnet = v6SubnetOf(key);
  const gw = subnet.split('/')[0]!;
  const local = `fd00:250::${10 + Number(host.slice(1))}`;
  await sh(lab, host, 'ip', 'link', 'del', 'flannel-v6.1');
  await sh(lab, host, 'ip', 'link', 'add', 'flannel-v6.1', 'address', mac, 'type', 'vxlan', 'id', '1', 'local', local, 'dev', 'eth0', 'dstport', '8472', 'nolearning');
  await sh(lab, host, 'ip', '-6', 'addr', 'add', `${gw}/128`, 'dev', 'flannel-v6.1', 'nodad');
  await sh(lab, host, 'ip', 'link', 'set', 'flannel-v6.1', 'up');
  for (const peer of peers) {
    const pk = await keyOf(lab, peer);
    const pv = JSON.parse(await leaseValue(lab, pk)) as { PublicIPv6: string; BackendV6Data: { VtepMAC: string } };
    const psub = v6SubnetOf(pk);
    const pgw = psub.split('/')[0]!;
    await sh(lab, host, 'ip', '-6', 'neigh', 'replace', pgw, 'lladdr', pv.BackendV6Data.VtepMAC, 'dev', 'flannel-v6.1', 'nud', 'permanent');
    await sh(lab, host, 'bridge', 'fdb', 'replace', pv.BackendV6Data.VtepMAC, 'dev', 'flannel-v6.1', 'dst', pv.PublicIPv6, 'self', 'permanent');
    await sh(lab, host, 'ip', '-6', 'route', 'replace', psub, 'via', pgw, 'dev', 'flannel-v6.1', 'onlink');
  }
  const grant = await lab.etcdctl(['lease', 'grant', '600']);
  const leaseId = /lease ([0-9a-f]+) granted/.exec(grant.stdout)?.[1];
  assert.ok(leaseId, grant.stdout + grant.stderr);
  const put = await lab.etcdctl(['put', `/coreos.com/network/subnets/${key}`, value(mac), `--lease=${leaseId}`]);
  assert.equal(put.code, 0, put.stderr);
  for (const p of peers) {
    await waitUntil(async () => (await v6Entries(lab, p, subnet, mac)).fdb, 5000, `${p} to program ${host}'s new IPv6 VtepMAC`);
  }
  for (const p of peers) {
    assert.ok(await lab.ping(`${host}-c1`, `${p}-c1`, { family: 6 }), `flanneld-style ${host} → ${p}-c1 (IPv6)`);
    assert.ok(await lab.ping(`${p}-c1`, `${host}-c1`, { family: 6 }), `${p}-c1 → flanneld-style ${host} (IPv6)`);
  }
}

describe('dual-stack vxlan on 3 hosts', { timeout: 170_000 }, () => {
  let lab: Lab;
  /** The lab's convergence lines (src/lab/converge.ts): what was missing, if anything, when up() went on. */
  const converged: string[] = [];
  before(async () => {
    lab = await Lab.up({
      prefix: `wt${process.pid}6-`, name: `wt${process.pid}6`, stateDir: join(scratch, 'dual'), hosts: 3, healthzPort: 0, ipv6: 'dual',
      progress: (line) => { if (/converged/.test(line)) converged.push(line); },
    });
  });
  after(async () => {
    await lab?.down();
  });

  test('the three hosts, started together, hold three different IPv4 and three different IPv6 subnets', async () => {
    // Their keys "<IPv4>&<IPv6>" may differ while one half is the same (two hosts listing before
    // either wrote): then one container is unreachable for good (CI flake, fixed in the lease
    // manager, src/lease/manager.ts keptAlone).
    const keys = await Promise.all(lab.hostNames().map((h) => keyOf(lab, h)));
    assert.equal(new Set(keys.map((k) => k.split('&')[0])).size, 3, keys.join(' '));
    assert.equal(new Set(keys.map((k) => k.split('&')[1])).size, 3, keys.join(' '));
  });

  test('every container reaches every other container over IPv4 and over IPv6', async () => {
    const m4 = await lab.pingMatrix();
    assert.ok(m4.ok, `${JSON.stringify(m4.results)}\n${converged.join('\n')}`);
    const m6 = await lab.pingMatrix({ family: 6 });
    assert.ok(m6.ok, `${JSON.stringify(m6.results)}\n${converged.join('\n')}`);
    assert.ok(m6.results.every((r) => r.target.startsWith('fd00:5:')), JSON.stringify(m6.results));
    assert.equal(m6.results.length, 6);
  });

  test('subnet.env has flannel\'s IPv4 and IPv6 lines, in flanneld\'s order', async () => {
    for (const host of lab.hostNames()) {
      const text = await sh(lab, host, 'cat', lab.subnetFile(host));
      assert.match(text, /^FLANNEL_NETWORK=10\.5\.0\.0\/16\nFLANNEL_SUBNET=10\.5\.\d+\.1\/24\nFLANNEL_IPV6_NETWORK=fd00:5::\/48\nFLANNEL_IPV6_SUBNET=fd00:5:0:[0-9a-f]+::1\/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n$/);
      const key = await keyOf(lab, host);
      assert.ok(text.includes(`FLANNEL_IPV6_SUBNET=${v6SubnetOf(key).replace('::/', '::1/')}`), `${text} vs key ${key}`);
    }
  });

  test('weft docker-opts gives Docker --ipv6 --fixed-cidr-v6 from the real subnet.env', async () => {
    const out = join(scratch, 'docker_opts.env');
    const r = await lab.exec('h1', [process.execPath, WEFT, 'docker-opts', '-f', lab.subnetFile('h1'), '-d', out]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const key = await keyOf(lab, 'h1');
    const text = await sh(lab, 'h1', 'cat', out);
    assert.ok(text.includes(`DOCKER_OPT_IPV6="--ipv6 --fixed-cidr-v6=${v6SubnetOf(key)}"`), text);
    // Sorted like the script's `set`: BIP, IPMASQ (if any), IPV6, MTU.
    assert.match(text, /DOCKER_OPTS=" --bip=10\.5\.\d+\.1\/24 (?:--ip-masq=\w+ )?--ipv6 --fixed-cidr-v6=fd00:5:0:[0-9a-f]+::\/64 --mtu=1450 ?"/);
  });

  test('keys and values in etcd are flanneld\'s: 10.5.x.0-24&fd00:5:0:y::-64 with PublicIPv6 and BackendV6Data', async () => {
    for (const host of lab.hostNames()) {
      const key = await keyOf(lab, host);
      assert.match(key, /^10\.5\.\d+\.0-24&fd00:5:0:[0-9a-f]+::-64$/);
      const value = await leaseValue(lab, key);
      assert.match(value, DUAL_LEASE);
      const v = JSON.parse(value) as { BackendData: { VtepMAC: string }; BackendV6Data: { VtepMAC: string } };
      assert.equal(v.BackendData.VtepMAC, (await sh(lab, host, 'cat', '/sys/class/net/flannel.1/address')).trim());
      assert.equal(v.BackendV6Data.VtepMAC, (await sh(lab, host, 'cat', '/sys/class/net/flannel-v6.1/address')).trim());
    }
  });

  test('the IPv6 device is flannel-v6.1 as flannel makes it: local = the IPv6 underlay address, MTU underlay - 70, /128', async () => {
    const link = await sh(lab, 'h1', 'ip', '-d', 'link', 'show', 'flannel-v6.1');
    assert.match(link, /mtu 1430/);
    assert.match(link, /vxlan id 1 local fd00:250::11 dev eth0 .*dstport 8472 nolearning/);
    const key = await keyOf(lab, 'h1');
    const addr = await sh(lab, 'h1', 'ip', '-6', 'addr', 'show', 'dev', 'flannel-v6.1');
    assert.ok(addr.includes(`inet6 ${v6SubnetOf(key).replace('/64', '/128')}`), addr);
  });

  test('ip6tables gets the FORWARD accepts for the IPv6Network (--iptables-forward-rules, default on)', async () => {
    await waitUntil(async () => (await sh(lab, 'h1', 'ip6tables-save', '-t', 'filter')).includes('-A WEFT-FWD -s fd00:5::/48'), 10_000, 'WEFT-FWD in ip6tables on h1');
    const saved = await sh(lab, 'h1', 'ip6tables-save', '-t', 'filter');
    assert.match(saved, /-A FORWARD -m comment --comment "weft forward" -j WEFT-FWD/);
    assert.match(saved, /-A WEFT-FWD -d fd00:5::\/48 -m comment --comment "weft forward" -j ACCEPT/);
  });

  test('a fourth host joining later is reachable from all over IPv6', async () => {
    const h4 = await lab.addHost();
    for (const from of ['h1-c1', 'h2-c1', 'h3-c1']) {
      assert.ok(await lab.ping(from, `${h4}-c1`, { family: 6 }), `${from} → ${h4}-c1 (IPv6)`);
      assert.ok(await lab.ping(`${h4}-c1`, from, { family: 6 }), `${h4}-c1 → ${from} (IPv6)`);
    }
  });

  test('restarting weftd keeps both subnets and both VtepMACs, and IPv6 traffic flows on', async () => {
    const key = await keyOf(lab, 'h1');
    const before = await leaseValue(lab, key);
    const target = v6SubnetOf(key).replace('::/64', '::2');
    const pinging = lab.exec('h2-c1', ['ping', '-6', '-c', '40', '-i', '0.1', '-W', '1', target]);
    await sleep(500);
    await lab.restartDaemon('h1');
    const ping = await pinging;
    assert.equal(await keyOf(lab, 'h1'), key, 'same IPv4 and IPv6 subnets after restart');
    assert.equal(await leaseValue(lab, key), before, 'same PublicIPv6 and VtepMACs after restart');
    assert.match(ping.stdout, / 0% packet loss/, ping.stdout);
  });

  test('an IPv6 route, NDP neighbour and FDB entry deleted by hand come back', async () => {
    const peerKey = await keyOf(lab, 'h2');
    const subnet = v6SubnetOf(peerKey);
    const vtep = (JSON.parse(await leaseValue(lab, peerKey)) as { BackendV6Data: { VtepMAC: string } }).BackendV6Data.VtepMAC;
    assert.deepEqual(await v6Entries(lab, 'h1', subnet, vtep), { route: true, neigh: true, fdb: true });
    await sh(lab, 'h1', 'ip', '-6', 'route', 'del', subnet);
    await sh(lab, 'h1', 'ip', '-6', 'neigh', 'del', subnet.split('/')[0]!, 'dev', 'flannel-v6.1');
    await sh(lab, 'h1', 'bridge', 'fdb', 'del', vtep, 'dev', 'flannel-v6.1');
    await waitUntil(async () => {
      const e = await v6Entries(lab, 'h1', subnet, vtep);
      return e.route && e.neigh && e.fdb;
    }, 5000, 'h1 to restore its IPv6 route, neighbour and FDB entry for h2');
    assert.ok(await lab.ping('h1-c1', 'h2-c1', { family: 6 }));
  });

  test('flannel-v6.1 deleted by hand comes back with the same VtepMAC and its routes', async () => {
    const mac = (await sh(lab, 'h1', 'cat', '/sys/class/net/flannel-v6.1/address')).trim();
    const peer = v6SubnetOf(await keyOf(lab, 'h2'));
    await sh(lab, 'h1', 'ip', 'link', 'del', 'flannel-v6.1');
    await waitUntil(async () => (await sh(lab, 'h1', 'ip', '-6', 'route', 'show', peer)).includes('dev flannel-v6.1'), 10_000, 'flannel-v6.1 and its route to h2 back on h1');
    assert.equal((await sh(lab, 'h1', 'cat', '/sys/class/net/flannel-v6.1/address')).trim(), mac);
    assert.ok(await lab.ping('h1-c1', 'h2-c1', { family: 6 }));
  });

  test('100 MB over TCP between containers over IPv6 arrive intact', async () => {
    const key = await keyOf(lab, 'h2');
    const to = v6SubnetOf(key).replace('::/64', '::2');
    assert.ok(await lab.ping('h1-c1', 'h2-c1', { family: 6 }), 'h1-c1 reaches h2-c1 over IPv6 before the transfer');
    const r = await tcpTransfer(lab, 'h1-c1', 'h2-c1', to, 100, 7106);
    assert.equal(r.received, r.sent);
    assert.match(r.sent, /^104857600 [0-9a-f]{64}$/);
  });

  test('a host given flanneld\'s exact IPv6 kernel objects and lease bytes by hand and the weft hosts reach each other', async () => {
    // No flanneld binary can be fetched here; h3 is turned into a "flanneld host" by hand with
    // what flannel's vxlan backend makes for IPv6 (flannel-v6.<VNI>, AddV6ARP, AddV6FDB, v6 route).
    const key = await keyOf(lab, 'h3');
    const old = JSON.parse(await leaseValue(lab, key)) as { BackendData: { VtepMAC: string } };
    const mac = '0e:11:22:33:44:66';
    await flanneldStyleV6Host(lab, 'h3', ['h1', 'h2', 'h4'], mac, (m) => `{"PublicIP":"10.250.0.13","PublicIPv6":"fd00:250::13","BackendType":"vxlan",` +
      `"BackendData":{"VNI":1,"VtepMAC":"${old.BackendData.VtepMAC}"},"BackendV6Data":{"VNI":1,"VtepMAC":"${m}"}}`);
  });

  test('weft cleanup removes flannel-v6.1 and weft\'s ip6tables chains too', async () => {
    await lab.stopDaemon('h2');
    const r = await lab.exec('h2', [process.execPath, WEFT, 'cleanup', `--subnet-file=${lab.subnetFile('h2')}`]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const links = await sh(lab, 'h2', 'ip', '-o', 'link', 'show');
    assert.ok(!links.includes('flannel-v6.1') && !links.includes('flannel.1'), links);
    assert.ok(!(await sh(lab, 'h2', 'ip6tables-save', '-t', 'filter')).includes('WEFT-FWD'));
    assert.match(r.stdout, /ip6tables/);
  });
});

describe('dual-stack vxlan: 3 hosts started together on a network of exactly 3 subnets per family', { timeout: 90_000 }, () => {
  // Every host lists before most writes and picks among the same 3 subnets: a host often takes
  // an IPv4 (or IPv6) subnet another host just took under another "<IPv4>&<IPv6>" key, which
  // create-if-absent lets through; the lease manager must notice and give its key back.
  let lab: Lab;
  const dir = mkdtempSync(join(tmpdir(), `wt${process.pid}-ipv6tight-`));
  const converged: string[] = [];
  before(async () => {
    lab = await Lab.up({
      prefix: `wt${process.pid}t-`, name: `wt${process.pid}t`, stateDir: join(dir, 'lab'), hosts: 3, healthzPort: 0, ipv6: 'dual',
      networkConfig: { Network: '10.5.0.0/22', SubnetLen: 24, EnableIPv6: true, IPv6Network: 'fd00:5::/62', IPv6SubnetLen: 64, Backend: { Type: 'vxlan' } },
      progress: (line) => { if (/converged/.test(line)) converged.push(line); },
    });
  });
  after(async () => {
    await lab?.down();
    rmSync(dir, { recursive: true, force: true });
  });

  test('each host holds its own IPv4 and IPv6 subnet, the lab converges and every container reaches every other', async (t) => {
    const keys = await Promise.all(lab.hostNames().map((h) => keyOf(lab, h)));
    const gaveBack = lab.hostNames().map((h) => (lab.daemonLog(h).match(/giving ours back/g) ?? []).length);
    t.diagnostic(`keys ${keys.join(' ')}; keys given back per host: ${gaveBack.join(', ')}`);
    assert.deepEqual(keys.map((k) => k.split('&')[0]).sort(), ['10.5.1.0-24', '10.5.2.0-24', '10.5.3.0-24'], keys.join(' '));
    assert.deepEqual(keys.map((k) => k.split('&')[1]).sort(), ['fd00:5:0:1::-64', 'fd00:5:0:2::-64', 'fd00:5:0:3::-64'], keys.join(' '));
    assert.deepEqual(converged, ['routes, neighbours and FDB entries converged on every host']);
    const m4 = await lab.pingMatrix();
    assert.ok(m4.ok, JSON.stringify(m4.results));
    const m6 = await lab.pingMatrix({ family: 6 });
    assert.ok(m6.ok, JSON.stringify(m6.results));
  });
});

describe('IPv6-only vxlan on 3 hosts (EnableIPv4 false)', { timeout: 120_000 }, () => {
  let lab: Lab;
  before(async () => {
    lab = await Lab.up({ prefix: `wt${process.pid}o-`, name: `wt${process.pid}o`, stateDir: join(scratch, 'only'), hosts: 3, healthzPort: 0, ipv6: 'only' });
  });
  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('every container reaches every other container over IPv6', async () => {
    const m = await lab.pingMatrix();
    assert.ok(m.ok, JSON.stringify(m.results));
    assert.equal(m.results.length, 6);
    assert.ok(m.results.every((r) => r.target.startsWith('fd00:5:')), JSON.stringify(m.results));
  });

  test('keys are 0.0.0.0-0&<ipv6>-64 and values flanneld\'s IPv6-only bytes; no IPv4 device', async () => {
    for (const host of lab.hostNames()) {
      const key = await keyOf(lab, host);
      assert.match(key, /^0\.0\.0\.0-0&fd00:5:0:[0-9a-f]+::-64$/);
      assert.match(await leaseValue(lab, key), V6ONLY_LEASE);
      const links = await sh(lab, host, 'ip', '-o', 'link', 'show');
      assert.ok(links.includes('flannel-v6.1'), links);
      assert.ok(!/ flannel\.1[:@]/.test(links), links);
    }
  });

  test('subnet.env has only the IPv6 lines, the MTU of flannel-v6.1 and IPMASQ', async () => {
    for (const host of lab.hostNames()) {
      const text = await sh(lab, host, 'cat', lab.subnetFile(host));
      assert.match(text, /^FLANNEL_IPV6_NETWORK=fd00:5::\/48\nFLANNEL_IPV6_SUBNET=fd00:5:0:[0-9a-f]+::1\/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n$/);
    }
  });

  test('a host given flanneld\'s IPv6-only kernel objects and lease bytes by hand and the weft hosts reach each other', async () => {
    await flanneldStyleV6Host(lab, 'h3', ['h1', 'h2'], '0e:11:22:33:44:77',
      (m) => `{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:250::13","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"${m}"}}`);
  });

  test('a restart keeps the IPv6 subnet and VtepMAC (our lease is found by PublicIPv6)', async () => {
    const key = await keyOf(lab, 'h2');
    const before = await leaseValue(lab, key);
    await lab.restartDaemon('h2');
    assert.equal(await keyOf(lab, 'h2'), key);
    assert.equal(await leaseValue(lab, key), before);
    assert.ok(await lab.ping('h1-c1', 'h2-c1'));
  });
});

describe('dual-stack vxlan with DirectRouting on 2 hosts of one L2', { timeout: 90_000 }, () => {
  let lab: Lab;
  const dir = mkdtempSync(join(tmpdir(), `wt${process.pid}-ipv6dr-`));
  before(async () => {
    lab = await Lab.up({
      prefix: `wt${process.pid}d-`, name: `wt${process.pid}d`, stateDir: join(dir, 'lab'), hosts: 2, healthzPort: 0, ipv6: 'dual',
      networkConfig: { Network: '10.5.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:5::/48', Backend: { Type: 'vxlan', DirectRouting: true } },
    });
  });
  after(async () => {
    await lab?.down();
    rmSync(dir, { recursive: true, force: true });
  });

  test('each peer\'s IPv6 subnet is routed via its PublicIPv6 on the underlay, not through flannel-v6.1', async () => {
    const peer = v6SubnetOf(await keyOf(lab, 'h2'));
    const route = await sh(lab, 'h1', 'ip', '-6', 'route', 'show', peer);
    assert.match(route, /via fd00:250::12 dev eth0/);
    assert.equal((await sh(lab, 'h1', 'ip', '-6', 'neigh', 'show', 'dev', 'flannel-v6.1')).includes('PERMANENT'), false);
    const m6 = await lab.pingMatrix({ family: 6 });
    assert.ok(m6.ok, JSON.stringify(m6.results));
  });

  test('weft cleanup removes the IPv6 DirectRouting route from the underlay', async () => {
    const peer = v6SubnetOf(await keyOf(lab, 'h2'));
    await lab.stopDaemon('h1');
    const r = await lab.exec('h1', [process.execPath, WEFT, 'cleanup', `--subnet-file=${lab.subnetFile('h1')}`]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`removed route ${peer} via fd00:250::12`), r.stdout);
    assert.equal((await sh(lab, 'h1', 'ip', '-6', 'route', 'show', peer)).trim(), '');
  });
});
