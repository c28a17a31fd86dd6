/**
 * weftd's metric families, read at scrape time from the daemon snapshot and a few counters kept
 * by the health component. Names follow Prometheus conventions (base units: seconds, bytes;
 * counters end in _total). Per-peer figures are aggregated (states, an RTT histogram): a label per
 * peer would make 1000 series per host on a 1000-host cluster; `weft status` has the per-peer view.
 */
import { readFileSync } from 'node:fs';
import type { ReconcileStats, WeftdPhase, WeftdSnapshot } from '../daemon/components';
import { REPAIR_KINDS } from '../daemon/diff';
import { countProgrammed, type Readiness } from '../health/status';
import type { PeerProbe, ProbeState } from '../probe/prober';
import { counter, gauge, Histogram, type MetricFamily, type Sample } from './exposition';

const PHASES: readonly WeftdPhase[] = ['starting', 'waiting-config', 'acquiring', 'programming', 'ready', 'stopping', 'stopped'];
const PROBE_STATES: readonly ProbeState[] = ['unknown', 'reachable', 'unreachable'];

/** Counters the health component keeps as events happen. */
export interface DaemonCounters {
  /** Peer-set changes seen (watch events and snapshots). */
  peerUpdates: number;
  /** Seconds from process start to subnet.env written / READY=1; null until then. */
  subnetEnvSeconds: number | null;
  readySeconds: number | null;
  /** Seconds from a peer change to the kernel having it. */
  readonly programming: Histogram;
  /** Probe round-trip times in seconds. */
  readonly probeRtt: Histogram;
  readonly httpRequests: Map<string, number>;
  /** Requests and connections the health server refused, by reason (a fixed set: docs/security.md). */
  readonly httpRejected: Map<HttpRejectReason, number>;
}

export type HttpRejectReason = 'bad_target' | 'body' | 'forbidden' | 'rate_limited' | 'too_many_connections';

