/**
 * `weft leases`: every subnet lease in etcd, as a table or JSON. Takes the same --etcd-* flags
 * (and WEFT_/FLANNELD_ environment variables) as weftd.
 */
import { parseArgs } from 'node:util';
import { parseEtcdClientOptions, formatEtcdFlagsHelp } from '../config/options';
import { formatIPv4Cidr } from '../ip';
import { EtcdLeaseRegistry } from '../lease/etcd-registry';
import type { LeaseRegistry } from '../lease/registry';
import type { Lease } from '../lease/types';
import { decodeVxlanData } from '../backend/vxlan';
import type { CliIO } from './io';

export const LEASES_USAGE = `usage: weft leases [--json] [--etcd-* flags]

Lists every subnet lease under <etcd-prefix>/subnets/: subnet, public IP, backend, VtepMAC and
time to expiry ("reserved" for a key without an etcd lease).

  --json      one JSON array, for scripts
${formatEtcdFlagsHelp()}`;

export interface LeaseRow {
  readonly subnet: string;
  readonly key: string;
  readonly publicIp: string;
  readonly publicIPv6: string | null;
  readonly backendType: string;
  readonly vtepMac: string | null;
  readonly vni: number | null;
  readonly expiration: string | null;
  readonly expiresInSeconds: number | null;
  readonly reserved: boolean;
}

export function leaseRow(lease: Lease, now: number): LeaseRow {
  const vx = lease.attrs.BackendType === 'vxlan' ? decodeVxlanData(lease.attrs.BackendData) : null;
  const expiresIn = lease.expiration ? Math.max(0, Math.round((lease.expiration.getTime() - now) / 1000)) : null;
  return {
    subnet: formatIPv4Cidr(lease.subnet),
    key: lease.key,
    publicIp: lease.attrs.PublicIP,
    publicIPv6: lease.attrs.PublicIPv6,
    backendType: lease.attrs.BackendType,
    vtepMac: vx && vx.ok ? vx.value.VtepMAC : null,
    vni: vx && vx.ok ? vx.value.VNI ?? null : null,
    expiration: lease.expiration ? lease.expiration.toISOString() : null,
    expiresInSeconds: expiresIn,
    reserved: lease.etcdLeaseId === null,
  };
}

export function formatDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m${String(s).padStart(2, '0')}s`;
  return `${s}s`;
}

export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export function formatLeaseTable(rows: readonly LeaseRow[]): string {
  if (rows.length === 0) return 'no leases';
  return formatTable(
    ['SUBNET', 'PUBLIC IP', 'BACKEND', 'VTEP MAC', 'EXPIRES IN'],
    rows.map((r) => [
      r.subnet,
      r.publicIp,
      r.backendType,
      r.vtepMac ?? '-',
      r.reserved ? 'reserved' : r.expiresInSeconds === null ? '?' : formatDuration(r.expiresInSeconds),
    ]),
  );
}

export async function runLeasesCommand(
  argv: readonly string[],
  io: CliIO,
  makeRegistry: (o: ReturnType<typeof parseEtcdClientOptions>['options']) => LeaseRegistry = (o) =>
    new EtcdLeaseRegistry({
      endpoints: o.etcdEndpoints,
      prefix: o.etcdPrefix,
      caFile: o.etcdCafile,
      certFile: o.etcdCertfile,
      keyFile: o.etcdKeyfile,
      username: o.etcdUsername,
      password: o.etcdPassword,
    }),
): Promise<number> {
  const { options, rest } = parseEtcdClientOptions(argv, process.env);
  const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true });
  if (values.help) {
    io.out(LEASES_USAGE);
    return 0;
  }
  const registry = makeRegistry(options);
  try {
    const listing = await registry.listSubnets({ expirations: true });
    const now = Date.now();
    const rows = [...listing.leases].sort((a, b) => a.subnet.ip - b.subnet.ip).map((l) => leaseRow(l, now));
    for (const bad of listing.invalid) io.err(`warning: skipping ${bad.key}: ${bad.error.message}`);
    io.out(values.json ? JSON.stringify(rows, null, 2) : formatLeaseTable(rows));
    return 0;
  } finally {
    await registry.close();
  }
}
