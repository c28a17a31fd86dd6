/**
 * Pure: what the daemon's state means for readiness, and the status report `weft status` prints
 * (GET /status on the health port). Kept apart from the HTTP server so both are unit-tested on
 * plain snapshots.
 */
import type { DesiredState } from '../backend/backend';
import type { WeftdSnapshot } from '../daemon/components';
import { formatCidr, formatIPv4Cidr, hostAddress, netAddress, type IPNet } from '../ip';
import type { Lease } from '../lease/types';
import type { PeerProbe, ProbeState } from '../probe/prober';

/** Device state as read from /sys/class/net/<dev>/flags: up, down, missing, or unknown (unreadable). */
export type DeviceState = 'up' | 'down' | 'missing' | 'unknown';

export interface Readiness {
  readonly ready: boolean;
  /** "ready", or why not (the 503 body of /readyz). */
  readonly reason: string;
}

export interface ReadinessInput {
  readonly snapshot: WeftdSnapshot;
  readonly device: DeviceState;
  /** ms the reconciler has been behind the desired state (0 when up to date). */
  readonly behindMs: number;
  /** How long the reconciler may lag a peer change before /readyz says so. */
  readonly graceMs: number;
}

/**
 * Ready = lease held, overlay device up, peers programmed. After start-up, a peer change takes a
 * few ms to program: /readyz tolerates that for `graceMs` (so probes do not flap on every lease
 * event of a big cluster), but not a failed reconcile.
 */
export function readiness(input: ReadinessInput): Readiness {
  const s = input.snapshot;
  const notReady = (reason: string): Readiness => ({ ready: false, reason });
  switch (s.phase) {
    case 'starting':
      return notReady('starting');
    case 'waiting-config':
      return notReady('waiting for the network config in etcd');
    case 'acquiring':
      return notReady('acquiring a subnet lease');
    case 'programming':
      return notReady(`lease ${s.lease ? formatIPv4Cidr(s.lease.subnet) : '?'} held; programming routes to ${s.peers.length} peer(s)`);
    case 'stopping':
    case 'stopped':
      return notReady('shutting down');
    case 'ready':
      break;
  }
  if (s.leaseState !== 'held') return notReady(`subnet lease not held (lease state ${s.leaseState})`);
  const [primary, second] = s.dataPaths;
  const dev = (primary?.device ?? 'overlay device') + (second ? ` or ${second.device}` : '');
  if (input.device === 'missing') return notReady(`device ${dev} is missing`);
  if (input.device === 'down') return notReady(`device ${dev} is down`);
  const r = primary?.reconcile ?? null;
  if (r === null) return notReady('no reconciler');
  if (r.lastError !== null) return notReady(`programming peers failed: ${r.lastError}`);
  // Dual stack: the IPv6 path (flannel-v6.<VNI>) must not be failing either.
  const r6 = second?.reconcile ?? null;
  if (r6 !== null && r6.lastError !== null) return notReady(`programming IPv6 peers failed: ${r6.lastError}`);
  if (!r.upToDate && input.behindMs > input.graceMs) {
    return notReady(`peer changes not programmed for ${Math.round(input.behindMs)} ms`);
  }
  return { ready: true, reason: 'ready' };
}

/** Subnets (as "a.b.c.d/n") that have a route in a desired state the kernel reached. */
export function programmedSubnets(applied: DesiredState | null): Set<string> {
  const out = new Set<string>();
  if (applied === null) return out;
  for (const r of applied.routes) out.add(formatIPv4Cidr(r.dst));
  // wireguard: one route for the whole Network; a peer is programmed once the device holds it.
  for (const p of applied.wireguardPeers ?? []) for (const a of p.allowedIps) out.add(a);
  return out;
}

/** Peers whose route the kernel has (as of the last successful reconcile). */
export function countProgrammed(peers: readonly Lease[], applied: DesiredState | null, appliedV6: DesiredState | null = null): number {
  const set = programmedSubnets(applied);
  for (const k of programmedSubnets(appliedV6)) set.add(k);
  let n = 0;
  for (const p of peers) if (leaseSubnets(p).some((x) => set.has(x))) n++;
  return n;
}

/** A lease's subnets as text: its IPv4 one (unless the IPv6-only empty 0.0.0.0/0) and its IPv6 one. */
export function leaseSubnets(lease: Lease): string[] {
  const out: string[] = [];
  if (lease.subnet.prefixLen > 0 || lease.ipv6Subnet === null) out.push(formatIPv4Cidr(lease.subnet));
  if (lease.ipv6Subnet !== null) out.push(formatCidr(lease.ipv6Subnet));
  return out;
}

// ---- the status report (GET /status, `weft status --json`) -------------------------------------

export interface PeerStatus {
  readonly key: string;
  /** The IPv4 subnet; on an IPv6-only network the IPv6 one. */
  readonly subnet: string;
  /** Dual stack / IPv6-only: the IPv6 subnet; else null. */
  readonly ipv6Subnet?: string | null;
  readonly publicIp: string;
  readonly backendType: string;
  /** The kernel has this peer's route (as of the last successful reconcile). */
  readonly programmed: boolean;
  /** The probe of `subnet`'s family (IPv4; on an IPv6-only network ICMPv6). */
  readonly probe: PeerProbeStatus | null;
  /** Dual stack: the ICMPv6 probe of `ipv6Subnet`; else null. */
  readonly probeV6?: PeerProbeStatus | null;
}

export interface PeerProbeStatus {
  readonly address: string;
  readonly family: 4 | 6;
  readonly state: ProbeState;
  readonly lastRttMs: number | null;
  readonly loss: number | null;
  readonly lastProbeAt: string | null;
  readonly lastError: string | null;
}

