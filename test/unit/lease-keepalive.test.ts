import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { keepaliveTiming as timing } from '../../src/lease/etcd-common';

describe('keepaliveTiming (--subnet-lease-ttl, --subnet-lease-renew-margin)', () => {
  // One timing for both wires: the keepalive loop lives once, in the registry (etcd-registry.ts).
  {
    const name = 'both wires';
    it(`${name}: renews every TTL/3 with flannel's defaults (24 h, 60 min): the margin only ever brings renewal earlier`, () => {
      assert.equal(timing(86_400, 3600).intervalMs, 8 * 3600 * 1000);
      assert.equal(timing(86_400, null).intervalMs, 8 * 3600 * 1000);
    });

    it(`${name}: renews at expiry minus the margin when that is sooner than TTL/3`, () => {
      assert.equal(timing(3600, 50 * 60).intervalMs, 10 * 60 * 1000);
    });

    it(`${name}: never renews more often than every second, even when the margin exceeds the TTL`, () => {
      assert.equal(timing(11, 3600).intervalMs, 1000);
      assert.equal(timing(11, null).intervalMs, 11_000 / 3);
    });

    it(`${name}: retries a failed renewal with a bounded backoff, tighter for short TTLs`, () => {
      assert.deepEqual(
        { ...timing(86_400, 3600), intervalMs: 0 },
        { intervalMs: 0, timeoutMs: 5000, retryMinMs: 500, retryMaxMs: 5000 },
      );
      assert.equal(timing(11, null).retryMaxMs, 2750);
      assert.equal(timing(11, null).timeoutMs, 11_000 / 3);
    });
  }
});
