/**
 * The control-plane benchmark scenarios, each on a lab built by the Lab class the e2e tests use.
 * Every figure is measured from outside the daemon (timestamps of the kernel's route
 * notifications, of the subnet.env rename, of the READY=1 datagram), never from its own log.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, unlinkSync, watch } from 'node:fs';
import { createInterface } from 'node:readline';
import { dirname, basename, join } from 'node:path';
import { hostUnderlayIp, Lab, WEFTD_NODE_OPTIONS } from '../../src/lab';
import { RUNTIME_V8_FLAGS } from '../../src/daemon/v8-flags';
import { formatIPv4, parseIPv4Cidr } from '../../src/ip';
import {
  EtcdWriter, RouteWatcher, cpuNsOf, heapFromMetrics, load1, median, memoryOf, nowMs, percentile, sleep, wakeupsOf, waitRoutes,
  type HeapFigures,
} from './harness';

/**
 * A daemon to measure: `after` (this tree's weftd) and, paired in the same run, `before` (another
 * weftd build) and `flanneld` (a real flanneld binary on the same lab, side by side).
 */
export interface Variant {
  readonly label: string;
  /** weftd.js to run; undefined: the lab's own (this tree's dist/). */
  readonly weftdPath?: string;
  /** A flanneld binary to run instead of weftd (Lab.startDaemon's flanneldPath: the shared flannel flags). */
  readonly flanneldPath?: string;
  /** Environment for it (before: NODE_OPTIONS empty, as it ran before the lab set one). */
  readonly env?: Readonly<Record<string, string>>;
  /** node's arguments before weftd.js (Lab.startDaemon's nodeArgs); undefined: the lab's. */
  readonly nodeArgs?: readonly string[];
}

export const AFTER: Variant = { label: 'after' };

/** The Lab.startDaemon options that run `variant`. */
function daemonOf(variant: Variant | null): { weftdPath?: string; flanneldPath?: string; extraEnv?: Readonly<Record<string, string>>; nodeArgs?: readonly string[] } {
  return {
    ...(variant?.weftdPath ? { weftdPath: variant.weftdPath } : {}),
    ...(variant?.nodeArgs ? { nodeArgs: variant.nodeArgs } : {}),
    ...(variant?.flanneldPath ? { flanneldPath: variant.flanneldPath } : {}),
    ...(variant?.env ? { extraEnv: variant.env } : {}),
  };
}

/**
 * Stop every host's daemon and start `variant` in its place, one host at a time (the same lab,
 * the same leases: each host keeps its subnet), then let the new daemons settle (start-up work —
 * flanneld's iptables bootstrap, weftd's first GC 3 s after start — out of what is measured next).
 */
export async function restartAll(lab: Lab, variant: Variant, progress: Progress, extraArgs: readonly string[] = [], settleMs = 5000): Promise<void> {
  const hosts = lab.hostNames();
  progress(`  restarting ${hosts.length} daemons as ${variant.label} ${extraArgs.join(' ')}`.trimEnd());
  for (const h of hosts) {
    await lab.stopDaemon(h);
    await lab.startDaemon(h, { extraArgs, ...daemonOf(variant) });
  }
  if (!(await lab.waitConverged(30_000))) throw new Error(`${variant.label}: routes not converged on every host within 30 s after the restart (see the lab's daemon logs in ${lab.stateDir})`);
  await sleep(settleMs);
}

/** V8 heap figures of the weftd on `host`, read from its /metrics (the lab's health port). */
export async function heapOf(lab: Lab, host: string, port = 8471): Promise<HeapFigures> {
  const ip = hostUnderlayIp(Number(host.slice(1)));
  const r = await lab.exec(host, ['curl', '-s', '--max-time', '5', `http://${ip}:${port}/metrics`]).catch(() => null);
  return heapFromMetrics(r?.stdout ?? '');
}


export type Progress = (line: string) => void;

export interface LabSpec {
  readonly name: string;
  readonly prefix: string;
  readonly stateDir: string;
  readonly hosts: number;
  readonly networkConfig?: Readonly<Record<string, unknown>>;
  readonly progress: Progress;
}

