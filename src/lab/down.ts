/**
 * Tearing a lab down from its state file alone, so it works from any process, after a crash,
 * and on a half-built lab. Order: recorded processes (weftd before etcd), then anything else
 * still running inside a recorded namespace (a crash between spawn and record, a user's shell),
 * then the namespaces (their interfaces, veth peers and routes go with them), then the state dir.
 * Every step tolerates "already gone", so running it twice is fine.
 */
import { describeError, WeftError } from '../errors';
import type { Netns } from './netns';
import { isAlive, readStartTime, stopProcess } from './run';
import { removeStateDir, saveState, type LabState } from './state';

export interface DownReport {
  readonly stoppedPids: number[];
  readonly deletedNamespaces: string[];
  readonly stateDirRemoved: boolean;
}

export async function teardown(state: LabState, netns: Netns): Promise<DownReport> {
  const stopped: number[] = [];
  const failures: string[] = [];
  // One stuck process must not keep the rest of the lab alive: note it and carry on.
  const stop = async (pid: number, startTime: string | null, graceMs: number): Promise<void> => {
    const id = { pid, startTime };
    if (!isAlive(id)) return;
    try {
      // A process frozen by a fault test (SIGSTOP) would not act on SIGTERM before the grace ends.
      try { process.kill(pid, 'SIGCONT'); } catch { /* exited meanwhile */ }
      await stopProcess(id, 'SIGTERM', graceMs);
      stopped.push(pid);
    } catch (e) {
      failures.push(describeError(e));
    }
  };

  // weftd first (it may talk to etcd while shutting down), then etcd.
  const daemons = state.processes.filter((p) => p.role === 'weftd');
  await Promise.all(daemons.map((p) => stop(p.pid, p.startTime, 5000)));
  for (const p of state.processes.filter((x) => x.role !== 'weftd')) await stop(p.pid, p.startTime, 5000);
  state.processes = state.processes.filter((p) => isAlive(p));
  saveState(state);

  const present = new Set(await netns.list());
  const ours = state.namespaces.filter((ns) => present.has(ns));
  const stray = (await Promise.all(ours.map((ns) => netns.pids(ns)))).flat().filter((pid) => pid !== process.pid);
  await Promise.all([...new Set(stray)].map((pid) => stop(pid, readStartTime(pid), 2000)));

  const deleted: string[] = [];
  // Reverse creation order: containers, hosts, etcd, then the underlay.
  for (const ns of [...ours].reverse()) {
    try {
      if (await netns.delete(ns)) deleted.push(ns);
    } catch (e) {
      failures.push(describeError(e));
    }
  }
  if (failures.length > 0) {
    // Keep the state dir: it is what a second `down` needs to finish the job.
    throw new WeftError('INTERNAL', `lab ${state.name}: down left something behind (run it again): ${failures.join('; ')}`);
  }
  return { stoppedPids: stopped, deletedNamespaces: deleted, stateDirRemoved: removeStateDir(state.stateDir) };
}
