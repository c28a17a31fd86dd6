/**
 * The weft CNI plugin driven as a runtime drives it (CNI_* variables, config on stdin), with
 * Debian's real bridge and host-local plugins, in namespaces wt<pid>n-… made here and removed at
 * the end (also on failure). No runtime involved: runtime-podman.test.ts does that.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { installPlugin } from '../../src/cli/cni';
import { CniCode } from '../../src/cni/netconf';
import { findTools } from '../../src/lab';
import { Netns } from '../../src/lab/netns';

const PLUGIN = join(__dirname, '..', '..', 'src', 'cli', 'weft-cni.js');
const CNI_PATH = '/usr/lib/cni';
const PREFIX = `wt${process.pid}n-`;
const HOST = `${PREFIX}h`;
const dir = mkdtempSync(join(tmpdir(), `${PREFIX}cni-`));
const subnetFile = join(dir, 'subnet.env');
const ENV4 = 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n';

interface Result {
  ips: { address: string; gateway?: string }[];
  routes: { dst: string }[];
  interfaces: { name: string; sandbox?: string }[];
}

const netconf = JSON.stringify({ cniVersion: '1.0.0', name: 'weft', type: 'weft', subnetFile, dataDir: join(dir, 'data'), ipam: { dataDir: join(dir, 'ipam') } });

/** Run the plugin inside the host namespace (bridge creates cni0 there), as a runtime would. */
function cni(command: string, id: string, ns: string, stdin = netconf): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('nsenter', [`--net=/run/netns/${HOST}`, process.execPath, PLUGIN], {
    input: stdin, encoding: 'utf8',
    env: { PATH: process.env.PATH, CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: ns ? `/run/netns/${ns}` : '', CNI_IFNAME: 'eth0', CNI_PATH },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('weft CNI plugin with the real bridge and host-local plugins', () => {
  let netns: Netns;

  before(async () => {
    // A missing prerequisite fails with what to install (never skip).
    assert.ok(existsSync(join(CNI_PATH, 'bridge')) && existsSync(join(CNI_PATH, 'host-local')),
      `${CNI_PATH}/bridge and host-local missing: apt-get install -y containernetworking-plugins (scripts/install-deps.sh dev)`);
    netns = new Netns(findTools().ip);
    for (const ns of [HOST, `${PREFIX}c1`, `${PREFIX}c2`]) await netns.add(ns);
    writeFileSync(subnetFile, ENV4);
  });

  after(async () => {
    for (const ns of [`${PREFIX}c2`, `${PREFIX}c1`, HOST]) await netns?.delete(ns).catch(() => false);
    rmSync(dir, { recursive: true, force: true });
  });

  test('ADD: an address from FLANNEL_SUBNET, gateway .1, a route to FLANNEL_NETWORK, FLANNEL_MTU on cni0 and eth0', async () => {
    const r = cni('ADD', 'c1', `${PREFIX}c1`);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const res = JSON.parse(r.stdout) as Result;
    assert.equal(res.ips[0]?.address, '10.5.72.2/24');
    assert.equal(res.ips[0]?.gateway, '10.5.72.1');
    assert.ok(res.routes.some((x) => x.dst === '10.5.0.0/16'));
    const mtu = async (ns: string, dev: string) => (JSON.parse(await netns.in(ns, ['-j', 'link', 'show', dev], dev)) as { mtu: number }[])[0]?.mtu;
    assert.equal(await mtu(HOST, 'cni0'), 1400);
    assert.equal(await mtu(`${PREFIX}c1`, 'eth0'), 1400);
    assert.ok(existsSync(join(dir, 'data', 'c1')), 'delegate config kept for DEL');
  });

  test('CHECK passes with the runtime\'s prevResult, and fails with code 102 once the host\'s subnet has changed', () => {
    const add = JSON.parse(cni('ADD', 'c2', `${PREFIX}c2`).stdout) as Result;
    const withPrev = JSON.stringify({ ...(JSON.parse(netconf) as object), prevResult: add });
    const ok = cni('CHECK', 'c2', `${PREFIX}c2`, withPrev);
    assert.equal(ok.code, 0, ok.stdout);
    writeFileSync(subnetFile, ENV4.replace('10.5.72.1/24', '10.5.73.1/24'));
    try {
      const moved = cni('CHECK', 'c2', `${PREFIX}c2`, withPrev);
      assert.equal(moved.code, 1);
      const err = JSON.parse(moved.stdout) as { code: number; msg: string };
      assert.equal(err.code, CniCode.SUBNET_CHANGED);
      assert.match(err.msg, /subnet changed .*recreate the container/);
    } finally {
      writeFileSync(subnetFile, ENV4);
    }
  });

  test('a delegate failure comes back as CNI error JSON naming the delegate (bad netns path)', () => {
    const r = cni('ADD', 'bad', `${PREFIX}absent`);
    assert.equal(r.code, 1);
    const err = JSON.parse(r.stdout) as { code: number; msg: string };
    assert.ok(err.code > 0);
    assert.match(err.msg, /^weft: bridge ADD failed: /);
    assert.equal(cni('DEL', 'bad', '').code, 0, 'DEL after a failed ADD cleans up');
  });

  test('DEL removes the interface and releases the address; a second DEL is a no-op', async () => {
    assert.equal(cni('DEL', 'c1', `${PREFIX}c1`).code, 0);
    assert.ok(!(await netns.linkExists(`${PREFIX}c1`, 'eth0')), 'eth0 gone');
    assert.ok(!existsSync(join(dir, 'ipam', 'weft', '10.5.72.2')), 'host-local lease released');
    assert.ok(!existsSync(join(dir, 'data', 'c1')));
    const again = cni('DEL', 'c1', `${PREFIX}c1`);
    assert.deepEqual([again.code, again.stdout], [0, '']);
    assert.equal(cni('DEL', 'c2', `${PREFIX}c2`).code, 0);
  });

  test('IPv6: with FLANNEL_IPV6_SUBNET the container gets an address from each family and a route to each network', () => {
    writeFileSync(subnetFile, ENV4 + 'FLANNEL_IPV6_NETWORK=fd00:5::/56\nFLANNEL_IPV6_SUBNET=fd00:5:0:48::1/64\n');
    const r = cni('ADD', 'v6', `${PREFIX}c1`);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const res = JSON.parse(r.stdout) as Result;
    assert.equal(res.ips.length, 2, r.stdout);
    assert.match(res.ips[0]?.address ?? '', /^10\.5\.72\.\d+\/24$/);
    assert.match(res.ips[1]?.address ?? '', /^fd00:5:0:48::[0-9a-f]+\/64$/);
    assert.ok(res.routes.some((x) => x.dst === 'fd00:5::/56'));
    assert.equal(cni('DEL', 'v6', `${PREFIX}c1`).code, 0);
  });

  test('kube-flannel\'s own conflist entry works with weft installed as "flannel" (cniVersion 0.3.1, name cbr0)', () => {
    const bin = join(dir, 'bin');
    installPlugin(bin, ['flannel'], PLUGIN);
    // kube-flannel.yml's cni-conf.json, first plugin, as the runtime hands it over (+ this test's files).
    const entry = JSON.stringify({
      name: 'cbr0', cniVersion: '0.3.1', type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true },
      subnetFile, dataDir: join(dir, 'data'), ipam: { dataDir: join(dir, 'ipam') },
    });
    const env = (cmd: string) => ({ PATH: process.env.PATH, CNI_COMMAND: cmd, CNI_CONTAINERID: 'kube', CNI_NETNS: `/run/netns/${PREFIX}c2`, CNI_IFNAME: 'eth0', CNI_PATH: `${bin}:${CNI_PATH}` });
    const add = spawnSync('nsenter', [`--net=/run/netns/${HOST}`, join(bin, 'flannel')], { input: entry, encoding: 'utf8', env: env('ADD') });
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const res = JSON.parse(add.stdout) as { cniVersion: string; ips: { address: string }[] };
    assert.equal(res.cniVersion, '0.3.1');
    assert.match(res.ips[0]?.address ?? '', /^10\.5\.72\.\d+\/24$/);
    const del = spawnSync('nsenter', [`--net=/run/netns/${HOST}`, join(bin, 'flannel')], { input: entry, encoding: 'utf8', env: env('DEL') });
    assert.equal(del.status, 0, del.stdout);
  });

  test('weftd without --ip-masq: the bridge masquerades, and one RETURN for the overlay stays above every MASQUERADE (Docker\'s included)', async () => {
    writeFileSync(subnetFile, ENV4.replace('IPMASQ=true', 'IPMASQ=false'));
    try {
      const ipt = (args: string[]) => spawnSync('nsenter', [`--net=/run/netns/${HOST}`, 'iptables', '-w', '5', '-t', 'nat', ...args], { encoding: 'utf8' });
      assert.equal(cni('ADD', 'm1', `${PREFIX}c1`).code, 0);
      // Then Docker (re)creates its rule at the top, as dockerd does on start: the next ADD moves ours back above it.
      assert.equal(ipt(['-I', 'POSTROUTING', '1', '-s', '10.5.72.0/24', '!', '-o', 'docker0', '-j', 'MASQUERADE']).status, 0);
      const r = cni('ADD', 'm2', `${PREFIX}c2`);
      assert.equal(r.code, 0, r.stdout);
      const rules = ipt(['-S', 'POSTROUTING']).stdout.split('\n').filter((l) => l.startsWith('-A POSTROUTING'));
      assert.match(rules[0] ?? '', /-s 10\.5\.0\.0\/16 -d 10\.5\.0\.0\/16 .*weft cni: keep container source.* -j RETURN/);
      assert.equal(rules.filter((l) => l.includes('weft cni: keep container source')).length, 1, rules.join('\n'));
      assert.equal(cni('DEL', 'm1', `${PREFIX}c1`).code, 0);
      assert.equal(cni('DEL', 'm2', `${PREFIX}c2`).code, 0);
    } finally {
      writeFileSync(subnetFile, ENV4);
    }
  });

  test('VERSION answers without a config', () => {
    const r = spawnSync(process.execPath, [PLUGIN], { input: '', encoding: 'utf8', env: { CNI_COMMAND: 'VERSION' } });
    assert.equal(r.status, 0);
    assert.ok((JSON.parse(r.stdout) as { supportedVersions: string[] }).supportedVersions.includes('1.0.0'));
  });
});
