/**
 * The lab: hosts as network namespaces on a shared underlay bridge, etcd in its own namespace,
 * weftd in each host, and one container namespace per host behind a Docker-like bridge addressed
 * from the host's subnet.env. `weft lab`, the e2e tests and bench/ all build it through this class.
 *
 *                       <prefix>net:  br0 (underlay bridge, 10.250.0.0/24, no address)
 *              ┌──────────────┬──────────┴───┬──────────────┐
 *        etcd  │          h1  │          h2  │          ...
 *   <prefix>etcd           <prefix>h1     <prefix>h2
 *   eth0 10.250.0.2        eth0 .11       eth0 .12          weftd --iface=eth0
 *                          weft0 10.5.a.1 weft0 10.5.b.1    (FLANNEL_SUBNET, FLANNEL_MTU)
 *                            │ c1           │ c1
 *                          <prefix>h1-c1  <prefix>h2-c1
 *                          eth0 10.5.a.2  eth0 10.5.b.2     default via .1
 *
 * State is persisted (see state.ts) before anything is created, so `Lab.downAt` can always clean up.
 */
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DEFAULT_ETCD_PREFIX } from '../config/options';
import { WeftError } from '../errors';
import { deferExtraCaCerts } from '../lease/etcd-common';
import { addressFamily, parseCidr, parseIPv4Cidr, type IPNet } from '../ip';
import { convergenceGaps, type FdbJson, type HostKernelState, type LinkJson, type NeighbourJson, type RouteJson } from './converge';
import { teardown, type DownReport } from './down';
import { Netns } from './netns';
import { findExecutable, findTools, requireRoot, type Tools } from './prereq';
import {
  formatLeaseTable, parseLeaseDump, type LabStatus, type LeaseRow, type PingMatrix, type PingResult,
} from './report';
import { isAlive, run, runInherit, sleep, spawnDetached, stopProcess, tailFile, waitUntil, type RunResult } from './run';
import {
  DEFAULT_LAB_NAME, defaultStateDir, initStateDir, labExists, loadState, saveState,
  type ContainerRecord, type HostRecord, type LabState, type ProcessRecord,
} from './state';
import { readSubnetEnv, type SubnetEnv } from './subnet-env';
import { createRuntime, runtimeContext, runtimeHost, teardownRuntimes, type RuntimeKind } from './runtimes';

export const UNDERLAY_CIDR = '10.250.0.0/24';
/**
 * With `internet: true`, a namespace <prefix>inet plays "the internet": on the underlay at
 * INTERNET_GATEWAY (every host's default route) and owning INTERNET_IP, an address outside every
 * lab network (TEST-NET-1, RFC 5737, only ever inside the lab's namespaces). It has no route back
 * to the overlay: only masqueraded traffic gets answers, which is what --ip-masq tests need.
 */
export const INTERNET_GATEWAY = '10.250.0.1';
export const INTERNET_IP = '192.0.2.1';
export const ETCD_IP = '10.250.0.2';
export const ETCD_ENDPOINT = `http://${ETCD_IP}:2379`;
/** Largest etcd cluster the lab builds (members at 10.250.0.2 .. 10.250.0.(1+N)). */
export const MAX_ETCD_MEMBERS = 3;
export const DEFAULT_NETWORK = '10.5.0.0/16';
/** `--ipv6`: the underlay's IPv6 prefix (every namespace on it gets <prefix><its IPv4's last byte>/64) and the overlay's IPv6Network. */
export const IPV6_UNDERLAY_PREFIX = 'fd00:250::';
export const DEFAULT_IPV6_NETWORK = 'fd00:5::/48';
export const DEFAULT_BACKEND = 'vxlan';
export { DEFAULT_ETCD_PREFIX };
/** Any port works: every host has its own namespace. */
export const DEFAULT_HEALTHZ_PORT = 8471;
export const MAX_HOSTS = 200;
/** Interface names inside the namespaces (no prefix needed: each namespace is the lab's own). */
const UNDERLAY_BRIDGE = 'br0';
const HOST_IFACE = 'eth0';
const CONTAINER_BRIDGE = 'weft0';
const CONTAINER_VETH = 'c1';

/** etcd member N's (1-based) name in the lab: 'etcd', 'etcd2', 'etcd3'. */
export function etcdMemberName(index: number): string {
  return index === 1 ? 'etcd' : `etcd${index}`;
}

/** etcd member N's underlay address: .2, .3, .4. */
export function etcdMemberIp(index: number): string {
  return `10.250.0.${1 + index}`;
}

/** Host N's underlay address: .11, .12, ... (etcd is .2). */
export function hostUnderlayIp(index: number): string {
  return `10.250.0.${10 + index}`;
}

export function defaultPrefix(name: string): string {
  return name === DEFAULT_LAB_NAME ? 'weft-' : `weft-${name}-`;
}

/**
 * dist/src/lab/lab.js → dist/src/weftd.bundle.js, what operators run (`npm run build`,
 * scripts/build-weftd-bundle.js), when it is at least as new as dist/src/cli/weftd.js; else
 * (only `tsc` since, e.g. `npm run build:ts`) the unbundled entry, never a stale bundle.
 */
export function defaultWeftdPath(): string {
  const entry = resolve(__dirname, '..', 'cli', 'weftd.js');
  const bundle = resolve(__dirname, '..', 'weftd.bundle.js');
  try {
    return statSync(bundle).mtimeMs >= statSync(entry).mtimeMs ? bundle : entry;
  } catch {
    return entry;
  }
}

export interface LabOptions {
  readonly name?: string;                 // default 'default'
  readonly prefix?: string;               // namespace prefix; default 'weft-' ('weft-<name>-' for other names)
  readonly stateDir?: string;             // default /run/weft-lab/<name>
  readonly hosts?: number;                // default 2
  readonly network?: string;              // default 10.5.0.0/16
  readonly backend?: string;              // default vxlan
  /** Replaces the whole {"Network":…,"Backend":{"Type":…}} document written to <etcdPrefix>/config. */
  readonly networkConfig?: Readonly<Record<string, unknown>>;
  readonly etcdPrefix?: string;           // default /coreos.com/network
  /** etcd cluster size: 1 (default) or 3 members (etcd, etcd2, etcd3 at 10.250.0.2, .3, .4). */
  readonly etcdMembers?: number;
  readonly weftdPath?: string;            // default dist/src/cli/weftd.js next to this file
  readonly extraWeftdArgs?: readonly string[];
  readonly healthzPort?: number;          // default 8471; 0 = do not pass --healthz-port
  readonly startDaemons?: boolean;        // default true; false builds namespaces + etcd only
  readonly internet?: boolean;            // default false; true adds <prefix>inet (see INTERNET_IP)
  /** 'namespaces' (default: the stand-in below), or a real 'docker' / 'podman' per host (runtime.ts). */
  readonly runtime?: RuntimeKind;
  readonly containers?: boolean;          // default true; false: no container on any host
  /** 'dual': IPv4 and IPv6 overlay (EnableIPv6, IPv6Network fd00:5::/48); 'only': IPv6 only (EnableIPv4 false). The underlay gets IPv6 too. */
  readonly ipv6?: 'dual' | 'only';
  readonly readyTimeoutMs?: number;       // per weftd, until it writes subnet.env; default 30 s
  readonly convergeTimeoutMs?: number;    // until every host routes to every peer; default 20 s
  readonly cleanupOnFailure?: boolean;    // default true: a failed up() tears down what it built
  readonly tools?: Tools;                 // default: resolved from PATH
  readonly progress?: (line: string) => void;
}

