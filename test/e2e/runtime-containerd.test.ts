/**
 * containerd on weft through CNI: `ctr run --cni` (containerd 1.6, Debian) on 2 lab hosts built
 * with --no-containers — the runtime is brought by the test, following docs/runtimes.md
 * ("containerd"): the weft plugin and the standard plugins in what ctr sees as /opt/cni/bin, the
 * conflist from `weft cni config` in what it sees as /etc/cni/net.d (a private mount namespace
 * per host: ctr 1.6 reads no other dirs), and the plugin's DEL run by hand after `ctr task delete`
 * (which never calls CNI). Namespaces wt<pid>c-…; containerd and its shims stopped by PID, the
 * cgroups removed, nothing left mounted — also on failure.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { installPlugin, conflist } from '../../src/cli/cni';
import { Lab, defaultStateDir } from '../../src/lab';
import {
  attachNetns, busyboxTarball, nsenterArgs, nsenterPath, processesUnder, removeCgroup, requireTools, runIn, stopAll, unmountUnder,
} from '../../src/lab/runtime';
import { isAlive, run, spawnDetached, stopProcess, waitUntil, type ProcessId } from '../../src/lab/run';
import { inSubnet, leftovers, tcpTransferNs } from './helpers/runtimes';

const NAME = `e2e-containerd-${process.pid}`;
const STATE = defaultStateDir(NAME);
const PREFIX = `wt${process.pid}c-`;
/** One containerd namespace per host: runc keeps its state per namespace in /run/containerd/runc/<ns>, shared by all instances. */
const ctrNs = (host: string) => `wt${process.pid}${host}`;
const MB4 = 4 * 1024 * 1024;
const PLUGIN = join(__dirname, '..', '..', 'src', 'cli', 'weft-cni.js');

interface Host {
  readonly name: string;
  readonly ns: string;
  readonly dir: string;
  readonly subnetFile: string;
  daemon: ProcessId | null;
  address: string;
}

