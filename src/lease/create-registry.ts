/**
 * Which etcd client weftd uses. Default: EtcdHttpLeaseRegistry (etcd's v3 JSON gateway over
 * Node's http; ~150 ms faster to start and ~20 MB smaller than etcd3 over gRPC — measured in
 * docs/performance.md). `WEFT_ETCD_CLIENT=grpc` selects EtcdLeaseRegistry (etcd3), e.g. for an
 * etcd whose gateway is disabled. etcd3 is required only then: loading it is the cost avoided.
 */
import type { DaemonOptions } from '../config/types';
import type { Logger } from '../log';
import { EtcdHttpLeaseRegistry, etcdHttpOptionsFrom } from './etcd-http-registry';
import type { LeaseRegistry } from './registry';

export type EtcdClientKind = 'http' | 'grpc';

export function etcdClientKind(env: NodeJS.ProcessEnv = process.env): EtcdClientKind {
  return env.WEFT_ETCD_CLIENT === 'grpc' ? 'grpc' : 'http';
}

export function createLeaseRegistry(opts: DaemonOptions, log: Logger, kind: EtcdClientKind = etcdClientKind()): LeaseRegistry {
  if (kind === 'grpc') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { EtcdLeaseRegistry, etcdRegistryOptionsFrom } = require('./etcd-registry') as typeof import('./etcd-registry');
    return new EtcdLeaseRegistry(etcdRegistryOptionsFrom(opts, log));
  }
  return new EtcdHttpLeaseRegistry(etcdHttpOptionsFrom(opts, log));
}
