/**
 * Interop, `--ip-masq` on both kinds: h1 runs a real flanneld v0.20.2, h2 weftd, both with
 * --ip-masq, and the lab's "internet" (INTERNET_IP, no route back into the overlay) as the
 * hosts' default gateway (namespaces helperE2-<pid>m-*). A UDP echo server that answers with the
 * source address it saw shows what each side's masquerade rules did to a packet.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, describe, test } from 'node:test';
import { INTERNET_IP } from '../../src/lab';
import { sh, waitUntil } from '../e2e/helpers/shell';
import { useMixedLab, type MixedLab } from './helpers/mixed-lab';

const servers: ChildProcess[] = [];

/** A UDP server in namespace `ns` (bound to `ip`) answering each datagram with the source address it saw. */
async function sourceEchoServer(m: MixedLab, ns: string, ip: string): Promise<void> {
  const code = "const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send(r.address,r.port,r.address));s.bind(5353,process.argv[1],()=>console.log('ready'))";
  const child = spawn('ip', ['netns', 'exec', m.lab.nsName(ns), process.execPath, '-e', code, ip], { stdio: ['ignore', 'pipe', 'inherit'] });
  servers.push(child);
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  await waitUntil(() => out.includes('ready'), 5000, `UDP echo server in ${ns}`);
}

/** The source address the server at `to` saw for a datagram from namespace `from`; null without an answer. */
async function seenSource(m: MixedLab, from: string, to: string): Promise<string | null> {
  const code = "const s=require('dgram').createSocket('udp4');s.on('message',m=>{console.log(m.toString());process.exit(0)});" +
    "const go=()=>s.send('x',5353,process.argv[1]);go();setInterval(go,300);setTimeout(()=>process.exit(3),2500)";
  const r = await m.lab.exec(from, [process.execPath, '-e', code, to], { timeoutMs: 10_000 });
  return r.code === 0 ? r.stdout.trim() : null;
}

describe('--ip-masq on a flanneld v0.20.2 host and a weftd host', { timeout: 180_000 }, () => {
  const lab = useMixedLab({ id: 'm', kinds: ['flanneld', 'weftd'], internet: true, daemonArgs: ['--ip-masq'] });
  let servers4: Promise<void> | undefined;
  const withServers = async (): Promise<MixedLab> => {
    const m = lab();
    servers4 ??= (async () => {
      await sourceEchoServer(m, 'inet', INTERNET_IP);
      for (const h of m.hosts()) await sourceEchoServer(m, `${h}-c1`, m.containerIp(h));
    })();
    await servers4;
    return m;
  };

  after(() => {
    for (const s of servers) s.kill('SIGKILL');
  });

  test('both containers reach each other and, masqueraded to their host\'s address, the outside', async () => {
    const m = await withServers();
    assert.equal(await m.assertPingMatrix(), 2);
    for (const h of m.hosts()) assert.equal(await seenSource(m, `${h}-c1`, INTERNET_IP), m.publicIpOf(h), `${h}-c1 (${m.kindOf(h)}) → the outside`);
  });

  test('overlay traffic keeps its source address both ways: container → container and host → container', async () => {
    const m = await withServers();
    for (const [from, to] of [['h1', 'h2'], ['h2', 'h1']] as const) {
      assert.equal(await seenSource(m, `${from}-c1`, m.containerIp(to)), m.containerIp(from), `${from}-c1 (${m.kindOf(from)}) → ${to}-c1`);
      // From the host itself the source is its overlay device's <subnet>.0: inside the Network, not masqueraded.
      assert.equal(await seenSource(m, from, m.containerIp(to)), m.subnetOf(from).split('/')[0], `${from} (${m.kindOf(from)}) → ${to}-c1`);
    }
  });

  test('each keeps its own chain; flanneld v0.20.2 RETURNs Network → Network, weft RETURNs <subnet> ↔ Network', async () => {
    const m = lab();
    const chain = async (h: string, name: string): Promise<string[]> =>
      (await sh(m.lab, h, 'iptables-save', '-t', 'nat')).split('\n').filter((l) => l.startsWith(`-A ${name} `)).map((l) => l.replace(/ -m comment --comment "[^"]*"/, ''));
    const sn1 = m.subnetOf('h1');
    const sn2 = m.subnetOf('h2');
    assert.deepEqual(await chain('h1', 'FLANNEL-POSTRTG'), [
      '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN',
      '-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.0.0/16 -j RETURN',
      '-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully',
      `-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d ${sn1} -j RETURN`,
      '-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -j MASQUERADE --random-fully',
    ]);
    assert.deepEqual(await chain('h2', 'WEFT-POSTRTG'), [
      '-A WEFT-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN',
      `-A WEFT-POSTRTG -s ${sn2} -d 10.5.0.0/16 -j RETURN`,
      `-A WEFT-POSTRTG -s 10.5.0.0/16 -d ${sn2} -j RETURN`,
      `-A WEFT-POSTRTG ! -s 10.5.0.0/16 -d ${sn2} -j RETURN`,
      '-A WEFT-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully',
      '-A WEFT-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -j MASQUERADE --random-fully',
    ]);
  });
});
