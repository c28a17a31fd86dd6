/**
 * A throwaway single-member etcd for e2e tests: its own data dir, client and peer ports on
 * loopback picked free, stopped by PID and its dir removed by stop(). Missing etcd is a failure
 * with the install command, never a skip (docs/DEVELOPING.md).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export interface EtcdInstance {
  /** e.g. "http://127.0.0.1:41234" */
  readonly endpoint: string;
  readonly pid: number;
  readonly dataDir: string;
  /** Run etcdctl (v3 API) against this etcd; resolves to stdout, rejects with stderr. */
  etcdctl(...args: string[]): Promise<string>;
  /** The last lines etcd wrote (for failure messages). */
  logTail(): string;
  /**
   * Freeze etcd (SIGSTOP): connections stay open but nothing answers — an outage as clients see
   * a hung or partitioned server. Its lease clock keeps running, so leases expire meanwhile.
   */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** SIGTERM (SIGKILL after 3 s) by PID, wait for exit, remove the data dir. Idempotent. */
  stop(): Promise<void>;
}

export const ETCD_MISSING = 'etcd not found: apt-get install -y etcd-server etcd-client';

function onPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function healthy(endpoint: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = get(`${endpoint}/health`, { timeout: 500 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(res.statusCode === 200 && body.includes('true')));
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
  });
}

export async function startEtcd(): Promise<EtcdInstance> {
  const etcdBin = onPath('etcd');
  const etcdctlBin = onPath('etcdctl');
  if (etcdBin === null || etcdctlBin === null) throw new Error(ETCD_MISSING);

  const dataDir = await mkdtemp(join(tmpdir(), `weft-etcd-${process.pid}-`));
  const clientPort = await freePort();
  let peerPort = await freePort();
  while (peerPort === clientPort) peerPort = await freePort();
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;

  const child: ChildProcess = spawn(
    etcdBin,
    [
      '--name', 'default',
      '--data-dir', dataDir,
      '--listen-client-urls', endpoint,
      '--advertise-client-urls', endpoint,
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `default=${peer}`,
      '--log-level', 'warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const pid = child.pid;
  let log = '';
  child.stderr?.on('data', (c: Buffer) => {
    log = (log + c.toString()).slice(-8000);
  });
  let exited = false;
  const exitPromise = new Promise<void>((resolve) => {
    child.on('exit', () => {
      exited = true;
      resolve();
    });
  });
  child.on('error', () => undefined); // spawn failures surface as 'exit' / no pid below

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (!exited && pid !== undefined) {
      try {
        process.kill(pid, 'SIGCONT'); // a paused etcd would not act on SIGTERM
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone
      }
      const timer = setTimeout(() => {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }, 3000);
      await exitPromise;
      clearTimeout(timer);
    }
    await rm(dataDir, { recursive: true, force: true });
  };

  const etcdctl = (...args: string[]): Promise<string> =>
    new Promise((resolve, reject) => {
      execFile(etcdctlBin, ['--endpoints', endpoint, ...args], { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 10_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`etcdctl ${args.join(' ')}: ${stderr || err.message}`));
        else resolve(stdout);
      });
    });

  if (pid === undefined) {
    await stop();
    throw new Error(`start etcd ${etcdBin}: spawn failed`);
  }
  const deadline = Date.now() + 15_000;
  while (!(await healthy(endpoint))) {
    if (exited || Date.now() > deadline) {
      const tail = log;
      await stop();
      throw new Error(`start etcd on ${endpoint}: ${exited ? 'exited' : 'not healthy after 15 s'}; its log:\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const signal = (sig: NodeJS.Signals): void => {
    if (!exited) process.kill(pid, sig);
  };
  return { endpoint, pid, dataDir, etcdctl, logTail: () => log, pause: () => signal('SIGSTOP'), resume: () => signal('SIGCONT'), stop };
}
