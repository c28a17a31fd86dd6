/**
 * The lease store against a real etcd (started by the test on loopback, stopped by PID), through
 * the etcd registry over its gRPC wire (etcd3; WEFT_ETCD_CLIENT=grpc): the LeaseRegistry contract
 * (helpers/registry-contract.ts).
 * Each test uses its own key prefix so they do not see each other's leases.
 */
import assert from 'node:assert/strict';
import { createEtcdRegistry } from '../../src/lease/create-registry';
import { registryContract } from './helpers/registry-contract';

registryContract('etcd lease registry and manager (real etcd)', (opts) => createEtcdRegistry(opts, 'grpc'), {
  // The watch stats are the registry's, so the gRPC wire reports them too (/metrics with WEFT_ETCD_CLIENT=grpc).
  afterMultiKeyRevision: (reg) => {
    const st = reg.stats();
    assert.ok(st.watchResponses >= 2, JSON.stringify(st));
    assert.equal(st.watchRevisionLag, 0);
    assert.ok(st.lastWatchResponseAt !== null);
  },
});
