/**
 * The one bounded exponential backoff: `initialMs`, doubling, capped at `maxMs`, optionally
 * spread by ±`jitter` (a fraction) so that many hosts retrying after one outage do not
 * reconnect in lock step. Every retry loop (lease acquire and renewals, watch reconnects,
 * reconcile retries, the netlink monitor's reopen) paces itself with one of these: every
 * attempt costs a TCP connect or a netlink dump, which is what keeps an outage cheap.
 */
export interface BackoffOptions {
  readonly initialMs: number;
  readonly maxMs: number;
  /** 0.25: each delay is multiplied by a factor in [0.75, 1.25) and rounded. Default 0. */
  readonly jitter?: number;
  /** Seam for tests. Default Math.random. */
  readonly random?: () => number;
}

export class Backoff {
  private current: number;
  private failures = 0;

  constructor(private readonly opts: BackoffOptions) {
    this.current = opts.initialMs;
  }

  /** The delay before the next attempt (initialMs the first time), then double it up to maxMs. */
  next(): number {
    const base = Math.min(this.current, this.opts.maxMs);
    this.current = Math.min(this.current * 2, this.opts.maxMs);
    this.failures++;
    const jitter = this.opts.jitter ?? 0;
    if (jitter === 0) return base;
    return Math.round(base * (1 - jitter + (this.opts.random ?? Math.random)() * 2 * jitter));
  }

  /** An attempt succeeded: start again from initialMs. */
  reset(): void {
    this.current = this.opts.initialMs;
    this.failures = 0;
  }

  /** Delays handed out since the last reset (consecutive failures). */
  get attempts(): number {
    return this.failures;
  }
}
