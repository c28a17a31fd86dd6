/**
 * One address family's half of a lease. A dual-stack lease carries two data paths: the IPv4 one
 * (key's first half, PublicIP, BackendData) and the IPv6 one (key's `&` half, PublicIPv6,
 * BackendV6Data) — flannel's Lease.Subnet/Attrs.PublicIP/BackendData and
 * Lease.IPv6Subnet/Attrs.PublicIPv6/BackendV6Data. Code that serves one family (a backend
 * instance, the peer screen) reads the lease through leaseHalf(), so there is one code path for
 * both families.
 */
import { familyOf, formatCidr, sameIPNet, type IPFamily, type IPNet } from '../ip';
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

/**
 * Whether two leases hold the same subnet in each family. The IPv6 half counts: on a re-acquired
 * dual-stack lease it can change alone (another host took only our IPv6 subnet, or the IPv6
 * range changed), and containers then hold addresses of a subnet that is no longer ours.
 */
export function sameLeaseSubnets(a: Lease, b: Lease): boolean {
  return ([4, 6] as const).every((f) => {
    const [x, y] = [leaseHalf(a, f).subnet, leaseHalf(b, f).subnet];
    return x === null || y === null ? x === y : sameIPNet(x, y);
  });
}

/** A lease's subnets for messages: "10.5.34.0/24", "10.5.34.0/24 + fd00:5:0:22::/64", "fd00:5:0:22::/64". */
export function formatLeaseSubnets(lease: Lease): string {
  const halves = ([4, 6] as const).map((f) => leaseHalf(lease, f).subnet).filter((n): n is IPNet => n !== null);
  return halves.length === 0 ? 'no subnet' : halves.map(formatCidr).join(' + ');
}
