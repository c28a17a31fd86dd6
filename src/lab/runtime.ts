/**
 * Real container runtimes in the lab (`weft lab up --runtime docker|podman`): what both share.
 *
 * Each lab host gets its own runtime instance, run with `nsenter --net=/run/netns/<host>` — only
 * the network namespace, because `ip netns exec` remounts /sys and hides the cgroup mounts from
 * dockerd and runc. Everything a runtime writes lives under <stateDir>/<host>/<runtime>/ (data,
 * exec root, sockets, CNI leases), so hosts never share state and `down` knows what to clean:
 * the containers (through the runtime: CNI DEL runs), then every process it started (by PID: the
 * recorded daemon, and any process whose command line names the host's runtime dir — containerd,
 * shims, conmon), then every mount under the dir, then the cgroups it created.
 *
 * The container's network namespace is attached as /run/netns/<prefix>hN-c1 (`ip netns attach`),
 * so the ping matrix, `lab exec` and the tests reach it exactly as they reach the stand-in's.
 * The image is busybox-static imported from a tarball: nothing is pulled.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, symlinkSync, writeFileSync, copyFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { WeftError } from '../errors';
import { findExecutable } from './prereq';
import { isAlive, readStartTime, run, stopProcess, type ProcessId, type RunResult } from './run';

export type RuntimeKind = 'namespaces' | 'docker' | 'podman';
export const RUNTIMES: readonly RuntimeKind[] = ['namespaces', 'docker', 'podman'];
export const IMAGE = 'weft-busybox';
/** busybox's sleep takes no "infinity"; this is 31 years. */
export const CONTAINER_CMD = ['sleep', '999999999'];

/** A lab host as a runtime sees it. */
export interface RuntimeHost {
  readonly name: string;         // 'h1'
  readonly index: number;
  readonly ns: string;           // '<prefix>h1'
  readonly containerNs: string;  // '<prefix>h1-c1', attached to the container's netns
  readonly dir: string;          // <stateDir>/h1
  readonly subnetFile: string;
}

export interface RuntimeContext {
  readonly labName: string;
  readonly prefix: string;
  readonly stateDir: string;
  readonly ipPath: string;
  readonly progress: (line: string) => void;
}

export interface RuntimeContainer {
  readonly name: string;       // 'h1-c1'
  readonly ns: string;
  readonly address: string;    // '10.5.72.2/24'
}

export interface ContainerRuntime {
  readonly kind: Exclude<RuntimeKind, 'namespaces'>;
  /** Daemon (if any) running, image imported, container running and attached. Idempotent. */
  ensure(ctx: RuntimeContext, host: RuntimeHost): Promise<RuntimeContainer>;
  /** The command line that runs `cmd` inside the host's container (`lab exec hN-c1`). */
  execArgv(host: RuntimeHost, cmd: readonly string[], tty: boolean): string[];
  /** Remove the host's containers, stop its processes, unmount, remove cgroups. Never throws. */
  teardown(ctx: RuntimeContext, host: RuntimeHost): Promise<string[]>;
}

export function parseRuntime(text: string): RuntimeKind {
  if ((RUNTIMES as readonly string[]).includes(text)) return text as RuntimeKind;
  throw new WeftError('CONFIG_INVALID', `--runtime ${text}: one of ${RUNTIMES.join(', ')}`);
}

/** Programs a runtime needs, resolved once, with the Debian package to install when missing. */
export function requireTools(kind: string, tools: Readonly<Record<string, string>>): Record<string, string> {
  const path = `${process.env.PATH ?? ''}:/usr/sbin:/sbin:/usr/bin`;
  const found: Record<string, string> = {};
  const missing: string[] = [];
  for (const [name, pkg] of Object.entries(tools)) {
    // /usr/local/bin/docker may be another client than Debian's daemon speaks to: prefer /usr/bin.
    const p = [`/usr/bin/${name}`, `/usr/sbin/${name}`].find((c) => existsSync(c)) ?? findExecutable(name, path);
    if (p) found[name] = p;
    else missing.push(`${name} (${pkg})`);
  }
  if (missing.length > 0) {
    const pkgs = [...new Set(Object.values(tools))].join(' ');
    throw new WeftError('CONFIG_MISSING', `weft lab --runtime ${kind} needs ${missing.join(', ')}: install with ` +
      `apt-get install -y ${pkgs} (or scripts/install-deps.sh dev)`);
  }
  return found;
}

