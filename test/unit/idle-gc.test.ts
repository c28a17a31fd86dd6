import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { IDLE_GC_MIN_GROWTH_BYTES, IdleGc, fullGc, oldGenerationBytes } from '../../src/daemon/idle-gc';
import { procStatusKb } from '../../src/metrics/daemon-metrics';
import { loadNative } from '../../src/native';
import { FakeDaemon } from './helpers/daemon-view';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const MB = 1024 * 1024;

/** A heap whose old generation the test sets; a collection frees what the test says it frees. */
class FakeHeap {
  old = 6 * MB;
  freedByGc = 0.5 * MB;
  collections = 0;
  /** Trims of the C heap, and how many collections had run at each. */
  trimsAfter: number[] = [];
  collect = (): void => {
    this.collections++;
    this.old -= this.freedByGc;
  };
  trimMalloc = (): void => {
    this.trimsAfter.push(this.collections);
  };
  oldGenerationBytes = (): number => this.old;
}

async function ready(heap: FakeHeap, quietMs = 40): Promise<{ daemon: FakeDaemon; gc: IdleGc }> {
  const daemon = new FakeDaemon();
  const gc = new IdleGc({ quietMs, collect: heap.collect, oldGenerationBytes: heap.oldGenerationBytes, trimMalloc: heap.trimMalloc, trimAfterMs: 10 });
  await gc.start(daemon);
  daemon.phase = 'ready';
  daemon.emit('phase', 'ready');
  return { daemon, gc };
}

describe('idle GC', () => {
  it('collects once after the daemon is ready and once after a burst of peer changes has gone quiet', async () => {
    const heap = new FakeHeap();
    const { daemon, gc } = await ready(heap);
    await sleep(80);
    assert.equal(heap.collections, 1, 'after start-up, always');
    for (let i = 0; i < 20; i++) {
      daemon.emit('peers', []);
      heap.old += 0.1 * MB; // a burst: 2 MB retained over 20 changes
      await sleep(5);
    }
    assert.equal(heap.collections, 1, 'not during the burst');
    await sleep(80);
    assert.equal(heap.collections, 2, 'once after it');
    assert.deepEqual(heap.trimsAfter, [1, 2], 'the C heap trimmed after each collection');
    await gc.stop();
  });

  it('does not collect after a change that left less than the threshold behind: a full GC for one join cost 10–20× the join', async () => {
    const heap = new FakeHeap();
    const { daemon, gc } = await ready(heap);
    await sleep(80);
    assert.equal(heap.collections, 1);
    // Single joins, each quiet period apart, each retaining 0.3 MB: nothing until 1 MB has grown.
    for (let i = 1; i <= 3; i++) {
      daemon.emit('peers', []);
      heap.old += 0.3 * MB;
      await sleep(80);
      assert.equal(heap.collections, 1, `after change ${i}: ${(i * 0.3).toFixed(1)} MB grown`);
    }
    daemon.emit('peers', []);
    heap.old += 0.3 * MB;
    await sleep(80);
    assert.equal(heap.collections, 2, '1.2 MB grown since the last collection: collected');
    // Measured from what the collection left, not from the start.
    daemon.emit('peers', []);
    heap.old += 0.3 * MB;
    await sleep(80);
    assert.equal(heap.collections, 2);
    assert.deepEqual(heap.trimsAfter, [1, 2], 'no trim without a collection: the Buffers it frees are what a trim returns');
    await gc.stop();
  });

  it('the default threshold is 1 MiB', () => {
    assert.equal(IDLE_GC_MIN_GROWTH_BYTES, MB);
  });

  it('counts every heap space but the young generation (scavenges empty it; a full GC works on the rest)', () => {
    const spaces = [
      { space_name: 'read_only_space', space_used_size: 1 },
      { space_name: 'new_space', space_used_size: 1000 },
      { space_name: 'old_space', space_used_size: 10 },
      { space_name: 'code_space', space_used_size: 100 },
      { space_name: 'large_object_space', space_used_size: 10000 },
      { space_name: 'new_large_object_space', space_used_size: 100000 },
    ];
    assert.equal(oldGenerationBytes(spaces), 10111);
    // Node's own figures have these names: the real heap is counted, and is more than nothing.
    const real = getHeapSpaceStatistics();
    assert.ok(real.some((s) => s.space_name === 'new_space') && real.some((s) => s.space_name === 'old_space'), real.map((s) => s.space_name).join(','));
    assert.ok(oldGenerationBytes(real) > 0);
  });

  it("the addon's trimMalloc gives the C heap's free pages back to the kernel (what a full GC leaves behind)", async () => {
    const trimMalloc = (): boolean => loadNative().trimMalloc();
    const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;
    if (glibc === undefined) {
      assert.equal(trimMalloc(), false, 'no glibc: nothing to call, nothing released');
      return;
    }
    const collect = fullGc(setFlagsFromString);
    assert.ok(collect !== null, 'V8 gives a full GC');
    const privateBytes = (): number => (procStatusKb('RssAnon') ?? NaN) * 1024;
    // A burst's pattern: Buffers (malloc'd backing stores) of which every other one is kept, so
    // the freed chunks sit between live ones, where glibc never returns memory by itself.
    const burst = (): Buffer[] => {
      const kept: Buffer[] = [];
      for (let i = 0; i < 2000; i++) {
        const b = Buffer.allocUnsafeSlow(16 * 1024).fill(i);
        if (i % 2 === 0) kept.push(b);
      }
      return kept;
    };
    trimMalloc();
    const kept = burst();
    // On later ticks, as IdleGc's timers run: the burst's frame (whose interpreter registers may
    // still point at a dropped Buffer) is gone, and V8 frees backing stores on a helper thread
    // after the collection (concurrent ArrayBuffer sweeping), so the pages come free a little later.
    let released = 0;
    for (let attempt = 0; attempt < 40 && released < 4 * MB; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      collect();
      await new Promise((resolve) => setTimeout(resolve, 50));
      const before = privateBytes();
      trimMalloc();
      released += before - privateBytes();
    }
    assert.ok(released >= 4 * MB, `glibc ${glibc}: trims released ${(released / MB).toFixed(1)} MB within 4 s (up to ~12 MB: the whole free pages between 1000 live 16 KiB Buffers; an already trimmed heap gives ~0.2)`);
    assert.equal(kept.length, 1000, 'the kept half lives until after the measurement');
  });
});
