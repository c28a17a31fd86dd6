/**
 * The lab's state file: everything a later process (`status`, `exec`, `down`) needs to find what
 * an earlier one built. Invariant: a namespace or process is written here BEFORE it is created
 * (processes right after spawn, with their start time), so `down` can remove a lab whose `up`
 * crashed half-way. Entries for things that were never created are harmless: `down` tolerates them.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
  readonly address: string;   // '10.5.72.2/24'
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

/** Create the state dir (and its marker) for a new lab. */
export function initStateDir(stateDir: string): void {
  mkdirSync(stateDir, { recursive: true, mode: 0o755 });
  writeFileSync(join(stateDir, MARKER_FILE), 'created by weft lab; removed by weft lab down\n');
}

/** Atomic write (temp + rename): a crash never leaves a truncated state file. */
export function saveState(state: LabState): void {
  const file = stateFilePath(state.stateDir);
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o644 });
  renameSync(tmp, file);
}

export function loadState(stateDir: string): LabState {
  const file = stateFilePath(stateDir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
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
  if (!existsSync(join(stateDir, MARKER_FILE))) return false;
  rmSync(stateDir, { recursive: true, force: true });
  return true;
}
