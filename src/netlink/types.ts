/**
 * The kernel objects weft reads and writes, as plain typed values. Nothing here mentions the
 * `netlink` package: callers (backend, reconciler, underlay lookup) see these shapes only, so the
 * package can be patched or replaced behind `NetlinkClient` without touching them.
 *
 * Addresses are text (dotted quad, or canonical IPv6), MACs lower-case "aa:bb:cc:dd:ee:ff",
 * networks `IPNet` (IPv4Net or IPv6Net, see ip.ts).
 */
import type { IPNet } from '../ip';

export interface LinkInfo {
  readonly index: number;
  readonly name: string;
  /** IFF_UP (administratively up). */
  readonly up: boolean;
  readonly mtu: number;
  /** null for links without a hardware address (e.g. some tunnels). */
  readonly mac: string | null;
  /** IFLA_INFO_KIND without its trailing NUL ("vxlan", "veth", "bridge"); null for plain devices (lo, physical NICs). */
  readonly kind: string | null;
  /** Present when kind is "vxlan". */
  readonly vxlan: VxlanInfo | null;
}

export interface VxlanInfo {
  readonly vni: number;
  /** IFLA_VXLAN_LOCAL; null when unset. */
  readonly local: string | null;
  /** IFLA_VXLAN_LINK (the underlay device); null when unset. */
  readonly underlayIndex: number | null;
  /** Destination UDP port (IFLA_VXLAN_PORT, host order). */
  readonly port: number;
  readonly learning: boolean;
  readonly gbp: boolean;
}

export interface VxlanSpec {
  readonly name: string;
  readonly vni: number;
  readonly localIP: string;
  readonly underlayIndex: number;
  /** Destination UDP port; flannel's default is 8472. */
  readonly port: number;
  readonly learning: boolean;
  readonly gbp: boolean;
  readonly mtu: number;
  readonly mac: string;
}

export interface AddressEntry {
  readonly ifindex: number;
  readonly ip: string;
  readonly prefixLen: number;
}

/** An IPv4 neighbour (ARP) entry. */
export interface NeighbourEntry {
  readonly ifindex: number;
  readonly ip: string;
  readonly mac: string | null;
  /** NUD_PERMANENT: entries weft writes are permanent; the kernel's own (reachable, stale...) are not. */
  readonly permanent: boolean;
}

/** A bridge-family FDB entry (on a VXLAN device: MAC → remote VTEP). */
export interface FdbEntry {
  readonly ifindex: number;
  readonly mac: string;
  /** NDA_DST (the remote VTEP); null for entries without one. */
  readonly dst: string | null;
  readonly permanent: boolean;
  /** NTF_SELF: the entry lives in the device's own table (VXLAN), not a bridge master's. */
  readonly self: boolean;
}

export interface RouteEntry {
  /** IPv4Net for an IPv4 route, IPv6Net for an IPv6 one (see ip.ts familyOf). */
  readonly dst: IPNet;
  readonly gateway: string | null;
  /** Output interface; null for routes without one (blackhole, multipath). */
  readonly oif: number | null;
  /** RTNH_F_ONLINK: gateway taken as on-link even if no route says so. */
  readonly onlink: boolean;
  readonly table: number;
  /** RTA_PRIORITY (metric); 0 when absent. */
  readonly priority: number;
  /** rtm_protocol as a number (2 = kernel, 3 = boot, ...). */
  readonly protocol: number;
  /** rtm_type as a number (1 = unicast). */
  readonly type: number;
}

/** What the kernel answers for "how would you reach this address" (RTM_GETROUTE, not a dump). */
export interface RouteLookup {
  readonly oif: number | null;
  readonly gateway: string | null;
  readonly prefsrc: string | null;
}

/** The route being added or removed: always in the main table, unicast, metric 0 unless told. */
export interface RouteSpec {
  /** The family of `dst` is the route's family. */
  readonly dst: IPNet;
  readonly gateway: string | null;
  readonly oif: number;
  readonly onlink: boolean;
  readonly priority?: number;
}

export const MAIN_TABLE = 254;
export const RTPROT_KERNEL = 2;
export const RTN_UNICAST = 1;

/** One kernel change seen by `NetlinkClient.monitor`. */
/**
 * One kernel change notification. The optional fields say what the object is now (absent when the
 * message lacked them): enough to recognise the echo of a change we made ourselves.
 */