/** NODE_OPTIONS of weftd in systemd/weftd.service: the lab runs weftd the same way. */
export const WEFTD_NODE_OPTIONS = '--max-semi-space-size=2 --v8-pool-size=1';

/**
 * node's own arguments for weftd, in its shebang (src/cli/weftd.ts, the one-file loader): none.
 * `--no-opt` (no TurboFan) is set at run time once weftd's modules are loaded
 * (src/daemon/v8-flags.ts): on the command line it made V8 reject Node's code cache of its own
 * modules at every start. No TurboFan because a control plane runs each function a few times
 * per event; V8's optimizing compiler cost more than it saved (1000 leases → programmed 161–282
 * ms without it against 316–532 with it, paired; 4 MB less RSS; per join the same:
 * docs/performance.md, "Issue #14, third pass"). Sparkplug, the baseline compiler, stays.
 */
export const WEFTD_NODE_ARGS: readonly string[] = [];

export interface StartDaemonOptions {
  readonly extraEnv?: Readonly<Record<string, string>>;
  readonly extraArgs?: readonly string[];
  /** Wait until subnet.env is (re)written; default true. */
  readonly wait?: boolean;
  readonly timeoutMs?: number;
  /** Another weftd.js for this start only (bench/: the tree before a change, paired in one run). */
  readonly weftdPath?: string;
  /** node's arguments before weftd.js; default WEFTD_NODE_ARGS (bench/: the tree before, as it ran). */
  readonly nodeArgs?: readonly string[];
  /**
   * Run a real flanneld binary instead of weftd on this host (interop tests and the side-by-side
   * bench): it gets the same flannel flags (etcd endpoints and prefix, iface, subnet file, healthz
   * port) but none of the lab's weft-only extra flags; extraArgs are passed as given.
   */
  readonly flanneldPath?: string;
}

export interface PingOptions {
  /** 6: ping the containers' IPv6 addresses (dual-stack lab); default their primary address. */
  readonly family?: 4 | 6;
  readonly attempts?: number;    // default 5 (routes may still be converging)
  readonly intervalMs?: number;  // between attempts, default 500
}

type Progress = (line: string) => void;

export class Lab {
  private readonly netns: Netns;

  private constructor(
    private readonly state: LabState,
    readonly tools: Tools,
    private readonly progress: Progress,
  ) {
    this.netns = new Netns(tools.ip);
  }

  // ---- lifecycle -------------------------------------------------------------------------

  /** Build a lab. On failure it tears down what it built unless `cleanupOnFailure: false`. */
  static async up(opts: LabOptions = {}): Promise<Lab> {
    requireRoot();
    const tools = opts.tools ?? findTools();
    const name = opts.name ?? DEFAULT_LAB_NAME;
    const stateDir = resolve(opts.stateDir ?? defaultStateDir(name));
    const state = newState(name, stateDir, opts);
    const hosts = opts.hosts ?? 2;
    validate(state, hosts);
    createRuntime(opts.runtime); // fails now, naming the packages, if the runtime is not installed
    const lab = new Lab(state, tools, opts.progress ?? (() => undefined));
    await lab.checkFree([...['net', ...lab.etcdMembers(), ...(state.internet ? ['inet'] : [])].map((s) => state.prefix + s),
      ...range(hosts).flatMap((i) => lab.hostNamespaces(i))]);

    initStateDir(stateDir);
    saveState(lab.state);
    try {
      await lab.buildUnderlay();
      await lab.createEtcdCluster();
      if (state.internet) await lab.createInternet();
      for (const i of range(hosts)) await lab.createHost(i);
      if (state.daemons) await lab.startAllDaemons(lab.hostNames(), opts);
      return lab;
    } catch (e) {
      if (opts.cleanupOnFailure ?? true) {
        await lab.down().catch(() => undefined);
      }
      throw e;
    }
  }

  /** Attach to a lab built earlier (maybe by another process). */
  static open(stateDir: string, opts: { tools?: Tools; progress?: Progress } = {}): Lab {
    const state = loadState(resolve(stateDir));
    return new Lab(state, opts.tools ?? findTools(), opts.progress ?? (() => undefined));
  }

  /** Tear down the lab recorded in `stateDir`; null when there is no lab there. Idempotent. */
  static async downAt(stateDir: string, opts: { tools?: Tools } = {}): Promise<DownReport | null> {
    if (!labExists(resolve(stateDir))) return null;
    return Lab.open(stateDir, opts).down();
  }

  /** Stop every recorded process, delete every recorded namespace and the state dir. */
  async down(): Promise<DownReport> {
    // Real runtimes first: their containers, daemons and mounts, while the namespaces still exist.
    const left = await teardownRuntimes(this.state, this.tools.ip, this.progress);
    if (left.length > 0) throw new WeftError('INTERNAL', `lab ${this.name}: down left runtime state behind (run it again): ${left.join('; ')}`);
    return teardown(this.state, this.netns);
  }

  // ---- names -----------------------------------------------------------------------------

  get name(): string { return this.state.name; }
  get prefix(): string { return this.state.prefix; }
  get stateDir(): string { return this.state.stateDir; }
  get etcdEndpoint(): string { return ETCD_ENDPOINT; }
  get runtime(): RuntimeKind { return (this.state.runtime ?? 'namespaces') as RuntimeKind; }
  /** false for a lab built with --no-containers. */
  get containersEnabled(): boolean { return this.state.containers !== false; }
  /** Client URLs of every etcd member, member 1 first (what weftd gets as --etcd-endpoints). */
  get etcdEndpoints(): string[] { return this.etcdMembers().map((_, i) => `http://${etcdMemberIp(i + 1)}:2379`); }

  /** Names of the etcd members: ['etcd'] or ['etcd', 'etcd2', 'etcd3']. */
  etcdMembers(): string[] {
    return range(this.state.etcdMembers ?? 1).map(etcdMemberName);
  }

  /** 'h1', 'h2', ... in creation order. */
  hostNames(): string[] {
    return this.state.hosts.map((h) => h.name);
  }

