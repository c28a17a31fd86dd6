/**
 * Copies the daemon's live objects (lease manager, backends, reconcilers, registry) into the
 * plain-data WeftdSnapshot of daemon/components.ts. The only module besides weftd.ts that reads
 * them for components; everything it returns is a value (the applied DesiredState is shared, not
 * copied: it is immutable once handed to the reconciler, and copying 1000 peers per /readyz
 * poll would cost more than the poll).
 */
import type { Backend, BackendSetup, Underlay } from '../backend/backend';
import type { NetworkConfig } from '../config/types';
import type { IPFamily } from '../ip';
import type { LeaseManager } from '../lease/manager';
import type { LeaseRegistry } from '../lease/registry';
import type { Lease } from '../lease/types';
import type { DataPathSnapshot, ReconcileStats, WeftdPhase, WeftdSnapshot } from './components';
import type { Reconciler } from './reconciler';

/** One family's live data path, as weftd holds it. */
export interface LivePath {
  readonly family: IPFamily;
  readonly backend: Backend;
  readonly setup: BackendSetup;
  readonly reconciler: Reconciler | null;
}

export interface LiveState {
  readonly phase: WeftdPhase;
  readonly underlay: Underlay | null;
  readonly config: NetworkConfig | null;
  readonly lease: Lease | null;
  readonly peers: readonly Lease[];
  readonly manager: LeaseManager | null;
  readonly registry: LeaseRegistry | null;
  /** Primary first (see WeftdSnapshot.dataPaths). */
  readonly paths: readonly LivePath[];
}

export function takeSnapshot(s: LiveState): WeftdSnapshot {
  return {
    phase: s.phase,
    underlay: s.underlay,
    config: s.config,
    lease: s.lease,
    leaseState: s.manager?.state ?? 'idle',
    leaseExpiresAtMs: s.manager?.leaseExpiresAt?.getTime() ?? null,
    peers: s.peers,
    dataPaths: s.paths.map(pathSnapshot),
    registry: s.registry?.stats?.() ?? null,
  };
}

function pathSnapshot(p: LivePath): DataPathSnapshot {
  const b = p.backend;
  return {
    family: p.family,
    backend: b.type,
    device: b.deviceName,
    mode: b.dataPath ?? 'kernel',
    setup: p.setup,
    pumpCounters: b.pumpCounters ? { ...b.pumpCounters() } : null,
    reconcile: p.reconciler === null ? null : reconcileStats(p.reconciler),
  };
}

export function reconcileStats(r: Reconciler): ReconcileStats {
  const err = r.lastError;
  return {
    runs: r.runCounts.runs,
    failed: r.runCounts.failed,
    upToDate: r.isUpToDate,
    repairs: r.repairCounts,
    lastError: err === null ? null : err instanceof Error ? err.message : String(err),
    applied: r.applied,
  };
}
