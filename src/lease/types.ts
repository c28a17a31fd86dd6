/**
 * The lease model, shared by the allocator, the etcd store, the daemon and the CLI.
 * Wire formats (key, JSON) are flannel's byte for byte: see docs/flannel-compat (compat §1).
 */

/** An IPv4 network: `ip` is the network address as an unsigned 32-bit integer. */
export interface IPv4Net {
  readonly ip: number;
  readonly prefixLen: number;
}

/** An IPv6 network, kept as its canonical text form (weft does not program IPv6 yet). */
export interface IPv6Net {
  readonly ip: string; // canonical, e.g. "fc00:0:0:34::"
  readonly prefixLen: number;
}

/**
 * The JSON value stored under a subnet key. Field names and order are flannel's:
 * {"PublicIP":"10.250.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}
 * BackendData is kept as parsed JSON: each backend decodes its own (vxlan: VNI + VtepMAC; udp: absent).
 */
export interface LeaseAttrs {
  readonly PublicIP: string;
  readonly PublicIPv6: string | null;
  readonly BackendType: string;
  readonly BackendData: unknown;
  /** Dual-stack flannel writes the IPv6 backend's data here; absent (undefined) otherwise. */
  readonly BackendV6Data?: unknown;
}

/** The BackendData of a vxlan lease. v0.12 flannel omitted VNI. */
export interface VxlanLeaseData {
  readonly VNI?: number;
  readonly VtepMAC: string;
}

export interface Lease {
  /** The etcd key's last segment: "10.5.52.0-24" or "10.5.52.0-24&fc00:0:0:34::-64". */
  readonly key: string;
  readonly subnet: IPv4Net;
  readonly ipv6Subnet: IPv6Net | null;
  readonly attrs: LeaseAttrs;
  /**
   * When the key expires; null for a reservation (a key without an etcd lease). The daemon's
   * list/watch path does not look expirations up (one etcd RPC per lease), so there it is null for
   * every key: test "is a reservation" with `etcdLeaseId === null` (see isReservation()).
   * LeaseManager.listLeases() (the `weft leases` CLI) fills it in.
   */
  readonly expiration: Date | null;
  /** etcd lease ID (decimal string) the key is attached to; null for a reservation. */
  readonly etcdLeaseId: string | null;
  /** etcd mod_revision of the key, to order events. */
  readonly modRevision: string;
}

/** A change seen by the subnet watch. */
export type LeaseEvent =
  | { readonly type: 'added'; readonly lease: Lease }     // created or changed
  | {
      readonly type: 'removed';
      readonly key: string;
      readonly subnet: IPv4Net;
      /** etcd revision of the deletion, when the source knows it (watches do), to spot stale events. */
      readonly revision?: string;
    };

/** A reservation is a subnet key without an etcd lease: permanent, owned by the host whose PublicIP it holds. */
export function isReservation(lease: Lease): boolean {
  return lease.etcdLeaseId === null;
}
