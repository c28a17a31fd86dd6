/**
 * One address family's half of a lease. A dual-stack lease carries two data paths: the IPv4 one
 * (key's first half, PublicIP, BackendData) and the IPv6 one (key's `&` half, PublicIPv6,
 * BackendV6Data) — flannel's Lease.Subnet/Attrs.PublicIP/BackendData and
 * Lease.IPv6Subnet/Attrs.PublicIPv6/BackendV6Data. Code that serves one family (a backend
 * instance, the peer screen) reads the lease through leaseHalf(), so there is one code path for
 * both families.
 */
import { familyOf, type IPFamily, type IPNet } from '../ip';
import type { Lease } from './types';

export interface LeaseHalf {
  /** The family's subnet; null when the lease has none (an IPv4-only lease seen for IPv6, an IPv6-only lease's 0.0.0.0/0). */
  readonly subnet: IPNet | null;
  /** PublicIP or PublicIPv6; null when absent. */
  readonly publicIP: string | null;
  /** BackendData or BackendV6Data (undefined when absent). */
  readonly backendData: unknown;
}

export function leaseHalf(lease: Lease, family: IPFamily): LeaseHalf {
  if (family === 4) {
    // An IPv6-only lease's IPv4 half is flannel's empty IP4Net (key 0.0.0.0-0): no IPv4 subnet.
    const empty = lease.subnet.prefixLen === 0 && lease.subnet.ip === 0;
    return { subnet: empty ? null : lease.subnet, publicIP: empty ? null : lease.attrs.PublicIP, backendData: lease.attrs.BackendData };
  }
  return { subnet: lease.ipv6Subnet, publicIP: lease.attrs.PublicIPv6, backendData: lease.attrs.BackendV6Data };
}

/** The family of a network, or 4 for null (callers default to IPv4). */
export function familyOrV4(net: IPNet | null | undefined): IPFamily {
  return net ? familyOf(net) : 4;
}