export type ChangeEvent =
  | { readonly kind: 'link'; readonly removed: boolean; readonly ifindex: number; readonly name: string | null }
  | { readonly kind: 'address'; readonly removed: boolean; readonly ifindex: number; readonly ip?: string | null; readonly prefixLen?: number }
  | { readonly kind: 'neighbour'; readonly removed: boolean; readonly ifindex: number; readonly ip?: string | null; readonly mac?: string | null; readonly permanent?: boolean }
  | { readonly kind: 'fdb'; readonly removed: boolean; readonly ifindex: number; readonly mac?: string | null; readonly dst?: string | null; readonly permanent?: boolean }
  | {
      readonly kind: 'route';
      readonly removed: boolean;
      readonly table: number;
      readonly oif: number | null;
      readonly dst: IPNet;
      readonly gateway?: string | null;
    };

/**
 * A coalesced batch of changes. `resync` is true when changes may have been lost (the monitor
 * socket died and was recreated, or a request socket was): the listener must re-read everything.
 */
export interface ChangeBatch {
  readonly events: readonly ChangeEvent[];
  readonly resync: boolean;
}

export interface Monitor {
  /** Stop listening; closes the monitor socket. Idempotent. */
  close(): void;
  /**
   * The interest's sets changed (the device was created again under a new ifindex): the kernel
   * filter is rebuilt and, if one was in place, the next batch says `resync` (what arrived between
   * the change and the rebuild may have been dropped by the old filter).
   */
  interestChanged?(): void;
}

/** A link by index, optionally with its name for error messages (client.ts calls it LinkRef). */
export type LinkIdentity = number | { readonly index: number; readonly name: string };

/**
 * One write of a batch (`NetlinkClient.applyWrites`): the same operations, with the same flags and
 * the same error semantics, as the methods of the same name (`replaceRoute`, `deleteFdb`...).
 */
export type KernelWrite =
  | { readonly op: 'addAddress' | 'deleteAddress'; readonly link: LinkIdentity; readonly ip: string; readonly prefixLen: number }
  | { readonly op: 'replaceNeighbour'; readonly link: LinkIdentity; readonly ip: string; readonly mac: string }
  | { readonly op: 'deleteNeighbour'; readonly link: LinkIdentity; readonly ip: string }
  | { readonly op: 'replaceFdb'; readonly link: LinkIdentity; readonly mac: string; readonly dst: string }
  | { readonly op: 'deleteFdb'; readonly link: LinkIdentity; readonly mac: string; readonly dst: string | null }
  | { readonly op: 'addRoute' | 'replaceRoute' | 'deleteRoute'; readonly spec: RouteSpec };

/**
 * The outcome of each write of a batch, in the order given: null when the kernel acknowledged it,
 * else its error (from NetlinkClient a NetlinkError naming the write and carrying its errno).
 */
export type WriteOutcomes = readonly (Error | null)[];

/**
 * What a monitor's owner cares about, so notifications about anything else are dropped from their
 * fixed header and first attributes, before they are decoded (see docs/netlink.md).
 */
export interface MonitorInterest {
  /** Routes of this table only (RTM_*ROUTE); absent: every table. */
  readonly table?: number;
  /**
   * The interfaces whose addresses, neighbours, FDB entries and routes (by output interface)
   * matter, asked at each notification; null or absent: all. Link notifications pass unless
   * `linkNames` is given.
   */
  readonly ifindexes?: () => ReadonlySet<number> | null;
  /**
   * With `ifindexes` (non-null): the links that matter are those interfaces and the links of these
   * names (a device re-created keeps its name, not its ifindex); other links' notifications (a
   * container's veth, the bridge) are dropped. Absent: every link notification passes.
   */
  readonly linkNames?: () => ReadonlySet<string>;
  /**
   * The interfaces whose addresses, neighbours and FDB entries matter, when fewer than
   * `ifindexes` (the underlay's own neighbours, cycling all the time, are not the reconciler's);
   * absent: `ifindexes`. The monitor also hands this set to the kernel as a socket filter
   * (src/netlink/bpf.ts): call `Monitor.interestChanged` when what it returns changes.
   */
  readonly objectIfindexes?: () => ReadonlySet<number> | null;
}
