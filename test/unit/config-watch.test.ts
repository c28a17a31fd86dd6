/**
 * The network config is watched, not polled (issue #14, "Idle"): a change of `<prefix>/config`
 * is reported as it happens — no timer armed for it — and re-read whenever the watch is
 * (re)established; a failed read is the only thing retried on a timer.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseNetworkConfig } from '../../src/config/network';
import { ConfigWatch } from '../../src/daemon/config-watch';
import { MemoryLeaseRegistry } from '../../src/lease/memory-registry';
import type { Logger } from '../../src/log';
import { ManualClock, RecordingNotifier, settle, waitFor } from './helpers/fakes';

const RUNNING = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const KEY = '/coreos.com/network/config';

class RecordingLog implements Logger {
  readonly lines: string[] = [];
  debug(): void {}
  info(msg: string): void {
    this.lines.push(`info ${msg}`);
  }
  warn(msg: string): void {
    this.lines.push(`warn ${msg}`);
  }
  error(msg: string): void {
    this.lines.push(`error ${msg}`);
  }
  child(): Logger {
    return this;
  }
}

/** A ManualClock that also counts the timers armed on it. */
class CountingClock extends ManualClock {
  armed: number[] = [];
  override setTimeout(fn: () => void, ms: number): number {
    this.armed.push(ms);
    return super.setTimeout(fn, ms);
  }
}

function setup(store = new MemoryLeaseRegistry()): { store: MemoryLeaseRegistry; log: RecordingLog; notifier: RecordingNotifier; clock: CountingClock; watch: ConfigWatch; reads: { n: number } } {
  store.setConfig(RUNNING);
  const log = new RecordingLog();
  const notifier = new RecordingNotifier();
  const clock = new CountingClock();
  const reads = { n: 0 };
  const watch = new ConfigWatch({
    read: () => {
      reads.n++;
      return store.getConfig();
    },
    watch: (onChange) => store.watchConfig(onChange),
    key: KEY,
    running: parseNetworkConfig(RUNNING),
    log,
    notifier,
    clock,
  });
  return { store, log, notifier, clock, watch, reads };
}

describe('ConfigWatch', () => {
  it('reports a changed config within a second of the put, with no timer armed', async () => {
    const { store, log, notifier, clock, watch } = setup();
    watch.start();
    await settle();
    assert.deepEqual(log.lines, [], 'the running config: nothing to say');
    const putAt = Date.now();
    await store.putConfig('{"Network":"10.9.0.0/16","Backend":{"Type":"vxlan"}}');
    await waitFor(() => log.lines.length > 0, 'the warning', 1000);
    assert.ok(Date.now() - putAt < 1000);
    assert.match(log.lines[0]!, /^warn network config at \/coreos.com\/network\/config changed \(Network 10\.5\.0\.0\/16 → 10\.9\.0\.0\/16; .*\) under a running weftd/);
    assert.match(notifier.messages.at(-1)!, /^STATUS WARNING: network config at \/coreos.com\/network\/config changed/);
    // An invalid value, a deletion and the value put back: each reported once, as it happens.
    await store.putConfig('{"Network": garbage');
    await waitFor(() => log.lines.length > 1, 'the invalid-config warning', 1000);
    assert.match(log.lines[1]!, /changed to an invalid value/);
    store.setConfig(null);
    await waitFor(() => log.lines.length > 2, 'the deletion warning', 1000);
    assert.match(log.lines[2]!, /was deleted/);
    await store.putConfig(' {"Backend":{"Type":"vxlan"},"Network":"10.5.0.0/16"}');
    await waitFor(() => log.lines.length > 3, 'the all-clear', 1000);
    assert.match(log.lines[3]!, /^info network config at \/coreos.com\/network\/config is back to the one weftd runs with/);
    assert.deepEqual(clock.armed, [], 'no timer: the watch reports the changes');
    await watch.stop();
  });

  it('warns once per distinct value, however often the watch fires', async () => {
    const { store, log, watch } = setup();
    watch.start();
    const changed = '{"Network":"10.9.0.0/16","Backend":{"Type":"vxlan"}}';
    for (let i = 0; i < 5; i++) await store.putConfig(changed);
    await settle();
    await watch.check();
    assert.equal(log.lines.length, 1, log.lines.join('\n'));
    await watch.stop();
  });

  it('a change during a read is read again (the read under way may predate it)', async () => {
    const store = new MemoryLeaseRegistry();
    store.setConfig(RUNNING);
    const log = new RecordingLog();
    let release: (() => void) | null = null;
    const watch = new ConfigWatch({
      // The first read takes the old value, then waits: the change lands while it is under way.
      read: async () => {
        const text = await store.getConfig();
        if (release === null) await new Promise<void>((r) => (release = r));
        return text;
      },
      watch: (onChange) => store.watchConfig(onChange),
      key: KEY, running: parseNetworkConfig(RUNNING), log, notifier: new RecordingNotifier(), clock: new CountingClock(),
    });
    watch.start();
    await waitFor(() => release !== null, 'the first read under way', 1000);
    await store.putConfig('{"Network":"10.9.0.0/16","Backend":{"Type":"vxlan"}}');
    await settle();
    release!();
    await waitFor(() => log.lines.length > 0, 'the warning from the second read', 1000);
    assert.match(log.lines[0]!, /Network 10\.5\.0\.0\/16 → 10\.9\.0\.0\/16/);
    await watch.stop();
  });

  it('a failed read is retried on the clock until etcd answers; then no timer again', async () => {
    const { store, log, clock, watch, reads } = setup();
    store.setConfig('{"Network":"10.9.0.0/16","Backend":{"Type":"vxlan"}}');
    store.setAvailable(false);
    watch.start();
    await settle();
    assert.equal(reads.n, 1, 'read when the watch is established');
    assert.deepEqual(clock.armed, [5000], 'one retry armed');
    await clock.advance(5000);
    assert.equal(reads.n, 2);
    assert.equal(clock.pending, 1, 'still failing: one retry armed, not one per failure');
    store.setAvailable(true);
    await clock.advance(5000);
    assert.equal(reads.n, 3);
    assert.equal(log.lines.length, 1);
    assert.match(log.lines[0]!, /changed \(Network/);
    assert.equal(clock.pending, 0, 'answered: nothing armed');
    await watch.stop();
  });

  it('stop() closes the watch: later changes are not read', async () => {
    const { store, watch, reads } = setup();
    watch.start();
    await settle();
    const before = reads.n;
    await watch.stop();
    await store.putConfig('{"Network":"10.9.0.0/16","Backend":{"Type":"vxlan"}}');
    await settle();
    assert.equal(reads.n, before);
  });
});
