#!/usr/bin/env node
/**
 * weft's data-path benchmark: `npm run bench:dataplane` (as root; builds first) or
 * `node dist/bench/dataplane.js [--seconds N] [--runs N] [--out FILE]`.
 *
 * In one run, on 2-host labs of network namespaces (the same Lab as the e2e tests), one iperf3
 * TCP stream per measurement, median of --runs runs of --seconds each:
 *   underlay        host ↔ host over the veth underlay, no overlay
 *   kernel VXLAN    container ↔ container, both hosts on kernel VXLAN
 *   fallback        h1 on the user-space VXLAN fallback (TAP + pump), h2 on kernel VXLAN:
 *                   h1 → h2 (the pump sends) and h2 → h1 (the pump receives)
 *   fallback ×2     both hosts on the fallback
 *   legacy udp      both hosts on flannel's udp backend (TUN + pump)
 *   host-gw         both hosts on host-gw (plain routes via the peer's PublicIP: no encapsulation,
 *                   so it should sit at the underlay's figure), over IPv4 and IPv6 (dual-stack lab)
 *   VXLAN over IPv6 kernel VXLAN's flannel-v6.<VNI> on a dual-stack lab, container IPv6 ↔ IPv6
 *   wireguard       both hosts on the wireguard backend; on a kernel without WireGuard (this
 *                   machine) that is wireguard-go in user space, whose CPU counts as weftd's
 * and, over each measurement, the CPU of the weftd processes (where the pump threads run; % of
 * one core, both hosts together) and of the whole machine (all cores; the kernel data path's
 * work shows up only here, as softirq time). Prints a table with each path's ratio to kernel
 * VXLAN in the same direction, and the target (fallback ≥ 30 % of kernel VXLAN).
 * Namespaces are prefixed wd<pid>- and deleted at the end, also on failure.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Lab, requireRoot } from '../src/lab';

interface Figure {
  readonly path: string;
  readonly direction: string;
  readonly gbps: number;
  readonly runs: readonly number[];
  /** weftd processes (both hosts), % of one core. */
  readonly weftdCpu: number;
  /** The whole machine, % of all cores. */
  readonly machineCpu: number;
  /** Kernel VXLAN figure this one is compared with, or null. */
  readonly baseline: string | null;
}

const TICKS = 100; // USER_HZ

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** utime + stime of a process and its threads (the pump's threads included), in ticks. */
function processTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from 3 (state) on
    return Number(f[11]) + Number(f[12]);                          // 14 utime, 15 stime
  } catch {
    return 0;
  }
}

/** [busy, total] jiffies of all CPUs. */
function machineTicks(): [number, number] {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3]! + f[4]!;
  const total = f.reduce((a, b) => a + b, 0);
  return [total - idle, total];
}

interface Run { readonly gbps: number; readonly weftdCpu: number; readonly machineCpu: number }

/** One iperf3 TCP stream from namespace `from` to `addr` (server in `to`). */
async function iperf(lab: Lab, from: string, to: string, addr: string, seconds: number, port: number): Promise<Run> {
  const pids = [...lab.hostNames().map((h) => lab.daemonPid(h)), ...lab.hostNames().map((h) => wireguardGoPid(lab, h))]
    .filter((p): p is number => p !== null);
  const server = lab.exec(to, ['iperf3', '-s', '-1', '-p', String(port)], { timeoutMs: (seconds + 30) * 1000 });
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  const p0 = pids.reduce((a, p) => a + processTicks(p), 0);
  const m0 = machineTicks();
  const client = await lab.exec(from, ['iperf3', '-c', addr, '-p', String(port), '-t', String(seconds), '-J'], { timeoutMs: (seconds + 30) * 1000 });
  const wall = (Date.now() - t0) / 1000;
  const p1 = pids.reduce((a, p) => a + processTicks(p), 0);
  const m1 = machineTicks();
  await server;
  if (client.code !== 0) throw new Error(`iperf3 ${from} → ${addr} failed: ${client.stderr || client.stdout.slice(0, 500)}`);
  const j = JSON.parse(client.stdout) as { end: { sum_received: { bits_per_second: number } } };
  return {
    gbps: j.end.sum_received.bits_per_second / 1e9,
    weftdCpu: (100 * (p1 - p0)) / TICKS / wall,
    machineCpu: (100 * (m1[0] - m0[0])) / Math.max(1, m1[1] - m0[1]),
  };
}

/** The wireguard-go serving a lab host's flannel-wg (wireguard backend, user space), or null. */
function wireguardGoPid(lab: Lab, host: string): number | null {
  try {
    return Number(readFileSync(join(dirname(lab.subnetFile(host)), 'wireguard', 'flannel-wg.pid'), 'utf8').trim()) || null;
  } catch {
    return null;
  }
}

