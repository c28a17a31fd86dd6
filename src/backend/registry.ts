/**
 * The explicit list of built-in backends (style habit 1: a map in one file, no side-effect
 * imports). A backend type named in the network config but absent here is a config error that
 * says which types exist.
 */
import { decodeVxlanConfig } from '../config/network';
import type { NetworkConfig } from '../config/types';
import { WeftError } from '../errors';
import type { Logger } from '../log';
import type { NetlinkClient } from '../netlink/client';
import { decodeVxlanLeaseData } from '../lease/codec';
import type { Lease } from '../lease/types';
import type { Backend } from './backend';
import { VxlanBackend } from './vxlan';

export interface BackendDeps {
  readonly nl: NetlinkClient;
  readonly log: Logger;
  /** Our lease from before this process (same PublicIP), if any: vxlan keeps its VtepMAC. */
  readonly previousLease?: Lease | null;
}

type BackendFactory = (config: NetworkConfig, deps: BackendDeps) => Backend;

const BACKENDS: Readonly<Record<string, BackendFactory>> = {
  vxlan: (config, deps) =>
    new VxlanBackend({ nl: deps.nl, config: decodeVxlanConfig(config.backend), log: deps.log, vtepMac: previousVtepMac(deps.previousLease) }),
};

export function createBackend(config: NetworkConfig, deps: BackendDeps): Backend {
  const factory = BACKENDS[config.backend.type];
  if (!factory) {
    throw new WeftError(
      'CONFIG_INVALID',
      `backend type "${config.backend.type}" in the network config is not supported by this weftd; supported: ${Object.keys(BACKENDS).join(', ')}`,
    );
  }
  return factory(config, deps);
}

function previousVtepMac(lease: Lease | null | undefined): string | null {
  if (!lease || lease.attrs.BackendType !== 'vxlan') return null;
  return decodeVxlanLeaseData(lease.attrs.BackendData)?.VtepMAC ?? null;
}
