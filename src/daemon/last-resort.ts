/**
 * weftd's last-resort policy for errors nothing else caught (docs/security.md, "Process-wide
 * error policy"). Every path below logs the whole cause chain and the stack first: weftd never
 * exits silently.
 *
 * - An unhandled promise rejection: a promise nobody awaits, so by construction not the core
 *   loop's (run() is awaited and its failures are handled by the caller) but a side task's — a
 *   health request, a probe, a log write. Node 20's default turns it into a crash; we log it at
 *   error level, count it, and keep running: the overlay (kernel device, routes, lease
 *   keepalives) does not depend on the task that failed, and a restart would not bring it back.
 * - An uncaught exception: a synchronous throw escaped a callback, which may have left any of
 *   our data structures half-updated; Node documents that resuming is unsafe. We log it, tell
 *   systemd (STATUS=), and exit with EXIT_UNCAUGHT without any clean-up: the device, routes,
 *   iptables rules and lease stay in the kernel and in etcd exactly as they are, so traffic keeps
 *   flowing (kernel VXLAN) while systemd restarts weftd (Restart=on-failure, 5 s), and the new
 *   process adopts that state. Exiting is safe only because no input can reach this path any
 *   more (the health server answers every failure itself); a crash loop would show in the log
 *   and in `systemctl status` rather than as a silently wrong daemon.
 */
import { describeError } from '../errors';
import type { Logger } from '../log';

/** sysexits.h EX_SOFTWARE: an internal software error. Not 1 (cannot go on) nor 2 (bad flags). */
export const EXIT_UNCAUGHT = 70;

/** The part of `process` the policy uses (a seam for tests). */
export interface ProcessEvents {
  on(event: 'unhandledRejection', listener: (reason: unknown) => void): unknown;
  on(event: 'uncaughtException', listener: (err: Error, origin: string) => void): unknown;
}

export interface LastResortOptions {
  readonly log: Logger;
  readonly exit: (code: number) => void;
  /** systemd STATUS= line (no-op without NOTIFY_SOCKET). */
  readonly status?: (text: string) => void;
}

export interface LastResort {
  /** Rejections logged and survived so far. */
  readonly unhandledRejections: number;
}

export function installLastResort(proc: ProcessEvents, opts: LastResortOptions): LastResort {
  const state = { unhandledRejections: 0 };
  proc.on('unhandledRejection', (reason) => {
    state.unhandledRejections++;
    opts.log.error(`unhandled promise rejection (a bug in weftd, please report it): ${describeError(reason)}; weftd keeps running and the overlay is untouched`,
      { code: 'INTERNAL', stack: stackOf(reason), count: state.unhandledRejections });
  });
  proc.on('uncaughtException', (err, origin) => {
    const why = describeError(err);
    opts.log.error(`uncaught exception (a bug in weftd, please report it): ${why}; exiting with status ${EXIT_UNCAUGHT} so that systemd restarts weftd; the overlay device, routes and lease stay in place`,
      { code: 'INTERNAL', origin, stack: stackOf(err) });
    try {
      opts.status?.(`crashed: ${why}; restarting`);
    } catch {
      // the log line above is what matters
    }
    opts.exit(EXIT_UNCAUGHT);
  });
  return state;
}

function stackOf(err: unknown): string | undefined {
  return err instanceof Error ? err.stack : undefined;
}
