/**
 * Measuring tools for bench/: a timed etcd writer in the etcd namespace, route watchers in the
 * host namespaces (`ip -ts monitor route`: the kernel's own notification, timestamped by `ip` as
 * it arrives), /proc readers for memory and CPU, and percentiles. All clocks are wall-clock
 * (CLOCK_REALTIME, shared by every process on the machine) with sub-millisecond precision.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';

export const nowMs = (): number => performance.timeOrigin + performance.now();

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))]!;
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

// ---- etcd writer ---------------------------------------------------------------------------

export interface WriteResult {
  readonly sentAt: number;
  readonly doneAt: number;
  readonly ok: boolean;
  readonly error?: unknown;
}

/** The etcd-writer.js helper running in the etcd namespace. */
export class EtcdWriter {
  private readonly child: ChildProcessWithoutNullStreams;
  private nextId = 1;
  private readonly pending = new Map<number, (r: WriteResult) => void>();
  private readonly ready: Promise<void>;
  private readonly watching: Promise<void>;
  /** When each key's last PUT / DELETE became visible to a watcher beside etcd. */
  private readonly visible = new Map<string, { type: string; at: number }>();
  private readonly visibleWaiters = new Map<string, (at: number) => void>();

  /** `watchPrefix`: also report when writes under it become visible (see etcd-writer.ts). */
  constructor(etcdNs: string, endpoint: string, watchPrefix?: string) {
    const script = resolve(__dirname, 'etcd-writer.js');
    this.child = spawn('ip', ['netns', 'exec', etcdNs, process.execPath, script, endpoint, ...(watchPrefix ? [watchPrefix] : [])], { stdio: ['pipe', 'pipe', 'pipe'] });
    let readyResolve: () => void = () => undefined;
    let watchingResolve: () => void = () => undefined;
    this.ready = new Promise((r) => (readyResolve = r));
    this.watching = watchPrefix ? new Promise((r) => (watchingResolve = r)) : Promise.resolve();
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      const msg = JSON.parse(line) as { ready?: boolean; watching?: boolean; visible?: string; type?: string; at?: number; id?: number } & WriteResult;
      if (msg.ready) return readyResolve();
      if (msg.watching) return watchingResolve();
      if (msg.visible !== undefined) {
        const k = `${msg.type} ${msg.visible}`;
        this.visible.set(k, { type: msg.type!, at: msg.at! });
        this.visibleWaiters.get(k)?.(msg.at!);
        this.visibleWaiters.delete(k);
        return;
      }
      const cb = this.pending.get(msg.id!);
      this.pending.delete(msg.id!);
      cb?.(msg);
    });
    this.child.stderr.on('data', (b: Buffer) => process.stderr.write(`etcd-writer: ${b.toString()}`));
  }

  /** When a PUT (or DELETE) of `key` became visible to the watcher beside etcd. */
  visibleAt(key: string, type: 'PUT' | 'DELETE' = 'PUT', timeoutMs = 10_000): Promise<number> {
    const k = `${type} ${key}`;
    const seen = this.visible.get(k);
    if (seen) return Promise.resolve(seen.at);
    return new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error(`${type} ${key} not seen by the reference watch`)), timeoutMs);
      this.visibleWaiters.set(k, (at) => {
        clearTimeout(t);
        res(at);
      });
    });
  }

  async put(kvs: readonly { key: string; value: string }[]): Promise<WriteResult> {
    await this.ready;
    await this.watching;
    return this.send({ op: 'put', kvs });
  }

  async del(keys: readonly string[]): Promise<WriteResult> {
    await this.ready;
    return this.send({ op: 'del', keys });
  }

  private send(cmd: Record<string, unknown>): Promise<WriteResult> {
    const id = this.nextId++;
    return new Promise((res) => {
      this.pending.set(id, res);
      this.child.stdin.write(JSON.stringify({ id, ...cmd }) + '\n');
    });
  }

  close(): void {
    this.child.stdin.end();
    this.child.kill('SIGTERM');
  }
}

// ---- route watcher -------------------------------------------------------------------------

export interface RouteEvent {
  readonly at: number;
  readonly dst: string;
  readonly deleted: boolean;
}

/** `ip -ts monitor route` in one namespace; listeners get every route add/delete with its time. */
export class RouteWatcher {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly listeners = new Set<(e: RouteEvent) => void>();

