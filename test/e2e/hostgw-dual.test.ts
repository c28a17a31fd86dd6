/**
 * host-gw dual stack end to end: real weftd, a real etcd and the real kernel, on a lab whose
 * underlay has IPv4 and IPv6 (one L2) and whose config enables IPv6 (namespaces wt<pid>j-, torn
 * down at the end, also on failure). flannel's host-gw adds, per peer and family,
 * `<subnet> via <PublicIP|PublicIPv6> dev <underlay>`, and writes PublicIPv6 into the lease.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab } from '../../src/lab';
import { requireTool, tcpTransfer } from './helpers/datapath';
import { sh, waitUntil } from './helpers/shell';

const PREFIX = `wt${process.pid}j-`;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-hostgw6-`));
const SUBNETS = '/coreos.com/network/subnets';
let lab: Lab;

function env(host: string) {
  const e = lab.subnetEnv(host);
  assert.ok(e, `no subnet.env on ${host}`);
  return e;
}
const v4Subnet = (host: string): string => env(host).subnetNetwork;
/** The IPv6 subnet ("fd00:5:0:2a::/64") from FLANNEL_IPV6_SUBNET ("fd00:5:0:2a::1/64"). */
const v6Subnet = (host: string): string => env(host).ipv6Subnet!.replace(/::1\//, '::/');
const v6Container = (host: string): string => env(host).ipv6ContainerAddress!.split('/')[0]!;
const pub4 = (host: string): string => `10.250.0.${10 + Number(host.slice(1))}`;
const pub6 = (host: string): string => `fd00:250::${10 + Number(host.slice(1))}`;

/** `ip -6 route show exact` for a subnet, reduced to "<dst> via <gw> dev <dev>". */
async function route6(host: string, subnet: string): Promise<string> {
  const out = (await sh(lab, host, 'ip', '-6', 'route', 'show', 'exact', subnet)).trim();
  const m = /^(\S+) via (\S+) dev (\S+)/.exec(out);
  return m ? `${m[1]} via ${m[2]} dev ${m[3]}` : out;
}

after(() => rmSync(scratch, { recursive: true, force: true }));

describe('host-gw dual stack on a 3-host lab', { timeout: 170_000 }, () => {
  before(async () => {
    requireTool('etcd');
    lab = await Lab.up({ prefix: PREFIX, name: `wt${process.pid}j`, stateDir: join(scratch, 'lab'), hosts: 3, backend: 'host-gw', ipv6: 'dual', healthzPort: 0 });
  });

  after(async () => {
    await lab?.down();
  });

  test('every container reaches every other container over IPv4 and over IPv6, both ways', async () => {
    const m4 = await lab.pingMatrix();
    assert.ok(m4.ok, JSON.stringify(m4.results));
    const m6 = await lab.pingMatrix({ family: 6 });
    assert.ok(m6.ok, JSON.stringify(m6.results));
    assert.equal(m6.nodes.length, 3);
  });

  test('each peer gets one route per family via its PublicIP / PublicIPv6 on eth0, and no device', async () => {
    for (const host of lab.hostNames()) {
      for (const peer of lab.hostNames().filter((p) => p !== host)) {
        assert.equal((await sh(lab, host, 'ip', 'route', 'show', 'exact', v4Subnet(peer))).trim(), `${v4Subnet(peer)} via ${pub4(peer)} dev eth0`);
        assert.equal(await route6(host, v6Subnet(peer)), `${v6Subnet(peer)} via ${pub6(peer)} dev eth0`);
      }
      assert.doesNotMatch(await sh(lab, host, 'ip', '-o', 'link', 'show'), /flannel/);
      const text = await sh(lab, host, 'cat', lab.subnetFile(host));
      assert.match(text, /FLANNEL_IPV6_NETWORK=fd00:5::\/48\n/);
      assert.match(text, /FLANNEL_IPV6_SUBNET=fd00:5:0:[0-9a-f]+::1\/64\n/);
      assert.match(text, /FLANNEL_MTU=1500\n/);
    }
  });

  test('the lease is flannel\'s dual-stack host-gw lease: key with &<v6>-64, PublicIPv6, no BackendData/BackendV6Data', async () => {
    const r = await lab.etcdctl(['get', '--prefix', SUBNETS]);
    const lines = r.stdout.trim().split('\n');
    for (const host of lab.hostNames()) {
      const key = `${SUBNETS}/${v4Subnet(host).replace('/', '-')}&${v6Subnet(host).replace('/', '-')}`;
      const i = lines.indexOf(key);
      assert.ok(i >= 0, `${key} in ${r.stdout}`);
      assert.equal(lines[i + 1], `{"PublicIP":"${pub4(host)}","PublicIPv6":"${pub6(host)}","BackendType":"host-gw"}`);
    }
  });

  test('an IPv6 route deleted by hand comes back within a second', async () => {
    const subnet = v6Subnet('h2');
    await sh(lab, 'h1', 'ip', '-6', 'route', 'del', subnet);
    await waitUntil(async () => (await route6('h1', subnet)) === `${subnet} via ${pub6('h2')} dev eth0`, 1000, 'the IPv6 route to come back');
    assert.ok(await lab.ping('h1-c1', 'h2-c1', { family: 6 }));
  });

  test('a TCP stream of 8 MiB over IPv6 arrives intact', async () => {
    const t = await tcpTransfer(lab, 'h1-c1', 'h3-c1', v6Container('h3'), 8, 7302);
    assert.equal(t.received, t.sent);
    assert.match(t.sent, /^8388608 [0-9a-f]{64}$/);
  });

  test('a peer whose PublicIPv6 is not on our L2 gets no IPv6 route, one warning', async () => {
    const key = '10.5.250.0-24&fd00:5:0:fa::-64';
    const grant = await lab.etcdctl(['lease', 'grant', '600']);
    const id = /lease ([0-9a-f]+) granted/.exec(grant.stdout)?.[1];
    assert.ok(id, grant.stdout);
    await lab.etcdctl(['put', `${SUBNETS}/${key}`, '{"PublicIP":"10.250.0.77","PublicIPv6":"fd00:251::77","BackendType":"host-gw"}', `--lease=${id}`]);
    await waitUntil(() => /PublicIPv6 fd00:251::77 is not on our L2/.test(lab.daemonLog('h1')), 5000, 'h1 to warn about the off-L2 PublicIPv6');
    assert.equal(await route6('h1', 'fd00:5:0:fa::/64'), '');
    // Its IPv4 half is on our L2: that route exists (each family is judged on its own).
    assert.equal((await sh(lab, 'h1', 'ip', 'route', 'show', 'exact', '10.5.250.0/24')).trim(), '10.5.250.0/24 via 10.250.0.77 dev eth0');
    await lab.etcdctl(['del', `${SUBNETS}/${key}`]);
  });

  test('a host programmed the way flanneld does it (both families, by hand) and the weft hosts reach each other', async () => {
    await lab.stopDaemon('h3', 'SIGKILL');
    const oldKey = `${v4Subnet('h3').replace('/', '-')}&${v6Subnet('h3').replace('/', '-')}`;
    await sh(lab, 'h3', 'ip', 'addr', 'flush', 'dev', 'weft0');
    await sh(lab, 'h3', 'ip', 'addr', 'add', '10.5.222.1/24', 'dev', 'weft0');
    await sh(lab, 'h3', 'ip', '-6', 'addr', 'add', 'fd00:5:0:de::1/64', 'dev', 'weft0', 'nodad');
    await sh(lab, 'h3-c1', 'ip', 'addr', 'flush', 'dev', 'eth0', 'scope', 'global');
    await sh(lab, 'h3-c1', 'ip', 'addr', 'add', '10.5.222.2/24', 'dev', 'eth0');
    await sh(lab, 'h3-c1', 'ip', '-6', 'addr', 'add', 'fd00:5:0:de::2/64', 'dev', 'eth0', 'nodad');
    await sh(lab, 'h3-c1', 'ip', 'route', 'replace', 'default', 'via', '10.5.222.1');
    await sh(lab, 'h3-c1', 'ip', '-6', 'route', 'replace', 'default', 'via', 'fd00:5:0:de::1');
    for (const peer of ['h1', 'h2']) {
      await sh(lab, 'h3', 'ip', 'route', 'replace', v4Subnet(peer), 'via', pub4(peer), 'dev', 'eth0');
      await sh(lab, 'h3', 'ip', '-6', 'route', 'replace', v6Subnet(peer), 'via', pub6(peer), 'dev', 'eth0');
    }
    await lab.etcdctl(['del', `${SUBNETS}/${oldKey}`]);
    const grant = await lab.etcdctl(['lease', 'grant', '600']);
    const id = /lease ([0-9a-f]+) granted/.exec(grant.stdout)?.[1];
    assert.ok(id, grant.stdout);
    const put = await lab.etcdctl(['put', `${SUBNETS}/10.5.222.0-24&fd00:5:0:de::-64`,
      '{"PublicIP":"10.250.0.13","PublicIPv6":"fd00:250::13","BackendType":"host-gw"}', `--lease=${id}`]);
    assert.equal(put.code, 0, put.stderr);
    for (const host of ['h1', 'h2']) {
      await waitUntil(async () => (await route6(host, 'fd00:5:0:de::/64')) === 'fd00:5:0:de::/64 via fd00:250::13 dev eth0', 5000, `${host}'s IPv6 route to the flanneld host`);
    }
    for (const peer of ['h1', 'h2']) {
      for (const [to, back] of [[env(peer).containerAddress.split('/')[0]!, '10.5.222.2'], [v6Container(peer), 'fd00:5:0:de::2']] as const) {
        const r = await lab.exec('h3-c1', ['ping', '-c', '2', '-W', '1', to]);
        assert.equal(r.code, 0, `flanneld h3 → ${peer} ${to}: ${r.stdout}`);
        const b = await lab.exec(`${peer}-c1`, ['ping', '-c', '2', '-W', '1', back]);
        assert.equal(b.code, 0, `${peer} → flanneld h3 ${back}: ${b.stdout}`);
      }
    }
  });
});

describe('host-gw IPv6-only (EnableIPv4 false) on a 3-host lab', { timeout: 120_000 }, () => {
  let only: Lab;
  before(async () => {
    only = await Lab.up({ prefix: `wt${process.pid}k-`, name: `wt${process.pid}k`, stateDir: join(scratch, 'only'), hosts: 3, backend: 'host-gw', ipv6: 'only', healthzPort: 0 });
  });

  after(async () => {
    await only?.down();
  });

  test('every container reaches every other over IPv6, through one route per peer via its PublicIPv6', async () => {
    const m = await only.pingMatrix();
    assert.ok(m.ok, JSON.stringify(m.results));
    for (const host of only.hostNames()) {
      const r = await only.exec(host, ['ip', '-6', 'route', 'show']);
      const vias = r.stdout.split('\n').filter((l) => / via fd00:250::\d+ dev eth0 /.test(l));
      assert.equal(vias.length, 2, r.stdout);
      const v4 = await only.exec(host, ['ip', '-4', 'route', 'show']);
      assert.doesNotMatch(v4.stdout, /10\.5\./, 'no IPv4 overlay routes');
    }
  });
});
