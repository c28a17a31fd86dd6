/**
 * Give memory back once the daemon goes quiet. Start-up and a burst of peer changes leave
 * garbage (decoded listings, netlink dumps, compiled code) that V8 collects only under
 * allocation pressure — which an idle daemon never creates — so a quiet weftd kept ~7 MB more
 * private memory than it uses (measured on a 30-host lab, docs/performance.md). One full
 * collection 3 s after the last peer change (and after start-up) returns it.
 *
 * Cost: one full GC per burst of changes, a few milliseconds for weftd's ~10 MB heap; nothing
 * while nothing changes.
 */
import { runInNewContext } from 'node:vm';
import type { DaemonComponent, DaemonView } from './components';

export class IdleGc implements DaemonComponent {
  readonly name = 'idle-gc';
  private timer: NodeJS.Timeout | null = null;
  private lastChange = 0;
  private gc: (() => void) | null = null;

  /** `collect`: the collector to call (tests); default V8's full GC. */
  constructor(private readonly quietMs = 3000, private readonly collect?: () => void) {}

  async start(daemon: DaemonView): Promise<void> {
    if (this.collect !== undefined) {
      this.gc = this.collect;
    } else try {
      // node:v8 here, not at module load: it brings its bindings (heap utils, serdes, promise
      // hooks: ~4.5 ms of CPU), and this runs after subnet.env is written.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { setFlagsFromString } = require('node:v8') as typeof import('node:v8');
      // --expose-gc at run time defines gc() only in contexts created afterwards.
      setFlagsFromString('--expose-gc');
      this.gc = runInNewContext('gc') as () => void;
      // Off again (gc() stays): V8 stamps a code cache with a hash of the flags, and the one-file
      // weftd's warm cache, written after this ran, must match the flags of the next start.
      setFlagsFromString('--no-expose-gc');
    } catch {
      this.gc = null;
    }
    if (this.gc === null) return;
    daemon.on('phase', (phase) => {
      if (phase === 'ready') this.arm();
    });
    daemon.on('peers', () => {
      if (daemon.phase === 'ready') this.arm();
    });
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** One timer per quiet period, not one per change (a burst is 1000 changes). */
  private arm(): void {
    if (this.gc === null) return;
    this.lastChange = Date.now();
    if (this.timer === null) this.wait(this.quietMs);
  }

  private wait(ms: number): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      const quietFor = Date.now() - this.lastChange;
      if (quietFor < this.quietMs) this.wait(this.quietMs - quietFor);
      else this.gc?.();
    }, ms);
    this.timer.unref();
  }
}
