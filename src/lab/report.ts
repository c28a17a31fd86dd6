/**
 * What the lab prints: the lease table and the ping matrix. Pure functions over plain data, so
 * the formats are tested without namespaces. (`weft leases` is the real lease listing; this is the
 * lab's own small view, which also maps each lease's public IP to the lab host that holds it.)
 */
import { parseIPv4Cidr } from '../ip';
import type { ContainerRecord } from './state';
import { escapeControl } from '../text';

export interface LeaseRow {
  readonly subnet: string;       // 10.5.72.0/24
  readonly publicIp: string;
  readonly backend: string;
  readonly vtepMac: string;      // '' when the backend has none
  readonly host: string;         // lab host with that underlay IP, '' if none
  /** Dual stack / IPv6-only: the key's IPv6 half (fd00:5:0:22::/64) and PublicIPv6; '' without. */
  readonly ipv6Subnet?: string;
  readonly publicIpv6?: string;
}

/**
 * Parse `etcdctl get --prefix <prefix>/subnets/ -w json` (keys and values are base64).
 * Keys that do not look like subnet keys, and unparsable values, are shown rather than dropped.
 */
export function parseLeaseDump(json: string, hostByIp: ReadonlyMap<string, string> = new Map()): LeaseRow[] {
  const doc = JSON.parse(json || '{}') as { kvs?: { key?: string; value?: string }[] };
  const rows: LeaseRow[] = [];
  for (const kv of doc.kvs ?? []) {
    const key = Buffer.from(kv.key ?? '', 'base64').toString('utf8');
    const value = Buffer.from(kv.value ?? '', 'base64').toString('utf8');
    const last = key.slice(key.lastIndexOf('/') + 1);
    const subnet = (last.split('&')[0] ?? last).replace('-', '/');
    const ipv6Subnet = (last.split('&')[1] ?? '').replace(/-(\d+)$/, '/$1');
    let attrs: {
      PublicIP?: unknown; PublicIPv6?: unknown; BackendType?: unknown;
      BackendData?: { VtepMAC?: unknown } | null; BackendV6Data?: { VtepMAC?: unknown } | null;
    } = {};
    try {
      attrs = JSON.parse(value) as typeof attrs;
    } catch {
      // keep the row with empty columns: a malformed lease is worth seeing in a lab
    }
    const publicIp = typeof attrs.PublicIP === 'string' ? attrs.PublicIP : '?';
    const publicIpv6 = typeof attrs.PublicIPv6 === 'string' ? attrs.PublicIPv6 : '';
    // An IPv6-only lease has only BackendV6Data (and PublicIP 0.0.0.0): show and map those.
    const mac = attrs.BackendData?.VtepMAC ?? attrs.BackendV6Data?.VtepMAC;
    rows.push({
      subnet,
      publicIp,
      backend: typeof attrs.BackendType === 'string' ? attrs.BackendType : '?',
      vtepMac: typeof mac === 'string' ? mac : '',
      host: hostByIp.get(publicIp) ?? hostByIp.get(publicIpv6) ?? '',
      ...(ipv6Subnet !== '' ? { ipv6Subnet, publicIpv6 } : {}),
    });
  }
  // etcd lists keys as text (10.5.100.0 before 10.5.78.0): order by address instead.
  const order = (r: LeaseRow): number => parseIPv4Cidr(r.subnet, false)?.ip ?? Number.MAX_SAFE_INTEGER;
  return rows.sort((a, b) => order(a) - order(b));
}

