/**
 * A join in one synchronous pass (issue #14): a whole Weftd (vxlan, in-memory kernel and lease
 * registry) writes a joining peer's kernel objects in the call stack of the watch delivery that
 * brought its lease — no promise step between the registry's watch and the netlink batch — and
 * one watch response's events make one recompute and one batch.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseDaemonOptions } from '../../src/config/options';
import { Weftd } from '../../src/daemon/weftd';
import { parseCidr } from '../../src/ip';
import { MemoryLeaseRegistry } from '../../src/lease/memory-registry';
import type { LeaseRegistry, SubnetWatch, SubnetWatchEvent } from '../../src/lease/registry';
import { silentLogger } from '../../src/log';
import { MemoryKernel } from '../../src/netlink/memory-kernel';
import type { KernelWrite, WriteOutcomes } from '../../src/netlink/types';
import { hostView, RecordingNotifier, waitFor } from './helpers/fakes';

const CONFIG = JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1 } });

function peer(n: number): { key: string; value: string; dst: string } {
  const mac = `0a:00:00:00:00:${n.toString(16).padStart(2, '0')}`;
  return {
    key: `10.1.${n}.0-24`,
    dst: `10.1.${n}.0/24`,
    value: JSON.stringify({ PublicIP: `172.16.1.${n}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } }),
  };
}

/** The kernel's batches, each marked with whether it was issued inside a watch delivery. */
class MarkingKernel extends MemoryKernel {
  inDelivery = false;
  readonly batches: { readonly writes: number; readonly inDelivery: boolean }[] = [];
  override applyWrites(writes: readonly KernelWrite[]): Promise<WriteOutcomes> {
    this.batches.push({ writes: writes.length, inDelivery: this.inDelivery });
    return super.applyWrites(writes);
  }
}

/**
 * The store as the daemon sees it, its watch wrapped: `inDelivery` is set while a watch response
 * is being delivered (its events, then responseDone). `batched`: events are held and delivered as
 * one response when the test calls `flush()` (as etcd delivers a multi-key transaction).
 */
function watchedView(store: MemoryLeaseRegistry, kernel: MarkingKernel, batched: { on: boolean; held: (() => void)[] }): LeaseRegistry {
  const view = hostView(store);
  return new Proxy(view, {
    get(target, prop) {
      if (prop !== 'watchSubnets') return Reflect.get(target, prop, target);
      return (from: string, handler: (ev: SubnetWatchEvent) => void, responseDone?: () => void): SubnetWatch => {
        const pending: SubnetWatchEvent[] = [];
        const deliver = (events: readonly SubnetWatchEvent[]): void => {
          kernel.inDelivery = true;
          try {
            for (const ev of events) handler(ev);
            responseDone?.();
          } finally {
            kernel.inDelivery = false;
          }
        };
        return store.watchSubnets(from, (ev) => {
          if (!batched.on || ev.type === 'reset') {
            deliver([ev]);
            return;
          }
          if (pending.length === 0) batched.held.push(() => deliver(pending.splice(0)));
          pending.push(ev);
        });
      };
    },
  });
}

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function start(peers: number) {
  const dir = mkdtempSync(join(tmpdir(), 'weft-one-pass-'));
  dirs.push(dir);
  const store = new MemoryLeaseRegistry();
  store.setConfig(CONFIG);
  for (let i = 1; i <= peers; i++) store.putRaw(peer(i).key, peer(i).value);
  const kernel = new MarkingKernel();
  const eth0 = kernel.addLink({ name: 'eth0', mtu: 1500 });
  await kernel.addAddress(eth0, '192.168.50.1', 24);
  await kernel.replaceRoute({ dst: parseCidr('0.0.0.0/0')!, gateway: '192.168.50.254', oif: eth0.index, onlink: false });
  const parsed = parseDaemonOptions(['--iface=eth0', `--subnet-file=${join(dir, 'subnet.env')}`, '--vxlan-fallback=off', '--etcd-endpoints=http://127.0.0.1:2379'], {});
  assert.equal(parsed.kind, 'run');
  const batched = { on: false, held: [] as (() => void)[] };
  let programmed = 0;
  const daemon = new Weftd(parsed.options, {
    log: silentLogger, notifier: new RecordingNotifier(), makeRegistry: () => watchedView(store, kernel, batched), makeNetlink: () => kernel, departedGraceMs: 0,
  });
  daemon.on('programmed', () => programmed++);
  const ctl = new AbortController();
  const done = daemon.run(ctl.signal);
  await waitFor(() => daemon.snapshot().phase === 'ready', 'daemon ready', 10_000);
  const reconcilerUpToDate = (): boolean => daemon.snapshot().dataPaths[0]?.reconcile?.upToDate === true;
  await waitFor(reconcilerUpToDate, 'converged');
  return { store, kernel, daemon, batched, programmed: () => programmed, reconcilerUpToDate, stop: async () => { ctl.abort(); await done; } };
}

