/**
 * Docker on weft, for real: a dockerd per lab host (Debian's docker.io, runc, its own
 * containerd), configured only through `weft docker-opts` — the daemon.json form on h1, the
 * DOCKER_OPTS form on h2 (docs/runtimes.md, "Docker") — and a busybox container per host.
 * Namespaces wt<pid>k-…, removed at the end also on failure; every dockerd/containerd/shim is
 * stopped by PID and nothing stays mounted.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab, defaultStateDir } from '../../src/lab';
import { inSubnet, leftovers, tcpTransfer } from './helpers/runtimes';

const NAME = `e2e-docker-${process.pid}`;
const STATE = defaultStateDir(NAME);
const MB4 = 4 * 1024 * 1024;

async function mtuOf(lab: Lab, ns: string, dev: string): Promise<number> {
  const r = await lab.exec(ns, ['ip', '-j', 'link', 'show', 'dev', dev]);
  assert.equal(r.code, 0, `ip link show ${dev} in ${ns}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { mtu: number }[])[0]?.mtu ?? -1;
}

describe('Docker on weft: a real dockerd per host, configured by weft docker-opts', () => {
  let lab: Lab;

  before(async () => {
    await Lab.downAt(STATE).catch(() => undefined);
    lab = await Lab.up({ name: NAME, prefix: `wt${process.pid}k-`, hosts: 2, runtime: 'docker' });
  });

  after(async () => {
    await Lab.downAt(STATE).catch(() => undefined);
  });

  test('h1 is configured through daemon.json (weft docker-opts --daemon-json), h2 through DOCKER_OPTS (weft docker-opts -c)', () => {
    const env1 = lab.subnetEnv('h1');
    const json = JSON.parse(readFileSync(join(STATE, 'h1', 'docker', 'daemon.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(json.bip, env1?.subnet);
    assert.equal(json.mtu, env1?.mtu);
    const opts = readFileSync(join(STATE, 'h2', 'docker', 'docker_opts.env'), 'utf8');
    const env2 = lab.subnetEnv('h2');
    assert.match(opts, new RegExp(`^DOCKER_OPTS=" --bip=${env2?.subnet} --ip-masq=true --mtu=${env2?.mtu}"$`, 'm'));
  });

  test('container addresses are inside FLANNEL_SUBNET; docker0 and the container eth0 have FLANNEL_MTU', async () => {
    for (const h of ['h1', 'h2']) {
      const env = lab.subnetEnv(h);
      assert.ok(env);
      const container = (await lab.status()).hosts.find((x) => x.name === h)?.container;
      assert.ok(container, `${h} has a container`);
      assert.ok(inSubnet(container.address, env.subnetNetwork), `${container.address} in ${env.subnetNetwork}`);
      assert.equal(await mtuOf(lab, h, 'docker0'), env.mtu, `docker0 on ${h}`);
      assert.equal(await mtuOf(lab, `${h}-c1`, 'eth0'), env.mtu, `eth0 in ${h}-c1`);
      const weft0 = await lab.exec(h, ['ip', 'link', 'show', 'dev', 'weft0']);
      assert.notEqual(weft0.code, 0, `no weft0 beside docker0 on ${h}`);
    }
  });

  test('the containers ping each other both ways (busybox ping inside the containers)', async () => {
    const a1 = (await lab.status()).hosts.map((h) => h.container?.address.split('/')[0] ?? '');
    for (const [from, to] of [['h1-c1', a1[1]], ['h2-c1', a1[0]]] as const) {
      const r = await lab.containerExec(from, ['ping', '-c', '2', '-W', '2', to ?? '']);
      assert.equal(r.code, 0, `${from} → ${to}: ${r.stdout}${r.stderr}`);
    }
    assert.ok((await lab.pingMatrix()).ok);
  });

  test('TCP, 4 MB both ways, arrives from the container address (Docker masquerades; weft cni keep-source exempts the overlay)', async () => {
    const [a1, a2] = (await lab.status()).hosts.map((h) => h.container?.address.split('/')[0] ?? '');
    const there = await tcpTransfer(lab, 'h1-c1', 'h2-c1', a2 ?? '', MB4);
    assert.deepEqual(there, { from: a1, bytes: MB4 });
    const back = await tcpTransfer(lab, 'h2-c1', 'h1-c1', a1 ?? '', MB4);
    assert.deepEqual(back, { from: a2, bytes: MB4 });
  });

  test('weftd --ip-masq on h2: dockerd follows with --ip-masq=false, sources are still kept, and restart adds no weft0', async () => {
    await lab.restartDaemon('h2', { extraArgs: ['--ip-masq'] });
    assert.equal(lab.subnetEnv('h2')?.ipMasq, true);
    assert.match(readFileSync(join(STATE, 'h2', 'docker', 'docker_opts.env'), 'utf8'), /--ip-masq=false/);
    const [a1, a2] = (await lab.status()).hosts.map((h) => h.container?.address.split('/')[0] ?? '');
    assert.deepEqual(await tcpTransfer(lab, 'h2-c1', 'h1-c1', a1 ?? '', MB4), { from: a2, bytes: MB4 });
    assert.deepEqual(await tcpTransfer(lab, 'h1-c1', 'h2-c1', a2 ?? '', MB4), { from: a1, bytes: MB4 });
    assert.notEqual((await lab.exec('h2', ['ip', 'link', 'show', 'dev', 'weft0'])).code, 0);
  });

  test('lab down stops every dockerd, containerd and shim by PID and leaves nothing mounted', async () => {
    const before = leftovers(STATE);
    assert.ok(before.pids.length >= 4, `dockerd + containerd per host are running: ${before.pids.join(' ')}`);
    await lab.down();
    assert.deepEqual(leftovers(STATE), { pids: [], mounts: [] });
  });
});
