/**
 * The backend contract: one small interface, one folder per implementation (flannel's
 * backend/common.go habit). A backend turns "our lease + the peers' leases" into the kernel
 * state that carries traffic. The reconciler, not the backend, applies that state.
 */
import type { IPFamily, IPNet } from '../ip';
import type { IPv4Net, Lease } from '../lease/types';
import type { LinkInfo } from '../netlink/types';

/** The underlay: the interface and address peers reach us on. */
export interface Underlay {
  readonly ifName: string;
  readonly ifIndex: number;
  readonly ipv4: string;     // our PublicIP
  /**
   * The interface's own IPv4 address: the VXLAN device's local address. Differs from `ipv4` only
   * when --public-ip is given (NAT); absent means the same as `ipv4`.
   */
  readonly ifaceIPv4?: string;
  /**
   * Our PublicIPv6 (--public-ipv6, else the interface's global IPv6 address); absent/null when
   * IPv6 is off or the interface has none. On an IPv6-only network `ipv4` is "0.0.0.0".
   */
  readonly ipv6?: string | null;
  /** The interface's own IPv6 address: the IPv6 VXLAN device's local address (absent: `ipv6`). */
  readonly ifaceIPv6?: string | null;
  readonly mtu: number;
}

/** What setup() returns, to be written into our lease and into subnet.env. */
export interface BackendSetup {
  readonly backendType: string;       // lease BackendType
  readonly backendData: unknown;      // lease BackendData (vxlan: { VNI, VtepMAC })
  readonly mtu: number;               // FLANNEL_MTU
}

/** Kernel objects weft owns, keyed so the reconciler can diff desired against actual. */
export interface DesiredNeighbour { readonly ip: string; readonly mac: string }        // permanent ARP entry on the overlay device
export interface DesiredFdb { readonly mac: string; readonly dst: string }            // FDB entry on the vxlan device
export interface DesiredRoute {
  /** Either family (IPv6 for a backend with `family` 6). */
  readonly dst: IPNet;
  /** null: a device route without gateway (legacy udp's one route for the whole Network). */
  readonly gateway: string | null;
  readonly onlink: boolean;
  /** Device the route goes out of; undefined = the overlay device. */
  readonly via?: 'overlay' | 'underlay';
}

/**
 * A forwarding entry of a user-space data path (the pump): frames for VtepMAC `mac` (VXLAN
 * fallback) or packets into `subnet` (legacy udp) go to PublicIP `dst`.
 */
export type DesiredPumpEntry =
  | { readonly kind: 'mac'; readonly mac: string; readonly dst: string }
  | { readonly kind: 'subnet'; readonly subnet: IPv4Net; readonly dst: string };

export interface DesiredState {
  /** Addresses on the overlay device: `<own subnet>.0/32`. */
  readonly addresses: readonly IPNet[];
  readonly neighbours: readonly DesiredNeighbour[];
  readonly fdb: readonly DesiredFdb[];
  readonly routes: readonly DesiredRoute[];
  /**
   * Present when the device's forwarding table lives in the user-space pump instead of the
   * kernel (VXLAN fallback, legacy udp): the reconciler hands it to `Backend.applyPump()` before
   * adding routes, and neither reads nor writes kernel FDB entries on the device (`fdb` is empty).
   */
  readonly pump?: readonly DesiredPumpEntry[];
  /**
   * Present for the wireguard backend: the WireGuard peers the device must hold (exactly these;
   * others are removed). The reconciler hands it to `Backend.applyWireguardPeers()` before
   * adding routes, on every full run; the backend also re-reads the device between runs, since
   * neither the kernel nor wireguard-go notifies peer changes.
   */
  readonly wireguardPeers?: readonly DesiredWireguardPeer[];
  /** Peers left out (other BackendType, undecodable BackendData...), for the caller to warn about. */
  readonly skipped?: readonly SkippedPeer[];
}

