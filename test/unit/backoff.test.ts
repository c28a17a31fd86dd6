import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff } from '../../src/backoff';

describe('Backoff (every retry loop: lease, keepalive, watch, reconcile, netlink monitor)', () => {
  it('starts at initialMs and doubles up to maxMs, then stays there', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000 });
    assert.deepEqual(Array.from({ length: 7 }, () => b.next()), [100, 200, 400, 800, 1000, 1000, 1000]);
    assert.equal(b.attempts, 7);
  });

  it('starts again from initialMs after reset()', () => {
    const b = new Backoff({ initialMs: 500, maxMs: 5000 });
    b.next();
    b.next();
    b.reset();
    assert.equal(b.attempts, 0);
    assert.equal(b.next(), 500);
  });

  it('spreads each delay by ±jitter around its base, rounded', () => {
    const lo = new Backoff({ initialMs: 1000, maxMs: 4000, jitter: 0.25, random: () => 0 });
    const hi = new Backoff({ initialMs: 1000, maxMs: 4000, jitter: 0.25, random: () => 0.999 });
    assert.deepEqual([lo.next(), lo.next(), lo.next(), lo.next()], [750, 1500, 3000, 3000]);
    assert.deepEqual([hi.next(), hi.next(), hi.next()], [1250, 2499, 4998]);
  });

  it('never exceeds maxMs before jitter, even when initialMs is above it', () => {
    const b = new Backoff({ initialMs: 9000, maxMs: 5000 });
    assert.equal(b.next(), 5000);
  });
});