export function newCounters(): DaemonCounters {
  return {
    peerUpdates: 0,
    subnetEnvSeconds: null,
    readySeconds: null,
    programming: new Histogram([0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
    probeRtt: new Histogram([0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]),
    httpRequests: new Map(),
    httpRejected: new Map(),
  };
}

export interface MetricsSources {
  readonly snapshot: () => WeftdSnapshot;
  readonly readiness: () => Readiness;
  readonly probes: () => readonly PeerProbe[];
  readonly probeTotals: () => { readonly sent: number; readonly received: number; readonly rounds: number; readonly skippedCycles: number } | null;
  readonly counters: DaemonCounters;
  readonly version: string;
}

export function daemonMetricFamilies(src: MetricsSources): MetricFamily[] {
  const snap = src.snapshot;
  const c = src.counters;
  const families: MetricFamily[] = [
    gauge('weft_build_info', 'weft version (value 1).', () => [{ labels: { version: src.version }, value: 1 }]),
    gauge('weft_phase', 'Daemon phase (1 for the current one).', () => {
      const p = snap().phase;
      return PHASES.map((ph) => ({ labels: { phase: ph }, value: ph === p ? 1 : 0 }));
    }),
    gauge('weft_ready', '1 when /readyz answers 200: lease held, device up, peers programmed.', () => (src.readiness().ready ? 1 : 0)),
    gauge('weft_startup_seconds', 'Seconds from process start to subnet.env written and to READY=1 (this run).', () => {
      const out: Sample[] = [];
      if (c.subnetEnvSeconds !== null) out.push({ labels: { milestone: 'subnet_env' }, value: c.subnetEnvSeconds });
      if (c.readySeconds !== null) out.push({ labels: { milestone: 'ready' }, value: c.readySeconds });
      return out;
    }),
    gauge('weft_lease_held', '1 while this host holds its subnet lease.', () => (snap().leaseState === 'held' ? 1 : 0)),
    gauge('weft_lease_expiry_timestamp_seconds', 'When the host\'s etcd lease runs out unless kept alive (Unix time); absent for a reservation.', () => {
      const at = snap().leaseExpiresAtMs;
      return at === null ? [] : [{ value: at / 1000 }];
    }),
    gauge('weft_peers_known', 'Peer leases known from etcd.', () => snap().peers.length),
    gauge('weft_peers_programmed', 'Peers whose route, neighbour and FDB entry the kernel has (last successful reconcile).', () => {
      const s = snap();
      return countProgrammed(s.peers, s.dataPaths[0]?.reconcile?.applied ?? null, s.dataPaths[1]?.reconcile?.applied ?? null);
    }),
    counter('weft_peer_updates_total', 'Peer-set changes received from the lease watch.', () => c.peerUpdates),
    c.programming.family('weft_peer_programming_seconds', 'Time from a peer change to the kernel having it.'),
    counter('weft_native_joins_total', 'Peer joins the native join path programmed as their lease arrived (--native-join), counted when the books take them in.', () => snap().nativeJoins ?? 0),
    counter('weft_reconcile_runs_total', 'Reconcile runs (diff kernel against desired state and apply).', () => primaryReconcile(snap())?.runs ?? 0),
    counter('weft_reconcile_failures_total', 'Reconcile runs in which some change failed.', () => primaryReconcile(snap())?.failed ?? 0),
    counter('weft_reconcile_repairs_total', 'Objects repaired after drift (deleted or changed by someone else), by kind.', () => {
      // Every kind, 0 included, also before the reconciler exists (a series that appears later breaks rate()).
      const r = primaryReconcile(snap())?.repairs;
      return REPAIR_KINDS.map((k) => ({ labels: { kind: k }, value: r?.[k] ?? 0 }));
    }),
    counter('weft_etcd_reconnects_total', 'Connections to etcd re-established after a failure.', () => {
      const st = snap().registry;
      return st === null ? [] : [{ value: st.reconnects }];
    }),
    counter('weft_etcd_watch_responses_total', 'Watch responses received from etcd.', () => {
      const st = snap().registry;
      return st === null ? [] : [{ value: st.watchResponses }];
    }),
    gauge('weft_etcd_watch_revision_lag', 'Store revision of the last watch response minus the last revision delivered.', () => {
      const st = snap().registry;
      return st === null ? [] : [{ value: st.watchRevisionLag }];
    }),
    gauge('weft_etcd_watch_last_response_timestamp_seconds', 'When the last watch response arrived (Unix time).', () => {
      const at = snap().registry?.lastWatchResponseAt ?? null;
      return at === null ? [] : [{ value: at / 1000 }];
    }),
    gauge('weft_datapath_info', 'What carries the overlay packets (value 1): mode kernel, userspace (VXLAN fallback pump, wireguard-go) or udp.', () => {
      const p = snap().dataPaths[0];
      return p === undefined ? [] : [{ labels: { backend: p.backend, device: p.device, mode: p.mode }, value: 1 }];
    }),
    counter('weft_fallback_pump_packets_total', 'User-space VXLAN fallback pump counters, by counter (absent with the kernel data path).', () => {
      const counters = snap().dataPaths[0]?.pumpCounters ?? {};
      return Object.entries(counters).map(([name, value]) => ({ labels: { counter: name }, value }));
    }),
    gauge('weft_probe_peers', 'Peers by address family (4: ICMP, 6: ICMPv6; a dual-stack peer counts in both) and the state of their overlay probe.', () => {
      const probes = src.probes();
      // Family 4 always (the series exist before the first probe); 6 once an IPv6 peer is probed.
      const families = probes.some((p) => p.family === 6) ? [4, 6] : [4];
      return families.flatMap((f) => PROBE_STATES.map((st) => ({
        labels: { family: String(f), state: st },
        value: probes.filter((p) => p.family === f && p.state === st).length,
      })));
    }),
    counter('weft_probe_echoes_sent_total', 'ICMP echo requests sent to peers\' overlay gateways.', () => src.probeTotals()?.sent ?? 0),
    counter('weft_probe_replies_total', 'ICMP echo replies received from peers over the overlay.', () => src.probeTotals()?.received ?? 0),
    c.probeRtt.family('weft_probe_rtt_seconds', 'Round-trip time of overlay probes.'),
    counter('weft_http_requests_total', 'Requests to the health server, by path.', () =>
      [...c.httpRequests].map(([path, value]) => ({ labels: { path }, value }))),
    counter('weft_http_rejected_total', 'Requests and connections the health server refused, by reason: bad_target, body, forbidden (detailed endpoint from a non-local client), rate_limited (POST /probe), too_many_connections (from one address).', () =>
      [...c.httpRejected].map(([reason, value]) => ({ labels: { reason }, value }))),
    ...processFamilies(),
  ];
  return families;
}

/** The primary data path's reconciler figures (dual stack: the IPv4 one, as /status reports). */
function primaryReconcile(s: WeftdSnapshot): ReconcileStats | null {
  return s.dataPaths[0]?.reconcile ?? null;
}

/** The standard process_* metrics, from /proc/self (no dependency). */
function processFamilies(): MetricFamily[] {
  // Not performance.timeOrigin: `performance` loads perf_hooks (src/clock.ts monotonicMs).
  const startSeconds = (Date.now() - process.uptime() * 1000) / 1000;
  return [
    counter('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.', () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    }),
    gauge('process_resident_memory_bytes', 'Resident memory size in bytes.', () => process.memoryUsage.rss()),
    gauge('process_private_memory_bytes', 'Private (anonymous) resident memory in bytes (RssAnon in /proc/self/status).', () => {
      const anon = procStatusKb('RssAnon');
      return anon === null ? [] : [{ value: anon * 1024 }];
    }),
    gauge('process_start_time_seconds', 'Start time of the process since the Unix epoch in seconds.', () => startSeconds),
    gauge('nodejs_heap_used_bytes', 'V8 heap in use in bytes.', () => process.memoryUsage().heapUsed),
    gauge('nodejs_heap_total_bytes', 'V8 heap reserved in bytes (used + free space V8 keeps).', () => process.memoryUsage().heapTotal),
    gauge('nodejs_external_memory_bytes', 'Memory of C++ objects bound to JavaScript (Buffers) in bytes.', () => process.memoryUsage().external),
  ];
}

/** A "<field>: N kB" line of /proc/self/status, in kB; null if absent or unreadable. */
export function procStatusKb(field: string): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}
