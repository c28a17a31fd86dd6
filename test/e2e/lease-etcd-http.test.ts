/**
 * The lease store's contract tests (helpers/registry-contract.ts, also run by lease-etcd.test.ts
 * for etcd3 over gRPC) against the etcd registry over its JSON gateway wire, the lean client
 * that weftd uses by default, plus what only this client promises (watch stats, the host lease's
 * expiry). A real etcd started by the test on loopback, stopped by PID; one key prefix per test.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { createEtcdRegistry } from '../../src/lease/create-registry';
import { registryContract } from './helpers/registry-contract';

registryContract('etcd lease registry over the JSON gateway, and the manager on it (real etcd)', (opts) => createEtcdRegistry(opts, 'http'), {
  // Every event of a multi-key revision arrived; the client's watch stats show it.
  afterMultiKeyRevision: (reg) => {
    const st = reg.stats();
    assert.ok(st.watchResponses >= 2, JSON.stringify(st));
    assert.equal(st.watchRevisionLag, 0);
    assert.ok(st.lastWatchResponseAt !== null);
  },
  specific: ({ registry, newPrefix, cleanups }) => {
    it('reports the host lease\'s expiry and moves it on with each keepalive', async () => {
      const reg = registry(newPrefix());
      const hl = await reg.grantHostLease(3);
      cleanups.push(async () => hl.release());
      const first = hl.expiresAt!.getTime();
      assert.ok(first > Date.now() + 2000 && first <= Date.now() + 3100, `expires in ~3 s: ${first - Date.now()}`);
      await new Promise((r) => setTimeout(r, 1500));
      assert.ok(hl.expiresAt!.getTime() > first, 'renewed');
    });
  },
});
