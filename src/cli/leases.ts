/**
 * `weft leases`: the subnet leases in etcd — list, watch, and the operator's three interventions:
 *
 *   weft leases [--output table|wide|json] [--watch]
 *   weft leases reserve SUBNET --public-ip IP     a key without TTL (flannel's reservation)
 *   weft leases release SUBNET                    delete a reservation
 *   weft leases revoke SUBNET --yes               end a host's etcd lease now (its key goes with it)
 *
 * Takes the same --etcd-* flags (and WEFT_/FLANNELD_ environment variables) as weftd. All etcd
 * access goes through LeaseRegistry (src/lease/registry.ts).
 */
import { parseArgs } from 'node:util';
import { decodeVxlanData } from '../backend/vxlan';
import { parseNetworkConfig } from '../config/network';
import { formatEtcdFlagsHelp, parseEtcdFlags } from '../config/options';
import type { EtcdFlags } from '../config/types';
import { describeError, WeftError } from '../errors';
import { formatCidr, formatIPv4, formatIPv4Cidr, netContainsNet, parseIPv4, parseIPv4Cidr } from '../ip';
import { escapeControl } from '../text';
import { formatSubnetKey } from '../lease/codec';
import { createLeaseRegistry } from '../lease/create-registry';
import type { LeaseRegistry, SubnetWatchEvent } from '../lease/registry';
import { isReservation, type Lease } from '../lease/types';
import type { CliIO } from './io';

