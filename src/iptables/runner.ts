/**
 * Running the iptables tools: `iptables --version`, `iptables-save`, `iptables-restore --noflush`.
 *
 * Why weft forks the iptables binaries instead of speaking to netfilter itself: the binaries are
 * the one stable interface to the ruleset. nf_tables' netlink messages for iptables-compatible
 * rules (xtables matches wrapped in nft expressions) are an internal format of iptables-nft, and
 * the legacy tables are a binary blob in a setsockopt; both change with iptables releases and
 * neither has a JavaScript binding. Forking is made rare instead (see manager.ts): a check is
 * one `iptables-save`, a repair one `iptables-restore` of only what is missing.
 *
 * Commands run with argument arrays (never a shell) and a deadline; `-w` waits for the xtables
 * lock (held by e.g. Docker or kube-proxy while they restore) instead of failing.
 */
import type { spawn as Spawn } from 'node:child_process';
import { WeftError } from '../errors';
import { parseIptablesVersion, type IptablesVersion, type Table } from './rules';

/** The operations the manager and `weft cleanup` need; a seam for tests. */
export interface IptablesRunner {
  version(): Promise<IptablesVersion>;
  /** `iptables-save` of the given tables (one process when several). */
  save(tables: readonly Table[]): Promise<string>;
  /** `iptables-restore --noflush` with `input` on stdin. */
  restore(input: string): Promise<void>;
}

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export type Exec = (file: string, args: readonly string[], input: string | null, timeoutMs: number) => Promise<ExecResult>;

const TIMEOUT_MS = 30_000;
const LOCK_WAIT_SECONDS = '5';

/**
 * node:child_process, loaded at the first command: its module graph (child_process, dgram, their
 * bindings) costs ~5 ms of CPU, which weftd's start-up would otherwise pay before subnet.env
 * although iptables is only set up after it (issue #14, start-up).
 */
let spawnProcess: typeof Spawn | null = null;

/** Spawn `file` and collect its output; rejects only when it cannot be started (ENOENT...). */
export const execFile: Exec = (file, args, input, timeoutMs) =>
  new Promise((resolve, reject) => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    spawnProcess ??= (require('node:child_process') as typeof import('node:child_process')).spawn;
    const child = spawnProcess(file, [...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.on('error', () => undefined); // EPIPE if it exits early; the exit code says why
    child.stdin.end(input ?? '');
  });

export class BinaryIptablesRunner implements IptablesRunner {
  private versionCache: Promise<IptablesVersion> | null = null;

  constructor(
    private readonly exec: Exec = execFile,
    private readonly binaries = { iptables: 'iptables', save: 'iptables-save', restore: 'iptables-restore' },
  ) {}

  version(): Promise<IptablesVersion> {
    this.versionCache ??= this.run(this.binaries.iptables, ['--version'], null, 'read the iptables version').then((out) => {
      const v = parseIptablesVersion(out);
      if (v === null) throw new WeftError('INTERNAL', `iptables --version: cannot parse ${JSON.stringify(out.trim())}`);
      return v;
    });
    this.versionCache.catch(() => {
      this.versionCache = null; // try again next time (iptables installed meanwhile)
    });
    return this.versionCache;
  }

  async save(tables: readonly Table[]): Promise<string> {
    // One table: -t keeps the dump small on hosts with big rulesets elsewhere; both: one process.
    const args = tables.length === 1 ? ['-t', tables[0]!] : [];
    return this.run(this.binaries.save, args, null, `read the ${tables.join(' and ')} table(s)`);
  }

  async restore(input: string): Promise<void> {
    const v = await this.version();
    const wait = v.major > 1 || v.minor > 6 || (v.minor === 6 && v.patch >= 2) ? ['-w', LOCK_WAIT_SECONDS] : [];
    await this.run(this.binaries.restore, [...wait, '--noflush'], input, 'apply rules');
  }

  private async run(file: string, args: readonly string[], input: string | null, what: string): Promise<string> {
    let r: ExecResult;
    try {
      r = await this.exec(file, args, input, TIMEOUT_MS);
    } catch (err) {
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      throw new WeftError('INTERNAL', `iptables: ${what}: cannot run ${file}${missing ? ' (not installed? apt-get install -y iptables)' : ''}: ${(err as Error).message}`, { cause: err });
    }
    if (r.code !== 0) {
      const detail = (r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ');
      throw new WeftError('INTERNAL', `iptables: ${what}: ${[file, ...args].join(' ')} exited ${r.code}: ${detail}`);
    }
    return r.stdout;
  }
}
