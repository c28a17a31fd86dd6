/**
 * A whole Weftd (in-memory kernel and lease registry) on the per-peer path (desired-delta.ts):
 * a join judges one lease and writes three kernel objects whether 10 or 300 peers are there; a
 * changed VtepMAC moves the neighbour and FDB entry; a departed peer stays programmed for its
 * grace and goes after it; a key back within the grace removes nothing.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseDaemonOptions } from '../../src/config/options';
import type { IncrementalDesired } from '../../src/daemon/desired-delta';
import { Weftd } from '../../src/daemon/weftd';
import { parseCidr } from '../../src/ip';
import { MemoryLeaseRegistry } from '../../src/lease/memory-registry';
import { silentLogger } from '../../src/log';
import { MemoryKernel } from '../../src/netlink/memory-kernel';
import { hostView, RecordingNotifier, waitFor } from './helpers/fakes';

const CONFIG = JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1 } });

/** The n-th peer: 10.<1+n/256>.<n%256>.0/24, PublicIP 172.16.x.y, a unique VtepMAC. */
function peer(n: number, mac = `0a:00:00:00:${(n >> 8).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`): { key: string; value: string; dst: string } {
  const hi = 1 + (n >> 8);
  const lo = n & 255;
  return {
    key: `10.${hi}.${lo}.0-24`,
    dst: `10.${hi}.${lo}.0/24`,
    value: JSON.stringify({ PublicIP: `172.16.${hi}.${lo}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } }),
  };
}

interface Daemon {
  readonly store: MemoryLeaseRegistry;
  readonly kernel: MemoryKernel;
  readonly daemon: Weftd;
  stop(): Promise<void>;
}

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function start(peers: number, departedGraceMs = 0): Promise<Daemon> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-incremental-'));
  dirs.push(dir);
  const store = new MemoryLeaseRegistry();
  store.setConfig(CONFIG);
  for (let i = 0; i < peers; i++) store.putRaw(peer(i).key, peer(i).value);
  const kernel = new MemoryKernel();
  const eth0 = kernel.addLink({ name: 'eth0', mtu: 1500 });
  await kernel.addAddress(eth0, '192.168.50.1', 24);
  await kernel.replaceRoute({ dst: parseCidr('0.0.0.0/0')!, gateway: '192.168.50.254', oif: eth0.index, onlink: false });
  const parsed = parseDaemonOptions(['--iface=eth0', `--subnet-file=${join(dir, 'subnet.env')}`, '--vxlan-fallback=off', '--etcd-endpoints=http://127.0.0.1:2379'], {});
  assert.equal(parsed.kind, 'run');
  const daemon = new Weftd(parsed.options, {
    log: silentLogger, notifier: new RecordingNotifier(), makeRegistry: () => hostView(store), makeNetlink: () => kernel, departedGraceMs,
  });
  const ctl = new AbortController();
  const done = daemon.run(ctl.signal);
  await waitFor(() => daemon.snapshot().phase === 'ready', 'daemon ready', 10_000);
  return { store, kernel, daemon, stop: async () => { ctl.abort(); await done; } };
}

/** The daemon's per-peer engine for the IPv4 path (private: read here to count the work of an event). */
function engineOf(d: Weftd): IncrementalDesired {
  const engines = (d as unknown as { engines: readonly { engine: IncrementalDesired }[] }).engines;
  assert.equal(engines.length, 1, 'the vxlan path runs on per-peer rules');
  return engines[0]!.engine;
}

async function hasRoute(k: MemoryKernel, dst: string): Promise<boolean> {
  const want = parseCidr(dst)!;
  return (await k.listRoutes()).some((r) => r.dst.ip === want.ip && r.dst.prefixLen === want.prefixLen);
}

describe('Weftd on per-peer desired state', () => {
  for (const n of [10, 300]) {
    it(`${n} peers: each join judges one lease and writes three kernel objects`, async () => {
      const d = await start(n);
      try {
        const engine = engineOf(d.daemon);
        const judged0 = engine.stats.judged;
        const passes0 = engine.stats.fullPasses;
        const calls0 = d.kernel.calls.length;
        for (let j = 0; j < 5; j++) {
          const p = peer(n + j);
          d.store.putRaw(p.key, p.value);
          await waitFor(() => hasRoute(d.kernel, p.dst), `route to ${p.dst}`);
        }
        await waitFor(() => d.daemon.snapshot().dataPaths[0]?.reconcile?.upToDate === true, 'up to date');
        assert.equal(engine.stats.judged - judged0, 5, 'one lease judged per join');
        assert.equal(engine.stats.fullPasses, passes0, 'no pass over every peer');
        const writes = d.kernel.calls.slice(calls0).map((c) => c.split(' ')[0]);
        assert.equal(writes.length, 15, `three kernel writes per join: ${writes.join(', ')}`);
      } finally {
        await d.stop();
      }
    });
  }

  it('a changed VtepMAC moves the neighbour and the FDB entry; the old entry goes', async () => {
    const d = await start(3);
    try {
      const p = peer(1, '0a:00:00:00:00:99');
      d.store.putRaw(p.key, p.value);
      const dev = (await d.kernel.getLink('flannel.1'))!;
      await waitFor(async () => (await d.kernel.listFdb(dev.index)).some((f) => f.mac === '0a:00:00:00:00:99'), 'new FDB entry');
      await waitFor(async () => (await d.kernel.listNeighbours(dev.index)).some((x) => x.ip === '10.1.1.0' && x.mac === '0a:00:00:00:00:99'), 'neighbour moved');
      assert.equal((await d.kernel.listFdb(dev.index)).some((f) => f.mac === '0a:00:00:00:00:01'), false, 'old FDB entry removed');
    } finally {
      await d.stop();
    }
  });

  it('a departed peer stays programmed for the grace, then goes; one back within it loses nothing', async () => {
    const d = await start(4, 400);
    try {
      const gone = peer(2);
      const back = peer(3);
      d.store.deleteRaw(gone.key);
      d.store.deleteRaw(back.key);
      await new Promise((r) => setTimeout(r, 150));
      assert.ok(await hasRoute(d.kernel, gone.dst), 'held during the grace');
      assert.ok(await hasRoute(d.kernel, back.dst), 'held during the grace');
      const calls0 = d.kernel.calls.length;
      d.store.putRaw(back.key, back.value);
      await waitFor(async () => !(await hasRoute(d.kernel, gone.dst)), 'route of the departed peer removed after the grace', 3000);
      assert.ok(await hasRoute(d.kernel, back.dst), 'the peer back within the grace keeps its route');
      const removals = d.kernel.calls.slice(calls0).filter((c) => c.startsWith('delete'));
      assert.deepEqual(removals.map((c) => c.split(' ')[0]).sort(), ['deleteFdb', 'deleteNeighbour', 'deleteRoute'], removals.join(', '));
    } finally {
      await d.stop();
    }
  });

  it('host-gw: a peer arriving while the on-link lookups of a whole recompute are in flight still gets its route', async () => {
    // The kernel answers "is this PublicIP on our L2" only when the gate opens: the peer written
    // meanwhile must be looked up and judged by its own step, not judged without a lookup.
    let open: () => void = () => undefined;
    const gate = new Promise<void>((r) => { open = r; });
    class GatedKernel extends MemoryKernel {
      override async isOnLink(ip: string, viaIndex?: number): Promise<boolean> {
        await gate;
        return super.isOnLink(ip, viaIndex);
      }
    }
    const dir = mkdtempSync(join(tmpdir(), 'weft-incremental-'));
    dirs.push(dir);
    const store = new MemoryLeaseRegistry();
    store.setConfig(JSON.stringify({ Network: '10.5.0.0/16', SubnetLen: 24, Backend: { Type: 'host-gw' } }));
    store.putRaw('10.5.7.0-24', JSON.stringify({ PublicIP: '192.168.50.7', PublicIPv6: null, BackendType: 'host-gw' }));
    const kernel = new GatedKernel();
    const eth0 = kernel.addLink({ name: 'eth0', mtu: 1500 });
    await kernel.addAddress(eth0, '192.168.50.1', 24);
    await kernel.replaceRoute({ dst: parseCidr('0.0.0.0/0')!, gateway: '192.168.50.254', oif: eth0.index, onlink: false });
    const parsed = parseDaemonOptions(['--iface=eth0', `--subnet-file=${join(dir, 'subnet.env')}`, '--etcd-endpoints=http://127.0.0.1:2379'], {});
    assert.equal(parsed.kind, 'run');
    const daemon = new Weftd(parsed.options, {
      log: silentLogger, notifier: new RecordingNotifier(), makeRegistry: () => hostView(store), makeNetlink: () => kernel, departedGraceMs: 0,
    });
    const ctl = new AbortController();
    const done = daemon.run(ctl.signal);
    try {
      await waitFor(() => daemon.snapshot().phase === 'programming' && daemon.snapshot().peers.length === 1, 'first snapshot', 5000);
      store.putRaw('10.5.8.0-24', JSON.stringify({ PublicIP: '192.168.50.8', PublicIPv6: null, BackendType: 'host-gw' }));
      await waitFor(() => daemon.snapshot().peers.length === 2, 'the second peer seen');
      open();
      await waitFor(() => hasRoute(kernel, '10.5.7.0/24'), 'route to the first peer');
      await waitFor(() => hasRoute(kernel, '10.5.8.0/24'), 'route to the peer that arrived during the lookups');
    } finally {
      open();
      ctl.abort();
      await done;
    }
  });
});