async function hasRoute(k: MemoryKernel, dst: string): Promise<boolean> {
  const want = parseCidr(dst)!;
  return (await k.listRoutes()).some((r) => r.dst.ip === want.ip && r.dst.prefixLen === want.prefixLen);
}

describe('Weftd: a watch message in one synchronous pass (issue #14)', () => {
  it('writes a joining peer\'s neighbour, FDB entry and route in the call stack of the watch delivery', async () => {
    const d = await start(5);
    try {
      // A join that arrives while a full run is due or in flight (one the daemon's own start-up
      // notifications scheduled: a loaded machine can stretch that past "converged") is folded
      // into that run, by design. So: up to 5 joins, each once the previous is programmed; the
      // pass is there when one of them is written within its delivery, and only then.
      const seen: { writes: number; inDelivery: boolean }[][] = [];
      for (let n = 9; n < 14 && !seen.some((b) => b.length === 1 && b[0]!.inDelivery); n++) {
        d.kernel.batches.length = 0;
        const before = d.programmed();
        d.store.putRaw(peer(n).key, peer(n).value);
        await waitFor(() => d.kernel.batches.length > 0, 'the join\'s batch');
        await waitFor(() => d.programmed() > before, 'programmed after the batch was answered');
        assert.ok(await hasRoute(d.kernel, peer(n).dst));
        seen.push([...d.kernel.batches]);
      }
      assert.deepEqual(seen[seen.length - 1], [{ writes: 3, inDelivery: true }], `one batch of three writes, issued within the delivery (batches per join: ${JSON.stringify(seen)})`);
      // Leaves: the same pass (the departed-peer grace is 0 here), with the same allowance: up to
      // 5, one at a time, each once the previous is out of the kernel and the reconciler is up to date.
      const joined = Array.from({ length: seen.length }, (_, i) => 9 + i);
      for (let n = 30; joined.length < 5; n++) {
        d.store.putRaw(peer(n).key, peer(n).value);
        joined.push(n);
      }
      for (const n of joined) await waitFor(() => hasRoute(d.kernel, peer(n).dst), `peer ${n}'s route`);
      const left: { writes: number; inDelivery: boolean }[][] = [];
      for (const n of joined) {
        await waitFor(d.reconcilerUpToDate, 'up to date before the leave');
        d.kernel.batches.length = 0;
        d.store.deleteRaw(peer(n).key);
        await waitFor(() => d.kernel.batches.length > 0, 'the leave\'s batch');
        await waitFor(async () => !(await hasRoute(d.kernel, peer(n).dst)), `peer ${n}'s route removed`);
        left.push([...d.kernel.batches]);
        if (left[left.length - 1]!.length === 1 && left[left.length - 1]![0]!.inDelivery) break;
      }
      assert.deepEqual(left[left.length - 1], [{ writes: 3, inDelivery: true }], `one batch of three writes, issued within the delivery (batches per leave: ${JSON.stringify(left)})`);
    } finally {
      await d.stop();
    }
  });

  it('makes one recompute and one batch of the events of one watch response', async () => {
    const d = await start(5);
    try {
      d.kernel.batches.length = 0;
      d.batched.on = true;
      for (const n of [20, 21, 22, 23]) d.store.putRaw(peer(n).key, peer(n).value);
      await waitFor(() => d.batched.held.length > 0, 'the events held');
      await new Promise<void>((resolve) => setImmediate(resolve)); // every event in
      for (const flush of d.batched.held.splice(0)) flush();
      assert.deepEqual(d.kernel.batches, [{ writes: 12, inDelivery: true }], 'four joins, one batch, within the delivery');
      await waitFor(d.reconcilerUpToDate, 'up to date');
      for (const n of [20, 21, 22, 23]) assert.ok(await hasRoute(d.kernel, peer(n).dst));
    } finally {
      await d.stop();
    }
  });
});
