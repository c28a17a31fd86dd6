/**
 * The lab's state file: everything a later process (`status`, `exec`, `down`) needs to find what
 * an earlier one built. Invariant: a namespace or process is written here BEFORE it is created
 * (processes right after spawn, with their start time), so `down` can remove a lab whose `up`
 * crashed half-way. Entries for things that were never created are harmless: `down` tolerates them.
 */
import { chmodSync, closeSync, constants as fsc, existsSync, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { WeftError } from '../errors';
import type { ProcessId } from './run';

export const DEFAULT_LAB_NAME = 'default';
export const STATE_ROOT = '/run/weft-lab';
const STATE_FILE = 'state.json';
/** Written into every state dir the lab creates: `down` deletes only directories carrying it. */
const MARKER_FILE = '.weft-lab';

export interface ProcessRecord extends ProcessId {
  readonly role: 'etcd' | 'weftd';
  readonly ns: string;        // full namespace name it runs in
  readonly host: string;      // 'etcd' (, 'etcd2', 'etcd3') or 'h1', 'h2', ...
}

export interface ContainerRecord {
  readonly name: string;      // 'h1-c1'
  readonly ns: string;        // '<prefix>h1-c1'
  readonly address: string;   // '10.5.72.2/24' (on an IPv6-only lab, its IPv6 address)
  /** Dual-stack lab: the container's IPv6 address, e.g. 'fd00:5:0:22::2/64'. */
  readonly address6?: string;
}

export interface HostRecord {
  readonly name: string;      // 'h1'
  readonly index: number;     // 1
  readonly ns: string;        // '<prefix>h1'
  readonly underlayIp: string; // '10.250.0.11'
  container: ContainerRecord | null;
}

export interface LabState {
  readonly version: 1;
  readonly name: string;
  readonly prefix: string;
  readonly stateDir: string;
  readonly network: string;
  readonly backend: string;
  readonly networkConfig: string;  // the JSON written to <etcdPrefix>/config
  readonly etcdPrefix: string;
  readonly weftdPath: string;
  readonly extraWeftdArgs: readonly string[];
  readonly healthzPort: number;
  /** etcd cluster size; absent in state files written before clusters existed (= 1). */
  readonly etcdMembers?: number;
  readonly daemons: boolean;       // false: built without weftd (up --no-daemons)
  /** A namespace playing "the internet" (lab.ts INTERNET_IP); absent in older state files (= false). */
  readonly internet?: boolean;
  /** Container runtime (runtime.ts): 'namespaces' (the stand-in), 'docker', 'podman'; absent = 'namespaces'. */
  readonly runtime?: string;
  /** false: hosts get no container (up --no-containers, for runtimes the user brings); absent = true. */
  readonly containers?: boolean;
  /** IPv6 (lab.ts IPV6_UNDERLAY_PREFIX): 'dual' stack or 'only' IPv6 on the overlay; absent = IPv4 only. */
  readonly ipv6?: 'dual' | 'only';
  readonly createdAt: string;
  namespaces: string[];       // full names, creation order
  processes: ProcessRecord[];
  hosts: HostRecord[];
}

export function defaultStateDir(name: string): string {
  return join(STATE_ROOT, name);
}

export function stateFilePath(stateDir: string): string {
  return join(stateDir, STATE_FILE);
}

export function labExists(stateDir: string): boolean {
  return existsSync(stateFilePath(stateDir));
}

/**
 * The lab runs as root and writes into its state dir (state, etcd data, logs, subnet.env files),
 * so a state dir someone else can write to — `--state-dir /tmp/x` that another user created first,
 * full of symlinks to /etc — would let them point root's writes anywhere. Refuse a state dir that
 * is a symlink, is not a directory, is owned by another user, or is writable by group or others;
 * and one whose parent others can write to without the sticky bit (they could swap it).
 */
export function checkStateDir(stateDir: string): void {
  const dir = resolve(stateDir);
  const uid = process.getuid?.() ?? 0;
  const st = lstatSync(dir, { throwIfNoEntry: false });
  const refuse = (why: string): never => {
    throw new WeftError('CONFIG_INVALID', `lab state dir ${dir} ${why}: refusing to write there as root; use a directory only you can write to (default ${STATE_ROOT}/<name>)`);
  };
  if (st === undefined) return;
  if (st.isSymbolicLink()) refuse('is a symbolic link');
  if (!st.isDirectory()) refuse('is not a directory');
  if (st.uid !== uid && st.uid !== 0) refuse(`is owned by uid ${st.uid}`);
  if ((st.mode & 0o022) !== 0) refuse(`is writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`);
  const parent = lstatSync(dirname(dir), { throwIfNoEntry: false });
  if (parent && (parent.mode & 0o002) !== 0 && (parent.mode & 0o1000) === 0) {
    refuse(`is in ${dirname(dir)}, which anyone can write to and has no sticky bit`);
  }
}

/** Create the state dir (and its marker) for a new lab. */
export function initStateDir(stateDir: string): void {
  checkStateDir(stateDir);
  const created = mkdirSync(stateDir, { recursive: true, mode: 0o755 }) !== undefined;
  if (created) chmodSync(stateDir, 0o755); // whatever the umask
  checkStateDir(stateDir); // what mkdir made, or found
  writeNoFollow(join(stateDir, MARKER_FILE), 'created by weft lab; removed by weft lab down\n');
}

/** Write a file without following a symlink at its name (O_NOFOLLOW), replacing what is there. */
function writeNoFollow(file: string, text: string): void {
  rmSync(file, { force: true }); // a symlink planted at the name goes, its target untouched
  const fd = openSync(file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o644);
  try {
    writeFileSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

/** Atomic write (temp + rename): a crash never leaves a truncated state file. */
export function saveState(state: LabState): void {
  checkStateDir(state.stateDir);
  const file = stateFilePath(state.stateDir);
  const tmp = `${file}.tmp`;
  writeNoFollow(tmp, JSON.stringify(state, null, 2) + '\n');
  renameSync(tmp, file); // rename replaces a symlink at `file`, never writes through it
}

export function loadState(stateDir: string): LabState {
  const file = stateFilePath(stateDir);
  let text: string;
  try {
    checkStateDir(stateDir);
    const fd = openSync(file, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    try {
      if (!fstatSync(fd).isFile()) throw new WeftError('BAD_DATA', `lab state ${file} is not a regular file`);
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if (e instanceof WeftError) throw e;
    throw new WeftError('CONFIG_MISSING', `no lab state at ${file} (start one with weft lab up)`, { cause: e });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new WeftError('BAD_DATA', `lab state ${file}: not JSON`, { cause: e });
  }
  if (!isLabState(parsed)) throw new WeftError('BAD_DATA', `lab state ${file}: not a weft lab state (version 1)`);
  // The file may have been copied or the dir renamed: trust where we found it.
  return { ...parsed, stateDir };
}

function isLabState(v: unknown): v is LabState {
  if (typeof v !== 'object' || v === null) return false;
  const s = v as Record<string, unknown>;
  return s.version === 1 && typeof s.prefix === 'string' && Array.isArray(s.namespaces) &&
    Array.isArray(s.processes) && Array.isArray(s.hosts);
}

/** Remove the state dir, but only one the lab created (never a directory a user pointed us at). */
export function removeStateDir(stateDir: string): boolean {
  const st = lstatSync(stateDir, { throwIfNoEntry: false });
  if (st === undefined || st.isSymbolicLink() || !existsSync(join(stateDir, MARKER_FILE))) return false;
  rmSync(stateDir, { recursive: true, force: true });
  return true;
}
