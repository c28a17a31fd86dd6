/**
 * Interop, replacing flanneld by weftd host by host (and back) while containers ping: a lab of
 * 3 hosts, h1 and h2 running a real flanneld v0.20.2 and h3 weftd (namespaces helperE2-<pid>r-*).
 * Each step stops one daemon (SIGTERM) and starts the other kind on the same host, with 3 pings
 * running across it (to a flanneld peer, to a weftd peer, and out of the replaced host). The new
 * daemon must take the old one's lease (same key, subnet and VtepMAC: the device is kept) and no
 * ping may be lost (docs/faults.md: 0 lost across a weftd restart; docs/flannel-compat.md).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { useMixedLab, type DaemonKind, type MixedLab } from './helpers/mixed-lab';

async function replace(m: MixedLab, host: string, to: DaemonKind): Promise<void> {
  const from = m.kindOf(host);
  const subnet = m.subnetOf(host);
  const mac = await m.vtepMacOf(host);
  const keys = async (): Promise<string[]> => [...(await m.leaseValues()).keys()].sort();
  const keysBefore = await keys();
  // Prints the figures (loss per flow, swap time, load) that docs/flannel-compat.md quotes.
  const { flows } = await m.replaceWhilePinging(host, to);

  assert.equal(m.subnetOf(host), subnet, `${to} on ${host} took another subnet than ${from}'s`);
  assert.equal(await m.vtepMacOf(host), mac, `${to} on ${host} changed the VtepMAC ${from} had`);
  assert.deepEqual(await keys(), keysBefore, 'the same lease keys, none added or lost');
  for (const peer of m.hosts().filter((h) => h !== host)) {
    assert.equal(await m.vxlanPeerProblems(peer, host), '');
    assert.equal(await m.vxlanPeerProblems(host, peer), '');
  }
  for (const f of flows) assert.equal(f.received, f.sent, `${f.name} across ${from} → ${to} on ${host}: ${f.out}`);
}

describe('vxlan: flanneld v0.20.2 replaced by weftd host by host, and back, while pings run', { timeout: 240_000 }, () => {
  const lab = useMixedLab({ id: 'r', kinds: ['flanneld', 'flanneld', 'weftd'] });

  test('h1: flanneld → weftd keeps the lease, subnet and VtepMAC; no ping lost', async () => {
    await replace(lab(), 'h1', 'weftd');
  });

  test('h2: flanneld → weftd (now every host runs weftd); no ping lost', async () => {
    const m = lab();
    await replace(m, 'h2', 'weftd');
    assert.equal(await m.assertPingMatrix(), 6);
  });

  test('h1: weftd → flanneld (back) keeps the lease, subnet and VtepMAC; no ping lost', async () => {
    const m = lab();
    await replace(m, 'h1', 'flanneld');
    assert.equal(await m.assertPingMatrix(), 6);
  });
});