export async function withLab<T>(spec: LabSpec, fn: (lab: Lab) => Promise<T>): Promise<T> {
  spec.progress(`building a ${spec.hosts}-host lab (${spec.prefix}*)`);
  const started = Date.now();
  const lab = await Lab.up({
    name: spec.name, prefix: spec.prefix, stateDir: spec.stateDir, hosts: spec.hosts, healthzPort: 8471,
    convergeTimeoutMs: 60_000, readyTimeoutMs: 60_000,
    ...(spec.networkConfig ? { networkConfig: spec.networkConfig } : {}),
  });
  spec.progress(`lab up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  try {
    return await fn(lab);
  } finally {
    reportFlanneldErrors(lab, spec.progress);
    await lab.down();
  }
}

/**
 * flanneld's error lines (glog "E1206 08:05:12.123 pid file:line] msg") in the lab's daemon logs,
 * counted by message: the logs go with the lab, and a flanneld that failed to program something
 * says so only there.
 */
function reportFlanneldErrors(lab: Lab, progress: Progress): void {
  const counts = new Map<string, number>();
  for (const h of lab.hostNames()) {
    let log: string;
    try {
      log = lab.daemonLog(h);
    } catch {
      continue;
    }
    for (const m of log.matchAll(/^E\d{4} [\d:.]+\s+\d+ ([^\]]+\] .*)$/gm)) {
      const msg = m[1]!.replace(/\b\d+\.\d+\.\d+\.\d+(\/\d+)?\b/g, 'IP').replace(/([0-9a-f]{2}:){5}[0-9a-f]{2}/g, 'MAC');
      counts.set(msg, (counts.get(msg) ?? 0) + 1);
    }
  }
  for (const [msg, n] of counts) progress(`  flanneld logged ${n}× (all hosts): ${msg}`);
}

const PREFIX = '/coreos.com/network';

function leaseValue(publicIp: string, mac: string): string {
  return JSON.stringify({ PublicIP: publicIp, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } });
}

function macOf(n: number): string {
  const b = [0x0e, 0xbe, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff, 0x01];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/**
 * Subnets (/24) of the lab's network not held by any lab host, from the top down, after skipping
 * `skip` of them (scenarios in one lab use different ranges: a removed peer's route lingers for
 * the departed-peer grace, and re-adding its subnet then changes nothing in the kernel).
 */
function freeSubnets(lab: Lab, network: string, count: number, skip = 0): string[] {
  const net = parseIPv4Cidr(network, true)!;
  const used = new Set(lab.hostNames().map((h) => lab.subnetEnv(h)?.subnetNetwork));
  const total = 2 ** (24 - net.prefixLen);
  const out: string[] = [];
  let skipped = 0;
  for (let i = total - 1; i > 0 && out.length < count; i--) {
    const s = `${formatIPv4((net.ip + i * 256) >>> 0)}/24`;
    if (used.has(s)) continue;
    if (skipped < skip) skipped++;
    else out.push(s);
  }
  if (out.length < count) throw new Error(`only ${out.length} free /24 subnets in ${network}`);
  return out;
}

const keyOf = (subnet: string): string => `${PREFIX}/subnets/${subnet.replace('/', '-')}`;

// ---- start-up --------------------------------------------------------------------------------

export interface StartupFigures {
  readonly variant: string;
  /** The 1-minute load average at each start. */
  readonly load: number[];
  readonly mode: string;
  readonly runs: number;
  readonly subnetEnvMs: number[];
  /**
   * weftd's own CPU time (user + system) from exec to subnet.env written, per start (ms): from its
   * WEFT_TRACE_STARTUP=1 line, so a loaded machine distorts it far less than the wall time. Empty
   * for a build without the trace (before issue #14's start-up change) and for flanneld.
   */
  readonly subnetEnvCpuMs: number[];
  readonly readyMs: number[];
}

/**
 * exec → subnet.env and exec → READY=1 on `host`: weftd is stopped and started again `runs`
 * times, with its lease in etcd (a restart) or, `cold`, with its VXLAN device deleted first (a
 * reboot). Time zero is taken just before spawning `ip netns exec … node weftd` (what systemd's
 * exec is); subnet.env is timed by inotify on its rename, READY=1 by a datagram listener on
 * NOTIFY_SOCKET (python3, since Node has no unix datagram sockets).
 */
export async function measureStartup(lab: Lab, host: string, runs: number, cold: boolean, progress: Progress,
  variants: readonly Variant[] = [{ label: 'after' }]): Promise<StartupFigures[]> {
  const sock = join(lab.stateDir, `notify-${host}.sock`);
  if (existsSync(sock)) unlinkSync(sock);
  const listener = spawn('ip', ['netns', 'exec', lab.nsName(host), 'python3', '-u', '-c', `
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("listening", flush=True)
while True:
    msg = s.recv(4096).decode()
    t = time.time()
    if "READY=1" in msg:
        print("READY %.6f" % (t * 1000), flush=True)
`, sock], { stdio: ['ignore', 'pipe', 'inherit'] });
  const readyTimes: number[] = [];
  let listening: () => void = () => undefined;
  const isListening = new Promise<void>((r) => (listening = r));
  createInterface({ input: listener.stdout }).on('line', (line) => {
    if (line === 'listening') listening();
    const m = /^READY (\d+\.\d+)$/.exec(line);
    if (m) readyTimes.push(Number(m[1]));
  });
  await isListening;
  // subnet.env on a tmpfs, as /run/flannel is on a systemd host (here /run is on disk, where
  // the two fsyncs of the atomic write would be timed too).
  const file = `/dev/shm/wb${process.pid}-${host}-subnet.env`;
  const outs: StartupFigures[] = variants.map((v) => ({ variant: v.label, load: [], mode: cold ? 'cold (device deleted, lease in etcd)' : 'restart (device and lease in place)', runs, subnetEnvMs: [], subnetEnvCpuMs: [], readyMs: [] }));
  try {
    // Variants interleaved, start by start: each pair sees the same load.
    for (let k = 0; k < runs * variants.length; k++) {
      const i = Math.floor(k / variants.length);
      const variant = variants[k % variants.length]!;
      const out = outs[k % variants.length]!;
      out.load.push(load1());
      await lab.stopDaemon(host);
      if (cold) await lab.exec(host, ['ip', 'link', 'del', 'flannel.1']);
      await sleep(200);
      const before = readyTimes.length;
      let envAt = 0;
      const w = watch(dirname(file), (_ev, name) => {
        if (name === basename(file) && envAt === 0 && existsSync(file)) envAt = nowMs();
      });
      const logFile = lab.logFile(host);
      const logOffset = existsSync(logFile) ? statSync(logFile).size : 0;
      const t0 = nowMs();
      await lab.startDaemon(host, { wait: false, ...daemonOf(variant), extraEnv: { WEFT_TRACE_STARTUP: '1', ...variant.env, NOTIFY_SOCKET: sock }, extraArgs: [`--subnet-file=${file}`] });
      const deadline = Date.now() + 30_000;
      while ((envAt === 0 || readyTimes.length === before) && Date.now() < deadline) await sleep(5);
      w.close();
      if (envAt === 0 || readyTimes.length === before) throw new Error(`${variant.label} on ${host} did not write subnet.env and send READY=1 within 30 s (its log: ${lab.stateDir})`);
      out.subnetEnvMs.push(envAt - t0);
      const cpu = existsSync(logFile) ? /cpu=(\d+(?:\.\d+)?) subnet\.env written/.exec(readFileSync(logFile).subarray(logOffset).toString('utf8')) : null;
      if (cpu) out.subnetEnvCpuMs.push(Number(cpu[1]));
      out.readyMs.push(readyTimes[readyTimes.length - 1]! - t0);
      progress(`  ${variant.label} start ${i + 1}/${runs} (${cold ? 'cold' : 'restart'}): subnet.env ${(envAt - t0).toFixed(1)} ms${cpu ? ` (${cpu[1]} ms CPU)` : ''}, READY=1 ${(readyTimes[readyTimes.length - 1]! - t0).toFixed(1)} ms`);
    }
  } finally {
    listener.kill('SIGTERM');
    if (existsSync(file)) unlinkSync(file);
  }
  // Leave the lab as it was: a daemon without NOTIFY_SOCKET, routes converged.
  await lab.restartDaemon(host);
  return outs;
}

// ---- join latency ----------------------------------------------------------------------------

export interface JoinFigures {
  /** Which daemon ran on every host (Variant.label). */
  readonly variant: string;
  readonly hosts: number;
  readonly joins: number;
  /** Per join: lease visible in etcd → route present on every host (ms). */
  readonly allHostsMs: number[];
  /** Per join and host: lease visible in etcd → route present on that host (ms). */
  readonly perHostMs: number[];
  /** Per join: the put sent → route present on every host (ms; adds etcd's commit, an fsync). */
  readonly fromSendMs: number[];
  /** Per join: the put sent → visible in etcd (etcd's own commit latency, ms). */
  readonly etcdCommitMs: number[];
  /** Per join: etcd's answer to the put (the commit, as the issue defines it) → route on every host (ms; can be < 0: the watch can beat the answer). */
  readonly fromCommitMs: number[];
  /** CPU of all daemons over the joins ÷ joins ÷ hosts (ms): the CPU one daemon spends per peer join. */
  readonly cpuPerDaemonPerJoinMs: number;
  /**
   * etcd's CPU over the same joins ÷ joins (ms): what serving one put to every host's watch costs
   * the lab's one etcd — on the same cores as the daemons, so on the latency's path. Includes its
   * idle over the pauses between joins (~0.3 ms a join here, ~10 %). Absent in runs saved before it.
   */
  readonly etcdCpuPerJoinMs?: number;
  /** Joins whose route did not reach every host within 10 s (left out of the latencies). */
  readonly missed: number;
  /** The 1-minute load average at the start and end of the joins. */
  readonly load: [number, number];
}

/**
 * A new host's lease appears in etcd; each lab host programs a route to its subnet; the kernel's
 * route notification on each host is the end. Time zero ("lease written") is when the put became
 * visible to a watch stream opened beside etcd (in its namespace: etcd's commit done, before any
 * network hop to the hosts); the time from sending the put is reported too (it adds etcd's
 * commit, an fsync on this disk). Each join uses a fresh subnet (a departed peer's routes stay for a grace
 * period, src/daemon/departed.ts); the synthetic hosts are removed together at the end.
 */
export async function measureJoins(lab: Lab, joins: number, network: string, progress: Progress, variantLabel = 'after', skipSubnets = 0,
  pids: readonly number[] = lab.hostNames().map((h) => lab.daemonPid(h)!)): Promise<JoinFigures> {
  const hosts = lab.hostNames();
  const watchers = hosts.map((h) => new RouteWatcher(h, lab.nsName(h)));
  const writer = new EtcdWriter(lab.nsName('etcd'), lab.etcdEndpoint, `${PREFIX}/subnets/`);
  const out: JoinFigures & { cpuPerDaemonPerJoinMs: number; etcdCpuPerJoinMs: number; missed: number; load: [number, number] } = {
    variant: variantLabel, hosts: hosts.length, joins, allHostsMs: [], perHostMs: [], fromSendMs: [], etcdCommitMs: [], fromCommitMs: [], cpuPerDaemonPerJoinMs: NaN, etcdCpuPerJoinMs: NaN, missed: 0, load: [load1(), NaN],
  };
  try {
    await sleep(500); // let the watchers start
    const subnets = freeSubnets(lab, network, joins, skipSubnets);
    const etcdPid = lab.etcdPid();
    const etcdCpuBefore = etcdPid === null ? NaN : cpuNsOf(etcdPid);
    const cpuBefore = pids.map(cpuNsOf);
    for (let j = 0; j < joins; j++) {
      const subnet = subnets[j]!;
      const added = waitRoutes(watchers, new Set([subnet]), false, 10_000);
      const visible = writer.visibleAt(keyOf(subnet));
      const w = await writer.put([{ key: keyOf(subnet), value: leaseValue(`10.251.${Math.floor(j / 250)}.${(j % 250) + 1}`, macOf(j)) }]);
      if (!w.ok) throw new Error(`etcd put failed: ${JSON.stringify(w.error)}`);
      let at: Map<string, number>;
      let t0: number;
      try {
        [at, t0] = await Promise.all([added, visible]);
      } catch (err) {
        // A daemon that loses an event (flanneld v0.20.2 can: docs/performance.md) is a finding, not a crash.
        out.missed++;
        progress(`  ${variantLabel}: join ${j + 1} (${subnet}) missed: ${err instanceof Error ? err.message : String(err)}`);
        if (out.missed > joins / 2) throw new Error(`${variantLabel}: ${out.missed} of ${j + 1} joins never reached every host`, { cause: err });
        continue;
      }
      const lat = [...at.values()].map((t) => t - t0);
      out.perHostMs.push(...lat);
      out.allHostsMs.push(Math.max(...lat));
      out.fromSendMs.push(Math.max(...at.values()) - w.sentAt);
      out.etcdCommitMs.push(t0 - w.sentAt);
      out.fromCommitMs.push(Math.max(...at.values()) - w.doneAt);
      await sleep(30 + Math.random() * 40);
    }
    // Includes the idle CPU of the pauses between joins (tiny next to a join).
    const ns = pids.map(cpuNsOf).reduce((a, t, i) => a + (t - cpuBefore[i]!), 0);
    out.cpuPerDaemonPerJoinMs = ns / 1e6 / joins / pids.length;
    if (etcdPid !== null) out.etcdCpuPerJoinMs = (cpuNsOf(etcdPid) - etcdCpuBefore) / 1e6 / joins;
    out.load[1] = load1();
    // One delete at a time, 50 ms apart: flanneld v0.20.2 re-opens its etcd watch from "now"
    // after each event and reads only the first event of a response, so it misses deletes that
    // come together. A route it keeps anyway does not disturb the next rounds (fresh subnets).
    const lingering = new Set(subnets);
    const offs = watchers.map(() => new Map<string, number>());
    const stop = watchers.map((w, i) => w.on((e) => {
      if (!e.deleted || !lingering.has(e.dst)) return;
      const seen = offs[i]!;
      seen.set(e.dst, (seen.get(e.dst) ?? 0) + 1);
      if (offs.every((m) => m.has(e.dst))) lingering.delete(e.dst);
    }));
    for (const s of subnets) {
      await writer.del([keyOf(s)]);
      await sleep(50);
    }
    // weftd keeps a departed peer's route for its 3 s grace (src/daemon/departed.ts).
    for (let waited = 0; lingering.size > 0 && waited < 10_000; waited += 100) await sleep(100);
    for (const off of stop) off();
    if (lingering.size > 0) progress(`  ${variantLabel}: ${lingering.size} of ${subnets.length} removed leases still routed on some host after 10 s`);
    progress(`  ${variantLabel}: ${joins - out.missed}/${joins} joins on ${hosts.length} hosts: all hosts p50 ${median(out.allHostsMs).toFixed(2)} ms, p99 ${percentile(out.allHostsMs, 99).toFixed(2)} ms `
      + `(from the put sent: p50 ${median(out.fromSendMs).toFixed(2)} ms; etcd commit p50 ${median(out.etcdCommitMs).toFixed(2)} ms); CPU per daemon per join ${out.cpuPerDaemonPerJoinMs.toFixed(2)} ms, etcd's per join ${out.etcdCpuPerJoinMs.toFixed(2)} ms`);
  } finally {
    writer.close();
    for (const w of watchers) w.close();
  }
  return out;
}