function addrOf(lab: Lab, host: string): string {
  const env = lab.subnetEnv(host);
  if (!env) throw new Error(`no subnet.env on ${host}`);
  return env.containerAddress.split('/')[0]!;
}

/** The container's IPv6 address on a dual-stack lab. */
function addr6Of(lab: Lab, host: string): string {
  const a = lab.subnetEnv(host)?.ipv6ContainerAddress;
  if (!a) throw new Error(`no FLANNEL_IPV6_SUBNET in ${host}'s subnet.env`);
  return a.split('/')[0]!;
}

async function measure(
  lab: Lab, path: string, direction: string, from: string, to: string, addr: string,
  opts: { runs: number; seconds: number; baseline: string | null }, log: (s: string) => void,
): Promise<Figure> {
  const runs: Run[] = [];
  for (let i = 0; i < opts.runs; i++) {
    runs.push(await iperf(lab, from, to, addr, opts.seconds, 5301 + i));
    log(`  ${path}, ${direction}, run ${i + 1}: ${runs.at(-1)!.gbps.toFixed(2)} Gbit/s`);
  }
  return {
    path, direction, gbps: median(runs.map((r) => r.gbps)), runs: runs.map((r) => r.gbps),
    weftdCpu: median(runs.map((r) => r.weftdCpu)), machineCpu: median(runs.map((r) => r.machineCpu)), baseline: opts.baseline,
  };
}

/** Machine CPU per Gbit/s carried, in % of one core: what a path costs, whatever its speed. */
function coreCpuPerGbps(f: Figure): number {
  return (f.machineCpu * cpus().length) / Math.max(0.001, f.gbps);
}

