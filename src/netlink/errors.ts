/**
 * Kernel errors as WeftError('NETLINK', '<operation> <object>: <errno>'). The `netlink` package
 * rejects with a plain `Error("Request rejected: EEXIST")` (no code property), so the errno name
 * is recovered from the message; socket-level failures carry `code` (ErrnoException).
 */
import { WeftError } from '../errors';

/** errno names that mean "try again later", not "this request is wrong". */
const RETRYABLE = new Set(['ETIMEDOUT', 'ENOBUFS', 'EAGAIN', 'EBUSY', 'EINTR', 'ESOCKCLOSED']);

/**
 * A failed netlink request. `errno` is the symbolic name ("EEXIST", "ENOENT", "EPERM", ...), or
 * "ETIMEDOUT" when the kernel did not answer in time, "ESOCKCLOSED" when the socket died under the
 * request; null when unknown. It is a WeftError (code 'NETLINK') so generic handling still works.
 */
export class NetlinkError extends WeftError {
  readonly errno: string | null;

  constructor(operation: string, errno: string | null, cause: unknown) {
    super('NETLINK', `${operation}: ${errno ?? describe(cause)}`, {
      cause,
      retryable: errno !== null && RETRYABLE.has(errno),
    });
    this.name = 'NetlinkError';
    this.errno = errno;
  }
}

export function errnoOf(err: unknown): string | null {
  if (err instanceof NetlinkError) return err.errno;
  if (!(err instanceof Error)) return null;
  const code = (err as Error & { code?: unknown }).code;
  if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return code;
  const m = /Request rejected: (E[A-Z0-9]+|-?\d+)/.exec(err.message);
  if (m) return m[1]!;
  if (err.message === 'Timeout has been reached') return 'ETIMEDOUT';
  return null;
}

export function toNetlinkError(operation: string, err: unknown): NetlinkError {
  if (err instanceof NetlinkError) return err;
  return new NetlinkError(operation, errnoOf(err), err);
}

export function isErrno(err: unknown, errno: string): boolean {
  return errnoOf(err) === errno;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