describe('containerd on weft: ctr run --cni with the weft plugin', () => {
  let lab: Lab;
  let tools: Record<string, string>;
  const hosts: Host[] = [];
  const ctr = (h: Host, args: string[]) => [tools.ctr ?? 'ctr', '-a', join(h.dir, 'containerd.sock'), '-n', ctrNs(h.name), ...args];
  const cgroup = (h: Host) => `/${PREFIX}${h.name}-ctr`;

  /** The weft plugin's entry of the conflist, as a runtime hands it over (name, cniVersion added). */
  const pluginConf = (h: Host) => {
    const c = JSON.parse(readFileSync(join(h.dir, 'net.d', '10-weft.conflist'), 'utf8')) as { name: string; cniVersion: string; plugins: object[] };
    return JSON.stringify({ cniVersion: c.cniVersion, name: c.name, ...c.plugins[0] });
  };

  const cniDel = (h: Host, id: string) => spawnSync(nsenterPath(), nsenterArgs(h.ns, [process.execPath, PLUGIN]), {
    input: pluginConf(h), encoding: 'utf8',
    env: { PATH: process.env.PATH, CNI_COMMAND: 'DEL', CNI_CONTAINERID: `${ctrNs(h.name)}-${id}`, CNI_NETNS: '', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' },
  });

  /** `ctr run -d --cni` in a private mount namespace where this host's CNI dirs are the standard ones. */
  async function runContainer(h: Host, id: string): Promise<string> {
    const script = [
      `mount --bind ${join(h.dir, 'net.d')} /etc/cni/net.d`,
      'mount -t tmpfs tmpfs /opt', 'mkdir -p /opt/cni/bin', `mount --bind ${join(h.dir, 'cni-bin')} /opt/cni/bin`,
      `exec "$@"`,
    ].join(' && ');
    const r = await runIn(h.ns, ['unshare', '-m', '--propagation', 'private', 'sh', '-c', script, 'sh',
      ...ctr(h, ['run', '-d', '--cni', '--env', 'PATH=/bin', '--cgroup', `${cgroup(h)}/${id}`, '--rootfs', join(h.dir, 'rootfs'), id, '/bin/sleep', '999999999'])]);
    assert.equal(r.code, 0, `ctr run on ${h.name}: ${r.stderr}`);
    const pid = (await runIn(h.ns, ctr(h, ['task', 'ls']))).stdout.split('\n').find((l) => l.startsWith(`${id} `))?.split(/\s+/)[1];
    await attachNetns(lab.tools.ip, `${PREFIX}${h.name}-${id}`, Number(pid));
    const addr = await run(lab.tools.ip, ['-n', `${PREFIX}${h.name}-${id}`, '-j', '-4', 'addr', 'show', 'dev', 'eth0']);
    const info = (JSON.parse(addr.stdout) as { addr_info: { local: string; prefixlen: number }[] }[])[0]?.addr_info[0];
    return `${info?.local}/${info?.prefixlen}`;
  }

  async function removeContainer(h: Host, id: string): Promise<void> {
    await runIn(h.ns, ctr(h, ['task', 'kill', '-s', 'KILL', id]));
    await waitUntil(async () => (await runIn(h.ns, ctr(h, ['task', 'delete', id]))).code === 0, 5000, 100);
    await runIn(h.ns, ctr(h, ['container', 'delete', id]));
    cniDel(h, id); // ctr task delete never calls CNI DEL
    // …nor removes libcni's cached result of the ADD (network-containerID-ifname).
    rmSync(`/var/lib/cni/results/weft-${ctrNs(h.name)}-${id}-eth0`, { force: true });
    await run(lab.tools.ip, ['netns', 'delete', `${PREFIX}${h.name}-${id}`]);
  }

  before(async () => {
    tools = requireTools('containerd', { containerd: 'containerd', ctr: 'containerd', runc: 'runc', unshare: 'util-linux' });
    assert.ok(existsSync('/usr/lib/cni/bridge'), 'apt-get install -y containernetworking-plugins (scripts/install-deps.sh dev)');
    assert.ok(existsSync('/etc/cni/net.d'), '/etc/cni/net.d must exist for ctr (Debian: podman or containernetworking-plugins creates it)');
    await Lab.downAt(STATE).catch(() => undefined);
    lab = await Lab.up({ name: NAME, prefix: PREFIX, hosts: 2, containers: false });
    const tar = await busyboxTarball(STATE);
    for (const name of ['h1', 'h2']) {
      const dir = join(STATE, name, 'containerd');
      const h: Host = { name, ns: lab.nsName(name), dir, subnetFile: lab.subnetFile(name), daemon: null, address: '' };
      hosts.push(h);
      for (const d of ['cni-bin', 'net.d', 'rootfs']) mkdirSync(join(dir, d), { recursive: true });
      // What ctr sees as /opt/cni/bin: the weft plugin and the standard ones.
      installPlugin(join(dir, 'cni-bin'), ['weft']);
      for (const p of readdirSync('/usr/lib/cni')) symlinkSync(join('/usr/lib/cni', p), join(dir, 'cni-bin', p));
      writeFileSync(join(dir, 'net.d', '10-weft.conflist'), JSON.stringify(conflist({
        subnetFile: h.subnetFile, dataDir: join(dir, 'cni-data'), extra: { ipam: { dataDir: join(dir, 'cni-ipam') } },
      }), null, 2));
      assert.equal((await run('tar', ['-C', join(dir, 'rootfs'), '-xf', tar])).code, 0);
      writeFileSync(join(dir, 'config.toml'), [
        'version = 2', `root = "${dir}/root"`, `state = "${dir}/state"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        '[grpc]', `  address = "${dir}/containerd.sock"`, '[ttrpc]', `  address = "${dir}/containerd.sock.ttrpc"`,
        '[plugins."io.containerd.internal.v1.opt"]', `  path = "${dir}/opt"`, '',
      ].join('\n'));
      h.daemon = spawnDetached(nsenterPath(), nsenterArgs(h.ns, [tools.containerd ?? 'containerd', '--config', join(dir, 'config.toml')]),
        join(dir, 'containerd.log'), process.env);
      const up = await waitUntil(async () => (await runIn(h.ns, ctr(h, ['version']), { timeoutMs: 5000 })).code === 0, 30000, 200);
      assert.ok(up, `containerd on ${name}: ${readFileSync(join(dir, 'containerd.log'), 'utf8').slice(-800)}`);
      h.address = await runContainer(h, 'c1');
    }
  });

  after(async () => {
    const failures: string[] = [];
    for (const h of hosts) {
      if (h.daemon && isAlive(h.daemon)) {
        const ls = await runIn(h.ns, ctr(h, ['task', 'ls', '-q']));
        for (const id of ls.stdout.split('\n').filter((s) => s.trim() !== '')) await removeContainer(h, id.trim());
        await stopProcess(h.daemon, 'SIGTERM', 10000).catch((e: unknown) => failures.push(String(e)));
      }
      await stopAll(processesUnder(h.dir), 5000, failures);
      await unmountUnder(h.dir, failures);
      removeCgroup(cgroup(h), failures);
      for (const ns of readdirSync('/run/netns').filter((n) => n.startsWith(`${PREFIX}${h.name}-`))) await run(lab.tools.ip, ['netns', 'delete', ns]);
      try { rmdirSync(`/run/containerd/runc/${ctrNs(h.name)}`); } catch { /* absent, or not empty: runc still knows a container */ } // runc's (empty) state dir for the namespace
    }
    await Lab.downAt(STATE).catch((e: unknown) => failures.push(String(e)));
    assert.deepEqual(failures, []);
    assert.deepEqual(leftovers(STATE), { pids: [], mounts: [] });
  });

  test('container addresses are inside FLANNEL_SUBNET, with FLANNEL_MTU on cni0 and eth0', async () => {
    for (const h of hosts) {
      const env = lab.subnetEnv(h.name);
      assert.ok(env && inSubnet(h.address, env.subnetNetwork), `${h.address} in ${env?.subnetNetwork}`);
      const mtu = async (ns: string) => (JSON.parse((await run(lab.tools.ip, ['-n', ns, '-j', 'link', 'show', 'dev', ns === h.ns ? 'cni0' : 'eth0'])).stdout) as { mtu: number }[])[0]?.mtu;
      assert.equal(await mtu(h.ns), env.mtu);
      assert.equal(await mtu(`${PREFIX}${h.name}-c1`), env.mtu);
    }
  });

  test('ping (busybox, inside the containers) and 4 MB TCP both ways, from the container addresses', async () => {
    const [h1, h2] = hosts as [Host, Host];
    for (const [a, b] of [[h1, h2], [h2, h1]] as const) {
      const r = await runIn(a.ns, ctr(a, ['task', 'exec', '--exec-id', `p${process.pid}`, 'c1', '/bin/ping', '-c', '2', '-W', '2', b.address.split('/')[0] ?? '']));
      assert.equal(r.code, 0, `${a.name} → ${b.name}: ${r.stdout}${r.stderr}`);
      const t = await tcpTransferNs(lab.tools.ip, `${PREFIX}${a.name}-c1`, `${PREFIX}${b.name}-c1`, b.address.split('/')[0] ?? '', MB4);
      assert.deepEqual(t, { from: a.address.split('/')[0], bytes: MB4 });
    }
  });

  test('ctr task delete plus the plugin\'s DEL releases the address; a new container gets one and reaches the other host', async () => {
    const h2 = hosts[1] as Host;
    const ip = h2.address.split('/')[0] ?? '';
    const lease = join(h2.dir, 'cni-ipam', 'weft', ip);
    assert.ok(existsSync(lease));
    await removeContainer(h2, 'c1');
    assert.ok(!existsSync(lease), `host-local lease ${ip} released`);
    const again = cniDel(h2, 'c1');
    assert.deepEqual([again.status, again.stdout], [0, ''], 'a second DEL is a no-op');
    const addr = await runContainer(h2, 'c2');
    assert.ok(inSubnet(addr, lab.subnetEnv('h2')?.subnetNetwork ?? ''));
    const h1 = hosts[0] as Host;
    const t = await tcpTransferNs(lab.tools.ip, `${PREFIX}h2-c2`, `${PREFIX}h1-c1`, h1.address.split('/')[0] ?? '', MB4);
    assert.deepEqual(t, { from: addr.split('/')[0], bytes: MB4 });
  });
});
