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

/** What is read of each live object (so a test hands plain objects, no cast). */
export type ReconcilerFigures = Pick<Reconciler, 'runCounts' | 'repairCounts' | 'isUpToDate' | 'lastError' | 'applied'>;
type BackendFigures = Pick<Backend, 'type' | 'deviceName' | 'dataPath' | 'pumpCounters'>;

/** One family's live data path, as weftd holds it. */
export interface LivePath {
  readonly family: IPFamily;
  readonly backend: BackendFigures;
  readonly setup: BackendSetup;
  readonly reconciler: ReconcilerFigures | null;
}

export interface LiveState {
  readonly phase: WeftdPhase;
  readonly underlay: Underlay | null;
  readonly config: NetworkConfig | null;
  readonly lease: Lease | null;
  readonly peers: readonly Lease[];
  readonly manager: Pick<LeaseManager, 'state' | 'leaseExpiresAt'> | null;
  readonly registry: Pick<LeaseRegistry, 'stats'> | null;
  /** Primary first (see WeftdSnapshot.dataPaths). */
  readonly paths: readonly LivePath[];
  readonly nativeJoins?: number;
}

export function takeSnapshot(s: LiveState): WeftdSnapshot {
  return {
    phase: s.phase,
    underlay: s.underlay,
    config: s.config === null ? null : withoutSecrets(s.config),
    lease: s.lease,
    leaseState: s.manager?.state ?? 'idle',
    leaseExpiresAtMs: s.manager?.leaseExpiresAt?.getTime() ?? null,
    peers: s.peers,
    dataPaths: s.paths.map(pathSnapshot),
    registry: s.registry?.stats?.() ?? null,
    ...(s.nativeJoins === undefined ? {} : { nativeJoins: s.nativeJoins }),
  };
}

const redacted = new WeakMap<NetworkConfig, NetworkConfig>();

/**
 * The config as components see it: wireguard's Backend.PSK (a shared secret) replaced, in the
 * decoded Backend and in the JSON text, so no secret reaches a component (and through it a log
 * line or /status). One copy per config object, not one per snapshot.
 */
export function withoutSecrets(config: NetworkConfig): NetworkConfig {
  const psk = config.backend.raw.PSK;
  if (psk === undefined) return config;
  let out = redacted.get(config);
  if (out === undefined) {
    // `source` is the config's JSON as read from etcd: the key goes from there too.
    const source = typeof psk === 'string' && psk !== '' ? config.source.split(psk).join('(redacted)') : config.source;
    out = { ...config, source, backend: { ...config.backend, raw: { ...config.backend.raw, PSK: '(redacted)' } } };
    redacted.set(config, out);
  }
  return out;
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

export function reconcileStats(r: ReconcilerFigures): ReconcileStats {
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
