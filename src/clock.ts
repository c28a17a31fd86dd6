/**
 * The one time seam: every component that waits or reads the time takes a Clock (or the part
 * of it it uses: `Pick<Clock, 'now' | 'sleep'>`) as a constructor option defaulting to
 * `systemClock`, so tests drive time by hand instead of waiting.
 */
export type TimerHandle = unknown;

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolve after `ms`; reject with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  /** Run `fn` every `ms` without keeping the process alive; returns the function that stops it. */
  every(ms: number, fn: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  every(ms, fn) {
    const t = setInterval(fn, ms);
    t.unref();
    return () => clearInterval(t);
  },
};

/**
 * Milliseconds on a monotonic clock since the process started: what `performance.now()` gives,
 * without `performance`, whose first use loads perf_hooks (ten of Node's modules, ~50 KB of
 * code and their objects in every weftd that touches it).
 */
export function monotonicMs(): number {
  return process.uptime() * 1000;
}
