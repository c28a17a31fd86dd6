/**
 * The contract between weftd's core loop and the components beside it (health server, metrics,
 * iptables rules, idle GC, peer probes): what a component is, the events it may listen to, and
 * the snapshot it reads. The snapshot is plain data — values copied out of the lease manager,
 * the reconcilers, the backends and the registry when `snapshot()` is called — so a component
 * cannot reach into (or mutate) the live objects, and a test builds one as an object literal.
 *
 * This module is a leaf: it imports only types, and nothing from daemon/weftd.ts or the
 * reconciler. Components import it; weftd.ts implements it (daemon/snapshot.ts copies the values).
 * The list of built-in components is daemon/builtin-components.ts.
 */
import type { BackendSetup, DataPathKind, DesiredState, Underlay } from '../backend/backend';
import type { NetworkConfig } from '../config/types';
import type { RepairKind } from './diff';
import type { IPFamily } from '../ip';
import type { LeaseManagerState } from '../lease/manager';
import type { RegistryStats } from '../lease/registry';
import type { Lease } from '../lease/types';

export type WeftdPhase = 'starting' | 'waiting-config' | 'acquiring' | 'programming' | 'ready' | 'stopping' | 'stopped';

/** One reconciler's figures (one per address family): what /readyz, /status and /metrics report. */
export interface ReconcileStats {
  readonly runs: number;
  /** Runs in which some change failed. */
  readonly failed: number;
  /** The kernel has the latest desired state handed to the reconciler. */
  readonly upToDate: boolean;
  /** Objects repaired after drift, by kind (every kind present). */
  readonly repairs: Readonly<Record<RepairKind, number>>;
  /** The last run's failure as text; null after a successful run. */
  readonly lastError: string | null;
  /**
   * The desired state the kernel reached at the last successful run (null before one). On the
   * wireguard backend its `wireguardPeers` carry public keys, endpoints and allowed IPs only:
   * no private or preshared key is ever part of a snapshot.
   */
  readonly applied: DesiredState | null;
}

/** One address family's data path: its backend, device, how packets are carried, its reconciler. */
export interface DataPathSnapshot {
  readonly family: IPFamily;
  /** Backend.type: "vxlan", "host-gw", "wireguard", "udp". */
  readonly backend: string;
  /** The overlay device (host-gw: the underlay's name). */
  readonly device: string;
  /** What carries the packets now: "kernel", or "userspace"/"udp" for a user-space pump. */
  readonly mode: DataPathKind;
  /** The device's MTU and the BackendData our lease announces. */
  readonly setup: BackendSetup;
  /** The user-space pump's counters; null when the backend has no pump ({} while none runs). */
  readonly pumpCounters: Readonly<Record<string, number>> | null;
  /** null until the lease is held and the reconciler exists. */
  readonly reconcile: ReconcileStats | null;
}

/** What the daemon knows now: read by components and (through GET /status) `weft status`. */
export interface WeftdSnapshot {
  readonly phase: WeftdPhase;
  readonly underlay: Underlay | null;
  readonly config: NetworkConfig | null;
  /** Our lease (as last adopted), null before the first. */
  readonly lease: Lease | null;
  /** The lease manager's state ('idle' before it exists). */
  readonly leaseState: LeaseManagerState;
  /** When our etcd lease runs out unless kept alive (ms since the epoch); null for a reservation or unknown. */
  readonly leaseExpiresAtMs: number | null;
  readonly peers: readonly Lease[];
  /**
   * One per enabled family, the primary first: IPv4 (or IPv6 on an IPv6-only network), then
   * dual stack's IPv6 path (flannel-v6.<VNI>). Empty before the devices are set up.
   */
  readonly dataPaths: readonly DataPathSnapshot[];
  /** The etcd client's figures; null before it exists or when the registry keeps none. */
  readonly registry: RegistryStats | null;
  /** Peer joins the native join path wrote (weftd.ts syncNativeJoin); absent where there is none. */
  readonly nativeJoins?: number;
}

export interface WeftdEvents {
  phase: [phase: WeftdPhase];
  /** Our lease was acquired or re-acquired (the subnet may have changed). */
  lease: [lease: Lease];
  /** The peer set changed (after the first snapshot and every event). */
  peers: [peers: readonly Lease[]];
  /**
   * Every peer change so far is in the kernel: the primary data path's reconciler finished a
   * run at the desired state and no newer peer change waits to be handed to it. Lets a component
   * time "change → programmed" without polling.
   */
  programmed: [];
}

/** The daemon as a component sees it: its phase, its events and snapshots of its state. */
export interface DaemonView {
  readonly phase: WeftdPhase;
  snapshot(): WeftdSnapshot;
  on<K extends keyof WeftdEvents>(event: K, listener: (...args: WeftdEvents[K]) => void): unknown;
}

/**
 * A part of the daemon that lives beside the core loop (health server, metrics, iptables rules,
 * peer probes). Started before anything else (so /healthz answers during start-up), stopped
 * after the core on shutdown. It reads state through `daemon.snapshot()` and reacts to events.
 * start() must not block on the network; a component's own failures are its to log and retry.
 */
export interface DaemonComponent {
  readonly name: string;
  start(daemon: DaemonView): Promise<void>;
  stop(): Promise<void>;
}
