/**
 * The backend contract: one small interface, one folder per implementation (flannel's
 * backend/common.go habit). A backend turns "our lease + the peers' leases" into the kernel
 * state that carries traffic. The reconciler, not the backend, applies that state.
 */
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
  readonly dst: IPv4Net;
  readonly gateway: string;
  readonly onlink: boolean;
  /** Device the route goes out of; undefined = the overlay device. */
  readonly via?: 'overlay' | 'underlay';
}

export interface DesiredState {
  /** Addresses on the overlay device: `<own subnet>.0/32`. */
  readonly addresses: readonly IPv4Net[];
  readonly neighbours: readonly DesiredNeighbour[];
  readonly fdb: readonly DesiredFdb[];
  readonly routes: readonly DesiredRoute[];
  /** Peers left out (other BackendType, undecodable BackendData...), for the caller to warn about. */
  readonly skipped?: readonly SkippedPeer[];
}

export interface SkippedPeer {
  readonly key: string;        // the lease key, e.g. "10.5.52.0-24"
  readonly reason: string;     // e.g. 'BackendType "udp" is not vxlan'
}

/** Facts about the world desired() needs but must not look up itself (it is pure). */
export interface DesiredContext {
  /**
   * PublicIPs of peers on our L2 (the kernel reaches them without a gateway through the
   * underlay). Used by vxlan DirectRouting; see VxlanBackend.onLinkPeers().
   */
  readonly onLinkPublicIPs?: ReadonlySet<string>;
}

export interface Backend {
  readonly type: string;
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
  /** Release resources held by the process. Leaves kernel state in place (restart must not cut traffic). */
  close(): Promise<void>;
}