// ---- isolated joins ---------------------------------------------------------------------------

export interface IsolatedJoinFigures {
  readonly variant: string;
  readonly hosts: number;
  /** Per cycle (one join and its leave, then quiet until `cycleMs` from the join): CPU per daemon (ms). */
  readonly cyclePerDaemonMs: number[];
  /** The same daemons, quiet for `cycleMs` (ms per daemon): what a cycle costs without the join. */
  readonly quietPerDaemonMs: number;
  readonly cycleMs: number;
  readonly load: [number, number];
}

/** Node's floor for a peer join on this machine, beside weftd's figure for the same joins. */
export interface FloorFigures {
  readonly hosts: number;
  readonly joins: number;
  /** bench/lib/floor-daemon.ts on the first host: its CPU (all threads) per join. */
  readonly floorCpuPerJoinMs: number;
  /** The weftds of the other hosts, on the same joins: CPU per daemon per join. */
  readonly weftdCpuPerJoinMs: number;
  readonly load: [number, number];
}

/**
 * Which floor daemon: `node`, bench/lib/floor-daemon.ts run as weftd is run (weftd's
 * NODE_OPTIONS, --no-opt); `checked`, the same after weft's own checks of hostile input (its
 * `--checked`: the watch message's field checks, the lease codec, screening, the vxlan rules);
 * `native`, its C twin bench/lib/floor-daemon.c (the same join, the same writes, no runtime),
 * compiled by nativeFloorDaemon().
 */