/** dist/src/lab/runtime.js → dist/src/cli/weft.js: the lab configures runtimes through weft itself. */
export function weftCli(): string {
  return resolve(__dirname, '..', 'cli', 'weft.js');
}

/** `weft ARGS` (this build), failing with its output. */
export async function weft(args: readonly string[], ns?: { ipPath: string; ns: string }): Promise<string> {
  const argv = [process.execPath, weftCli(), ...args];
  // docker-opts, like mk-docker-opts.sh, carries DOCKER_OPT* variables over from its environment:
  // the lab's hosts must not inherit the user's.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.includes('DOCKER_OPT')));
  const r = ns ? await run(ns.ipPath, ['netns', 'exec', ns.ns, ...argv], { env }) : await run(argv[0] ?? '', argv.slice(1), { env });
  if (r.code !== 0) throw new WeftError('INTERNAL', `weft ${args.join(' ')}: exit ${r.code}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/** `nsenter --net=/run/netns/NS ARGV...` (see the header on why not `ip netns exec`). */
export function nsenterArgs(ns: string, argv: readonly string[]): string[] {
  return [`--net=/run/netns/${ns}`, ...argv];
}

export function nsenterPath(): string {
  const p = findExecutable('nsenter', `${process.env.PATH ?? ''}:/usr/bin`);
  if (!p) throw new WeftError('CONFIG_MISSING', 'weft lab --runtime needs nsenter (apt-get install -y util-linux)');
  return p;
}

export async function runIn(ns: string, argv: readonly string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(nsenterPath(), nsenterArgs(ns, argv), { env: opts.env, timeoutMs: opts.timeoutMs ?? 120000 });
}

export async function runInOk(ns: string, argv: readonly string[], what: string, opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<string> {
  const r = await runIn(ns, argv, opts);
  if (r.code !== 0) throw new WeftError('INTERNAL', `${what}: ${argv.join(' ')}: exit ${r.code}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
  return r.stdout;
}

/**
 * The busybox-static image as a rootfs tarball (bin/busybox + one link per applet, /tmp, /etc),
 * built once per lab in <stateDir>/busybox.tar.
 */
export function busyboxTarball(stateDir: string): Promise<string> {
  // Hosts are set up in parallel: one build per lab.
  let p = building.get(stateDir);
  if (!p) {
    p = buildTarball(stateDir).finally(() => building.delete(stateDir));
    building.set(stateDir, p);
  }
  return p;
}

const building = new Map<string, Promise<string>>();

async function buildTarball(stateDir: string): Promise<string> {
  const tar = join(stateDir, 'busybox.tar');
  if (existsSync(tar)) return tar;
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  // A dynamically linked busybox (Debian's "busybox") would find no libc in the image.
  if (!busybox || hasInterpreter(readFileSync(busybox))) {
    throw new WeftError('CONFIG_MISSING', `the lab's container image needs a static busybox${busybox ? ` (${busybox} is dynamically linked)` : ''}: apt-get install -y busybox-static`);
  }
  const root = join(stateDir, 'busybox-rootfs');
  for (const d of ['bin', 'tmp', 'etc', 'proc', 'sys', 'dev']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync(busybox, join(root, 'bin', 'busybox'));
  const list = spawnSync(busybox, ['--list'], { encoding: 'utf8' });
  for (const applet of list.stdout.split('\n').map((s) => s.trim())) {
    if (!/^[A-Za-z0-9_.[\]-]+$/.test(applet) || applet === 'busybox' || existsSync(join(root, 'bin', applet))) continue;
    symlinkSync('busybox', join(root, 'bin', applet));
  }
  writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/:/bin/sh\n');
  const r = await run('tar', ['-C', root, '-cf', `${tar}.tmp`, '.']);
  if (r.code !== 0) throw new WeftError('INTERNAL', `build ${tar}: tar: ${r.stderr.trim()}`);
  const mv = await run('mv', [`${tar}.tmp`, tar]);
  if (mv.code !== 0) throw new WeftError('INTERNAL', `build ${tar}: ${mv.stderr.trim()}`);
  return tar;
}

/** True for an ELF64 executable with a PT_INTERP program header (dynamically linked). */
export function hasInterpreter(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const size = elf.readUInt16LE(0x36);
  const count = elf.readUInt16LE(0x38);
  for (let i = 0; i < count; i++) {
    const at = phoff + i * size;
    if (at + 4 <= elf.length && elf.readUInt32LE(at) === 3) return true;
  }
  return false;
}

/** Attach the container's netns (of `pid`) as /run/netns/<ns>, replacing an older attachment. */
export async function attachNetns(ipPath: string, ns: string, pid: number): Promise<void> {
  if (existsSync(`/run/netns/${ns}`)) await run(ipPath, ['netns', 'delete', ns]);
  const r = await run(ipPath, ['netns', 'attach', ns, String(pid)]);
  if (r.code !== 0) throw new WeftError('NETLINK', `attach the netns of container process ${pid} as ${ns}: ${r.stderr.trim()}`);
}

// ---- records and cleanup -------------------------------------------------------------------

export interface RuntimeRecord {
  readonly kind: string;
  daemon: ProcessId | null;
  /** Extra processes recorded at start (conmon of each container). */
  others: ProcessId[];
  /** cgroup path (relative to each controller's root) created for the host's containers. */
  cgroupParent: string | null;
}

export function recordFile(host: RuntimeHost, kind: string): string {
  return join(host.dir, kind, 'runtime.json');
}

export function loadRecord(host: RuntimeHost, kind: string): RuntimeRecord {
  try {
    return JSON.parse(readFileSync(recordFile(host, kind), 'utf8')) as RuntimeRecord;
  } catch {
    return { kind, daemon: null, others: [], cgroupParent: null };
  }
}

export function saveRecord(host: RuntimeHost, rec: RuntimeRecord): void {
  mkdirSync(join(host.dir, rec.kind), { recursive: true });
  writeFileSync(recordFile(host, rec.kind), JSON.stringify(rec, null, 2) + '\n');
}

/**
 * Live processes whose command line names `dir` (containerd, shims, conmon of this host). `dir`
 * is a runtime's own dir (<stateDir>/hN/docker), never the host dir weftd's flags name.
 */
export function processesUnder(dir: string): ProcessId[] {
  const out: ProcessId[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (cmd.some((a) => a === dir || a.startsWith(`${dir}/`) || a.includes(`=${dir}/`) || a.includes(`://${dir}/`))) {
        out.push({ pid, startTime: readStartTime(pid) });
      }
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** Stop processes by PID (SIGTERM, SIGKILL after `graceMs`); failures collected. */
export async function stopAll(ids: readonly ProcessId[], graceMs: number, failures: string[]): Promise<void> {
  await Promise.all(ids.filter((id) => isAlive(id)).map(async (id) => {
    try {
      await stopProcess(id, 'SIGTERM', graceMs);
    } catch (e) {
      failures.push(`process ${id.pid}: ${(e as Error).message}`);
    }
  }));
}

/** Mount points at or under `dir` (deepest first), from /proc/self/mountinfo. */
export function mountsUnder(dir: string): string[] {
  let text = '';
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const points = text.split('\n').map((l) => (l.split(' ')[4] ?? '').replace(/\\040/g, ' ')).filter((p) => p === dir || p.startsWith(`${dir}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Unmount everything under `dir` (lazily when busy); failures collected. */
export async function unmountUnder(dir: string, failures: string[]): Promise<void> {
  for (const m of mountsUnder(dir)) {
    const r = await run('umount', [m]);
    if (r.code !== 0) {
      const l = await run('umount', ['-l', m]);
      if (l.code !== 0) failures.push(`umount ${m}: ${l.stderr.trim()}`);
    }
  }
}

/** Remove a cgroup (and its children) from every v1 controller and the v2 tree. */
export function removeCgroup(relPath: string, failures: string[]): void {
  if (!/^\/?[A-Za-z0-9_.-]+$/.test(relPath)) return; // only the single-level parents we create
  const roots: string[] = [];
  try {
    for (const c of readdirSync('/sys/fs/cgroup')) roots.push(join('/sys/fs/cgroup', c));
  } catch {
    return;
  }
  roots.push('/sys/fs/cgroup');
  for (const root of roots) {
    const top = join(root, relPath);
    if (!existsSync(top)) continue;
    const rmTree = (d: string): void => {
      for (const e of readdirSync(d)) {
        const p = join(d, e);
        try {
          if (statSync(p).isDirectory()) rmTree(p);
        } catch {
          // gone
        }
      }
      try {
        rmdirSync(d);
      } catch (e) {
        failures.push(`rmdir ${d}: ${(e as Error).message}`);
      }
    };
    rmTree(top);
  }
}