export const LEASES_USAGE = `usage: weft leases [--output table|wide|json] [--watch] [--etcd-* flags]
       weft leases reserve SUBNET --public-ip IP [--force]
       weft leases release SUBNET
       weft leases revoke SUBNET --yes

Lists every subnet lease under <etcd-prefix>/subnets/: subnet, public IP, backend, VtepMAC and
when it expires ("reserved" for a key without an etcd lease).

  -o, --output FORMAT  table (default), wide (adds VNI, expiry time, etcd lease ID), json
  --json               same as --output json
  -w, --watch          after the list, print each change as it happens: joined, renewed,
                       changed, left (with --output json: one JSON object per line); Ctrl-C ends

  reserve SUBNET --public-ip IP
                       pin SUBNET to the host with public IP IP: a key without TTL, flannel's
                       reservation. A lease of that host on SUBNET becomes the reservation; a host
                       holding another subnet moves to the reservation when weftd restarts there.
                       --force: also when SUBNET does not fit the network config
  release SUBNET       delete the reservation of SUBNET (a running weftd there keeps the subnet
                       as an ordinary lease)
  revoke SUBNET --yes  revoke the etcd lease holding SUBNET now, instead of waiting up to 24 h for
                       a dead host's lease to expire; a weftd still running there takes a subnet
                       again at once

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
  /** The etcd lease ID in hex, as etcdctl shows it (`etcdctl lease timetolive <id>`); null for a reservation. */
  readonly etcdLease: string | null;
  /**
   * Who carries the host's packets: 'kernel' (kernel VXLAN), 'userspace' (weft's VXLAN fallback,
   * BackendData.WeftDatapath), 'udp' (no BackendType and not a reservation: flannel's legacy udp
   * backend); else null.
   */
  readonly dataPath: 'kernel' | 'userspace' | 'udp' | null;
  /** The key's IPv6 half ("fd00:5:0:22::/64"; dual stack, IPv6-only), else null. */
  readonly ipv6Subnet: string | null;
  /** The IPv6 device's VtepMAC (BackendV6Data), else null. */
  readonly vtepMacV6: string | null;
}

function dataPathOf(lease: Lease, vxlanOk: boolean): LeaseRow['dataPath'] {
  const t = lease.attrs.BackendType;
  if (t === 'udp' || (t === '' && !isReservation(lease))) return 'udp';
  if (t !== 'vxlan' || !vxlanOk) return null;
  const d = lease.attrs.BackendData as { WeftDatapath?: unknown };
  return d.WeftDatapath === 'userspace' ? 'userspace' : 'kernel';
}

export function leaseRow(lease: Lease, now: number): LeaseRow {
  const vx = lease.attrs.BackendType === 'vxlan' ? decodeVxlanData(lease.attrs.BackendData) : null;
  const vx6 = lease.attrs.BackendType === 'vxlan' && lease.attrs.BackendV6Data !== undefined ? decodeVxlanData(lease.attrs.BackendV6Data) : null;
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
    reserved: isReservation(lease),
    etcdLease: lease.etcdLeaseId === null ? null : BigInt(lease.etcdLeaseId).toString(16),
    dataPath: dataPathOf(lease, vx !== null && vx.ok),
    ipv6Subnet: lease.ipv6Subnet === null ? null : formatCidr(lease.ipv6Subnet),
    vtepMacV6: vx6 && vx6.ok ? vx6.value.VtepMAC : null,
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

export function formatTable(headers: readonly string[], rawRows: readonly (readonly string[])[]): string {
  // Cells hold etcd data: escaped whole (a newline in a key would forge a row).
  const rows = rawRows.map((r) => r.map((c) => escapeControl(c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

function expiresIn(r: LeaseRow): string {
  return r.reserved ? 'reserved' : r.expiresInSeconds === null ? '?' : formatDuration(r.expiresInSeconds);
}

/** "2026-11-22 01:02:03Z" (seconds precision, UTC). */
function formatTime(iso: string | null): string {
  return iso === null ? '-' : `${iso.slice(0, 10)} ${iso.slice(11, 19)}Z`;
}

export type OutputFormat = 'table' | 'wide' | 'json';

const HEADERS = ['SUBNET', 'PUBLIC IP', 'BACKEND', 'VTEP MAC', 'EXPIRES IN'];
const WIDE_HEADERS = ['SUBNET', 'PUBLIC IP', 'BACKEND', 'VTEP MAC', 'VNI', 'EXPIRES IN', 'EXPIRES AT', 'ETCD LEASE'];

function cells(r: LeaseRow, wide: boolean): string[] {
  const backend = r.dataPath === 'userspace' ? `${r.backendType} (user space)` : r.backendType || '-';
  // Dual stack: both subnets and public addresses, comma-separated; IPv6-only: the IPv6 ones
  // (its IPv4 half is flannel's empty 0.0.0.0/0, its PublicIP 0.0.0.0).
  const v6only = r.ipv6Subnet !== null && r.subnet === '0.0.0.0/0';
  const subnet = r.ipv6Subnet === null ? r.subnet : v6only ? r.ipv6Subnet : `${r.subnet},${r.ipv6Subnet}`;
  const pub = r.publicIPv6 === null || r.ipv6Subnet === null ? r.publicIp : v6only ? r.publicIPv6 : `${r.publicIp},${r.publicIPv6}`;
  const base = [subnet, pub, backend, r.vtepMac ?? r.vtepMacV6 ?? '-'];
  if (!wide) return [...base, expiresIn(r)];
  return [...base, r.vni === null ? '-' : String(r.vni), expiresIn(r), formatTime(r.expiration), r.etcdLease ?? '-'];
}

export function formatLeaseTable(rows: readonly LeaseRow[], wide = false): string {
  if (rows.length === 0) return 'no leases';
  return formatTable(wide ? WIDE_HEADERS : HEADERS, rows.map((r) => cells(r, wide)));
}

// ---------------------------------------------------------------------------------------------
// Watch: registry events → operator events (pure)

export type WatchEventKind = 'present' | 'joined' | 'renewed' | 'changed' | 'left';

export interface WatchLine {
  readonly time: string;
  readonly event: WatchEventKind;
  /** The lease as it is now (for 'left': as it was last seen, or just its subnet and key). */
  readonly lease: LeaseRow;
}

/**
 * Classifies changes against the leases seen so far. A put on a new key is a host joining; on a
 * known key, a different etcd lease is a renewal (flannel grants a new lease per renewal; weft
 * re-acquiring does too), anything else a change (new VtepMAC, public IP); a delete is a host
 * leaving (deleted, revoked, or expired).
 */
export class LeaseWatchState {
  private readonly known = new Map<string, Lease>();

  snapshot(leases: readonly Lease[]): void {
    this.known.clear();
    for (const l of leases) this.known.set(l.key, l);
  }

  /** After a watch reset: the differences between what we knew and a fresh listing. */
  resync(leases: readonly Lease[]): { kind: WatchEventKind; lease: Lease }[] {
    const out: { kind: WatchEventKind; lease: Lease }[] = [];
    const fresh = new Map(leases.map((l) => [l.key, l]));
    for (const [key, old] of this.known) if (!fresh.has(key)) out.push({ kind: 'left', lease: old });
    for (const l of leases) {
      const kind = this.classify(l);
      if (kind !== null) out.push({ kind, lease: l });
    }
    this.snapshot(leases);
    return out;
  }

  /** null: nothing an operator would call a change (the same key, lease and value again). */
  apply(ev: SubnetWatchEvent): { kind: WatchEventKind; lease: Lease } | null {
    if (ev.type === 'added') {
      const kind = this.classify(ev.lease);
      this.known.set(ev.lease.key, ev.lease);
      return kind === null ? null : { kind, lease: ev.lease };
    }
    if (ev.type === 'removed') {
      const old = this.known.get(ev.key);
      this.known.delete(ev.key);
      return { kind: 'left', lease: old ?? placeholder(ev.key, ev.subnet) };
    }
    return null;
  }

  private classify(l: Lease): WatchEventKind | null {
    const old = this.known.get(l.key);
    if (old === undefined) return 'joined';
    if (old.etcdLeaseId !== l.etcdLeaseId) return 'renewed';
    if (JSON.stringify(old.attrs) !== JSON.stringify(l.attrs)) return 'changed';
    return null;
  }
}

function placeholder(key: string, subnet: Lease['subnet']): Lease {
  return { key, subnet, ipv6Subnet: null, attrs: { PublicIP: '-', PublicIPv6: null, BackendType: '', BackendData: undefined }, expiration: null, etcdLeaseId: null, modRevision: '0' };
}

/** Column widths of streamed lines (the rows to come are unknown, so no measuring). */
const WATCH_WIDTHS = [8, 8, 18, 15, 7, 17];
const WIDE_WATCH_WIDTHS = [...WATCH_WIDTHS, 3, 10, 20];

function padCells(c: readonly string[], wide: boolean): string {
  const widths = wide ? WIDE_WATCH_WIDTHS : WATCH_WIDTHS;
  return c.map((x, i) => (i < widths.length ? escapeControl(x).padEnd(widths[i]!) : escapeControl(x))).join('  ').trimEnd();
}

/** One streamed table line: time (UTC), event, then the lease's columns. */
export function formatWatchLine(w: WatchLine, wide: boolean): string {
  return padCells([w.time.slice(11, 19), w.event, ...cells(w.lease, wide)], wide);
}

export function formatWatchHeader(wide: boolean): string {
  return padCells(['TIME', 'EVENT', ...(wide ? WIDE_HEADERS : HEADERS)], wide);
}

// ---------------------------------------------------------------------------------------------
// The command

export interface LeasesDeps {
  readonly makeRegistry: (o: EtcdFlags) => LeaseRegistry;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly now: () => number;
  /** Ends --watch; default: SIGINT or SIGTERM. */
  readonly stop?: AbortSignal;
}

const defaultDeps: LeasesDeps = { makeRegistry: (o) => createLeaseRegistry(o), env: process.env, now: Date.now };

function usage(message: string): WeftError {
  return new WeftError('CONFIG_INVALID', `${message}; run 'weft leases --help' for usage`);
}

export async function runLeasesCommand(argv: readonly string[], io: CliIO, depsIn: Partial<LeasesDeps> = {}): Promise<number> {
  const deps: LeasesDeps = { ...defaultDeps, ...depsIn };
  const { options, rest } = parseEtcdFlags(argv, deps.env);
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      strict: true,
      options: {
        json: { type: 'boolean' },
        output: { type: 'string', short: 'o' },
        watch: { type: 'boolean', short: 'w' },
        'public-ip': { type: 'string' },
        force: { type: 'boolean' },
        yes: { type: 'boolean', short: 'y' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw usage(describeError(err));
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.out(LEASES_USAGE);
    return 0;
  }
  const [sub = 'list', ...args] = positionals;
  const registry = deps.makeRegistry(options);
  try {
    switch (sub) {
      case 'list': {
        if (args.length > 0) throw usage(`unexpected argument ${JSON.stringify(args[0])}`);
        const format = outputFormat(values.json === true ? 'json' : values.output);
        return await list(registry, io, deps, format, values.watch === true);
      }
      case 'reserve':
        return await reserve(registry, io, subnetArg(sub, args), values['public-ip'], values.force === true);
      case 'release':
        return await release(registry, io, subnetArg(sub, args));
      case 'revoke':
        return await revoke(registry, io, deps, subnetArg(sub, args), values.yes === true);
      default:
        throw usage(`unknown subcommand ${JSON.stringify(sub)} (list, reserve, release, revoke)`);
    }
  } finally {
    await registry.close();
  }
}

function outputFormat(text: string | undefined): OutputFormat {
  if (text === undefined) return 'table';
  if (text === 'table' || text === 'wide' || text === 'json') return text;
  throw usage(`--output ${JSON.stringify(text)}: expected table, wide or json`);
}

function subnetArg(sub: string, args: readonly string[]): { net: Lease['subnet']; key: string; text: string } {
  if (args.length !== 1) throw usage(`weft leases ${sub} takes one SUBNET, e.g. 10.5.9.0/24`);
  const text = args[0]!.replace(/^(\d+\.\d+\.\d+\.\d+)-(\d+)$/, '$1/$2'); // the key form works too
  const net = parseIPv4Cidr(text, true);
  if (net === null) {
    const loose = parseIPv4Cidr(text, false);
    throw usage(`${JSON.stringify(args[0])} is not a subnet${loose ? ` (host bits set: did you mean ${formatIPv4Cidr(loose)}?)` : ', e.g. 10.5.9.0/24'}`);
  }
  return { net, key: formatSubnetKey(net), text: formatIPv4Cidr(net) };
}

async function list(registry: LeaseRegistry, io: CliIO, deps: LeasesDeps, format: OutputFormat, watch: boolean): Promise<number> {
  const listing = await registry.listSubnets({ expirations: true });
  const sorted = [...listing.leases].sort((a, b) => a.subnet.ip - b.subnet.ip);
  for (const bad of listing.invalid) io.err(`warning: skipping ${bad.key}: ${bad.error.message}`);
  if (!watch) {
    const rows = sorted.map((l) => leaseRow(l, deps.now()));
    io.out(format === 'json' ? JSON.stringify(rows, null, 2) : formatLeaseTable(rows, format === 'wide'));
    return 0;
  }
  return watchLeases(registry, io, deps, format, sorted, listing.revision);
}

/**
 * Print the current leases as 'present', then every change. Expiry times come from re-listing
 * with expirations (etcd has no TTL in watch events), batched: one re-list per burst of events.
 */
async function watchLeases(registry: LeaseRegistry, io: CliIO, deps: LeasesDeps, format: OutputFormat, initial: readonly Lease[], revision: string): Promise<number> {
  const stop = deps.stop ?? signalStop();
  const state = new LeaseWatchState();
  state.snapshot(initial);
  const wide = format === 'wide';
  const emit = (kind: WatchEventKind, lease: Lease): void => {
    const line: WatchLine = { time: new Date(deps.now()).toISOString(), event: kind, lease: leaseRow(lease, deps.now()) };
    io.out(format === 'json' ? JSON.stringify(line) : formatWatchLine(line, wide));
  };
  if (format !== 'json') io.out(formatWatchHeader(wide));
  for (const l of initial) emit('present', l);

  let pending: { kind: WatchEventKind; lease: Lease }[] = [];
  let flushing: Promise<void> = Promise.resolve();
  let timer: NodeJS.Timeout | null = null;
  const flush = async (): Promise<void> => {
    const batch = pending;
    pending = [];
    let expirations = new Map<string, Lease>();
    if (batch.some((e) => e.kind !== 'left' && !isReservation(e.lease))) {
      const again = await registry.listSubnets({ expirations: true }).catch(() => null);
      if (again) expirations = new Map(again.leases.map((l) => [`${l.key} ${l.etcdLeaseId}`, l]));
    }
    for (const e of batch) emit(e.kind, expirations.get(`${e.lease.key} ${e.lease.etcdLeaseId}`) ?? e.lease);
  };
  const queue = (e: { kind: WatchEventKind; lease: Lease } | null): void => {
    if (e === null) return;
    pending.push(e);
    timer ??= setTimeout(() => {
      timer = null;
      flushing = flushing.then(flush);
    }, 200);
  };

  let watch = registry.watchSubnets(String(BigInt(revision) + 1n), function handler(ev: SubnetWatchEvent): void {
    if (ev.type === 'invalid') {
      io.err(`warning: skipping ${ev.key}: ${ev.error.message}`);
    } else if (ev.type === 'reset') {
      // History compacted past us: list again, report the difference, watch on from there.
      void registry.listSubnets({ expirations: true }).then((l) => {
        for (const e of state.resync(l.leases)) queue(e);
        watch = registry.watchSubnets(String(BigInt(l.revision) + 1n), handler);
      }, (err: unknown) => io.err(`weft leases: watch ended: ${describeError(err)}`));
    } else {
      queue(state.apply(ev));
    }
  });
  await new Promise<void>((resolve) => {
    if (stop.aborted) resolve();
    stop.addEventListener('abort', () => resolve(), { once: true });
  });
  if (timer !== null) {
    clearTimeout(timer);
    flushing = flushing.then(flush);
  }
  await flushing;
  await watch.close();
  return 0;
}

function signalStop(): AbortSignal {
  const ac = new AbortController();
  const onSignal = (): void => ac.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return ac.signal;
}

async function findKey(registry: LeaseRegistry, key: string): Promise<Lease | null> {
  const listing = await registry.listSubnets({ expirations: true });
  return listing.leases.find((l) => l.key === key) ?? null;
}

async function reserve(
  registry: LeaseRegistry, io: CliIO, subnet: ReturnType<typeof subnetArg>, publicIp: string | undefined, force: boolean,
): Promise<number> {
  if (publicIp === undefined) throw usage('weft leases reserve needs --public-ip IP (the host the subnet is reserved for)');
  if (parseIPv4(publicIp) === null) throw usage(`--public-ip ${JSON.stringify(publicIp)}: not an IPv4 address`);
  await checkFitsConfig(registry, io, subnet, force);

  const listing = await registry.listSubnets();
  const existing = listing.leases.find((l) => l.key === subnet.key) ?? null;
  const otherReservations = listing.leases.filter((l) => isReservation(l) && l.attrs.PublicIP === publicIp && l.key !== subnet.key);
  for (const r of otherReservations) io.err(`warning: ${publicIp} also has a reservation for ${formatIPv4Cidr(r.subnet)}; it will use only one of them`);

  if (existing === null) {
    const created = await registry.createReservation(subnet.key, { PublicIP: publicIp, PublicIPv6: null, BackendType: '', BackendData: undefined });
    if (created === null) throw new WeftError('LEASE_CONFLICT', `reserve ${subnet.text}: another host took it just now; run weft leases to see who`);
    io.out(`reserved ${subnet.text} for ${publicIp} (${registry.prefix}/subnets/${subnet.key}, no TTL)`);
    const current = listing.leases.find((l) => l.attrs.PublicIP === publicIp && !isReservation(l));
    if (current) io.out(`${publicIp} holds ${formatIPv4Cidr(current.subnet)} now; it moves to ${subnet.text} when weftd restarts there (and releases ${formatIPv4Cidr(current.subnet)})`);
    return 0;
  }
  if (existing.attrs.PublicIP !== publicIp) {
    throw new WeftError('LEASE_CONFLICT', `reserve ${subnet.text}: it is ${isReservation(existing) ? 'reserved for' : 'leased by'} ${existing.attrs.PublicIP}; ` +
      `${isReservation(existing) ? `weft leases release ${subnet.text}` : `weft leases revoke ${subnet.text} --yes`} first if that host is gone`);
  }
  if (isReservation(existing)) {
    io.out(`${subnet.text} is already reserved for ${publicIp}`);
    return 0;
  }
  // flannel: "removing the TTL from a lease converts it to a reservation".
  const updated = await registry.updateSubnet(subnet.key, existing.attrs, null, existing.modRevision);
  if (updated === null) throw new WeftError('LEASE_CONFLICT', `reserve ${subnet.text}: the lease changed while we looked; try again`);
  io.out(`converted the lease of ${publicIp} on ${subnet.text} into a reservation (no TTL)`);
  return 0;
}

/** A reservation no host can use (wrong size, outside the Network) is almost always a typo. */
async function checkFitsConfig(registry: LeaseRegistry, io: CliIO, subnet: ReturnType<typeof subnetArg>, force: boolean): Promise<void> {
  const text = await registry.getConfig();
  if (text === null) {
    io.err(`warning: no network config at ${registry.prefix}/config; cannot check that ${subnet.text} fits it`);
    return;
  }
  let why: string | null = null;
  try {
    const cfg = parseNetworkConfig(text);
    if (cfg.network === null) why = 'the network config has no IPv4 Network';
    else if (!netContainsNet(cfg.network, subnet.net)) why = `it is outside the Network ${formatIPv4Cidr(cfg.network)}`;
    else if (subnet.net.prefixLen !== cfg.subnetLen) why = `hosts lease /${cfg.subnetLen} subnets (SubnetLen), not /${subnet.net.prefixLen}`;
    else if (subnet.net.ip < cfg.subnetMin || subnet.net.ip > cfg.subnetMax) {
      why = `it is outside SubnetMin..SubnetMax (${formatIPv4(cfg.subnetMin)}..${formatIPv4(cfg.subnetMax)})`;
    }
  } catch (err) {
    why = `the network config is invalid (${describeError(err)})`;
  }
  if (why === null) return;
  if (!force) throw new WeftError('CONFIG_INVALID', `reserve ${subnet.text}: ${why}, so no host would use this reservation; --force to write it anyway`);
  io.err(`warning: ${why}; writing the reservation anyway (--force)`);
}

async function release(registry: LeaseRegistry, io: CliIO, subnet: ReturnType<typeof subnetArg>): Promise<number> {
  const existing = await findKey(registry, subnet.key);
  if (existing === null) throw new WeftError('CONFIG_INVALID', `release ${subnet.text}: there is no reservation or lease for it`);
  if (!isReservation(existing)) {
    throw new WeftError('CONFIG_INVALID', `release ${subnet.text}: it is a lease of ${existing.attrs.PublicIP}, not a reservation; ` +
      `to take it away from that host use weft leases revoke ${subnet.text} --yes`);
  }
  if (!(await registry.deleteSubnet(subnet.key, existing.modRevision))) {
    throw new WeftError('LEASE_CONFLICT', `release ${subnet.text}: the reservation changed while we looked; try again`);
  }
  io.out(`released the reservation of ${subnet.text} for ${existing.attrs.PublicIP}`);
  return 0;
}

async function revoke(registry: LeaseRegistry, io: CliIO, deps: LeasesDeps, subnet: ReturnType<typeof subnetArg>, yes: boolean): Promise<number> {
  const existing = await findKey(registry, subnet.key);
  if (existing === null) throw new WeftError('CONFIG_INVALID', `revoke ${subnet.text}: there is no lease for it`);
  if (isReservation(existing)) {
    throw new WeftError('CONFIG_INVALID', `revoke ${subnet.text}: it is a reservation for ${existing.attrs.PublicIP} (no etcd lease); use weft leases release ${subnet.text}`);
  }
  const row = leaseRow(existing, deps.now());
  if (!yes) {
    io.err([
      `weft leases revoke ${subnet.text}: not done. This would revoke etcd lease ${row.etcdLease} of ${existing.attrs.PublicIP}` +
        `${row.expiresInSeconds === null ? '' : ` (it would expire in ${formatDuration(row.expiresInSeconds)})`}:`,
      `  - the key ${registry.prefix}/subnets/${subnet.key} and any other key on that lease are deleted now;`,
      '  - every host drops its route to the subnet: containers there become unreachable;',
      '  - if weftd still runs on that host, it takes a subnet again at once (usually the same one).',
      `Run again with --yes to do it.`,
    ].join('\n'));
    return 1;
  }
  if (!(await registry.revokeLease(existing.etcdLeaseId!))) {
    io.out(`etcd lease ${row.etcdLease} was already gone`);
    return 0;
  }
  io.out(`revoked etcd lease ${row.etcdLease}: ${subnet.text} of ${existing.attrs.PublicIP} is free`);
  return 0;
}
