/**
 * The one place an etcd registry is made (weftd and every CLI command), so the CLI sees etcd
 * exactly as the daemon does. One registry (etcd-registry.ts) over one of two wires: etcd's v3
 * JSON gateway over Node's http (default; ~150 ms faster to start and ~20 MB smaller than etcd3
 * over gRPC — measured in docs/performance.md), or `WEFT_ETCD_CLIENT=grpc`: etcd3 over gRPC,
 * e.g. for an etcd whose gateway is disabled. etcd3 is required only then: loading it is the
 * cost avoided.
 */
import type { DaemonOptions, EtcdFlags } from '../config/types';
import type { Logger } from '../log';
import { etcdClientOptionsFrom, type EtcdClientOptions } from './etcd-common';
import { EtcdHttpWire } from './etcd-http-wire';
import { EtcdLeaseRegistry } from './etcd-registry';
import type { EtcdWire } from './etcd-wire';

export type EtcdClientKind = 'http' | 'grpc';

export function etcdClientKind(env: NodeJS.ProcessEnv = process.env): EtcdClientKind {
  return env.WEFT_ETCD_CLIENT === 'grpc' ? 'grpc' : 'http';
}

/** Throws WeftError('CONFIG_INVALID') for unreadable TLS files, bad endpoint lists, TLS files with http://. */
export function createEtcdRegistry(opts: EtcdClientOptions, kind: EtcdClientKind = etcdClientKind()): EtcdLeaseRegistry {
  let wire: EtcdWire;
  if (kind === 'grpc') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { EtcdGrpcWire } = require('./etcd-grpc-wire') as typeof import('./etcd-grpc-wire');
    wire = new EtcdGrpcWire(opts);
  } else {
    wire = new EtcdHttpWire(opts);
  }
  return new EtcdLeaseRegistry(wire, opts);
}

/** The registry weftd's (or a CLI command's) `--etcd-*` flags describe. */
export function createLeaseRegistry(
  opts: EtcdFlags & Partial<Pick<DaemonOptions, 'subnetLeaseRenewMarginMinutes'>>,
  log?: Logger,
  kind: EtcdClientKind = etcdClientKind(),
): EtcdLeaseRegistry {
  return createEtcdRegistry(etcdClientOptionsFrom(opts, log), kind);
}