/** A WireGuard peer (keys base64). PSK and keepalive are the backend's own config, not per peer. */
export interface DesiredWireguardPeer {
  readonly publicKey: string;
  readonly endpoint: string;              // "<PublicIP>:<ListenPort>"
  readonly allowedIps: readonly string[]; // the peer's subnet(s), CIDR
  readonly leaseKey: string;              // for log lines
}

export interface SkippedPeer {
  readonly key: string;        // the lease key, e.g. "10.5.52.0-24"
  readonly reason: string;     // e.g. 'BackendType "udp" is not vxlan'
}

/** Facts about the world desired() needs but must not look up itself (it is pure). */
export interface DesiredContext {
  /**
   * PublicIPs of peers on our L2 (the kernel reaches them without a gateway through the
   * underlay). Used by vxlan DirectRouting and host-gw; see Backend.onLinkPeers().
   */
  readonly onLinkPublicIPs?: ReadonlySet<string>;
  /**
   * The flannel Network and SubnetLen: a peer lease outside the Network, or of another length
   * (which could cover other hosts' subnets, or the underlay), is never programmed. Absent: no check.
   */
  readonly network?: IPNet | null;
  readonly subnetLen?: number;
  /**
   * Networks connected to the underlay interface (its IPv4 addresses with their prefix): a peer
   * subnet overlapping one is never routed into the overlay (see screen.ts). Absent: no check.
   */
  readonly underlayNetworks?: readonly IPNet[];
  /** Addresses that must stay reachable over the underlay (etcd endpoints): a peer subnet covering one is skipped. */
  readonly protectedIPs?: readonly string[];
}

/** The kernel objects one peer contributes to a DesiredState (DirectRouting: only a route). */
export interface PeerObjects {
  readonly neighbours: readonly DesiredNeighbour[];
  readonly fdb: readonly DesiredFdb[];
  readonly routes: readonly DesiredRoute[];
}

/** One peer judged by a backend's own checks (after the shared screen): its objects, or why it is skipped. */
export type PeerVerdict =
  | { readonly skip: string }
  | {
      readonly objects: PeerObjects;
      /**
       * A value no two accepted peers may share (vxlan: the VtepMAC): of two leases with the
       * same tag the first by key wins, the other is skipped with `clashReason`. Absent: none.
       */
      readonly tag?: string;
    };

/**
 * desired() split per peer, for an O(change) lease event (daemon/desired-delta.ts): desired(own,
 * peers, ctx) must equal what these rules give peer by peer after the shared screen (screen.ts),
 * in key order, with peers sharing a tag refused after the first. Only backends whose whole
 * desired state is such objects offer it (not a pump's table nor WireGuard's peer list).
 */
export interface PeerRules {
  /** The address family of the lease halves the rules read. */
  readonly family: IPFamily;
  /** Our underlay interface's address when it differs from our PublicIP (screenPeers' ownIfaceIP). */
  readonly ownIfaceIP?: string;
  /** The objects not tied to a peer: our address(es) on the overlay device. */
  readonly addresses: readonly IPNet[];
  /** The backend's checks and objects for one peer that passed the shared screen. Pure. */
  peer(peer: Lease): PeerVerdict;
  /** Why a peer whose tag an earlier accepted lease (`ownerKey`) holds is skipped. */
  clashReason(tag: string, ownerKey: string): string;
}

