/**
 * Child processes for the lab. The lab is a test tool, so it shells out to `ip`, `etcdctl` and
 * `ping` — always with argument arrays (never a shell string), so names and addresses are never
 * re-parsed. Long-lived processes (etcd, weftd) are identified by PID *and* kernel start time,
 * so a later `weft lab down` never signals an unrelated process that reused a recorded PID.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { WeftError } from '../errors';

export interface RunResult {
  readonly code: number;          // exit code; 128 + signal number when killed by a signal
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs?: number;
}

/** Run to completion and capture output. Never rejects on a non-zero exit, only on spawn failure. */
export function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = opts.timeoutMs === undefined ? null : setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(new WeftError('INTERNAL', `run ${file}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({
        code: code ?? 128 + signalNumber(signal),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

/** Like `run`, but a non-zero exit is a WeftError naming the command and quoting its stderr. */
export async function runOk(file: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(file, args, opts);
  if (r.code !== 0) {
    const detail = (r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ');
    throw new WeftError('INTERNAL', `${[file, ...args].join(' ')}: exit ${r.code}: ${detail}`);
  }
  return r.stdout;
}

/** Run with the caller's stdio (for `weft lab exec`); resolves to the exit code. */
export function runInherit(file: string, args: readonly string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: 'inherit' });
    child.on('error', (e) => reject(new WeftError('INTERNAL', `run ${file}: ${e.message}`, { cause: e })));
    child.on('close', (code, signal) => resolve(code ?? 128 + signalNumber(signal)));
  });
}

export interface ProcessId {
  readonly pid: number;
  /** Field 22 of /proc/PID/stat (clock ticks since boot); null if it could not be read. */
  readonly startTime: string | null;
}

/**
 * Start a long-lived process in its own process group, stdout+stderr appended to `logFile`,
 * not tied to this Node process (the CLI exits while etcd and weftd keep running).
 */
export function spawnDetached(file: string, args: readonly string[], logFile: string, env: NodeJS.ProcessEnv): ProcessId {
  const fd = openSync(logFile, 'a', 0o644);
  try {
    const child = spawn(file, args, { env, detached: true, stdio: ['ignore', fd, fd] });
    // A spawn failure (ENOENT) is reported asynchronously; the caller notices the process is gone.
    child.on('error', () => undefined);
    child.unref();
    if (child.pid === undefined) throw new WeftError('INTERNAL', `start ${file}: no PID (spawn failed)`);
    return { pid: child.pid, startTime: readStartTime(child.pid) };
  } finally {
    closeSync(fd);
  }
}

function readStat(pid: number): string[] | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: split after the last ')'.
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

export function readStartTime(pid: number): string | null {
  return readStat(pid)?.[19] ?? null;
}

/** True when `id` names a live (not zombie) process that is the one we started. */
export function isAlive(id: ProcessId): boolean {
  const fields = readStat(id.pid);
  if (!fields) return false;
  if (fields[0] === 'Z' || fields[0] === 'X') return false;
  return id.startTime === null || fields[19] === id.startTime;
}

/** SIGTERM (or `signal`), wait up to `graceMs`, then SIGKILL. Resolves once the process is gone. */
export async function stopProcess(id: ProcessId, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<void> {
  if (!isAlive(id)) return;
  trySignal(id.pid, signal);
  if (await waitUntil(() => !isAlive(id), graceMs, 50)) return;
  trySignal(id.pid, 'SIGKILL');
  if (await waitUntil(() => !isAlive(id), 5000, 50)) return;
  throw new WeftError('INTERNAL', `stop process ${id.pid}: still alive after SIGKILL`);
}

function trySignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // ESRCH: exited between the check and the signal.
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Poll `check` every `intervalMs` until it returns true or `timeoutMs` passes. */
export async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(intervalMs);
  }
}

/** The last `lines` lines of a log file, '' if unreadable. */
export function tailFile(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal ? constants.signals[signal] ?? 0 : 0;
}