function table(figs: readonly Figure[]): string {
  const byKey = new Map(figs.map((f) => [`${f.path}|${f.direction}`, f]));
  const rows = figs.map((f) => {
    const base = f.baseline ? byKey.get(f.baseline) : undefined;
    return [
      f.path, f.direction, f.gbps.toFixed(2), base ? `${Math.round((100 * f.gbps) / base.gbps)} %` : '-',
      `${Math.round(f.weftdCpu)} %`, `${Math.round(f.machineCpu)} %`, `${Math.round(coreCpuPerGbps(f))} %`, f.runs.map((r) => r.toFixed(2)).join(' '),
    ];
  });
  const head = ['PATH', 'DIRECTION', 'GBIT/S', 'VS KERNEL VXLAN', 'WEFTD CPU', 'MACHINE CPU', 'CPU PER GBIT/S', 'RUNS'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (c: readonly string[]) => c.map((x, i) => x.padEnd(w[i]!)).join('  ').trimEnd();
  return [line(head), ...rows.map(line)].join('\n');
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { seconds: { type: 'string' }, runs: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write('usage: node dist/bench/dataplane.js [--seconds N (8)] [--runs N (3)] [--out FILE]\n');
    return 0;
  }
  requireRoot();
  try {
    execFileSync('sh', ['-c', 'command -v iperf3'], { stdio: 'ignore' });
  } catch {
    process.stderr.write('iperf3 is not installed: apt-get install -y iperf3\n');
    return 1;
  }
  const seconds = Number(values.seconds ?? 8);
  const runs = Number(values.runs ?? 3);
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  const scratch = mkdtempSync(join(tmpdir(), `wd${process.pid}-`));
  const figs: Figure[] = [];
  const o = (baseline: string | null) => ({ runs, seconds, baseline });
  const K_UP = 'kernel VXLAN|h1 → h2';
  const K_DOWN = 'kernel VXLAN|h2 → h1';
  log(`data-path benchmark: ${cpus().length} CPUs, ${runs} × ${seconds} s per figure, one TCP stream (iperf3)`);
  let lab: Lab | null = null;
  try {
    lab = await Lab.up({ prefix: `wd${process.pid}-`, name: `wd${process.pid}`, stateDir: join(scratch, 'vxlan'), hosts: 2, healthzPort: 0 });
    figs.push(await measure(lab, 'underlay', 'h1 → h2', 'h1', 'h2', '10.250.0.12', o(null), log));
    figs.push(await measure(lab, 'kernel VXLAN', 'h1 → h2', 'h1-c1', 'h2-c1', addrOf(lab, 'h2'), o(null), log));
    figs.push(await measure(lab, 'kernel VXLAN', 'h2 → h1', 'h2-c1', 'h1-c1', addrOf(lab, 'h1'), o(null), log));
    await lab.restartDaemon('h1', { extraArgs: ['--vxlan-fallback=force'] });
    figs.push(await measure(lab, 'fallback (h1 user space)', 'h1 → h2', 'h1-c1', 'h2-c1', addrOf(lab, 'h2'), o(K_UP), log));
    figs.push(await measure(lab, 'fallback (h1 user space)', 'h2 → h1', 'h2-c1', 'h1-c1', addrOf(lab, 'h1'), o(K_DOWN), log));
    await lab.restartDaemon('h2', { extraArgs: ['--vxlan-fallback=force'] });
    figs.push(await measure(lab, 'fallback (both user space)', 'h1 → h2', 'h1-c1', 'h2-c1', addrOf(lab, 'h2'), o(K_UP), log));
    await lab.down();
    lab = await Lab.up({ prefix: `wd${process.pid}-`, name: `wd${process.pid}u`, stateDir: join(scratch, 'udp'), hosts: 2, backend: 'udp', healthzPort: 0 });
    figs.push(await measure(lab, 'legacy udp (both)', 'h1 → h2', 'h1-c1', 'h2-c1', addrOf(lab, 'h2'), o(K_UP), log));
    await lab.down();
    lab = await Lab.up({ prefix: `wd${process.pid}-`, name: `wd${process.pid}h`, stateDir: join(scratch, 'hostgw'), hosts: 2, backend: 'host-gw', ipv6: 'dual', healthzPort: 0 });
    // The underlay again, in this lab right before host-gw: on a shared machine the load moves
    // between labs, and host-gw is judged against the underlay measured next to it.
    figs.push(await measure(lab, 'underlay (host-gw lab)', 'h1 → h2', 'h1', 'h2', '10.250.0.12', o(null), log));
    figs.push(await measure(lab, 'host-gw (both)', 'h1 → h2', 'h1-c1', 'h2-c1', addrOf(lab, 'h2'), o(K_UP), log));
    figs.push(await measure(lab, 'host-gw (both)', 'h2 → h1', 'h2-c1', 'h1-c1', addrOf(lab, 'h1'), o(K_DOWN), log));
    figs.push(await measure(lab, 'host-gw IPv6 (both)', 'h1 → h2', 'h1-c1', 'h2-c1', addr6Of(lab, 'h2'), o(K_UP), log));
    await lab.down();
    lab = await Lab.up({ prefix: `wd${process.pid}-`, name: `wd${process.pid}6`, stateDir: join(scratch, 'vxlan6'), hosts: 2, ipv6: 'dual', healthzPort: 0 });
    figs.push(await measure(lab, 'kernel VXLAN over IPv6', 'h1 → h2', 'h1-c1', 'h2-c1', addr6Of(lab, 'h2'), o(K_UP), log));
    await lab.down();
    lab = await Lab.up({ prefix: `wd${process.pid}-`, name: `wd${process.pid}w`, stateDir: join(scratch, 'wireguard'), hosts: 2, backend: 'wireguard', healthzPort: 0 });
    figs.push(await measure(lab, 'wireguard (both)', 'h1 → h2', 'h1-c1', 'h2-c1', addrOf(lab, 'h2'), o(K_UP), log));
    figs.push(await measure(lab, 'wireguard (both)', 'h2 → h1', 'h2-c1', 'h1-c1', addrOf(lab, 'h1'), o(K_DOWN), log));
  } finally {
    await lab?.down().catch(() => undefined);
    rmSync(scratch, { recursive: true, force: true });
  }

  process.stdout.write(`\n${table(figs)}\n\n`);
  const get = (k: string) => figs.find((f) => `${f.path}|${f.direction}` === k)!;
  const up = get('fallback (h1 user space)|h1 → h2').gbps / get(K_UP).gbps;
  const down = get('fallback (h1 user space)|h2 → h1').gbps / get(K_DOWN).gbps;
  const worst = Math.min(up, down);
  process.stdout.write(`target: the fallback at ≥ 30 % of kernel VXLAN in the same run: ${Math.round(100 * up)} % sending, ${Math.round(100 * down)} % receiving — ${worst >= 0.3 ? 'met' : 'MISSED'}\n`);
  const hg = get('host-gw (both)|h1 → h2');
  const ul = get('underlay (host-gw lab)|h1 → h2');
  process.stdout.write(`host-gw: ${Math.round((100 * hg.gbps) / ul.gbps)} % of the underlay's throughput measured beside it, ` +
    `${Math.round(coreCpuPerGbps(hg))} % vs ${Math.round(coreCpuPerGbps(ul))} % of a core per Gbit/s (expected: about the same)\n`);
  const wg = get('wireguard (both)|h1 → h2');
  process.stdout.write(`wireguard: ${wg.gbps.toFixed(2)} Gbit/s (${Math.round((100 * wg.gbps) / get(K_UP).gbps)} % of kernel VXLAN), ` +
    `${Math.round(coreCpuPerGbps(wg))} % of a core per Gbit/s (encrypted; user space where the kernel has no WireGuard)\n`);
  process.stdout.write('(flannel\'s udp backend reached ~6 % of kernel VXLAN on this machine kind; docs/dataplane-design.md)\n');
  if (values.out) {
    const out = resolve(values.out);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), cpus: cpus().length, seconds, runs, figures: figs }, null, 2) + '\n');
  }
  return 0;
}

main().then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
