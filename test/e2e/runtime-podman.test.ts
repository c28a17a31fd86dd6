/**
 * podman on weft through CNI, for real: per lab host the weft plugin linked by `weft cni
 * install`, a conflist from `weft cni config`, podman 4 with the CNI backend, runc and cgroupfs
 * (docs/runtimes.md, "podman"), a busybox container per host. The plugin delegates to Debian's
 * bridge + host-local. Namespaces wt<pid>p-…, removed at the end also on failure; conmon stopped
 * by PID, nothing mounted, the cgroup parent removed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab, defaultStateDir, loadState } from '../../src/lab';
import { runIn } from '../../src/lab/runtime';
import { PodmanRuntime } from '../../src/lab/runtime-podman';
import { runtimeHost } from '../../src/lab/runtimes';
import { inSubnet, leftovers, tcpTransfer } from './helpers/runtimes';

const NAME = `e2e-podman-${process.pid}`;
const STATE = defaultStateDir(NAME);
const MB4 = 4 * 1024 * 1024;
const PLUGIN = join(__dirname, '..', '..', 'src', 'cli', 'weft-cni.js');

async function mtuOf(lab: Lab, ns: string, dev: string): Promise<number> {
  const r = await lab.exec(ns, ['ip', '-j', 'link', 'show', 'dev', dev]);
  assert.equal(r.code, 0, `ip link show ${dev} in ${ns}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { mtu: number }[])[0]?.mtu ?? -1;
}

async function addresses(lab: Lab): Promise<string[]> {
  return (await lab.status()).hosts.map((h) => h.container?.address.split('/')[0] ?? '');
}

describe('podman on weft: the weft CNI plugin delegating to bridge + host-local', () => {
  let lab: Lab;
  const podman = new PodmanRuntime();
  const host = (name: string) => {
    const state = loadState(STATE);
    const h = state.hosts.find((x) => x.name === name);
    assert.ok(h);
    return runtimeHost(state, h);
  };
  const pm = (name: string, args: string[]) => runIn(host(name).ns, podman.cli(host(name), args), { env: podman.env(host(name)) });

  before(async () => {
    await Lab.downAt(STATE).catch(() => undefined);
    lab = await Lab.up({ name: NAME, prefix: `wt${process.pid}p-`, hosts: 2, runtime: 'podman' });
  });

  after(async () => {
    await Lab.downAt(STATE).catch(() => undefined);
  });

  test('container addresses are inside FLANNEL_SUBNET; cni0 and the container eth0 have FLANNEL_MTU; no weft0', async () => {
    const addrs = await addresses(lab);
    for (const [i, h] of ['h1', 'h2'].entries()) {
      const env = lab.subnetEnv(h);
      assert.ok(env);
      assert.ok(inSubnet(addrs[i] ?? '', env.subnetNetwork), `${addrs[i]} in ${env.subnetNetwork}`);
      assert.equal(await mtuOf(lab, h, 'cni0'), env.mtu, `cni0 on ${h}`);
      assert.equal(await mtuOf(lab, `${h}-c1`, 'eth0'), env.mtu, `eth0 in ${h}-c1`);
      assert.notEqual((await lab.exec(h, ['ip', 'link', 'show', 'dev', 'weft0'])).code, 0, `no weft0 beside cni0 on ${h}`);
    }
  });

  test('the containers ping each other both ways (busybox ping inside the containers)', async () => {
    const [a1, a2] = await addresses(lab);
    for (const [from, to] of [['h1-c1', a2], ['h2-c1', a1]] as const) {
      const r = await lab.containerExec(from, ['ping', '-c', '2', '-W', '2', to ?? '']);
      assert.equal(r.code, 0, `${from} → ${to}: ${r.stdout}${r.stderr}`);
    }
  });

  test('TCP, 4 MB both ways, arrives from the container address (bridge ipMasq on, the plugin\'s RETURN rule exempts the overlay)', async () => {
    const [a1, a2] = await addresses(lab);
    assert.deepEqual(await tcpTransfer(lab, 'h1-c1', 'h2-c1', a2 ?? '', MB4), { from: a1, bytes: MB4 });
    assert.deepEqual(await tcpTransfer(lab, 'h2-c1', 'h1-c1', a1 ?? '', MB4), { from: a2, bytes: MB4 });
    const nat = await lab.exec('h1', ['iptables', '-t', 'nat', '-S', 'POSTROUTING']);
    assert.match(nat.stdout.split('\n')[1] ?? '', /-s 10\.5\.0\.0\/16 -d 10\.5\.0\.0\/16 .*weft cni: keep container source.* -j RETURN/);
  });

  test('podman rm releases the address (CNI DEL; a second DEL is a no-op) and a new container works, also with weftd --ip-masq', async () => {
    const [a1, a2] = await addresses(lab);
    const h2 = host('h2');
    const id = (await pm('h2', ['inspect', '-f', '{{.Id}}', 'h2-c1'])).stdout.trim();
    const ipamDir = join(h2.dir, 'podman', 'cni-ipam', 'weft');
    assert.ok(existsSync(join(ipamDir, a2 ?? '')), `host-local lease ${a2} before rm`);
    // weftd now masquerades: the next container's bridge must not (ipMasq false), sources still kept.
    await lab.stopDaemon('h2');
    await lab.startDaemon('h2', { extraArgs: ['--ip-masq'] });
    assert.equal(lab.subnetEnv('h2')?.ipMasq, true);
    const rm = await pm('h2', ['rm', '-f', '-t', '0', 'h2-c1']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.ok(!existsSync(join(ipamDir, a2 ?? '')), `lease ${a2} released: ${readdirSync(ipamDir).join(' ')}`);
    assert.ok(!existsSync(join(h2.dir, 'podman', 'cni-data', id)), 'saved delegate config removed');
    const conf = readFileSync(join(h2.dir, 'podman', 'net.d', '10-weft.conflist'), 'utf8');
    const plugin = JSON.stringify({ cniVersion: '1.0.0', name: 'weft', ...(JSON.parse(conf) as { plugins: object[] }).plugins[0] });
    const again = spawnSync(process.execPath, [PLUGIN], {
      input: plugin, encoding: 'utf8',
      env: { ...process.env, CNI_COMMAND: 'DEL', CNI_CONTAINERID: id, CNI_NETNS: '', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' },
    });
    assert.deepEqual([again.status, again.stdout], [0, ''], `second DEL: ${again.stdout}${again.stderr}`);

    const c = await lab.setupContainer('h2');
    const id2 = (await pm('h2', ['inspect', '-f', '{{.Id}}', 'h2-c1'])).stdout.trim();
    const saved = JSON.parse(readFileSync(join(h2.dir, 'podman', 'cni-data', id2), 'utf8')) as { ipMasq: boolean };
    assert.equal(saved.ipMasq, false, 'FLANNEL_IPMASQ=true renders ipMasq false');
    const n2 = c.address.split('/')[0] ?? '';
    assert.ok(inSubnet(n2, lab.subnetEnv('h2')?.subnetNetwork ?? ''));
    assert.deepEqual(await tcpTransfer(lab, 'h2-c1', 'h1-c1', a1 ?? '', MB4), { from: n2, bytes: MB4 });
    assert.deepEqual(await tcpTransfer(lab, 'h1-c1', 'h2-c1', n2, MB4), { from: a1, bytes: MB4 });
    assert.ok((await lab.pingMatrix()).ok);
    assert.notEqual((await lab.exec('h2', ['ip', 'link', 'show', 'dev', 'weft0'])).code, 0, 'weftd restarted: still no weft0 beside cni0');
  });

  test('lab down removes the containers, stops conmon by PID, leaves nothing mounted and removes the cgroup parents', async () => {
    assert.ok(leftovers(STATE).pids.length >= 2, 'conmon per host is running');
    const parents = ['h1', 'h2'].map((h) => podman.cgroupParent({ labName: NAME, prefix: `wt${process.pid}p-`, stateDir: STATE, ipPath: '', progress: () => undefined }, host(h)));
    await lab.down();
    assert.deepEqual(leftovers(STATE), { pids: [], mounts: [] });
    for (const p of parents) assert.ok(!existsSync(join('/sys/fs/cgroup/memory', p)), `cgroup ${p} removed`);
  });
});