export type FloorKind = 'node' | 'checked' | 'native';

/** Each floor kind, in the bench's order: its rows' label, what runs, and what its bound means. */
export const FLOOR_KINDS: Readonly<Record<FloorKind, { readonly label: string; readonly runs: string; readonly means: string }>> = {
  node: { label: 'node floor', runs: 'bench/lib/floor-daemon.ts', means: "no more than Node's floor" },
  checked: { label: 'checked floor', runs: 'bench/lib/floor-daemon.ts --checked',
    means: "Node's floor and weft's own checks of its input (the watch message's fields, the lease codec, screening, the vxlan rules)" },
  native: { label: 'native floor', runs: 'bench/lib/floor-daemon.c', means: 'only a native join path (no runtime)' },
};

/** A floor daemon running in a lab host, its watch open. */
interface FloorDaemon {
  readonly pid: number;
  /** The `error …` lines it printed (a write the kernel refused). */
  readonly errors: string[];
  stop(): Promise<void>;
}

/**
 * A bench script (bench/lib/`script`, compiled) run as weftd's JavaScript runs: under weftd's V8
 * flags (which weftd itself sets at run time, src/daemon/v8-flags.ts) and with its NODE_OPTIONS
 * (`weftdEnv`).
 */
function nodeAsWeftd(script: string, ...args: string[]): string[] {
  return [process.execPath, ...RUNTIME_V8_FLAGS, join(__dirname, script), ...args];
}

/** The environment weftd runs with in the lab (systemd/weftd.service's NODE_OPTIONS). */
const weftdEnv = (): NodeJS.ProcessEnv => ({ ...process.env, NODE_OPTIONS: WEFTD_NODE_OPTIONS });

/** The bench's C programs (bench/lib/NAME.c), each built once per bench process. */
const builtC = new Map<string, string>();

