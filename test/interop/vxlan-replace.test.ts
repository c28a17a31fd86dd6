/**
 * Interop, replacing flanneld by weftd host by host (and back) while containers ping: a lab of
 * 3 hosts, h1 and h2 running a real flanneld v0.20.2 and h3 weftd (namespaces helperE2-<pid>r-*).
 * Each step stops one daemon (SIGTERM) and starts the other kind on the same host, with 3 pings
 * running across it (to a flanneld peer, to a weftd peer, and out of the replaced host). The new
 * daemon must take the old one's lease (same key, subnet and VtepMAC: the device is kept) and no
 * ping may be lost (docs/faults.md: 0 lost across a weftd restart; docs/flannel-compat.md).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sleep } from '../../src/lab/run';
import { MixedLab, type DaemonKind } from './helpers/mixed-lab';

let m: MixedLab;
/** Packets lost per step, for the report line at the end. */
const figures: string[] = [];

/** Replace the daemon on `host` by `to` while pings run; returns the loss per ping flow. */
async function replace(host: string, to: DaemonKind): Promise<void> {
  const from = m.kindOf(host);
  const subnet = m.subnetOf(host);
  const mac = await m.vtepMacOf(host);
  const leasesBefore = [...(await m.leaseValues()).keys()].sort();
  const others = m.hosts().filter((h) => h !== host);
  // 8 s of pings at 10/s: ~1 s before the stop, the swap (~0.5–2 s), and several seconds after.
  const runs = [
    ...others.map((o) => ({ name: `${o}-c1 (${m.kindOf(o)}) → ${host}-c1`, run: m.pingRun(o, host, 80) })),
    { name: `${host}-c1 → ${others[0]}-c1 (${m.kindOf(others[0]!)})`, run: m.pingRun(host, others[0]!, 80) },
  ];
  await sleep(1000);
  const t0 = Date.now();
  await m.stop(host);
  await m.start(host, to);
  const swapMs = Date.now() - t0;
  const results = await Promise.all(runs.map(async (r) => ({ name: r.name, ...(await r.run) })));

  assert.equal(m.subnetOf(host), subnet, `${to} on ${host} took another subnet than ${from}'s`);
  assert.equal(await m.vtepMacOf(host), mac, `${to} on ${host} changed the VtepMAC ${from} had`);
  assert.deepEqual([...(await m.leaseValues()).keys()].sort(), leasesBefore, 'the same lease keys, none added or lost');
  for (const peer of others) {
    assert.equal(await m.vxlanPeerProblems(peer, host), '');
    assert.equal(await m.vxlanPeerProblems(host, peer), '');
  }
  const lost = results.map((r) => `${r.name}: ${r.sent - r.received}/${r.sent} lost`);
  figures.push(`${host} ${from} → ${to} (stop + start ${swapMs} ms): ${lost.join(', ')}`);
  for (const r of results) assert.equal(r.received, r.sent, `${r.name} across ${from} → ${to} on ${host}: ${r.out}`);
}

describe('vxlan: flanneld v0.20.2 replaced by weftd host by host, and back, while pings run', { timeout: 240_000 }, () => {
  before(async () => {
    m = await MixedLab.up({ id: 'r', kinds: ['flanneld', 'flanneld', 'weftd'] });
  });

  after(async () => {
    process.stdout.write(`# replacement figures (load ${(await import('node:fs')).readFileSync('/proc/loadavg', 'utf8').trim()}):\n${figures.map((f) => `#   ${f}\n`).join('')}`);
    await m?.down();
  });

  test('h1: flanneld → weftd keeps the lease, subnet and VtepMAC; no ping lost', async () => {
    await replace('h1', 'weftd');
  });

  test('h2: flanneld → weftd (now every host runs weftd); no ping lost', async () => {
    await replace('h2', 'weftd');
    assert.equal(await m.assertPingMatrix(), 6);
  });

  test('h1: weftd → flanneld (back) keeps the lease, subnet and VtepMAC; no ping lost', async () => {
    await replace('h1', 'flanneld');
    assert.equal(await m.assertPingMatrix(), 6);
  });
});