  constructor(readonly host: string, ns: string) {
    this.child = spawn('ip', ['netns', 'exec', ns, 'ip', '-ts', 'monitor', 'route'], { stdio: ['pipe', 'pipe', 'pipe'] });
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      const e = parseMonitorLine(line);
      if (e !== null) for (const l of this.listeners) l(e);
    });
  }

  on(listener: (e: RouteEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.child.kill('SIGTERM');
  }
}

/** "[2026-11-22T01:42:27.797695] Deleted 10.9.0.0/24 via ..." → event (ip prints local time). */
export function parseMonitorLine(line: string): RouteEvent | null {
  const m = /^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{6})\] (Deleted )?(\S+)/.exec(line);
  if (m === null) return null;
  const at = new Date(`${m[1]}.000`).getTime() + Number(m[2]) / 1000;
  return { at, dst: m[4]!, deleted: m[3] !== undefined };
}

/**
 * Wait until every watcher has seen `count` adds (deleted = false) or deletes of routes in
 * `dsts`, after `since`. Resolves with each host's time of the last one, or rejects on timeout.
 */
export function waitRoutes(watchers: readonly RouteWatcher[], dsts: ReadonlySet<string>, deleted: boolean, timeoutMs: number): Promise<Map<string, number>> {
  return new Promise((resolvePromise, reject) => {
    const seen = new Map<string, Set<string>>();
    const doneAt = new Map<string, number>();
    const offs: (() => void)[] = [];
    const finish = (err: Error | null): void => {
      clearTimeout(timer);
      for (const off of offs) off();
      if (err) reject(err);
      else resolvePromise(doneAt);
    };
    const timer = setTimeout(() => {
      const missing = watchers.filter((w) => !doneAt.has(w.host)).map((w) => `${w.host} (${seen.get(w.host)?.size ?? 0}/${dsts.size})`);
      finish(new Error(`routes ${deleted ? 'removed' : 'added'} not seen within ${timeoutMs} ms on ${missing.join(', ')}`));
    }, timeoutMs);
    for (const w of watchers) {
      const s = new Set<string>();
      seen.set(w.host, s);
      offs.push(w.on((e) => {
        if (e.deleted !== deleted || !dsts.has(e.dst) || doneAt.has(w.host)) return;
        s.add(e.dst);
        if (s.size === dsts.size) {
          doneAt.set(w.host, e.at);
          if (doneAt.size === watchers.length) finish(null);
        }
      }));
    }
  });
}

// ---- /proc ---------------------------------------------------------------------------------

export interface MemoryFigures {
  /** VmRSS, bytes. */
  readonly rss: number;
  /** RssAnon: private anonymous resident memory, bytes. */
  readonly anon: number;
}

export function memoryOf(pid: number): MemoryFigures {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon') };
}

/** /proc/PID/stat's fields after the command name (field 3 on: index 13 is cutime, 14 cstime). */
function statFields(pid: number): string[] {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** USER_HZ: the unit of /proc/PID/stat's times on Linux. */
const CLOCK_TICKS_PER_SECOND = 100;

/**
 * CPU of a process so far, in nanoseconds: the scheduler's run time of every thread
 * (/proc/PID/task/T/schedstat), plus its waited-for children's ticks (cutime + cstime: a check
 * that forks iptables counts, as it did for flannel). Not utime + stime: their 10 ms ticks are
 * coarser than what a daemon spends per join or per idle second. A thread that ended is no longer
 * counted: weftd's and flanneld's threads live as long as the process.
 */
export function cpuNsOf(pid: number): number {
  let ns = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  const fields = statFields(pid);
  return ns + (Number(fields[13]) + Number(fields[14])) * (1e9 / CLOCK_TICKS_PER_SECOND);
}

/**
 * Context switches (voluntary + involuntary) of every thread of a process so far: each is a
 * wake-up, the figure an idle daemon should keep low (a timer, a poll, a socket read).
 */
export function wakeupsOf(pid: number): number {
  let total = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)/gm)) total += Number(m[1]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return total;
}

export interface HeapFigures {
  readonly heapUsed: number | null;
  readonly heapTotal: number | null;
  readonly external: number | null;
}

/** V8 heap figures from weftd's own /metrics (null: that weftd does not export it). */
export function heapFromMetrics(text: string): HeapFigures {
  const get = (name: string): number | null => {
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : null;
  };
  return { heapUsed: get('nodejs_heap_used_bytes'), heapTotal: get('nodejs_heap_total_bytes'), external: get('nodejs_external_memory_bytes') };
}

/** The 1-minute load average now (the machine is shared: every figure carries it). */
export function load1(): number {
  return loadavg()[0]!;
}
