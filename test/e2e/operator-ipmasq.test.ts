/**
 * --ip-masq, docker-opts and weft cleanup end to end: two hosts running weftd --ip-masq, a
 * namespace playing "the internet" (192.0.2.1, TEST-NET-1) behind the underlay, real iptables in
 * the host namespaces (never the machine's own). Namespaces prefixed wt<pid>m-, removed at the end.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { INTERNET_IP, Lab } from '../../src/lab';
import { sh, waitUntil } from './helpers/shell';

const WEFT = resolve(__dirname, '..', '..', 'src', 'cli', 'weft.js');
const PREFIX = `wt${process.pid}m-`;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-ipmasq-`));
const ETCD = '--etcd-endpoints=http://10.250.0.2:2379';
let lab: Lab;
const servers: ChildProcess[] = [];

function weft(host: string, ...args: string[]) {
  return lab.exec(host, [process.execPath, WEFT, ...args], { timeoutMs: 30_000 });
}

/**
 * A UDP server in `host` that answers every datagram with the source address it saw. Bound to
 * `ip` so that answers leave from the address asked (the "internet" has two).
 */
async function sourceEchoServer(host: string, ip: string): Promise<void> {
  const code = "const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send(r.address,r.port,r.address));s.bind(5353,process.argv[1],()=>console.log('ready'))";
  const child = spawn('ip', ['netns', 'exec', lab.nsName(host), process.execPath, '-e', code, ip], { stdio: ['ignore', 'pipe', 'inherit'] });
  servers.push(child);
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  await waitUntil(() => out.includes('ready'), 5000, `UDP server in ${host}`);
}

/** The source address `to` saw for a datagram from `from`, or null without an answer. */
async function seenSource(from: string, to: string): Promise<string | null> {
  const code = "const s=require('dgram').createSocket('udp4');s.on('message',m=>{console.log(m.toString());process.exit(0)});" +
    "const go=()=>s.send('x',5353,process.argv[1]);go();setInterval(go,300);setTimeout(()=>process.exit(3),2500)";
  const r = await lab.exec(from, [process.execPath, '-e', code, to], { timeoutMs: 10_000 });
  return r.code === 0 ? r.stdout.trim() : null;
}

function containerIp(host: string): string {
  return lab.subnetEnv(host)!.containerAddress.split('/')[0]!;
}

function masqRules(subnet: string): string[] {
  const c = '-m comment --comment "weft masq"';
  return [
    `-A POSTROUTING ${c} -j WEFT-POSTRTG`,
    `-A WEFT-POSTRTG -m mark --mark 0x4000/0x4000 ${c} -j RETURN`,
    `-A WEFT-POSTRTG -s ${subnet} -d 10.5.0.0/16 ${c} -j RETURN`,
    `-A WEFT-POSTRTG -s 10.5.0.0/16 -d ${subnet} ${c} -j RETURN`,
    `-A WEFT-POSTRTG ! -s 10.5.0.0/16 -d ${subnet} ${c} -j RETURN`,
    `-A WEFT-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 ${c} -j MASQUERADE --random-fully`,
    `-A WEFT-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 ${c} -j MASQUERADE --random-fully`,
  ];
}

const FWD_RULES = [
  '-A FORWARD -m comment --comment "weft forward" -j WEFT-FWD',
  '-A WEFT-FWD -s 10.5.0.0/16 -m comment --comment "weft forward" -j ACCEPT',
  '-A WEFT-FWD -d 10.5.0.0/16 -m comment --comment "weft forward" -j ACCEPT',
];

async function rulesInPlace(host: string): Promise<boolean> {
  const saved = (await sh(lab, host, 'iptables-save')).split('\n');
  const want = [...masqRules(lab.subnetEnv(host)!.subnetNetwork), ...FWD_RULES];
  return want.every((w) => saved.includes(w));
}

