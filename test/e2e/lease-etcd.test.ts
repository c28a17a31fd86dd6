/**
 * The lease store against a real etcd (started by the test on loopback, stopped by PID), through
 * EtcdLeaseRegistry (etcd3 over gRPC): the LeaseRegistry contract (helpers/registry-contract.ts).
 * Each test uses its own key prefix so they do not see each other's leases.
 */
import { EtcdLeaseRegistry } from '../../src/lease/etcd-registry';
import { registryContract } from './helpers/registry-contract';

registryContract('etcd lease registry and manager (real etcd)', (opts) => new EtcdLeaseRegistry(opts));
