/**
 * The user-space WireGuard device: one `wireguard-go` process per device (Debian package
 * wireguard-go), configured over its UAPI socket (uapi.ts).
 *
 * Lifetime, decided so that restarting weftd never cuts traffic (as with kernel devices):
 *   - wireguard-go is started detached (own session, output to `<runDir>/<dev>.log`, PID in
 *     `<runDir>/<dev>.pid`) and is NOT stopped when weftd exits: the TUN, its peers and their
 *     sessions live on, like a kernel device would.
 *   - ensure() first looks for a running one: if the UAPI socket answers and the TUN exists, it is
 *     adopted as it is (keys, peers and sessions untouched).
 *   - Watching: when wireguard-go dies its TUN goes with it; the reconciler sees the link vanish
 *     (netlink notification) and calls ensure() again, which starts a new one; the backend then
 *     gives it the key, the port and the peers. A process that hangs (socket not answering) is
 *     reported by problem() and replaced the same way.
 *   - `weft cleanup` / the lab's teardown stop it by PID (the PID file).
 *
 * wireguard-go's socket directory is fixed (/var/run/wireguard). Several hosts in network
 * namespaces of one machine (the lab, the tests) would collide there, so a `runDir` other than the
 * default starts it in a private mount namespace with runDir bind-mounted on /run/wireguard
 * (`unshare -m`); weftd then finds the socket at `<runDir>/<dev>.sock`.
 */
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, mkdirSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { describeError, WeftError } from '../../errors';
import { silentLogger, type Logger } from '../../log';
import type { LinkInfo } from '../../netlink/types';
import { UapiClient } from './uapi';

export const DEFAULT_RUN_DIR = '/var/run/wireguard';

export interface WgGoNetlink {
  getLink(name: string): Promise<LinkInfo | null>;
  deleteLink(link: number | { readonly index: number; readonly name: string }): Promise<void>;
}

export interface WireguardGoOptions {
  readonly nl: WgGoNetlink;
  readonly log?: Logger;
  /** Where the UAPI socket, PID and log files are; default /var/run/wireguard. */
  readonly runDir?: string;
  /** wireguard-go's path; default: looked up in PATH. */
  readonly binary?: string;
  /** How long a fresh wireguard-go may take to answer on its socket. Default 10 s. */
  readonly startTimeoutMs?: number;
}

function findInPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      if (statSync(p).isFile()) {
        accessSync(p, constants.X_OK);
        return p;
      }
    } catch { /* not here */ }
  }
  return null;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class WireguardGoDevice {
  readonly runDir: string;
  private readonly nl: WgGoNetlink;
  private readonly log: Logger;
  private readonly binary: string | undefined;
  private readonly startTimeoutMs: number;
  private name: string | null = null;
  private client: UapiClient | null = null;
  /** Set by the backend's watch when the socket stopped answering; cleared by ensure(). */
  private hung: string | null = null;
  /** Restarts of wireguard-go by this process (for status/metrics). */
  restarts = 0;
  private started = false;
  private ensuring = false;

  constructor(opts: WireguardGoOptions) {
    this.nl = opts.nl;
    this.log = (opts.log ?? silentLogger).child({ component: 'wireguard-go' });
    this.runDir = opts.runDir ?? DEFAULT_RUN_DIR;
    this.binary = opts.binary;
    this.startTimeoutMs = opts.startTimeoutMs ?? 10_000;
  }

  socketPath(name: string): string {
    return join(this.runDir, `${name}.sock`);
  }

  pidFile(name: string): string {
    return join(this.runDir, `${name}.pid`);
  }

  /** The PID of the wireguard-go serving `name` as recorded in its PID file, or null. */
  pid(name: string = this.name ?? ''): number | null {
    try {
      const n = Number(readFileSync(this.pidFile(name), 'utf8').trim());
      return Number.isInteger(n) && n > 0 ? n : null;
    } catch {
      return null;
    }
  }

  uapi(): UapiClient {
    if (this.client === null) throw new WeftError('INTERNAL', 'wireguard-go device used before ensure()');
    return this.client;
  }

  /** Why the device needs ensure() again (the watch found the socket dead), or null. */
  problem(): string | null {
    return this.hung;
  }

  /**
   * The watch found the socket dead twice in a row with the TUN still there: a hung (or stopped)
   * wireguard-go. Kill it by PID: its TUN goes with it, the reconciler sees the link vanish at
   * once and sets the device up again (a new wireguard-go), as when it dies by itself.
   */
  markHung(why: string): void {
    // A wireguard-go being (re)started does not answer yet: that is not a hang.
    if (this.ensuring) return;
    this.hung = why;
    const pid = this.name === null ? null : this.pid(this.name);
    if (pid !== null && isWireguardGo(pid)) {
      this.log.warn(`wireguard-go for ${this.name} (pid ${pid}) is hung (${why}); killing it to start a new one`);
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone meanwhile */ }
    }
  }

  /**
   * Make wireguard-go run for device `name` and return its TUN. Adopts a running one; replaces
   * a hung one or a foreign device of that name (a kernel WireGuard device, a leftover TUN).
   */
  async ensure(name: string): Promise<LinkInfo> {
    this.ensuring = true;
    try {
      return await this.ensureNow(name);
    } finally {
      this.ensuring = false;
    }
  }

  private async ensureNow(name: string): Promise<LinkInfo> {
    this.name = name;
    const client = (this.client = new UapiClient(this.socketPath(name)));
    const link = await this.nl.getLink(name);
    if (this.hung === null && link !== null && link.kind === 'tun' && (await client.alive())) {
      if (!this.started) this.log.info(`adopted the running wireguard-go for ${name} (pid ${this.pid(name) ?? '?'}): keys, peers and sessions kept`);
      this.started = true;
      return link;
    }
    const why = this.hung ?? (link === null ? 'no device' : link.kind !== 'tun' ? `device ${name} is a ${link.kind ?? 'plain'} device, not wireguard-go's TUN` : 'its UAPI socket does not answer');
    this.hung = null;
    const old = this.pid(name);
    if (old !== null && isWireguardGo(old)) {
      this.log.warn(`stopping wireguard-go pid ${old} for ${name} (${why})`);
      await stopPid(old);
    }
    if (link !== null && (await this.nl.getLink(name)) !== null) {
      this.log.warn(`deleting device ${name} (${why}) to start wireguard-go`);
      try {
        await this.nl.deleteLink({ index: link.index, name });
      } catch (err) {
        this.log.warn(`could not delete ${name}: ${describeError(err)}`);
      }
    }
    if (this.started) this.restarts++;
    this.started = true;
    this.spawn(name, why);
    return this.waitReady(name, client);
  }

  private spawn(name: string, why: string): void {
    const binary = this.binary ?? findInPath('wireguard-go');
    if (binary === null) {
      throw new WeftError('CONFIG_MISSING', `cannot start the user-space WireGuard device ${name}: wireguard-go not found in PATH; `
        + 'install it (apt-get install wireguard-go), or run weftd on a kernel with WireGuard');
    }
    mkdirSync(this.runDir, { recursive: true, mode: 0o700 });
    rmSync(this.socketPath(name), { force: true });
    const defaultDir = this.runDir === DEFAULT_RUN_DIR || this.runDir === '/run/wireguard';
    const [cmd, args] = defaultDir
      ? [binary, ['-f', name]]
      : ['unshare', ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c',
        'mkdir -p /run/wireguard && mount --bind "$0" /run/wireguard && exec "$1" -f "$2"', this.runDir, binary, name]];
    const logFd = openSync(join(this.runDir, `${name}.log`), 'a');
    try {
      // Detached, output to a file, unref'd: it must outlive weftd (see the module comment).
      const child = spawn(cmd, args, { detached: true, stdio: ['ignore', logFd, logFd], env: { ...process.env, LOG_LEVEL: 'error' } });
      const pid = child.pid;
      child.on('error', (err) => this.log.error(`wireguard-go for ${name} failed to start: ${describeError(err)}`));
      child.on('exit', (code, signal) => {
        this.log.warn(`wireguard-go for ${name} (pid ${pid}) exited (${signal ?? `code ${code}`}); it is started again when the reconciler sees ${name} gone`);
      });
      child.unref();
      if (pid !== undefined) writeFileSync(this.pidFile(name), `${pid}\n`);
      this.log.info(`started wireguard-go for ${name} (pid ${pid}; ${why})`);
    } finally {
      closeSync(logFd);
    }
  }

  private async waitReady(name: string, client: UapiClient): Promise<LinkInfo> {
    const deadline = Date.now() + this.startTimeoutMs;
    for (;;) {
      const link = await this.nl.getLink(name);
      if (link !== null && (await client.alive())) return link;
      if (Date.now() > deadline) {
        throw new WeftError('NETLINK', `wireguard-go for ${name} did not come up within ${this.startTimeoutMs} ms `
          + `(device ${link === null ? 'missing' : 'present'}, socket ${this.socketPath(name)} not answering); see ${join(this.runDir, `${name}.log`)}`,
        { retryable: true });
      }
      await sleep(50);
    }
  }
}

/** Whether `pid` is a live wireguard-go (a stale PID file may name a reused PID). */
export function isWireguardGo(pid: number): boolean {
  try {
    // A zombie (killed, not yet reaped by init) still has the name: nothing to stop.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'wireguard-go' && !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function stopPid(pid: number): Promise<void> {
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  for (let i = 0; i < 40 && processAlive(pid); i++) await sleep(50);
  if (processAlive(pid)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
}

/**
 * `weft cleanup`: stop the wireguard-go serving `name` (by the PID in its PID file, if that PID is
 * a wireguard-go) and remove its PID file and socket. Returns the PID stopped, or null.
 */
export async function stopWireguardGo(name: string, runDir: string = DEFAULT_RUN_DIR, dryRun = false): Promise<number | null> {
  let pid: number | null = null;
  try {
    pid = Number(readFileSync(join(runDir, `${name}.pid`), 'utf8').trim()) || null;
  } catch {
    return null;
  }
  if (pid === null || !isWireguardGo(pid)) return null;
  if (dryRun) return pid;
  await stopPid(pid);
  rmSync(join(runDir, `${name}.pid`), { force: true });
  rmSync(join(runDir, `${name}.sock`), { force: true });
  return pid;
}
