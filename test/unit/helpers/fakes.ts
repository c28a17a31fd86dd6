/**
 * Fakes shared by the unit tests (one copy each). The in-memory kernel and lease registry live in
 * src/ (src/netlink/memory-kernel.ts, src/lease/memory-registry.ts) because they keep the real
 * objects' rules; what is here only stands in for time, a backend and sd_notify.
 */
import type { Backend, BackendSetup, DesiredState } from '../../../src/backend/backend';
import type { Notifier } from '../../../src/daemon/notify';
import type { MemoryLeaseRegistry } from '../../../src/lease/memory-registry';
import type { LeaseRegistry } from '../../../src/lease/registry';
import type { Lease } from '../../../src/lease/types';

/** Let every pending promise chain and setImmediate callback run (a few rounds). */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

/**
 * Time driven by hand: timers fire only inside `advance()`, in order, with promises settled
 * between them. Has every method of src/clock.ts's `Clock` (and so of any `Pick` of it).
 */
export class ManualClock {
  t = 0;
  private timers: { at: number; fn: () => void; id: number; every?: number }[] = [];
  private nextId = 1;

  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): number {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== h);
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const id = this.setTimeout(resolve, ms);
      signal?.addEventListener('abort', () => {
        this.clearTimeout(id);
        reject(signal.reason);
      }, { once: true });
    });
  }
  every(ms: number, fn: () => void): () => void {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, fn, id, every: ms });
    return () => this.clearTimeout(id);
  }
  /** Timers still armed. */
  get pending(): number {
    return this.timers.length;
  }
  /** Advance time, firing due timers in order, letting promises settle between them. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      if (next.every !== undefined) this.timers.push({ ...next, at: next.at + next.every });
      next.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

/**
 * A backend whose device is a promise kept at once: for tests of the reconciler's loop, which
 * hand it a desired state themselves. `onEnsure` runs at every ensureDevice (e.g. to create the
 * device in the fake kernel).
 */
export class FakeBackend implements Backend {
  readonly type = 'vxlan';
  readonly deviceName = 'flannel.1';
  ensured = 0;
  constructor(
    private readonly setup: BackendSetup = { backendType: 'vxlan', backendData: {}, mtu: 1450 },
    private readonly onEnsure: () => void = () => undefined,
  ) {}
  async ensureDevice(): Promise<BackendSetup> {
    this.ensured++;
    this.onEnsure();
    return this.setup;
  }
  desired(_own: Lease, _peers: readonly Lease[]): DesiredState {
    throw new Error('FakeBackend.desired: the test sets the desired state itself');
  }
  async close(): Promise<void> {}
}

/** sd_notify that remembers what it was told. */
export class RecordingNotifier implements Notifier {
  readonly messages: string[] = [];
  ready(status: string): void {
    this.messages.push(`READY ${status}`);
  }
  status(status: string): void {
    this.messages.push(`STATUS ${status}`);
  }
  stopping(): void {
    this.messages.push('STOPPING');
  }
}

/**
 * One host's handle on a registry shared by several in-process daemons: the same store, but its
 * close() (called by each Weftd at shutdown) leaves the store open for the other hosts.
 */
export function hostView(store: MemoryLeaseRegistry): LeaseRegistry {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'close') return async (): Promise<void> => undefined;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** Poll `check` every few milliseconds until it holds; fail after `timeoutMs` naming `what`. */
export async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