  /** Container names, 'h1-c1', ..., of hosts whose container is set up. */
  /** 'dual' or 'only' when built with IPv6 (LabOptions.ipv6); null for an IPv4-only lab. */
  get ipv6(): 'dual' | 'only' | null {
    return this.state.ipv6 ?? null;
  }

  containerNames(): string[] {
    return this.state.hosts.flatMap((h) => (h.container ? [h.container.name] : []));
  }

  /** Full namespace name of 'net', 'etcd', 'hN' or 'hN-c1' (or a recorded full name). */
  nsName(short: string): string {
    const full = this.state.prefix + short;
    if (this.state.namespaces.includes(full)) return full;
    if (this.state.namespaces.includes(short)) return short;
    const known = this.state.namespaces.map((n) => n.slice(this.state.prefix.length)).join(', ');
    throw new WeftError('CONFIG_INVALID', `lab ${this.name}: no host or namespace "${short}" (known: ${known})`);
  }

  subnetFile(host: string): string {
    return join(this.stateDir, this.host(host).name, 'subnet.env');
  }

  logFile(host: string): string {
    return this.etcdMembers().includes(host) ? join(this.stateDir, host, 'etcd.log') : join(this.stateDir, this.host(host).name, 'weftd.log');
  }

  /** The host's subnet.env as weftd last wrote it, null if not (yet) written. */
  subnetEnv(host: string): SubnetEnv | null {
    return readSubnetEnv(this.subnetFile(host));
  }

  // ---- commands in namespaces ------------------------------------------------------------

  /** Run `cmd` inside the namespace of `host` ('h1', 'h1-c1', 'etcd', 'net'), output captured. */
  exec(host: string, cmd: readonly string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
    return this.netns.exec(this.nsName(host), cmd, opts.env, opts.timeoutMs);
  }

  /** Run `cmd` inside `host`'s namespace with this process's stdio; resolves to its exit code. */
  execInteractive(host: string, cmd: readonly string[]): Promise<number> {
    const rt = createRuntime(this.state.runtime as RuntimeKind | undefined);
    const h = this.state.hosts.find((x) => x.container?.name === host);
    // No command: a shell — busybox's inside a real container (the user's $SHELL is not in the image).
    if (rt && h) return runInherit('/usr/bin/env', rt.execArgv(runtimeHost(this.state, h), cmd.length > 0 ? cmd : ['/bin/sh'], process.stdin.isTTY === true));
    return runInherit(this.tools.ip, this.netns.execArgs(this.nsName(host), cmd.length > 0 ? cmd : [process.env.SHELL || '/bin/sh']));
  }

  /**
   * Run `cmd` inside a real runtime's container ('h1-c1': `docker exec` / `podman exec`, the
   * container's own filesystem and busybox), output captured. The stand-in has no filesystem of
   * its own: there this is exec() in the container's namespace.
   */
  containerExec(container: string, cmd: readonly string[], timeoutMs = 60000): Promise<RunResult> {
    const rt = createRuntime(this.state.runtime as RuntimeKind | undefined);
    const h = this.state.hosts.find((x) => x.container?.name === container);
    if (!rt || !h) return this.exec(container, cmd, { timeoutMs });
    const [file, ...args] = rt.execArgv(runtimeHost(this.state, h), cmd, false);
    return run(file ?? '', args, { timeoutMs });
  }

  /** etcdctl (v3 API) against the lab's etcd, run inside the etcd namespace. */
  etcdctl(args: readonly string[]): Promise<RunResult> {
    // Only members that run: etcdctl's client would otherwise keep trying a dead first endpoint.
    const live = this.etcdMembers().flatMap((m, i) => (this.etcdPid(m) !== null ? [`http://${etcdMemberIp(i + 1)}:2379`] : []));
    const endpoints = live.length > 0 ? live : this.etcdEndpoints;
    return this.netns.exec(this.nsName('etcd'), [this.tools.etcdctl, `--endpoints=${endpoints.join(',')}`, ...args],
      etcdctlEnv(), 15000);
  }

  // ---- etcd faults -----------------------------------------------------------------------

  /** PID of an etcd member ('etcd', 'etcd2', ...) if it runs, else null. */
  etcdPid(member = 'etcd'): number | null {
    const rec = this.etcdRecord(member);
    return rec && isAlive(rec) ? rec.pid : null;
  }

  /**
   * Stop etcd members (default: all) by PID — `signal` (default SIGTERM; SIGKILL for a crash),
   * SIGKILL after 5 s. Their data dirs stay: startEtcd() brings them back with their data.
   */
  async stopEtcd(members: readonly string[] = this.etcdMembers(), signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    for (const m of members) {
      const rec = this.etcdRecord(m);
      if (!rec) continue;
      if (isAlive(rec)) trySignalPid(rec.pid, 'SIGCONT'); // a paused etcd would not act on SIGTERM
      await stopProcess(rec, signal, 5000);
      this.state.processes = this.state.processes.filter((p) => p !== rec);
      saveState(this.state);
      this.progress(`stopped etcd member ${m} (pid ${rec.pid}, ${signal})`);
    }
  }

  /**
   * Start stopped etcd members again (default: all) from their data dirs and wait until each
   * answers (with a 3-member cluster: until the cluster has a leader again).
   */
  async startEtcd(members: readonly string[] = this.etcdMembers(), timeoutMs = 30000): Promise<void> {
    const started: string[] = [];
    for (const m of members) {
      if (this.etcdPid(m) !== null) continue;
      this.spawnEtcd(this.etcdMemberIndex(m));
      started.push(m);
    }
    for (const m of started) await this.waitEtcdHealthy(m, timeoutMs);
  }

  /**
   * Freeze etcd members (default: all) with SIGSTOP: connections stay open but nothing answers,
   * as with a partition. etcd's lease clock keeps running (leases expire meanwhile).
   */
  pauseEtcd(members: readonly string[] = this.etcdMembers()): void {
    for (const m of members) this.signalEtcd(m, 'SIGSTOP');
  }

  /** SIGCONT after pauseEtcd(). */
  resumeEtcd(members: readonly string[] = this.etcdMembers()): void {
    for (const m of members) this.signalEtcd(m, 'SIGCONT');
  }

  private signalEtcd(member: string, signal: NodeJS.Signals): void {
    const rec = this.etcdRecord(member);
    if (!rec || !isAlive(rec)) throw new WeftError('CONFIG_INVALID', `lab ${this.name}: etcd member ${member} is not running`);
    process.kill(rec.pid, signal);
    this.progress(`${signal} etcd member ${member} (pid ${rec.pid})`);
  }

  private etcdRecord(member: string): ProcessRecord | undefined {
    return this.state.processes.find((p) => p.role === 'etcd' && p.host === member);
  }

