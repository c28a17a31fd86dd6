import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IdleGc } from '../../src/daemon/idle-gc';
import { FakeDaemon } from './helpers/daemon-view';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('idle GC', () => {
  it('collects once after the daemon is ready and once after a burst of peer changes has gone quiet', async () => {
    let calls = 0;
    const daemon = new FakeDaemon();
    const c = new IdleGc(40, () => calls++);
    await c.start(daemon);
    daemon.phase = 'ready';
    daemon.emit('phase', 'ready');
    await sleep(80);
    assert.equal(calls, 1);
    for (let i = 0; i < 20; i++) {
      daemon.emit('peers', []);
      await sleep(5);
    }
    assert.equal(calls, 1, 'not during the burst');
    await sleep(80);
    assert.equal(calls, 2, 'once after it');
    await c.stop();
  });
});
