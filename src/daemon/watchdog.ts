/**
 * systemd's watchdog (WatchdogSec= in the unit): systemd sets WATCHDOG_USEC (and WATCHDOG_PID)
 * and kills and restarts the service when no `WATCHDOG=1` arrives within that time.
 *
 * The ping comes from a timer on the main event loop, every third of the interval: a weftd whose
 * loop is stuck (a synchronous spin, a blocking call that never returns) stops pinging, and
 * systemd restarts it; the kernel state stays, as on any restart. A tick that runs far later than
 * scheduled (the loop was blocked for more than half the interval) still pings — the loop is
 * back — but logs the stall, so a restart that follows a longer one has its explanation.
 */
import { monotonicMs } from '../clock';
import type { Logger } from '../log';
import type { NotifySend } from './notify';
import { loadNative } from '../native';

export interface WatchdogOptions {
  readonly log: Logger;
  readonly env?: NodeJS.ProcessEnv;
  readonly pid?: number;
  readonly send?: NotifySend;
  readonly now?: () => number;
}

/** Start pinging when systemd asked for it; returns a stop function (a no-op when it did not). */
export function startWatchdog(opts: WatchdogOptions): () => void {
  const env = opts.env ?? process.env;
  const intervalMs = watchdogIntervalMs(env, opts.pid ?? process.pid);
  const socket = env.NOTIFY_SOCKET;
  if (intervalMs === null || !socket) return () => undefined;
  const send = opts.send ?? ((p: string, m: string) => loadNative().sdNotify(p, m));
  const now = opts.now ?? monotonicMs;
  const period = Math.max(1, Math.floor(intervalMs / 3));
  let last = now();
  const ping = (): void => {
    try {
      send(socket, 'WATCHDOG=1');
    } catch (err) {
      opts.log.warn('sd_notify WATCHDOG=1 failed', { socket, error: err });
    }
  };
  ping();
  const timer = setInterval(() => {
    const t = now();
    const late = t - last - period;
    last = t;
    if (late > intervalMs / 2) {
      opts.log.warn(`event loop was blocked for ${Math.round(late)} ms (systemd watchdog interval ${intervalMs} ms); a longer stall gets weftd restarted`);
    }
    ping();
  }, period);
  timer.unref();
  opts.log.debug('systemd watchdog on', { intervalMs, pingEveryMs: period });
  return () => clearInterval(timer);
}

/** WATCHDOG_USEC in ms when it is meant for this process (sd_watchdog_enabled's rules), else null. */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv, pid: number): number | null {
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isFinite(usec) || usec <= 0) return null;
  if (env.WATCHDOG_PID !== undefined && env.WATCHDOG_PID !== '' && Number(env.WATCHDOG_PID) !== pid) return null;
  return usec / 1000;
}