  private etcdMemberIndex(member: string): number {
    const i = this.etcdMembers().indexOf(member);
    if (i < 0) throw new WeftError('CONFIG_INVALID', `lab ${this.name}: no etcd member "${member}" (members: ${this.etcdMembers().join(', ')})`);
    return i + 1;
  }

  /** Subnet leases currently in etcd, with the lab host owning each public IP. */
  async leases(): Promise<LeaseRow[]> {
    const r = await this.etcdctl(['get', '--prefix', `${this.state.etcdPrefix}/subnets/`, '-w', 'json']);
    if (r.code !== 0) throw new WeftError('ETCD_UNAVAILABLE', `lab ${this.name}: list leases: ${r.stderr.trim()}`, { retryable: true });
    const byIp = new Map(this.state.hosts.map((h) => [h.underlayIp, h.name]));
    if (this.state.ipv6) for (const h of this.state.hosts) byIp.set(underlayIPv6(h.underlayIp), h.name);
    return parseLeaseDump(r.stdout, byIp);
  }

  /**
   * One ping from the namespace `from` ('h1-c1', 'h1', ...) to `to`: a host or container name
   * (its container's address) or an IPv4 address. Retried while routes converge.
   */
  async ping(from: string, to: string, opts: PingOptions = {}): Promise<boolean> {
    return (await this.pingDetailed(from, to, opts)).ok;
  }

  /** Every container pings every other container (over IPv6 with `family: 6`, on a dual-stack lab). */
  async pingMatrix(opts: PingOptions = {}): Promise<PingMatrix> {
    const nodes = this.containerNames();
    const pairs = nodes.flatMap((from) => nodes.filter((to) => to !== from).map((to) => [from, to] as const));
    const results = await mapLimit(pairs, 16, ([from, to]) => this.pingDetailed(from, to, opts));
    return { nodes, results, ok: results.every((r) => r.ok) };
  }

  // ---- hosts and daemons -----------------------------------------------------------------

  /** Add host N+1 (namespace, underlay, and — if the lab runs daemons — weftd and container). */
  async addHost(opts: StartDaemonOptions = {}): Promise<string> {
    const index = Math.max(0, ...this.state.hosts.map((h) => h.index)) + 1;
    if (index > MAX_HOSTS) throw new WeftError('CONFIG_INVALID', `lab ${this.name}: at most ${MAX_HOSTS} hosts`);
    await this.checkFree(this.hostNamespaces(index));
    const host = await this.createHost(index);
    if (this.state.daemons) {
      await this.startDaemon(host.name, opts);
      if (this.state.containers !== false) await this.setupContainer(host.name);
      await this.waitConverged();
    }
    return host.name;
  }

  /** Stop a host's weftd and delete its namespaces (its lease stays in etcd until it expires). */
  async removeHost(host: string): Promise<void> {
    const h = this.host(host);
    await this.stopDaemon(h.name);
    const rt = createRuntime(this.state.runtime as RuntimeKind | undefined);
    if (rt) {
      const left = await rt.teardown(runtimeContext(this.state, this.tools.ip, this.progress), runtimeHost(this.state, h));
      if (left.length > 0) throw new WeftError('INTERNAL', `lab ${this.name}: remove ${h.name}: its ${rt.kind} left state behind (run it again): ${left.join('; ')}`);
    }
    if (h.container && (await this.netns.delete(h.container.ns))) this.progress(`deleted ${h.container.ns}`);
    await this.netns.delete(h.ns);
    this.state.namespaces = this.state.namespaces.filter((n) => n !== h.ns && n !== h.container?.ns);
    this.state.hosts = this.state.hosts.filter((x) => x !== h);
    saveState(this.state);
  }

  /**
   * Start weftd in `host`'s namespace:
   *   node <weftd> --etcd-endpoints=http://10.250.0.2:2379 --iface=eth0 --subnet-file=<dir>/hN/subnet.env
   *        [--healthz-port=N] [--etcd-prefix=P] <extraWeftdArgs> <extraArgs>
   * and (unless wait: false) wait until it (re)writes subnet.env. Readiness is the subnet file
   * because sd_notify datagrams cannot be received from Node; the file is written just before
   * READY=1. Throws, quoting the log, if the daemon exits or times out.
   */
  async startDaemon(host: string, opts: StartDaemonOptions = {}): Promise<number> {
    const h = this.host(host);
    const running = this.daemonRecord(h.name);
    if (running && isAlive(running)) throw new WeftError('CONFIG_INVALID', `lab ${this.name}: weftd already runs on ${h.name} (pid ${running.pid})`);
    const weftdPath = opts.weftdPath ?? this.state.weftdPath;
    if (opts.flanneldPath !== undefined && !existsSync(opts.flanneldPath)) {
      throw new WeftError('CONFIG_MISSING', `flanneld not found at ${opts.flanneldPath}: build flannel v0.20.2 (docs/DEVELOPING.md)`);
    }
    if (opts.flanneldPath === undefined && !existsSync(weftdPath)) {
      throw new WeftError('CONFIG_MISSING', `weftd not found at ${weftdPath}: build it first (npm run build)`);
    }
    const file = this.subnetFile(h.name);
    const before = fileStamp(file);
    const argv = opts.flanneldPath !== undefined
      ? [opts.flanneldPath, ...this.flannelArgs(h), ...(opts.extraArgs ?? [])]
      : [process.execPath, ...(opts.nodeArgs ?? WEFTD_NODE_ARGS), weftdPath, ...this.weftdArgs(h), ...(opts.extraArgs ?? [])];
    const log = this.logFile(h.name);
    writeFileSync(log, `--- weft lab: ${new Date().toISOString()} start on ${h.name}: ${argv.join(' ')}\n`, { flag: 'a' });
    // As systemd/weftd.service runs it (V8's young generation capped: docs/performance.md), with
    // the lab's own cache directory in place of the unit's CacheDirectory=weft (the one-file
    // weftd's warm code cache, src/daemon/code-cache.ts): nothing written outside the lab.
    const env = { NODE_OPTIONS: WEFTD_NODE_OPTIONS, WEFT_CACHE_DIR: join(this.state.stateDir, 'cache'), ...deferExtraCaCerts(cleanEnv(/^(FLANNELD_|NOTIFY_SOCKET$)/)), ...opts.extraEnv };
    const id = spawnDetached(this.tools.ip, this.netns.execArgs(h.ns, argv), log, env);
    this.state.processes = [...this.state.processes.filter((p) => !(p.role === 'weftd' && p.host === h.name)),
      { role: 'weftd', host: h.name, ns: h.ns, ...id }];
    saveState(this.state);
    if (opts.wait ?? true) await this.waitSubnetFile(h.name, before, opts.timeoutMs ?? 30000);
    return id.pid;
  }

