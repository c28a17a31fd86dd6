/**
 * The one errors module. Every error weft raises on purpose is a WeftError: a message an operator
 * can act on ("what failed, on what, with which value, what to do") and the underlying error kept
 * as `cause` so the chain survives logging.
 *
 * "Retryable" is a marker, not a subclass: the same failure (etcd unreachable) is retryable for
 * the daemon's background loops and fatal for a one-shot CLI command.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'      // network config or options fail validation
  | 'CONFIG_MISSING'      // <prefix>/config not in etcd
  | 'ETCD_UNAVAILABLE'    // cannot reach etcd
  | 'LEASE_CONFLICT'      // a create transaction lost a race
  | 'SUBNETS_EXHAUSTED'   // no free subnet between SubnetMin and SubnetMax
  | 'INTERFACE'           // underlay interface missing / without IPv4
  | 'NETLINK'             // a kernel request failed
  | 'NOT_ROOT'            // needs CAP_NET_ADMIN
  | 'BAD_DATA'            // malformed value read from etcd or a file
  | 'INTERNAL';

export class WeftError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; retryable?: boolean } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'WeftError';
    this.code = code;
    this.retryable = opts.retryable ?? false;
  }
}

export function isRetryable(err: unknown): boolean {
  return err instanceof WeftError && err.retryable;
}

/** The message plus every cause's message, joined by ": " — what a log line should show. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 8; depth++) {
    if (cur instanceof Error) {
      if (!parts.some((p) => p.includes(cur instanceof Error ? cur.message : ''))) parts.push(cur.message);
      cur = (cur as Error & { cause?: unknown }).cause;
    } else {
      parts.push(String(cur));
      break;
    }
  }
  return parts.join(': ');
}
