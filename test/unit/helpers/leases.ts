/**
 * A peer's lease as the registry hands it over (the unit tests' one builder): an IPv4 subnet,
 * a PublicIP, a BackendType and its BackendData; no IPv6 half, no expiry.
 */
import { parseIPv4Cidr } from '../../../src/ip';
import type { Lease } from '../../../src/lease/types';

export interface PeerLeaseOptions {
  readonly backendType?: string;
  readonly data?: unknown;
  readonly etcdLeaseId?: string;
}

export function peerLease(subnet: string, publicIp: string, opts: PeerLeaseOptions = {}): Lease {
  const net = parseIPv4Cidr(subnet);
  if (!net) throw new Error(`peerLease: ${subnet} is not an IPv4 subnet`);
  return {
    key: subnet.replace('/', '-'), subnet: net, ipv6Subnet: null,
    attrs: { PublicIP: publicIp, PublicIPv6: null, BackendType: opts.backendType ?? '', BackendData: opts.data },
    expiration: null, etcdLeaseId: opts.etcdLeaseId ?? '7', modRevision: '1',
  };
}