/** Left-aligned columns separated by two spaces. */
export function formatTable(header: readonly string[], rawRows: readonly (readonly string[])[]): string {
  // Cells hold etcd data: escaped whole (terminal injection, forged rows; src/text.ts).
  const rows = rawRows.map((r) => r.map((c) => escapeControl(c)));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export function formatLeaseTable(rows: readonly LeaseRow[]): string {
  if (rows.length === 0) return 'no leases';
  if (rows.some((r) => r.ipv6Subnet)) {
    return formatTable(
      ['SUBNET', 'IPV6 SUBNET', 'PUBLIC IP', 'PUBLIC IPV6', 'HOST', 'BACKEND', 'VTEP MAC'],
      rows.map((r) => [r.subnet, r.ipv6Subnet || '-', r.publicIp, r.publicIpv6 || '-', r.host || '-', r.backend, r.vtepMac || '-']),
    );
  }
  return formatTable(
    ['SUBNET', 'PUBLIC IP', 'HOST', 'BACKEND', 'VTEP MAC'],
    rows.map((r) => [r.subnet, r.publicIp, r.host || '-', r.backend, r.vtepMac || '-']),
  );
}

export interface PingResult {
  readonly from: string;     // 'h1-c1'
  readonly to: string;       // 'h2-c1'
  readonly target: string;   // the address pinged
  readonly ok: boolean;
  readonly attempts: number;
}

export interface PingMatrix {
  readonly nodes: readonly string[];
  readonly results: readonly PingResult[];
  readonly ok: boolean;
}

/**
 *   from \ to  h1-c1  h2-c1
 *   h1-c1        ·      ✓
 *   h2-c1        ✓      ·
 *   2/2 pairs reachable
 */
export function formatPingMatrix(m: PingMatrix): string {
  if (m.nodes.length < 2) return 'ping matrix: fewer than two containers, nothing to ping';
  const corner = 'from \\ to';
  const w0 = Math.max(corner.length, ...m.nodes.map((n) => n.length));
  const w = Math.max(5, ...m.nodes.map((n) => n.length));
  const cell = (s: string): string => (' '.repeat(Math.floor((w - 1) / 2)) + s).padEnd(w);
  const lines = [`${corner.padEnd(w0)}  ${m.nodes.map((n) => n.padEnd(w)).join('  ')}`.trimEnd()];
  for (const from of m.nodes) {
    const cells = m.nodes.map((to) => {
      if (from === to) return cell('·');
      const r = m.results.find((x) => x.from === from && x.to === to);
      return cell(r === undefined ? '?' : r.ok ? '✓' : '✗');
    });
    lines.push(`${from.padEnd(w0)}  ${cells.join('  ')}`.trimEnd());
  }
  const good = m.results.filter((r) => r.ok).length;
  const failed = m.results.filter((r) => !r.ok).map((r) => `${r.from} → ${r.to} (${r.target})`);
  lines.push(failed.length === 0
    ? `${good}/${m.results.length} pairs reachable`
    : `${good}/${m.results.length} pairs reachable; FAILED: ${failed.join(', ')}`);
  return lines.join('\n');
}

export interface HostStatus {
  readonly name: string;
  readonly ns: string;
  readonly nsPresent: boolean;
  readonly underlayIp: string;
  readonly daemon: { readonly pid: number; readonly alive: boolean } | null;
  readonly subnet: string | null;
  readonly container: ContainerRecord | null;
}

export interface LabStatus {
  readonly name: string;
  readonly prefix: string;
  readonly stateDir: string;
  readonly network: string;
  readonly backend: string;
  /** 'docker' / 'podman' when the lab runs a real runtime per host; absent or 'namespaces' for the stand-in. */
  readonly runtime?: string;
  readonly etcd: { readonly pid: number; readonly alive: boolean } | null;
  readonly namespaces: readonly { readonly name: string; readonly present: boolean }[];
  readonly hosts: readonly HostStatus[];
  readonly leases: readonly LeaseRow[] | null;   // null when etcd did not answer
  readonly leaseError: string | null;
}

/** What `weft lab status` prints. */
export function formatStatus(s: LabStatus): string {
  const runtime = s.runtime && s.runtime !== 'namespaces' ? `, containers by ${s.runtime}` : '';
  const lines = [`lab ${s.name}: network ${s.network} (${s.backend})${runtime}, namespace prefix ${s.prefix}, state ${s.stateDir}`];
  lines.push(`etcd: ${s.etcd ? `pid ${s.etcd.pid} ${s.etcd.alive ? 'running' : 'NOT RUNNING'}` : 'not started'}`);
  lines.push(formatTable(
    ['HOST', 'NAMESPACE', 'UNDERLAY', 'WEFTD', 'SUBNET', 'CONTAINER'],
    s.hosts.map((h) => [
      h.name,
      h.nsPresent ? h.ns : `${h.ns} (MISSING)`,
      h.underlayIp,
      h.daemon ? `pid ${h.daemon.pid} ${h.daemon.alive ? 'running' : 'EXITED'}` : 'not running',
      h.subnet ?? '-',
      h.container ? `${h.container.name} ${h.container.address}` : '-',
    ]),
  ));
  const missing = s.namespaces.filter((n) => !n.present).map((n) => n.name);
  lines.push(`namespaces: ${s.namespaces.length - missing.length} of ${s.namespaces.length} present` +
    (missing.length ? `; missing: ${missing.join(', ')}` : ''));
  lines.push('', 'leases:', s.leases ? formatLeaseTable(s.leases) : `unavailable: ${s.leaseError ?? 'unknown error'}`);
  return lines.join('\n');
}