describe('--ip-masq, docker-opts and weft cleanup on a 2-host lab with an "internet"', { timeout: 180_000 }, () => {
  before(async () => {
    lab = await Lab.up({
      prefix: PREFIX, name: `wt${process.pid}m`, stateDir: join(scratch, 'lab'), hosts: 2, healthzPort: 0, internet: true,
      extraWeftdArgs: ['--ip-masq', '--iptables-resync=1'],
    });
    await sourceEchoServer('inet', INTERNET_IP);
    await sourceEchoServer('h2-c1', containerIp('h2'));
  });

  after(async () => {
    for (const s of servers) s.kill('SIGKILL');
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('weftd --ip-masq writes FLANNEL_IPMASQ=true; docker-opts tells Docker --ip-masq=false', async () => {
    const env = lab.subnetEnv('h1')!;
    assert.equal(env.ipMasq, true);
    const out = join(scratch, 'docker_opts.env');
    const r = await weft('h1', 'docker-opts', '-f', lab.subnetFile('h1'), '-d', out);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(out, 'utf8'), [
      `DOCKER_OPT_BIP="--bip=${env.subnet}"`,
      'DOCKER_OPT_IPMASQ="--ip-masq=false"',
      `DOCKER_OPT_MTU="--mtu=${env.mtu}"`,
      `DOCKER_OPTS=" --bip=${env.subnet} --ip-masq=false --mtu=${env.mtu}"`,
      '',
    ].join('\n'));
  });

  test('the masquerade and forward rules are flannel\'s, in weft\'s own chains', async () => {
    for (const host of ['h1', 'h2']) await waitUntil(() => rulesInPlace(host), 10_000, `rules on ${host}`);
    assert.doesNotMatch(await sh(lab, 'h1', 'iptables-save'), /FLANNEL-/);
  });

  test('a container reaching an address outside the Network is masqueraded to its host\'s address', async () => {
    assert.equal(await seenSource('h1-c1', INTERNET_IP), '10.250.0.11');
    assert.equal(await seenSource('h2-c1', INTERNET_IP), '10.250.0.12');
  });

  test('container-to-container traffic across hosts keeps its source address', async () => {
    assert.equal(await seenSource('h1-c1', containerIp('h2')), containerIp('h1'));
  });

  test('rules deleted by hand come back, in place, within the resync period', async () => {
    const subnet = lab.subnetEnv('h1')!.subnetNetwork;
    const restored = (): number => lab.daemonLog('h1').split('\n').filter((l) => l.includes('iptables rules restored')).length;
    const restoredBefore = restored();
    // Each delete succeeds (sh throws otherwise). weftd hears of each commit on NFNLGRP_NFTABLES
    // and may restore before we could look, so the proof of the repair is its log, below.
    await sh(lab, 'h1', 'iptables', '-t', 'nat', '-D', 'WEFT-POSTRTG', '-s', subnet, '-d', '10.5.0.0/16', '-m', 'comment', '--comment', 'weft masq', '-j', 'RETURN');
    await sh(lab, 'h1', 'iptables', '-t', 'nat', '-D', 'POSTROUTING', '-m', 'comment', '--comment', 'weft masq', '-j', 'WEFT-POSTRTG');
    await sh(lab, 'h1', 'iptables', '-F', 'WEFT-FWD');
    await waitUntil(() => restored() > restoredBefore, 5000, 'weftd to log "iptables rules restored"');
    await waitUntil(() => rulesInPlace('h1'), 5000, 'the rules to be restored').catch(async (err: unknown) => {
      const log = lab.daemonLog('h1').split('\n').filter((l) => /iptables|ruleset/i.test(l)).slice(-12).join('\n');
      throw new Error(`${(err as Error).message}\niptables-save:\n${await sh(lab, 'h1', 'iptables-save')}\nweftd log (iptables lines):\n${log}`);
    });
    // In order: the RETURN for overlay traffic sits before the MASQUERADE again.
    const chain = (await sh(lab, 'h1', 'iptables-save', '-t', 'nat')).split('\n').filter((l) => l.startsWith('-A WEFT-POSTRTG'));
    assert.deepEqual(chain, masqRules(subnet).slice(1));
    assert.match(lab.daemonLog('h1'), /iptables rules restored/);
    assert.equal(await seenSource('h1-c1', containerIp('h2')), containerIp('h1'));
  });

  test('weft cleanup refuses while weftd runs in the namespace', async () => {
    const r = await weft('h2', 'cleanup', `--subnet-file=${lab.subnetFile('h2')}`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /weftd is running in this network namespace/);
    assert.ok(await rulesInPlace('h2'));
  });

  test('weft cleanup --release-lease leaves no weft chain, device, route, subnet.env or lease behind', async () => {
    const key = lab.subnetEnv('h1')!.subnetNetwork.replace('/', '-');
    await lab.stopDaemon('h1');
    const r = await weft('h1', 'cleanup', '--release-lease', `--subnet-file=${lab.subnetFile('h1')}`, ETCD);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /removed device flannel\.1/);
    assert.match(r.stdout, /removed iptables chain WEFT-POSTRTG/);
    assert.match(r.stdout, /removed lease/);

    assert.doesNotMatch(await sh(lab, 'h1', 'iptables-save'), /WEFT|weft/);
    assert.doesNotMatch(await sh(lab, 'h1', 'ip', '-d', 'link', 'show'), /flannel|vxlan/);
    const routes = (await sh(lab, 'h1', 'ip', '-4', 'route', 'show')).trim().split('\n');
    assert.deepEqual(routes.filter((l) => l.startsWith('10.5.') && !l.includes('dev weft0')), [], routes.join('\n'));
    assert.throws(() => readFileSync(lab.subnetFile('h1')), /ENOENT/);
    const left = await lab.etcdctl(['get', `/coreos.com/network/subnets/${key}`, '--print-value-only']);
    assert.equal(left.stdout.trim(), '', 'lease released');
    // h2 drops its route to h1's old subnet once the lease is gone.
    await waitUntil(async () => !(await sh(lab, 'h2', 'ip', 'route', 'show')).includes(key.replace('-', '/')), 10_000, 'h2 to drop the route');

    const again = await weft('h1', 'cleanup', `--subnet-file=${lab.subnetFile('h1')}`);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /nothing of weft's found/);
  });
});