export interface Backend {
  readonly type: string;
  /**
   * The address family this backend instance carries (default 4). Dual stack runs one instance
   * per family (vxlan: `flannel.<VNI>` and `flannel-v6.<VNI>`), each with its own Reconciler.
   */
  readonly family?: IPFamily;
  /** Name of the overlay device this backend owns (e.g. "flannel.1"). */
  readonly deviceName: string;
  /**
   * Make the overlay device exist and be up with the right parameters, reusing a compatible one
   * (and its MAC) and replacing an incompatible one (logging why). Runs before the lease is
   * acquired (the VtepMAC goes into the lease), so it sets no address: desired() carries that.
   * Idempotent: the reconciler calls it again whenever the device is found missing or changed.
   */
  ensureDevice(underlay: Underlay): Promise<BackendSetup>;
  /**
   * Optional, pure: why an existing, up device no longer matches what ensureDevice() last set up
   * (MAC or MTU changed by hand, replaced by an incompatible device), or null. The reconciler
   * calls ensureDevice() again when this returns a reason.
   */
  deviceProblem?(link: LinkInfo): string | null;
  /** Pure: the address, neighbours, FDB entries and routes wanted for these peers. */
  desired(own: Lease, peers: readonly Lease[], ctx?: DesiredContext): DesiredState;
  /**
   * Optional: desired() as per-peer rules (PeerRules), so a lease event costs one peer's work.
   * null when the data path in use cannot be described per peer (a user-space pump): the daemon
   * then recomputes desired() as a whole. `ctx` is read when a peer is judged, not copied.
   */
  peerRules?(own: Lease, ctx: DesiredContext): PeerRules | null;
  /**
   * True for a backend without an overlay device (host-gw): desired() wants only routes out of
   * the underlay (`via: 'underlay'`), `deviceName` names the underlay, and the reconciler never
   * creates, repairs or dumps a device — it checks that the underlay exists and is up, calls
   * ensureDevice() for the setup, and owns the underlay's gateway routes into the Network.
   */
  readonly deviceless?: boolean;
  /**
   * Optional: which peers' PublicIPs the kernel reaches without a gateway through the underlay
   * (DesiredContext.onLinkPublicIPs). The daemon calls it when the peer set changes (route
   * lookups: not per reconcile). vxlan DirectRouting and host-gw use it.
   */
  onLinkPeers?(peers: readonly Lease[], underlay: Underlay): Promise<ReadonlySet<string>>;
  /**
   * Backends with a user-space data path: install `entries` (DesiredState.pump) as the pump's
   * peer table, replacing the previous one without stopping traffic. Called by the reconciler on
   * every reconcile whose desired state has `pump`; synchronous, idempotent, cheap.
   */
  applyPump?(entries: readonly DesiredPumpEntry[]): void;
  /**
   * The wireguard backend: make the device's peers exactly `peers` (DesiredState.wireguardPeers),
   * changing only what differs. Called by the reconciler on every full reconcile that has them.
   */
  applyWireguardPeers?(peers: readonly DesiredWireguardPeer[]): Promise<void>;
  /**
   * What carries the packets now (`weft status` shows it): 'kernel' (also when absent),
   * 'userspace' (the VXLAN fallback pump) or 'udp' (flannel's legacy udp framing, pump).
   */
  readonly dataPath?: DataPathKind;
  /** Details for metrics and logs: why the fallback, the pump's counters and health. */
  dataPathInfo?(): DataPathInfo;
  /** The pump's counters (NativePumpCounters) for /metrics; empty while no pump runs. */
  pumpCounters?(): Readonly<Record<string, number>>;
  /** Release resources held by the process. Leaves kernel state in place (restart must not cut traffic). */
  close(): Promise<void>;
}

/** A backend with the on-link-peers capability (vxlan with or without the fallback, host-gw). */
export type OnLinkPeersBackend = Backend & Required<Pick<Backend, 'onLinkPeers'>>;

/**
 * Type guard for the optional onLinkPeers capability: callers ask what a backend can do, never
 * which class it is (the VXLAN fallbacks are no VxlanBackend).
 */
export function hasOnLinkPeers(b: Backend | null | undefined): b is OnLinkPeersBackend {
  return typeof b?.onLinkPeers === 'function';
}

export type DataPathKind = 'kernel' | 'userspace' | 'udp';

/** The data path a backend uses now, with the pump's counters when it is user space. */
export interface DataPathInfo {
  readonly kind: DataPathKind;
  readonly device: string;
  /** Why the fallback was chosen ('forced' or the kernel's error), null for kernel VXLAN. */
  readonly reason: string | null;
  /** Counters of the pump (see NativePumpCounters), null for kernel VXLAN. */
  readonly counters: Readonly<Record<string, number>> | null;
  /** The pump's threads run (false after a fatal error until the device is set up again). */
  readonly running: boolean;
}
