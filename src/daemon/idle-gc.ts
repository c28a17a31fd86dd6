/**
 * Give memory back once the daemon goes quiet. Start-up and a burst of peer changes leave
 * garbage (decoded listings, netlink dumps, compiled code) that V8 collects only under
 * allocation pressure — which an idle daemon never creates — so a quiet weftd kept ~7 MB more
 * private memory than it uses (measured on a 30-host lab, docs/performance.md). One full
 * collection 3 s after the last peer change (and after start-up) returns it.
 *
 * Only when there is something to give back: the old generation (what a full GC can free; the
 * young generation is bounded by --max-semi-space-size and emptied by scavenges anyway) must
 * have grown by `minGrowthBytes` since the last collection. A full GC of weftd's ~7 MB heap costs
 * 15–25 ms of CPU, and V8's memory reducer may follow it with one or two more 8 s later; after a
 * single join (~0.1 MB of garbage) that was 10–20× the CPU of the join itself (docs/performance.md,
 * "Issue #14, fourth pass").
 *
 * A second after the collection, the C heap's free pages go back to the kernel too (glibc's
 * malloc_trim, through the addon): the Buffers the GC freed were malloc'd, and glibc keeps freed
 * chunks below live ones for the process. A second later, not at once: V8 frees their backing
 * stores on its helper thread after the collection. 0.1–1.5 MB of private memory per weftd on a
 * 30-host lab, the more the more peers it saw come and go (docs/performance.md, "Issue #14,
 * eleventh pass").
 *
 * Cost: one full GC and one trim per burst of changes (or per ~1 MB of retained growth from single
 * changes); nothing while nothing changes.
 */
import { runInNewContext } from 'node:vm';
import { loadNative } from '../native';
import type { DaemonComponent, DaemonView } from './components';

/** Old-generation growth that makes a quiet period's collection worth its CPU. */
export const IDLE_GC_MIN_GROWTH_BYTES = 1024 * 1024;
/** From a collection to the trim of the C heap: V8's helper thread frees the dead Buffers' memory meanwhile. */
export const TRIM_AFTER_GC_MS = 1000;

export interface IdleGcOptions {
  /** Quiet time after the last change; default 3000 ms. */
  readonly quietMs?: number;
  /** The collector (tests); default V8's full GC. */
  readonly collect?: () => void;
  /** Bytes a full GC could free or keep: the heap outside the young generation (tests); default V8's figures. */
  readonly oldGenerationBytes?: () => number;
  /** Default IDLE_GC_MIN_GROWTH_BYTES. */
  readonly minGrowthBytes?: number;
  /** Returns the C heap's free pages after a collection (tests); default the addon's trimMalloc. */
  readonly trimMalloc?: () => void;
  /** Default TRIM_AFTER_GC_MS. */
  readonly trimAfterMs?: number;
}

export class IdleGc implements DaemonComponent {
  readonly name = 'idle-gc';
  private timer: NodeJS.Timeout | null = null;
  private trimTimer: NodeJS.Timeout | null = null;
  private lastChange = 0;
  private gc: (() => void) | null = null;
  private oldGeneration: (() => number) | null = null;
  private trimMalloc: (() => void) | null = null;
  /** The old generation's size right after our last collection; null before the first. */
  private afterLast: number | null = null;
  private readonly quietMs: number;
  private readonly minGrowthBytes: number;

  constructor(private readonly opts: IdleGcOptions = {}) {
    this.quietMs = opts.quietMs ?? 3000;
    this.minGrowthBytes = opts.minGrowthBytes ?? IDLE_GC_MIN_GROWTH_BYTES;
  }

  async start(daemon: DaemonView): Promise<void> {
    // node:v8 here, not at module load: it brings its bindings (heap utils, serdes, promise
    // hooks: ~4.5 ms of CPU), and this runs after subnet.env is written.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { setFlagsFromString, getHeapSpaceStatistics } = require('node:v8') as typeof import('node:v8');
    this.oldGeneration = this.opts.oldGenerationBytes ?? (() => oldGenerationBytes(getHeapSpaceStatistics()));
    this.gc = this.opts.collect ?? fullGc(setFlagsFromString);
    if (this.gc === null) return;
    this.trimMalloc = this.opts.trimMalloc ?? nativeTrim();
    daemon.on('phase', (phase) => {
      if (phase === 'ready') this.arm();
    });
    daemon.on('peers', () => {
      if (daemon.phase === 'ready') this.arm();
    });
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.trimTimer !== null) clearTimeout(this.trimTimer);
    this.timer = null;
    this.trimTimer = null;
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
      else this.collectIfGrown();
    }, ms);
    this.timer.unref();
  }

  private collectIfGrown(): void {
    if (this.gc === null || this.oldGeneration === null) return;
    if (this.afterLast !== null && this.oldGeneration() - this.afterLast < this.minGrowthBytes) return;
    this.gc();
    this.afterLast = this.oldGeneration();
    const trim = this.trimMalloc;
    if (trim === null || this.trimTimer !== null) return;
    this.trimTimer = setTimeout(() => {
      this.trimTimer = null;
      trim();
    }, this.opts.trimAfterMs ?? TRIM_AFTER_GC_MS);
    this.trimTimer.unref();
  }
}

/**
 * V8's full GC as a function, or null if this node refuses the flag. `setFlags` is node:v8's
 * setFlagsFromString, passed in so that callers load node:v8 when they choose (IdleGc: after
 * subnet.env).
 */
export function fullGc(setFlags: (flags: string) => void): (() => void) | null {
  try {
    // --expose-gc at run time defines gc() only in contexts created afterwards.
    setFlags('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    // Off again (gc() stays): V8 stamps a code cache with a hash of the flags, and the one-file
    // weftd's warm cache, written after this ran, must match the flags of the next start.
    setFlags('--no-expose-gc');
    return gc;
  } catch {
    return null;
  }
}

/** The addon's trimMalloc, or null without the addon (weftd cannot program the kernel then anyway). */
function nativeTrim(): (() => void) | null {
  try {
    const addon = loadNative();
    return () => addon.trimMalloc();
  } catch {
    return null;
  }
}

/** The heap a full GC works on: every space but the young generation's. */
export function oldGenerationBytes(spaces: readonly { readonly space_name: string; readonly space_used_size: number }[]): number {
  let bytes = 0;
  for (const s of spaces) if (s.space_name !== 'new_space' && s.space_name !== 'new_large_object_space') bytes += s.space_used_size;
  return bytes;
}
