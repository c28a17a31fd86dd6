/**
 * An idle weftd arms no timer shorter than its resync period (issue #14, "Idle": timers only for
 * keepalive and resync). Two daemons in one process (in-memory kernel and lease registry, as in
 * two-daemons.test.ts) converge; then every timer the daemon code (dist/src/) has armed and not
 * yet fired or cleared is a period of the idle daemon: each must be at least the resync period.
 * A poll — the old 60 s config GET, a 5 s generation check, a 1 s sweep — shows up here as a
 * pending timer with its short delay. The timers are seen through the global timer functions,
 * which every component not driven by an injected Clock (src/clock.ts, whose systemClock calls
 * the same functions) uses.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseDaemonOptions } from '../../src/config/options';
import { IdleGc } from '../../src/daemon/idle-gc';
import { Weftd } from '../../src/daemon/weftd';
import { parseCidr } from '../../src/ip';
import { MemoryLeaseRegistry } from '../../src/lease/memory-registry';
import { silentLogger } from '../../src/log';
import { MemoryKernel } from '../../src/netlink/memory-kernel';
import { hostView, RecordingNotifier, waitFor } from './helpers/fakes';

const CONFIG = JSON.stringify({ Network: '10.5.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1 } });
const RESYNC_SECONDS = 60;

interface ArmedTimer {
  readonly ms: number;
  readonly repeat: boolean;
  /** The first stack frame in weft's own code (dist/src/), for the failure message. */
  readonly site: string;
}

/** Records the timers armed by code under dist/src/ that are still pending. */
class TimerRecorder {
  readonly pending = new Map<unknown, ArmedTimer>();
  private readonly real = { setTimeout, setInterval, clearTimeout, clearInterval };

  install(): void {
    const rec = this.pending;
    const real = this.real;
    // The caller of the timer, past src/clock.ts's systemClock (which only forwards).
    const site = (): string | null => new Error().stack?.split('\n').slice(2).find((l) => l.includes('/dist/src/') && !l.includes('/dist/src/clock.js'))?.trim() ?? null;
    globalThis.setTimeout = Object.assign((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
      const where = site();
      const t = real.setTimeout((...a: unknown[]) => {
        rec.delete(t);
        fn(...a);
      }, ms, ...args);
      if (where !== null) rec.set(t, { ms: ms ?? 0, repeat: false, site: where });
      return t;
    }, real.setTimeout) as typeof setTimeout;
    globalThis.setInterval = Object.assign((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
      const where = site();
      const t = real.setInterval(fn, ms, ...args);
      if (where !== null) rec.set(t, { ms: ms ?? 0, repeat: true, site: where });
      return t;
    }, real.setInterval) as typeof setInterval;
    globalThis.clearTimeout = ((t: NodeJS.Timeout | string | number | undefined) => {
      rec.delete(t);
      real.clearTimeout(t);
    }) as typeof clearTimeout;
    globalThis.clearInterval = ((t: NodeJS.Timeout | string | number | undefined) => {
      rec.delete(t);
      real.clearInterval(t);
    }) as typeof clearInterval;
  }

  uninstall(): void {
    Object.assign(globalThis, this.real);
  }
}

function startHost(store: MemoryLeaseRegistry, dir: string, n: number): { daemon: Weftd; stop: AbortController; done: Promise<void> } {
  const kernel = new MemoryKernel();
  const eth0 = kernel.addLink({ name: 'eth0', mtu: 1500 });
  void kernel.addAddress(eth0, `192.168.50.${n}`, 24);
  void kernel.replaceRoute({ dst: parseCidr('0.0.0.0/0')!, gateway: '192.168.50.254', oif: eth0.index, onlink: false });
  const parsed = parseDaemonOptions(
    ['--iface=eth0', `--subnet-file=${join(dir, `host${n}.env`)}`, '--vxlan-fallback=off', '--etcd-endpoints=http://127.0.0.1:2379',
      `--resync-interval=${RESYNC_SECONDS}`], {},
  );
  assert.equal(parsed.kind, 'run');
  const daemon = new Weftd(parsed.options, {
    log: silentLogger,
    notifier: new RecordingNotifier(),
    makeRegistry: () => hostView(store),
    makeNetlink: () => kernel,
    // The idle GC's one-shot timers after start-up (its collection, then the C heap's trim), short
    // so that they have fired when we look.
    components: [new IdleGc({ quietMs: 20, collect: () => undefined, trimAfterMs: 20 })],
    departedGraceMs: 0,
  });
  const stop = new AbortController();
  return { daemon, stop, done: daemon.run(stop.signal) };
}

describe('an idle weftd', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-idle-timers-'));
  const store = new MemoryLeaseRegistry();
  const timers = new TimerRecorder();
  let hosts: ReturnType<typeof startHost>[] = [];

  before(() => {
    timers.install();
    store.setConfig(CONFIG);
    hosts = [1, 2].map((n) => startHost(store, dir, n));
  });
  after(async () => {
    for (const h of hosts) h.stop.abort();
    await Promise.allSettled(hosts.map((h) => h.done));
    await store.close();
    timers.uninstall();
    rmSync(dir, { recursive: true, force: true });
  });

  it(`arms no timer shorter than the resync period (${RESYNC_SECONDS} s), and keeps no more than one per period`, async () => {
    await waitFor(() => hosts.every((h) => h.daemon.phase === 'ready' && h.daemon.snapshot().lease !== null), 'both daemons ready');
    // Converged (each programs the other) and quiet: the one-shot timers of start-up have run.
    await new Promise((r) => setTimeout(r, 300));
    const short = [...timers.pending.values()].filter((t) => t.ms < RESYNC_SECONDS * 1000);
    assert.deepEqual(short, [], `timers shorter than the resync period pending in an idle daemon:\n${short.map((t) => `${t.ms} ms${t.repeat ? ' (repeating)' : ''} at ${t.site}`).join('\n')}`);
    const periods = [...timers.pending.values()];
    assert.ok(periods.length > 0, 'the resync timers are seen (the recorder works)');
    // Two daemons, each with its reconciler's resync: nothing else is periodic.
    assert.ok(periods.length <= 2, `pending timers: ${periods.map((t) => `${t.ms} ms at ${t.site}`).join('; ')}`);
  });
});