export interface StatusReport {
  readonly version: string;
  readonly pid: number;
  readonly uptimeSeconds: number;
  readonly phase: string;
  readonly ready: boolean;
  readonly reason: string;
  readonly lease: {
    readonly key: string;
    readonly subnet: string;
    readonly publicIp: string;
    readonly state: string;
    readonly etcdLeaseId: string | null;
    /** ISO time, null for a reservation or when unknown. */
    readonly expiresAt: string | null;
  } | null;
  readonly dataPath: {
    readonly backend: string | null;
    readonly device: string | null;
    readonly deviceState: DeviceState;
    /** "kernel" (VXLAN in the kernel) or what a user-space backend reports. */
    readonly mode: string;
    readonly mtu: number | null;
    readonly underlay: string | null;
    readonly publicIp: string | null;
  };
  readonly reconcile: {
    readonly runs: number;
    readonly failed: number;
    readonly upToDate: boolean;
    readonly repairs: Readonly<Record<string, number>>;
    readonly lastError: string | null;
  } | null;
  readonly probes: {
    readonly enabled: boolean;
    readonly error: string | null;
    /** The cycle (--probe-interval), 0: on demand only. Absent from a weftd older than the flag. */
    readonly intervalSeconds?: number;
  };
  readonly peers: readonly PeerStatus[];
}

export interface StatusInput {
  readonly snapshot: WeftdSnapshot;
  readonly readiness: Readiness;
  readonly device: DeviceState;
  readonly probes: readonly PeerProbe[];
  readonly probesEnabled: boolean;
  readonly probeError: string | null;
  readonly probeIntervalSeconds: number;
  readonly version: string;
  readonly pid: number;
  readonly uptimeSeconds: number;
}

export function statusReport(input: StatusInput): StatusReport {
  const s = input.snapshot;
  const own = s.lease;
  const programmed = new Set<string>();
  for (const p of s.dataPaths) for (const k of programmedSubnets(p.reconcile?.applied ?? null)) programmed.add(k);
  const probeByKey = new Map(input.probes.map((p) => [`${p.family}|${p.key}`, p]));
  const probeStatus = (pr: PeerProbe | undefined): PeerProbeStatus | null => pr === undefined ? null : {
    address: pr.address,
    family: pr.family,
    state: pr.state,
    lastRttMs: pr.lastRttMs,
    loss: pr.loss,
    lastProbeAt: pr.lastProbeAt === null ? null : new Date(pr.lastProbeAt).toISOString(),
    lastError: pr.lastError,
  };
  const peers = [...s.peers]
    .sort((a, b) => a.subnet.ip - b.subnet.ip)
    .map((p): PeerStatus => {
      const v6only = p.subnet.prefixLen === 0 && p.ipv6Subnet !== null;
      return {
        key: p.key,
        subnet: leaseSubnets(p)[0]!,
        ipv6Subnet: p.ipv6Subnet === null ? null : formatCidr(p.ipv6Subnet),
        publicIp: p.attrs.PublicIP,
        backendType: p.attrs.BackendType,
        programmed: leaseSubnets(p).every((x) => programmed.has(x)),
        probe: probeStatus(probeByKey.get(`${v6only ? 6 : 4}|${p.key}`)),
        probeV6: v6only ? null : probeStatus(probeByKey.get(`6|${p.key}`)),
      };
    });
  const expires = s.leaseExpiresAtMs;
  const primary = s.dataPaths[0] ?? null;
  const r = primary?.reconcile ?? null;
  return {
    version: input.version,
    pid: input.pid,
    uptimeSeconds: input.uptimeSeconds,
    phase: s.phase,
    ready: input.readiness.ready,
    reason: input.readiness.reason,
    lease: own === null ? null : {
      key: own.key,
      subnet: leaseSubnets(own)[0]!,
      publicIp: own.attrs.PublicIP,
      state: s.leaseState,
      etcdLeaseId: own.etcdLeaseId,
      expiresAt: expires === null ? null : new Date(expires).toISOString(),
    },
    dataPath: {
      backend: primary?.backend ?? s.config?.backend.type ?? null,
      device: primary?.device ?? null,
      deviceState: input.device,
      mode: primary?.mode ?? 'kernel',
      mtu: primary?.setup.mtu ?? null,
      underlay: s.underlay?.ifName ?? null,
      publicIp: s.underlay?.ipv4 ?? null,
    },
    reconcile: r === null ? null : {
      runs: r.runs,
      failed: r.failed,
      upToDate: r.upToDate,
      repairs: r.repairs,
      lastError: r.lastError,
    },
    probes: { enabled: input.probesEnabled, error: input.probeError, intervalSeconds: input.probeIntervalSeconds },
    peers,
  };
}

/**
 * The address a probe of one half (`subnet`) of a peer's lease pings:
 * - vxlan, wireguard: the subnet's network address (`<subnet>.0`, `<IPv6 subnet>::`), held by the
 *   peer's flannel.<VNI> / flannel-v6.<VNI> / flannel-wg and reached through ours, so the reply
 *   comes back through the overlay too;
 * - host-gw: the first address (`<subnet>.1`, `<IPv6 subnet>::1`), the container bridge's
 *   (cni0, docker0 with --bip=FLANNEL_SUBNET) — host-gw puts no address of the subnet on the peer
 *   itself, so a peer without a bridge yet (no container started) does not answer. The echo takes
 *   our `<subnet> via <PublicIP>` route; the reply comes back over the underlay.
 */
export function probeAddress(backend: string, subnet: IPNet): string {
  return backend === 'host-gw' ? hostAddress(subnet, 1) : netAddress(subnet);
}
