/**
 * systemd readiness protocol (sd_notify). No NOTIFY_SOCKET → every call is a no-op, as with
 * libsystemd. Failures are logged, never thrown: a broken notify socket must not stop the
 * data plane (systemd will time the unit out and say so itself).
 */
import type { Logger } from '../log';
import { loadNative } from '../native';

export interface Notifier {
  ready(status: string): void;
  status(status: string): void;
  stopping(): void;
}

export type NotifySend = (socketPath: string, message: string) => void;

export function createNotifier(
  log: Logger,
  socketPath: string | undefined = process.env.NOTIFY_SOCKET,
  send: NotifySend = (p, m) => loadNative().sdNotify(p, m),
): Notifier {
  const notify = (message: string): void => {
    if (!socketPath) return;
    try {
      send(socketPath, message);
    } catch (err) {
      log.warn('sd_notify failed', { socket: socketPath, message, error: err });
    }
  };
  // STATUS= is a single line: newlines would start a new assignment.
  const clean = (s: string): string => s.replace(/[\r\n]+/g, ' ');
  return {
    ready: (status) => notify(`READY=1\nSTATUS=${clean(status)}`),
    status: (status) => notify(`STATUS=${clean(status)}`),
    stopping: () => notify('STOPPING=1'),
  };
}