  /** Stop weftd on `host`: `signal` (default SIGTERM), SIGKILL after `graceMs`. No-op if not running. */
  async stopDaemon(host: string, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<void> {
    const h = this.host(host);
    const rec = this.daemonRecord(h.name);
    if (!rec) return;
    await stopProcess(rec, signal, graceMs);
    this.state.processes = this.state.processes.filter((p) => p !== rec);
    saveState(this.state);
  }

  /** Send `signal` to weftd on `host` without waiting or escalating (e.g. SIGSTOP, SIGHUP). */
  signalDaemon(host: string, signal: NodeJS.Signals): void {
    const rec = this.daemonRecord(this.host(host).name);
    if (!rec || !isAlive(rec)) throw new WeftError('CONFIG_INVALID', `lab ${this.name}: no weftd running on ${host}`);
    process.kill(rec.pid, signal);
  }

  /** Stop and start weftd, re-address the container if the subnet changed, wait for routes. */
  async restartDaemon(host: string, opts: StartDaemonOptions = {}): Promise<number> {
    await this.stopDaemon(host);
    const pid = await this.startDaemon(host, opts);
    if (opts.wait ?? true) {
      if (this.state.containers !== false) await this.setupContainer(host);
      await this.waitConverged();
    }
    return pid;
  }

  daemonPid(host: string): number | null {
    const rec = this.daemonRecord(this.host(host).name);
    return rec && isAlive(rec) ? rec.pid : null;
  }

  /** The daemon's log (stdout+stderr of every start on that host). */
  daemonLog(host: string): string {
    return tailFile(this.logFile(host), Number.MAX_SAFE_INTEGER);
  }

  /**
   * Give `host` a container as Docker would: bridge weft0 = FLANNEL_SUBNET with FLANNEL_MTU, a
   * namespace <prefix>hN-c1 on it at the subnet's .2, default route via .1. Idempotent: re-run
   * after a restart to follow a changed subnet.
   */
  async setupContainer(host: string): Promise<ContainerRecord> {
    const h = this.host(host);
    const rt = createRuntime(this.state.runtime as RuntimeKind | undefined);
    if (rt) {
      // A real runtime owns the host's bridge (docker0, cni0): no weft0 beside it.
      if (!this.state.namespaces.includes(`${h.ns}-c1`)) this.state.namespaces.push(`${h.ns}-c1`);
      saveState(this.state);
      const c = await rt.ensure(runtimeContext(this.state, this.tools.ip, this.progress), runtimeHost(this.state, h));
      h.container = c;
      saveState(this.state);
      return c;
    }
    const env = this.subnetEnv(h.name);
    if (!env) throw new WeftError('CONFIG_MISSING', `lab ${this.name}: ${this.subnetFile(h.name)} not written yet (is weftd running on ${h.name}?)`);
    const c: { -readonly [K in keyof ContainerRecord]: ContainerRecord[K] } = { name: `${h.name}-c1`, ns: `${h.ns}-c1`, address: env.containerAddress };
    h.container = c;
    if (!this.state.namespaces.includes(c.ns)) this.state.namespaces.push(c.ns);
    saveState(this.state);
    if (!(await this.netns.exists(c.ns))) await this.netns.add(c.ns);
    if (!(await this.netns.linkExists(h.ns, CONTAINER_BRIDGE))) await this.netns.addBridge(h.ns, CONTAINER_BRIDGE);
    await this.setAddress(h.ns, CONTAINER_BRIDGE, env.subnet);
    if (!(await this.netns.linkExists(h.ns, CONTAINER_VETH))) {
      await this.netns.addVeth({ ns: h.ns, local: CONTAINER_VETH, peerNs: c.ns, peer: 'eth0', bridge: CONTAINER_BRIDGE, mtu: env.mtu });
    } else {
      await this.netns.setMtu(h.ns, CONTAINER_VETH, env.mtu);
      await this.netns.setMtu(c.ns, 'eth0', env.mtu);
    }
    await this.netns.setMtu(h.ns, CONTAINER_BRIDGE, env.mtu);
    await this.setAddress(c.ns, 'eth0', env.containerAddress);
    await this.netns.in(c.ns, ['route', 'replace', 'default', 'via', env.subnet.split('/')[0] ?? ''], `set default route in ${c.ns}`);
    if (env.ipv6Subnet !== null && env.ipv6ContainerAddress !== null && env.ipv6Subnet !== env.subnet) {
      // Dual stack: the bridge gets FLANNEL_IPV6_SUBNET (::1), the container ::2 and a default route via ::1.
      await this.netns.in(h.ns, ['-6', 'addr', 'replace', env.ipv6Subnet, 'dev', CONTAINER_BRIDGE, 'nodad'], `add IPv6 to ${CONTAINER_BRIDGE} in ${h.ns}`);
      await this.netns.in(c.ns, ['-6', 'addr', 'replace', env.ipv6ContainerAddress, 'dev', 'eth0', 'nodad'], `add IPv6 to eth0 in ${c.ns}`);
      await this.netns.in(c.ns, ['-6', 'route', 'replace', 'default', 'via', env.ipv6Subnet.split('/')[0] ?? ''], `set IPv6 default route in ${c.ns}`);
      c.address6 = env.ipv6ContainerAddress;
      saveState(this.state);
    }
    this.progress(`container ${c.name} in ${c.ns}: ${c.address}, mtu ${env.mtu}, via ${CONTAINER_BRIDGE} ${env.subnet}`);
    return c;
  }

  /**
   * Wait until the kernels of the hosts with a running weftd carry traffic between every two of
   * them, both ways and in every family they lease: converge.ts's convergenceGaps() (vxlan: route,
   * PERMANENT neighbour with the peer's device MAC and FDB entry to its underlay address per peer;
   * host-gw/DirectRouting: the route via the peer; udp/wireguard/user-space: the route; no two
   * hosts on overlapping subnets). Returns false on timeout rather than throwing: the progress
   * line and the ping matrix then show what is missing.
   */
  async waitConverged(timeoutMs = 20000): Promise<boolean> {
    const active = this.state.hosts.filter((h) => this.daemonPid(h.name) !== null)
      .map((h) => ({ h, subnets: leasedSubnets(this.subnetEnv(h.name)) }))
      .filter((x) => x.subnets.length > 0);
    const bridge = findExecutable('bridge', process.env.PATH ?? '') ?? 'bridge';
    let gaps: string[] = [];
    const converged = async (): Promise<boolean> => {
      const hosts = await Promise.all(active.map(async ({ h, subnets }): Promise<HostKernelState> => {
        const json = async <T>(args: readonly string[], what: string, tool = this.tools.ip): Promise<T[]> => {
          const r = await run(tool, ['-n', h.ns, '-j', ...args]);
          if (r.code !== 0) throw new WeftError('NETLINK', `lab ${this.name}: ${what} in ${h.ns}: ${r.stderr.trim()}`);
          const parsed: unknown = JSON.parse(r.stdout.trim() || '[]');
          return Array.isArray(parsed) ? (parsed as T[]) : [];
        };
        const [links, routes4, routes6, neighbours, fdb] = await Promise.all([
          json<LinkJson>(['-d', 'link', 'show'], 'list links'),
          json<RouteJson>(['-4', 'route', 'show'], 'list IPv4 routes'),
          json<RouteJson>(['-6', 'route', 'show'], 'list IPv6 routes'),
          json<NeighbourJson>(['neigh', 'show'], 'list neighbours'),
          json<FdbJson>(['fdb', 'show'], 'list FDB entries', bridge),
        ]);
        return {
          name: h.name, underlayDevice: HOST_IFACE, underlay: { 4: h.underlayIp, 6: this.state.ipv6 ? underlayIPv6(h.underlayIp) : null },
          subnets, links, routes: [...routes4, ...routes6], neighbours, fdb,
        };
      }));
      gaps = convergenceGaps(hosts);
      return gaps.length === 0;
    };
    const ok = await waitUntil(converged, timeoutMs, 200);
    this.progress(ok ? 'routes, neighbours and FDB entries converged on every host' : `not converged after ${timeoutMs / 1000} s: ${gaps.join('; ')}`);
    return ok;
  }

  async status(): Promise<LabStatus> {
    const present = new Set(await this.netns.list());
    const etcdRec = this.state.processes.find((p) => p.role === 'etcd') ?? null;
    let leases: LeaseRow[] | null = null;
    let leaseError: string | null = null;
    try {
      leases = await this.leases();
    } catch (e) {
      leaseError = e instanceof Error ? e.message : String(e);
    }
    return {
      name: this.name, prefix: this.prefix, stateDir: this.stateDir,
      network: this.state.network, backend: this.state.backend, runtime: this.runtime,
      etcd: etcdRec && { pid: etcdRec.pid, alive: isAlive(etcdRec) },
      namespaces: this.state.namespaces.map((n) => ({ name: n, present: present.has(n) })),
      hosts: this.state.hosts.map((h) => {
        const rec = this.daemonRecord(h.name);
        let subnet: string | null = null;
        try { subnet = this.subnetEnv(h.name)?.subnet ?? null; } catch { subnet = '(unreadable subnet.env)'; }
        return {
          name: h.name, ns: h.ns, nsPresent: present.has(h.ns), underlayIp: h.underlayIp,
          daemon: rec ? { pid: rec.pid, alive: isAlive(rec) } : null, subnet, container: h.container,
        };
      }),
      leases, leaseError,
    };
  }

  /** The lease table as `weft lab` prints it. */
  async leaseTable(): Promise<string> {
    return formatLeaseTable(await this.leases());
  }

  // ---- building blocks -------------------------------------------------------------------

  private host(name: string): HostRecord {
    const h = this.state.hosts.find((x) => x.name === name || x.ns === name);
    if (!h) throw new WeftError('CONFIG_INVALID', `lab ${this.name}: no host "${name}" (hosts: ${this.hostNames().join(', ') || 'none'})`);
    return h;
  }

  private hostNamespaces(index: number): string[] {
    return [`${this.prefix}h${index}`, `${this.prefix}h${index}-c1`];
  }

  private daemonRecord(host: string): ProcessRecord | undefined {
    return this.state.processes.find((p) => p.role === 'weftd' && p.host === host);
  }

  /** Refuse to reuse namespaces that exist already (another lab with the same prefix). */
  private async checkFree(names: readonly string[]): Promise<void> {
    const existing = new Set(await this.netns.list());
    const taken = names.filter((n) => existing.has(n));
    if (taken.length > 0) {
      throw new WeftError('CONFIG_INVALID',
        `namespace ${taken.join(', ')} already exists: another lab uses prefix "${this.prefix}" ` +
        `(remove it with weft lab down, or ip netns delete ${taken[0]})`);
    }
  }

  /** Record, then create: the state file always lists a superset of what exists. */
  private async addNamespace(ns: string): Promise<void> {
    if (!this.state.namespaces.includes(ns)) this.state.namespaces.push(ns);
    saveState(this.state);
    await this.netns.add(ns);
  }

  private async buildUnderlay(): Promise<void> {
    const ns = this.nsFor('net');
    await this.addNamespace(ns);
    await this.netns.addBridge(ns, UNDERLAY_BRIDGE);
    this.progress(`underlay bridge ${UNDERLAY_BRIDGE} in ${ns} (${UNDERLAY_CIDR})`);
  }

  /** A namespace on the underlay bridge with `eth0` at `ip`/24. */
  private async attachToUnderlay(ns: string, portName: string, ip: string): Promise<void> {
    await this.addNamespace(ns);
    await this.netns.addVeth({ ns: this.nsFor('net'), local: portName, peerNs: ns, peer: HOST_IFACE, bridge: UNDERLAY_BRIDGE });
    await this.netns.setAddress(ns, HOST_IFACE, `${ip}/24`);
    if (this.state.ipv6) {
      // nodad: usable at once (duplicate address detection would hold it back ~1 s).
      await this.netns.in(ns, ['-6', 'addr', 'replace', `${underlayIPv6(ip)}/64`, 'dev', HOST_IFACE, 'nodad'], `add IPv6 to ${HOST_IFACE} in ${ns}`);
    }
  }

  /** Namespaces, processes and the network config of the lab's etcd (1 or 3 members). */
  private async createEtcdCluster(): Promise<void> {
    const members = this.etcdMembers();
    for (const [i, m] of members.entries()) {
      await this.attachToUnderlay(this.nsFor(m), m, etcdMemberIp(i + 1));
      mkdirSync(join(this.stateDir, m, 'data'), { recursive: true, mode: 0o700 });
    }
    // Members of a new cluster wait for each other: start them all, then wait.
    for (const i of range(members.length)) this.spawnEtcd(i);
    for (const m of members) await this.waitEtcdHealthy(m, 30000);
    const put = await this.etcdctl(['put', `${this.state.etcdPrefix}/config`, this.state.networkConfig]);
    if (put.code !== 0) throw new WeftError('ETCD_UNAVAILABLE', `lab ${this.name}: write ${this.state.etcdPrefix}/config: ${put.stderr.trim()}`);
    this.progress(`${this.state.etcdPrefix}/config = ${this.state.networkConfig}`);
  }

  /** Start member `index` (1-based) in its namespace; a restart reuses its data dir. */
  private spawnEtcd(index: number): ProcessRecord {
    const members = this.etcdMembers();
    const m = etcdMemberName(index);
    const ns = this.nsFor(m);
    const dir = join(this.stateDir, m);
    const ip = etcdMemberIp(index);
    const client = `http://${ip}:2379`;
    const peer = `http://${ip}:2380`;
    // The single member keeps its historical name 'lab'; a cluster's are etcd1..etcdN.
    const nameOf = (i: number): string => (members.length === 1 ? 'lab' : `etcd${i}`);
    const cluster = range(members.length).map((i) => `${nameOf(i)}=http://${etcdMemberIp(i)}:2380`).join(',');
    const args = [this.tools.etcd, '--name', nameOf(index), '--data-dir', join(dir, 'data'),
      '--listen-client-urls', client, '--advertise-client-urls', client,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', cluster,
      '--initial-cluster-token', `weft-lab-${this.prefix}`,
      '--logger', 'zap', '--log-outputs', 'stderr'];
    const id = spawnDetached(this.tools.ip, this.netns.execArgs(ns, args), join(dir, 'etcd.log'), cleanEnv(/^ETCD/));
    const rec: ProcessRecord = { role: 'etcd', host: m, ns, ...id };
    this.state.processes.push(rec);
    saveState(this.state);
    return rec;
  }

  /** Wait until member `m` answers a health check (a cluster member: once there is a leader). */
  private async waitEtcdHealthy(m: string, timeoutMs: number): Promise<void> {
    const rec = this.etcdRecord(m);
    const index = this.etcdMemberIndex(m);
    const endpoint = `http://${etcdMemberIp(index)}:2379`;
    const log = join(this.stateDir, m, 'etcd.log');
    const healthy = await waitUntil(async () => {
      if (!rec || !isAlive(rec)) return true; // stop waiting; reported below
      const r = await this.netns.exec(this.nsName('etcd'), [this.tools.etcdctl, `--endpoints=${endpoint}`, 'endpoint', 'health', '--command-timeout=1s'],
        etcdctlEnv(), 5000);
      return r.code === 0;
    }, timeoutMs, 200);
    if (!rec || !isAlive(rec) || !healthy) {
      throw new WeftError('ETCD_UNAVAILABLE', `lab ${this.name}: etcd member ${m} ${rec && isAlive(rec) ? `not healthy after ${timeoutMs / 1000} s` : 'exited'}; ` +
        `log ${log}:\n${tailFile(log)}`);
    }
    this.progress(`etcd member ${m} at ${endpoint} (pid ${rec.pid})`);
  }

  private async createHost(index: number): Promise<HostRecord> {
    const h: HostRecord = { name: `h${index}`, index, ns: this.nsFor(`h${index}`), underlayIp: hostUnderlayIp(index), container: null };
    this.state.hosts.push(h);
    mkdirSync(join(this.stateDir, h.name), { recursive: true });
    await this.attachToUnderlay(h.ns, h.name, h.underlayIp);
    // Hosts forward between the overlay device and the container bridge.
    await this.netns.sysctl(h.ns, 'net.ipv4.ip_forward', '1');
    if (this.state.ipv6) await this.netns.sysctl(h.ns, 'net.ipv6.conf.all.forwarding', '1');
    if (this.state.internet) {
      await this.netns.in(h.ns, ['route', 'replace', 'default', 'via', INTERNET_GATEWAY], `set default route in ${h.ns}`);
    }
    this.progress(`host ${h.name} in ${h.ns}: ${HOST_IFACE} ${h.underlayIp}/24`);
    return h;
  }

  /** <prefix>inet: the hosts' default gateway, owning INTERNET_IP (see there). */
  private async createInternet(): Promise<void> {
    const ns = this.nsFor('inet');
    await this.attachToUnderlay(ns, 'inet', INTERNET_GATEWAY);
    await this.netns.in(ns, ['addr', 'add', `${INTERNET_IP}/24`, 'dev', HOST_IFACE], `add ${INTERNET_IP} in ${ns}`);
    this.progress(`"internet" in ${ns}: ${INTERNET_IP}, default gateway ${INTERNET_GATEWAY} of every host`);
  }

  private async startAllDaemons(hosts: readonly string[], opts: LabOptions): Promise<void> {
    await Promise.all(hosts.map((h) => this.startDaemon(h, { timeoutMs: opts.readyTimeoutMs })));
    if (this.state.containers !== false) {
      // Real runtimes start in parallel (each host's daemon is its own); the stand-in in order.
      if (createRuntime(this.state.runtime as RuntimeKind | undefined)) await Promise.all(hosts.map((h) => this.setupContainer(h)));
      else for (const h of hosts) await this.setupContainer(h);
    }
    await this.waitConverged(opts.convergeTimeoutMs);
  }

  private weftdArgs(h: HostRecord): string[] {
    const args = this.flannelArgs(h);
    // One key file and one wireguard-go socket directory per host (they share this machine's /run).
    if (this.state.backend === 'wireguard') {
      args.push(`--wireguard-key-file=${join(this.state.stateDir, h.name, 'wgkey')}`, `--wireguard-run-dir=${join(this.state.stateDir, h.name, 'wireguard')}`);
    }
    return [...args, ...this.state.extraWeftdArgs];
  }

  /** The flags weftd and flanneld share (weft keeps flannel's names). */
  private flannelArgs(h: HostRecord): string[] {
    const args = [`--etcd-endpoints=${this.etcdEndpoints.join(',')}`, `--iface=${HOST_IFACE}`, `--subnet-file=${this.subnetFile(h.name)}`];
    if (this.state.healthzPort > 0) args.push(`--healthz-port=${this.state.healthzPort}`);
    if (this.state.etcdPrefix !== DEFAULT_ETCD_PREFIX) args.push(`--etcd-prefix=${this.state.etcdPrefix}`);
    return args;
  }

  /** Wait for a subnet.env newer than `before` (weftd writes it by rename: a new inode). */
  private async waitSubnetFile(host: string, before: string | null, timeoutMs: number): Promise<void> {
    const rec = this.daemonRecord(host);
    const file = this.subnetFile(host);
    let died = false;
    const ready = await waitUntil(() => {
      if (rec && !isAlive(rec)) { died = true; return true; }
      const stamp = fileStamp(file);
      return stamp !== null && stamp !== before && this.subnetEnv(host) !== null;
    }, timeoutMs, 100);
    if (died || !ready) {
      const why = died ? 'exited' : `did not write ${file} within ${timeoutMs / 1000} s`;
      throw new WeftError('INTERNAL', `lab ${this.name}: weftd on ${host} (pid ${rec?.pid}) ${why}; ` +
        `log ${this.logFile(host)}:\n${tailFile(this.logFile(host))}`);
    }
    const env = this.subnetEnv(host);
    this.progress(`weftd on ${host} (pid ${rec?.pid}): FLANNEL_SUBNET=${env?.subnet} FLANNEL_MTU=${env?.mtu}`);
  }

  private async pingDetailed(from: string, to: string, opts: PingOptions): Promise<PingResult> {
    const target = this.pingTarget(to, opts.family);
    const attempts = opts.attempts ?? 5;
    const ns = this.nsName(from);
    for (let i = 1; i <= attempts; i++) {
      const r = await this.netns.exec(ns, [this.tools.ping, '-n', '-q', '-c', '1', '-W', '1', target], undefined, 5000);
      if (r.code === 0) return { from, to, target, ok: true, attempts: i };
      if (i < attempts) await sleep(opts.intervalMs ?? 500);
    }
    return { from, to, target, ok: false, attempts };
  }

  private pingTarget(to: string, family?: 4 | 6): string {
    if (addressFamily(to) !== null) return to;
    const h = this.state.hosts.find((x) => x.name === to || x.container?.name === to);
    if (!h?.container) throw new WeftError('CONFIG_INVALID', `lab ${this.name}: "${to}" is neither an IP address nor a host with a container`);
    // family 6 on a dual-stack lab: the container's IPv6 address (on an IPv6-only lab `address` is IPv6 already).
    const address = family === 6 && h.container.address6 ? h.container.address6 : h.container.address;
    return address.split('/')[0] ?? '';
  }

  /** IPv4: flush and set (a new subnet replaces the old); IPv6 (an IPv6-only lab): replace, without DAD. */
  private async setAddress(ns: string, dev: string, cidr: string): Promise<void> {
    if (!cidr.includes(':')) return this.netns.setAddress(ns, dev, cidr);
    await this.netns.in(ns, ['-6', 'addr', 'replace', cidr, 'dev', dev, 'nodad'], `add ${cidr} to ${dev} in ${ns}`);
  }

  private nsFor(short: string): string {
    return this.state.prefix + short;
  }
}

// ---- helpers ---------------------------------------------------------------------------

/** The network config the lab writes: flannel's field names, IPv6 per `--ipv6` / `--ipv6-only`. */
function defaultNetworkConfig(network: string, backend: string, ipv6: 'dual' | 'only' | undefined): Record<string, unknown> {
  if (ipv6 === undefined) return { Network: network, Backend: { Type: backend } };
  const v6 = { EnableIPv6: true, IPv6Network: DEFAULT_IPV6_NETWORK };
  return ipv6 === 'dual' ? { Network: network, ...v6, Backend: { Type: backend } } : { EnableIPv4: false, ...v6, Backend: { Type: backend } };
}

/** The underlay IPv6 address matching an underlay IPv4 address (same last byte). */
function underlayIPv6(ipv4: string): string {
  return `${IPV6_UNDERLAY_PREFIX}${ipv4.split('.')[3]}`;
}

function newState(name: string, stateDir: string, opts: LabOptions): LabState {
  const network = opts.network ?? DEFAULT_NETWORK;
  const backend = opts.backend ?? DEFAULT_BACKEND;
  return {
    version: 1, name, prefix: opts.prefix ?? defaultPrefix(name), stateDir, network, backend,
    networkConfig: JSON.stringify(opts.networkConfig ?? defaultNetworkConfig(network, backend, opts.ipv6)),
    etcdPrefix: (opts.etcdPrefix ?? DEFAULT_ETCD_PREFIX).replace(/\/+$/, ''),
    weftdPath: resolve(opts.weftdPath ?? defaultWeftdPath()),
    extraWeftdArgs: [...(opts.extraWeftdArgs ?? [])],
    healthzPort: opts.healthzPort ?? DEFAULT_HEALTHZ_PORT,
    etcdMembers: opts.etcdMembers ?? 1,
    daemons: opts.startDaemons ?? true,
    internet: opts.internet ?? false,
    runtime: opts.runtime ?? 'namespaces',
    containers: opts.containers ?? true,
    ...(opts.ipv6 ? { ipv6: opts.ipv6 } : {}),
    createdAt: new Date().toISOString(),
    namespaces: [], processes: [], hosts: [],
  };
}

function validate(state: LabState, hosts: number): void {
  const bad = (msg: string): never => { throw new WeftError('CONFIG_INVALID', msg); };
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(state.name)) bad(`lab name "${state.name}": use letters, digits, '.', '_' or '-'`);
  if (!/^[A-Za-z0-9_.-]{1,40}$/.test(state.prefix)) bad(`namespace prefix "${state.prefix}": 1-40 of letters, digits, '.', '_', '-'`);
  const members = state.etcdMembers ?? 1;
  if (!Number.isInteger(members) || members < 1 || members > MAX_ETCD_MEMBERS) bad(`etcd members ${members}: must be 1..${MAX_ETCD_MEMBERS}`);
  if (!Number.isInteger(hosts) || hosts < 1 || hosts > MAX_HOSTS) bad(`--hosts ${hosts}: must be 1..${MAX_HOSTS}`);
  if (!parseIPv4Cidr(state.network, true)) bad(`--network ${state.network}: not an IPv4 network (e.g. 10.5.0.0/16)`);
  if (labExists(state.stateDir)) {
    bad(`a lab "${state.name}" already exists (${state.stateDir}): run weft lab down${state.name === DEFAULT_LAB_NAME ? '' : ` --name ${state.name}`} first`);
  }
  if (existsSync(state.stateDir) && readdirSync(state.stateDir).some((f) => f !== '.weft-lab')) {
    bad(`state dir ${state.stateDir} is not empty: pick another (--state-dir) or remove it`);
  }
  if (state.daemons && !existsSync(state.weftdPath)) bad(`weftd not found at ${state.weftdPath}: build it first (npm run build)`);
  // Without the kernel module every weftd falls back to wireguard-go: say so now, not after a timeout.
  if (state.daemons && state.backend === 'wireguard' && !existsSync('/sys/module/wireguard') && findExecutable('wireguard-go', process.env.PATH ?? '') === null) {
    bad('the wireguard backend needs wireguard-go on this kernel (no WireGuard module): apt-get install -y wireguard-go wireguard-tools');
  }
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

function trySignalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // exited meanwhile
  }
}

/** The environment minus variables that would reconfigure the child behind the lab's back. */
function cleanEnv(drop: RegExp): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !drop.test(k)));
}

function etcdctlEnv(): NodeJS.ProcessEnv {
  return { ...cleanEnv(/^ETCDCTL_/), ETCDCTL_API: '3' };
}

/** Identity of a file version: weftd renames a new file into place, so the inode changes. */
function fileStamp(file: string): string | null {
  try {
    const s = statSync(file);
    return `${s.ino}:${s.mtimeMs}:${s.size}`;
  } catch {
    return null;
  }
}

/** The subnets a subnet.env names: FLANNEL_SUBNET's and FLANNEL_IPV6_SUBNET's networks (either may be absent). */
function leasedSubnets(env: SubnetEnv | null): IPNet[] {
  if (env === null) return [];
  const nets = [env.vars.FLANNEL_SUBNET, env.ipv6Subnet].map((cidr) => (cidr ? parseCidr(cidr, false) : null));
  return nets.filter((n): n is IPNet => n !== null);
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