/** Compile bench/lib/`name`.c (once) into `dir`: the path of the binary. `what`: what needs it, for the error. */
function benchC(name: string, dir: string, what: string): string {
  const built = builtC.get(name);
  if (built !== undefined && existsSync(built)) return built;
  const source = join(__dirname, '..', '..', '..', 'bench', 'lib', `${name}.c`);
  const out = join(dir, `${name}-c`);
  try {
    execFileSync('cc', ['-O2', '-std=gnu11', '-Wall', '-Wextra', '-o', out, source], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    throw new Error(`could not compile ${source} (${what} needs a C compiler: scripts/install-deps.sh dev installs one)`, { cause: err });
  }
  builtC.set(name, out);
  return out;
}

/** Compile bench/lib/floor-daemon.c (once), into `dir`: the path of the binary. */
export function nativeFloorDaemon(dir: string): string {
  return benchC('floor-daemon', dir, 'the native floor');
}

/** CPU per empty wake-up of a process on this machine (measureWakeups), in microseconds: medians of `runs`. */
export interface WakeupFigures {
  /** bench/lib/wakeup.c: epoll_wait with a timeout, nothing else. */
  readonly cUs: number;
  /** bench/lib/wakeup.ts run as weftd is (NODE_OPTIONS, --no-opt): a timer that does nothing. */
  readonly nodeUs: number;
  readonly wakeups: number;
  readonly intervalMs: number;
  readonly runs: number;
  readonly load: [number, number];
}

/**
 * What a process pays here to be woken and go back to sleep, before any code of its own: a C
 * program and Node (as weftd runs) each woken `wakeups` times by a timer, `runs` times each,
 * alternated. Every peer join wakes every daemon once: this is the part of the CPU-per-join row
 * that no code of weft's can remove, and what an extra wake-up per join would add.
 */
export function measureWakeups(dir: string, progress: Progress, wakeups = 300, intervalMs = 10, runs = 3): WakeupFigures {
  progress(`one empty wake-up: C and Node (as weftd runs), ${runs} × ${wakeups} wake-ups each`);
  const c = benchC('wakeup', dir, 'the wake-up row');
  const node = nodeAsWeftd('wakeup.js');
  // Synchronous: nothing else runs in the bench meanwhile (no lab yet), and nothing should.
  const run = (argv: readonly string[]): number => {
    const out = execFileSync(argv[0]!, [...argv.slice(1), String(wakeups), String(intervalMs)], { env: weftdEnv(), encoding: 'utf8' });
    const us = Number(out.trim());
    if (!Number.isFinite(us)) throw new Error(`${argv.join(' ')} printed ${JSON.stringify(out)}, not a number of microseconds`);
    return us;
  };
  const loadBefore = load1();
  const cUs: number[] = [];
  const nodeUs: number[] = [];
  for (let i = 0; i < runs; i++) {
    cUs.push(run([c]));
    nodeUs.push(run(node));
  }
  return { cUs: median(cUs), nodeUs: median(nodeUs), wakeups, intervalMs, runs, load: [loadBefore, load1()] };
}

/**
 * Stop `host`'s weftd and start a floor daemon of `kind` in its place, on the vxlan device weftd
 * made; resolves once etcd has created its watch.
 */
async function startFloorDaemon(lab: Lab, host: string, kind: FloorKind, network: string): Promise<FloorDaemon> {
  const ns = lab.nsName(host);
  const [link] = JSON.parse(execFileSync('ip', ['-n', ns, '-j', 'link', 'show', 'flannel.1'], { encoding: 'utf8' })) as { ifindex: number }[];
  if (link === undefined) throw new Error(`no flannel.1 on ${host}: the floor needs the vxlan device weftd made`);
  await lab.stopDaemon(host);
  const args = [lab.etcdEndpoint, PREFIX, String(link.ifindex)];
  // `ip netns exec` execs the command in place: the child's pid is the floor daemon's.
  const own = lab.subnetEnv(host)?.subnetNetwork;
  if (kind === 'checked' && own === undefined) throw new Error(`no subnet.env on ${host}: the checked floor screens peers against the host's own subnet`);
  const command = kind === 'native' ? [nativeFloorDaemon(lab.stateDir), ...args]
    : nodeAsWeftd('floor-daemon.js', ...args, ...(kind === 'checked' ? ['--checked', network, own!] : []));
  const child = spawn('ip', ['netns', 'exec', ns, ...command], { env: weftdEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  const errors: string[] = [];
  const stop = async (): Promise<void> => {
    child.kill('SIGTERM');
    if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r));
  };
  try {
    await new Promise<void>((resolveReady, reject) => {
      const timer = setTimeout(() => reject(new Error(`the ${kind} floor daemon on ${host} did not open its watch within 10 s`)), 10_000);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (line === 'ready') {
          clearTimeout(timer);
          resolveReady();
        } else if (line.startsWith('error')) errors.push(line);
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the ${kind} floor daemon on ${host} exited (${code})`));
      });
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid: child.pid!, errors, stop };
}

/**
 * What a join costs a Node process that does nothing but the join (bench/lib/floor-daemon.ts:
 * the watch message in, the three writes out in one sendmsg, the ACK in), run as weftd is run
 * (weftd's NODE_OPTIONS, --no-opt), in place of the first host's weftd. The other hosts' weftds
 * take the same joins, so the two figures come from the same moments. Warm-up joins first (both
 * have compiled their join path), then `joins` measured ones on fresh subnets, then the leaves;
 * the first host gets its weftd back. What weftd spends above the floor is weft's own code
 * (decisions, reconciler, monitor, the etcd client's checks); the floor is what the runtime and
 * the kernel cost, whatever the code.
 */
export async function measureNodeFloor(lab: Lab, joins: number, network: string, progress: Progress, skipSubnets = 0): Promise<FloorFigures> {
  const hosts = lab.hostNames();
  const [floorHost, ...others] = hosts;
  if (floorHost === undefined || others.length === 0) throw new Error('the floor needs a lab of two hosts at least');
  const warmUp = 20;
  const subnets = freeSubnets(lab, network, warmUp + joins, skipSubnets);
  const floor = await startFloorDaemon(lab, floorHost, 'node', network);
  const watchers = hosts.map((h) => new RouteWatcher(h, lab.nsName(h)));
  const writer = new EtcdWriter(lab.nsName('etcd'), lab.etcdEndpoint, `${PREFIX}/subnets/`);
  const load: [number, number] = [load1(), NaN];
  try {
    await sleep(500); // let the watchers start
    const pids = others.map((h) => lab.daemonPid(h)!);
    let floorNs = 0;
    let weftdNs = 0;
    for (let j = 0; j < subnets.length; j++) {
      const subnet = subnets[j]!;
      const measured = j >= warmUp;
      const added = waitRoutes(watchers, new Set([subnet]), false, 10_000);
      const before = measured ? [cpuNsOf(floor.pid), ...pids.map(cpuNsOf)] : [];
      const w = await writer.put([{ key: keyOf(subnet), value: leaseValue(`10.251.${Math.floor(j / 250)}.${(j % 250) + 1}`, macOf(j)) }]);
      if (!w.ok) throw new Error(`etcd put failed: ${JSON.stringify(w.error)}`);
      await added;
      await sleep(30); // the work after the route (ACKs, echoes, promises) is the join's too
      if (measured) {
        floorNs += cpuNsOf(floor.pid) - before[0]!;
        weftdNs += pids.reduce((a, p, i) => a + cpuNsOf(p) - before[i + 1]!, 0);
      }
      await sleep(Math.random() * 40);
    }
    load[1] = load1();
    const gone = waitRoutes(watchers, new Set(subnets), true, 15_000);
    for (const s of subnets) {
      await writer.del([keyOf(s)]);
      await sleep(20);
    }
    await gone;
    if (floor.errors.length > 0) throw new Error(`the kernel refused the floor daemon's writes: ${floor.errors.slice(0, 3).join('; ')}`);
    const out: FloorFigures = { hosts: hosts.length, joins, floorCpuPerJoinMs: floorNs / 1e6 / joins, weftdCpuPerJoinMs: weftdNs / 1e6 / joins / pids.length, load };
    progress(`  floor: ${joins} joins: a Node process doing only the join ${out.floorCpuPerJoinMs.toFixed(2)} ms CPU per join; weftd on the same joins ${out.weftdCpuPerJoinMs.toFixed(2)} ms`);
    return out;
  } finally {
    writer.close();
    for (const w of watchers) w.close();
    await floor.stop();
    await lab.startDaemon(floorHost);
  }
}

/**
 * The latency rows' bound: the join rows measured with a floor daemon of `kind` in place of EVERY
 * host's weftd (measureJoins, the same method and figures). With `node`, what the rows would read
 * if weftd cost no more than Node's floor; with `checked`, if it cost only that and weft's checks
 * of its input; with `native`, if the join path were not JavaScript at all. The rest of the path
 * (etcd's put and its fan-out to every watch, the kernel's writes, the lab's 2 cores shared by
 * every host) is the same as for weftd. Every weftd is back and converged
 * afterwards; subnets as for measureJoins (`skipSubnets`).
 */
export async function measureFloorJoins(lab: Lab, kind: FloorKind, joins: number, network: string, progress: Progress, skipSubnets = 0): Promise<JoinFigures> {
  const hosts = lab.hostNames();
  const floors: FloorDaemon[] = [];
  const { label } = FLOOR_KINDS[kind];
  progress(`  ${label} in place of every weftd (${hosts.length} hosts)`);
  try {
    for (const h of hosts) floors.push(await startFloorDaemon(lab, h, kind, network));
    // Warm-up joins, as a running weftd has compiled its join path (the Node floor lazily compiles its own).
    await measureJoins(lab, 10, network, () => undefined, label, skipSubnets, floors.map((f) => f.pid));
    const out = await measureJoins(lab, joins, network, progress, label, skipSubnets + 10, floors.map((f) => f.pid));
    const errors = floors.flatMap((f) => f.errors);
    if (errors.length > 0) throw new Error(`the kernel refused the ${label} daemons' writes: ${errors.slice(0, 3).join('; ')}`);
    return out;
  } finally {
    for (const f of floors) await f.stop();
    for (const h of hosts) if (lab.daemonPid(h) === null) await lab.startDaemon(h);
    if (!(await lab.waitConverged(30_000))) progress(`  after the ${label}: routes not converged on every host within 30 s`);
  }
}

/** weftd's CPU per watch event by what the event asks of it (measureEventKinds). */
export interface EventKindFigures {
  readonly hosts: number;
  /** Events of each kind. */
  readonly events: number;
  /**
   * Per kind, the median over its events of the CPU all daemons spent on one event and the pause
   * after it (the join rows' 30–70 ms) ÷ hosts (ms). `ignored`: a put of a key nested under
   * subnets/, which is no subnet key (the watch message read and decoded, the key dropped by the
   * registry, no warning); `unchanged`: a peer's lease put again with its own value (the lease
   * decoded, screened, judged and booked again, nothing to write); `join`: a new lease (all of
   * that, then its three kernel writes, their ACK and echoes); `pause`: the pause alone.
   */
  readonly cpuMs: { readonly pause: number; readonly ignored: number; readonly unchanged: number; readonly join: number };
  /** How long the restarted daemons ran before the warm-up joins (past their start-up's collections). */
  readonly settleMs: number;
  readonly load: [number, number];
}

type EventKind = keyof EventKindFigures['cpuMs'];
const EVENT_KINDS: readonly EventKind[] = ['pause', 'ignored', 'unchanged', 'join'];

/**
 * Where a join's CPU goes, from /proc and not from a profiler (a sampled profile of a crowded lab
 * counts descheduled time: docs/performance.md). Three kinds of watch event that share their first
 * steps: each kind's figure minus the one before it is what the next steps cost. Every daemon
 * is restarted as this tree's weftd first (the joins before may have left another variant
 * running) and left `settleMs` to get past its start-up's collections (the one 3 s after ready,
 * V8's memory reducer 8 s after that); then 10 warm-up joins, whose leases the `unchanged` events
 * put again. The kinds take turns, event by event, and each figure is a median
 * over its events: a collection falls on one event of one kind, not on a kind.
 */
export async function measureEventKinds(lab: Lab, events: number, network: string, progress: Progress, skipSubnets = 0, settleMs = 20_000): Promise<EventKindFigures> {
  const hosts = lab.hostNames();
  await restartAll(lab, AFTER, progress, [], settleMs);
  const pids = hosts.map((h) => lab.daemonPid(h)!);
  progress(`  weftd's CPU per watch event by kind, ${hosts.length} hosts, ${events} events each`);
  const writer = new EtcdWriter(lab.nsName('etcd'), lab.etcdEndpoint);
  const watchers = hosts.map((h) => new RouteWatcher(h, lab.nsName(h)));
  const load: [number, number] = [NaN, NaN];
  const subnets = freeSubnets(lab, network, 10 + events, skipSubnets);
  const warm = subnets.slice(0, 10);
  const warmValues = warm.map((_, i) => leaseValue(`10.252.0.${i + 1}`, macOf(0xfe0000 + i)));
  const joined: string[] = [];
  const ignoredKeys: string[] = [];
  const put = async (key: string, value: string): Promise<void> => {
    const w = await writer.put([{ key, value }]);
    if (!w.ok) throw new Error(`etcd put of ${key} failed: ${JSON.stringify(w.error)}`);
  };
  const join = async (subnet: string, value: string): Promise<void> => {
    const added = waitRoutes(watchers, new Set([subnet]), false, 10_000);
    await put(keyOf(subnet), value);
    joined.push(subnet); // removed at the end even if its route never came
    await added;
  };
  const event: Record<EventKind, (i: number) => Promise<void>> = {
    pause: async () => undefined,
    ignored: async (i) => {
      const key = `${PREFIX}/subnets/bench/ignored-${i}`;
      ignoredKeys.push(key);
      await put(key, 'x');
    },
    unchanged: async (i) => put(keyOf(warm[i % warm.length]!), warmValues[i % warm.length]!),
    join: async (i) => join(subnets[10 + i]!, leaseValue(`10.252.1.${(i % 250) + 1}`, macOf(0xfd0000 + i))),
  };
  try {
    for (const [i, s] of warm.entries()) {
      await join(s, warmValues[i]!);
      await sleep(30 + Math.random() * 40);
    }
    load[0] = load1();
    const perEvent: Record<EventKind, number[]> = { pause: [], ignored: [], unchanged: [], join: [] };
    for (let i = 0; i < events; i++) {
      for (const kind of EVENT_KINDS) {
        const before = pids.map(cpuNsOf);
        await event[kind](i);
        await sleep(30 + Math.random() * 40);
        perEvent[kind].push(pids.reduce((a, p, j) => a + (cpuNsOf(p) - before[j]!), 0) / 1e6 / pids.length);
      }
    }
    load[1] = load1();
    const cpuMs = { pause: median(perEvent.pause), ignored: median(perEvent.ignored), unchanged: median(perEvent.unchanged), join: median(perEvent.join) };
    const f = (v: number): string => v.toFixed(3);
    progress(`  CPU per daemon per event (medians): the pause alone ${f(cpuMs.pause)}, a key it ignores ${f(cpuMs.ignored)}, a lease unchanged ${f(cpuMs.unchanged)}, a join ${f(cpuMs.join)} ms`);
    return { hosts: hosts.length, events, cpuMs, settleMs, load };
  } finally {
    if (ignoredKeys.length > 0) await writer.del(ignoredKeys).catch(() => undefined);
    // The peers go as the join rows' do (one at a time), and their routes with them after
    // weftd's departed-peer grace (3 s: src/daemon/departed.ts).
    if (joined.length > 0) {
      const gone = waitRoutes(watchers, new Set(joined), true, 15_000)
        .catch(() => progress("  the event kinds' peers: routes still on some host 15 s after their leases went"));
      for (const s of joined) {
        await writer.del([keyOf(s)]).catch(() => undefined);
        await sleep(50);
      }
      await gone;
    }
    writer.close();
    for (const w of watchers) w.close();
  }
}

/**
 * What one join costs a daemon in a cluster where joins are rare (the usual case): a join, its
 * leave, and everything the daemon does because of them until it is quiet again (a GC it runs
 * or V8 runs a few seconds later counts; the join rows, 30–70 ms apart, never see it). One cycle
 * per `cycleMs`, then the same time with nothing happening, subtracted. The daemons must have
 * settled after their start first (their own start-up GCs are not a join's).
 */
export async function measureIsolatedJoins(lab: Lab, cycles: number, cycleMs: number, network: string, progress: Progress, variantLabel: string, skipSubnets: number): Promise<IsolatedJoinFigures> {
  const hosts = lab.hostNames();
  const pids = hosts.map((h) => lab.daemonPid(h)!);
  const cpuMs = (): number => pids.map(cpuNsOf).reduce((a, t) => a + t, 0) / 1e6;
  const load: [number, number] = [load1(), NaN];
  const cyclePerDaemonMs: number[] = [];
  for (let c = 0; c < cycles; c++) {
    const t0 = nowMs();
    const before = cpuMs();
    await measureJoins(lab, 1, network, () => undefined, variantLabel, skipSubnets + c);
    await sleep(Math.max(0, cycleMs - (nowMs() - t0)));
    cyclePerDaemonMs.push((cpuMs() - before) / hosts.length);
  }
  // Twice as long as a cycle, halved: flanneld's quiet CPU (an iptables check every few seconds) is lumpy.
  const quietBefore = cpuMs();
  await sleep(2 * cycleMs);
  const quietPerDaemonMs = (cpuMs() - quietBefore) / hosts.length / 2;
  load[1] = load1();
  progress(`  ${variantLabel}: isolated join + leave, one per ${cycleMs / 1000} s: ${cyclePerDaemonMs.map((x) => x.toFixed(1)).join(' / ')} ms per daemon; quiet ${quietPerDaemonMs.toFixed(1)} ms`);
  return { variant: variantLabel, hosts: hosts.length, cyclePerDaemonMs, quietPerDaemonMs, cycleMs, load };
}

// ---- burst -----------------------------------------------------------------------------------

export interface BurstFigures {
  /** Which daemon ran on every host (Variant.label). */
  readonly variant: string;
  readonly peers: number;
  readonly hosts: number;
  /** First write sent → last write acknowledged by etcd (ms). */
  readonly writeMs: number;
  /** First write sent → the last of the burst's routes present, per host (ms). */
  readonly programmedMs: number[];
  /** The last write acknowledged → the last route present, per host (ms). */
  readonly afterLastWriteMs: number[];
  /** Memory of each daemon 2 s after the burst. */
  readonly memory: { rss: number; anon: number }[];
  readonly heap: HeapFigures[];
  readonly load: number;
}

/**
 * `peers` synthetic leases put into etcd at once — ten transactions of 100 puts sent together
 * (etcd takes 1000 separate puts in ~2.5 s on this disk, one fsync-bound commit each: that would
 * time etcd, not weft) — and every lab host programming all of them. Time zero: the first
 * transaction sent. The watch delivers every event of a transaction (etcd-registry.ts).
 */
export async function measureBurst(lab: Lab, peers: number, network: string, progress: Progress, variant: Variant = AFTER, skipSubnets = 0): Promise<BurstFigures> {
  const hosts = lab.hostNames();
  const watchers = hosts.map((h) => new RouteWatcher(h, lab.nsName(h)));
  const writer = new EtcdWriter(lab.nsName('etcd'), lab.etcdEndpoint);
  try {
    await sleep(500);
    const subnets = freeSubnets(lab, network, peers, skipSubnets);
    const kvs = subnets.map((s, i) => ({ key: keyOf(s), value: leaseValue(`10.252.${Math.floor(i / 250)}.${(i % 250) + 1}`, macOf(0x10000 + i)) }));
    const added = waitRoutes(watchers, new Set(subnets), false, 60_000);
    const batches: (typeof kvs)[] = [];
    for (let i = 0; i < kvs.length; i += 100) batches.push(kvs.slice(i, i + 100));
    const writes = await Promise.all(batches.map((b) => writer.put(b)));
    if (writes.some((w) => !w.ok)) throw new Error(`etcd burst write failed: ${JSON.stringify(writes.find((w) => !w.ok)?.error)}`);
    const t0 = Math.min(...writes.map((w) => w.sentAt));
    const writeMs = Math.max(...writes.map((w) => w.doneAt)) - t0;
    const at = await added;
    const programmedMs = hosts.map((h) => at.get(h)! - t0);
    const lastWriteAt = Math.max(...writes.map((w) => w.doneAt));
    progress(`  ${variant.label}: ${peers} peers: etcd took the writes in ${writeMs.toFixed(0)} ms; all programmed on every host after ${Math.max(...programmedMs).toFixed(0)} ms`);
    await sleep(2000);
    const memory = hosts.map((h) => memoryOf(lab.daemonPid(h)!));
    // flanneld is Go: no V8 heap, no /metrics.
    const heap = variant.flanneldPath ? [] : await Promise.all(hosts.map((h) => heapOf(lab, h)));
    const removed = waitRoutes(watchers, new Set(subnets), true, 60_000);
    for (const b of batches) await writer.del(b.map((kv) => kv.key));
    await removed;
    return { variant: variant.label, peers, hosts: hosts.length, writeMs, programmedMs, afterLastWriteMs: hosts.map((h) => at.get(h)! - lastWriteAt), memory, heap, load: load1() };
  } finally {
    writer.close();
    for (const w of watchers) w.close();
  }
}

// ---- start with many peers ------------------------------------------------------------------

export interface StartWithPeersFigures {
  /** Which daemon ran on every host (Variant.label). */
  readonly variant: string;
  readonly peers: number;
  readonly hosts: number;
  /** Per host: exec of its daemon → the last of the peers' routes present (ms). */
  readonly programmedMs: number[];
  /** Memory of each daemon 2 s after. */
  readonly memory: { rss: number; anon: number }[];
  readonly heap: HeapFigures[];
  readonly load: number;
}

/**
 * Every daemon stopped, `peers` synthetic leases written (ten transactions of 100), every
 * daemon started as `variant` at once: exec → all the peers' routes on that host, then memory.
 * The burst's counterpart that flanneld v0.20.2 can be measured on: it reads the leases once
 * at start (one range read), where a burst of watch events loses all but the first of each
 * response. Leaves the leases in etcd and the daemons running; `removeLeases` deletes them and waits for their routes to go.
 */
export async function measureStartWithPeers(lab: Lab, peers: number, network: string, progress: Progress, variant: Variant): Promise<StartWithPeersFigures & { removeLeases: () => Promise<void> }> {
  const hosts = lab.hostNames();
  const watchers = hosts.map((h) => new RouteWatcher(h, lab.nsName(h)));
  const writer = new EtcdWriter(lab.nsName('etcd'), lab.etcdEndpoint);
  try {
    for (const h of hosts) await lab.stopDaemon(h);
    await sleep(500);
    const subnets = freeSubnets(lab, network, peers);
    const kvs = subnets.map((s, i) => ({ key: keyOf(s), value: leaseValue(`10.252.${Math.floor(i / 250)}.${(i % 250) + 1}`, macOf(0x10000 + i)) }));
    const batches: (typeof kvs)[] = [];
    for (let i = 0; i < kvs.length; i += 100) batches.push(kvs.slice(i, i + 100));
    const writes = await Promise.all(batches.map((b) => writer.put(b)));
    if (writes.some((w) => !w.ok)) throw new Error(`etcd write of ${peers} leases failed: ${JSON.stringify(writes.find((w) => !w.ok)?.error)}`);
    const added = waitRoutes(watchers, new Set(subnets), false, 60_000);
    const t0 = new Map<string, number>();
    for (const h of hosts) {
      t0.set(h, nowMs());
      await lab.startDaemon(h, { wait: false, ...daemonOf(variant) });
    }
    const at = await added;
    const programmedMs = hosts.map((h) => at.get(h)! - t0.get(h)!);
    progress(`  ${variant.label}: started with ${peers} peers in etcd: all programmed ${programmedMs.map((x) => x.toFixed(0)).join(', ')} ms after exec`);
    await sleep(2000);
    const memory = hosts.map((h) => memoryOf(lab.daemonPid(h)!));
    const heap = variant.flanneldPath ? [] : await Promise.all(hosts.map((h) => heapOf(lab, h)));
    // Deletes the leases and waits until the running daemons removed every route (a weftd does;
    // flanneld v0.20.2 misses most of such a burst of deletes: run it last).
    const removeLeases = async (): Promise<void> => {
      const w = new EtcdWriter(lab.nsName('etcd'), lab.etcdEndpoint);
      const ws = hosts.map((h) => new RouteWatcher(h, lab.nsName(h)));
      try {
        await sleep(300);
        const removed = waitRoutes(ws, new Set(subnets), true, 60_000);
        for (const b of batches) await w.del(b.map((kv) => kv.key));
        await removed;
      } finally {
        w.close();
        for (const x of ws) x.close();
      }
    };
    return { variant: variant.label, peers, hosts: hosts.length, programmedMs, memory, heap, load: load1(), removeLeases };
  } finally {
    writer.close();
    for (const w of watchers) w.close();
  }
}

/**
 * Put `kvs` and wait until every host routes `subnets`; a host that has not after 10 s gets the
 * same put again (a new event), up to 3 times in all. flanneld v0.20.2 loses watch events that
 * arrive while it handles another one (it watches again from "now" after each): with 30 daemons
 * restarting, their own lease writes race the bench's. weftd never needs the second put.
 */
async function putUntilRouted(writer: EtcdWriter, watchers: readonly RouteWatcher[], kvs: readonly { key: string; value: string }[], subnets: readonly string[], label: string, progress: Progress): Promise<void> {
  let missing = [...watchers];
  for (let attempt = 1; ; attempt++) {
    const added = waitRoutes(missing, new Set(subnets), false, 10_000);
    const seen = new Set<string>();
    const offs = missing.map((w) => w.on((e) => {
      if (!e.deleted && subnets.includes(e.dst)) seen.add(`${w.host} ${e.dst}`);
    }));
    const w = await writer.put(kvs);
    if (!w.ok) throw new Error(`etcd put failed: ${JSON.stringify(w.error)}`);
    try {
      await added;
      return;
    } catch (err) {
      missing = missing.filter((x) => !subnets.every((s) => seen.has(`${x.host} ${s}`)));
      if (attempt === 3) throw new Error(`${label}: ${subnets.length} lease(s) still not routed on ${missing.map((x) => x.host).join(', ')} after ${attempt} puts`, { cause: err });
      progress(`  ${label}: lease(s) ${subnets.join(', ')} not routed on ${missing.map((x) => x.host).join(', ')} within 10 s: put again (lost event)`);
    } finally {
      for (const off of offs) off();
    }
  }
}

// ---- idle ------------------------------------------------------------------------------------

export interface IdleFigures {
  /** What ran: the lab's weftd flags (health port and probes on), or flannel's defaults. */
  readonly config: string;
  readonly hosts: number;
  readonly peersEach: number;
  readonly settleSeconds: number;
  readonly memory: { rss: number; anon: number }[];
  readonly heap: HeapFigures[];
  /** Context switches of each daemon's threads per minute over the CPU window. */
  readonly wakeupsPerMinute: number[];
  readonly variant: string;
  readonly load: [number, number];
  readonly cpuSeconds: number;
  /** How long the CPU was measured (absent in runs saved before the eighth pass: 60 s). */
  readonly windowSeconds?: number;
  /** CPU of all daemons together, in cores (CPU seconds per second). */
  readonly cpuCores: number;
}

/**
 * Memory after `settleSeconds` of idle with every host holding `hosts - 1 + extra` peers
 * (`extra` synthetic leases make it the number the target names), then CPU of all daemons over
 * `cpuSeconds`.
 */
export async function measureIdle(lab: Lab, extraPeers: number, network: string, settleSeconds: number, cpuSeconds: number, progress: Progress,
  restartWith: readonly string[] | null = null, variant: Variant | null = null): Promise<IdleFigures> {
  const hosts = lab.hostNames();
  if (restartWith !== null || variant !== null) {
    progress(`  restarting ${hosts.length} daemons (${variant?.label ?? 'after'}) ${(restartWith ?? []).join(' ')}`);
    for (const h of hosts) {
      await lab.stopDaemon(h);
      await lab.startDaemon(h, { extraArgs: restartWith ?? [], ...daemonOf(variant) });
    }
    // The restarts' own lease writes are events to every daemon: let them pass before ours.
    await sleep(3000);
  }
  const writer = new EtcdWriter(lab.nsName('etcd'), lab.etcdEndpoint);
  const watchers = hosts.map((h) => new RouteWatcher(h, lab.nsName(h)));
  const extra = freeSubnets(lab, network, extraPeers, 100);
  try {
    await sleep(300);
    if (extra.length > 0) {
      await putUntilRouted(writer, watchers, extra.map((s, i) => ({ key: keyOf(s), value: leaseValue(`10.253.0.${i + 1}`, macOf(0x20000 + i)) })), extra, variant?.label ?? 'after', progress);
    }
    for (const w of watchers) w.close();
    progress(`  idle for ${settleSeconds} s with ${hosts.length - 1 + extra.length} peers per host`);
    await sleep(settleSeconds * 1000);
    const pids = hosts.map((h) => lab.daemonPid(h)!);
    const memory = pids.map(memoryOf);
    progress(`  measuring the CPU of ${pids.length} idle daemons for ${cpuSeconds} s`);
    const loadStart = load1();
    const before = pids.map(cpuNsOf);
    const wakeBefore = pids.map(wakeupsOf);
    const t0 = nowMs();
    await sleep(cpuSeconds * 1000);
    const after = pids.map(cpuNsOf);
    const wakeAfter = pids.map(wakeupsOf);
    const elapsed = (nowMs() - t0) / 1000;
    // The V8 heap from /metrics only now: a scrape just before the window left its own work in
    // it (the HTTP connection's keep-alive close, a GC of the exposition's garbage by V8's memory
    // reducer a few seconds later). No health port, no /metrics; flanneld is Go (no V8 heap).
    const heap = restartWith?.includes('--healthz-port=0') || variant?.flanneldPath ? [] : await Promise.all(hosts.map((h) => heapOf(lab, h)));
    const wakeupsPerMinute = wakeAfter.map((w, i) => ((w - wakeBefore[i]!) * 60) / elapsed);
    // Nanoseconds (schedstat), not 10 ms ticks: 30 idle daemons use ~25 ticks in a 30 s window,
    // where one tick more or less per daemon moved the figure by ±0.002 cores.
    const cpu = after.reduce((a, t, i) => a + (t - before[i]!), 0) / 1e9;
    if (extra.length > 0) {
      // Wait for the routes to go (weftd holds a departed peer 3 s): a daemon restarted on top
      // of a leftover route replaces it unchanged, and the kernel then sends no notification.
      const ws = hosts.map((h) => new RouteWatcher(h, lab.nsName(h)));
      try {
        await sleep(300);
        const removed = waitRoutes(ws, new Set(extra), true, 10_000);
        await Promise.all(extra.map((s) => writer.del([keyOf(s)])));
        await removed.catch((err: unknown) => progress(`  ${variant?.label ?? 'after'}: ${err instanceof Error ? err.message : String(err)}`));
      } finally {
        for (const w of ws) w.close();
      }
    }
    return { variant: variant?.label ?? 'after', heap, wakeupsPerMinute, load: [loadStart, load1()], config: !restartWith?.includes('--healthz-port=0') ? 'lab defaults: --healthz-port=8471, so /metrics and peer probes on' : `${variant?.flanneldPath ? 'flanneld' : 'weftd'} ${restartWith.join(' ')} (flannel's defaults: no health port, no probes)`, hosts: hosts.length, peersEach: hosts.length - 1 + extra.length, settleSeconds, memory, cpuSeconds: cpu, windowSeconds: elapsed, cpuCores: cpu / elapsed };
  } finally {
    writer.close();
    for (const w of watchers) w.close();
  }
}
