/**
 * The backend contract: one small interface, one folder per implementation (flannel's
 * backend/common.go habit). A backend turns "our lease + the peers' leases" into the kernel
 * state that carries traffic. The reconciler, not the backend, applies that state.
 */
import type { IPv4Net, Lease } from '../lease/types';

/** The underlay: the interface and address peers reach us on. */
export interface Underlay {
  readonly ifName: string;
  readonly ifIndex: number;
  readonly ipv4: string;     // our PublicIP
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
  /** Pure: the neighbours, FDB entries and routes wanted for these peers. */
  desired(own: Lease, peers: readonly Lease[]): DesiredState;
  /** Release resources held by the process. Leaves kernel state in place (restart must not cut traffic). */
  close(): Promise<void>;
}
