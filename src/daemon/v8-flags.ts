/**
 * weftd's V8 flags, set at run time instead of on node's command line.
 *
 * V8 stamps every code cache with a hash of the flags that differ from their defaults and
 * rejects a cache made under another hash — Node's own embedded cache of its built-in modules
 * included. With `--no-opt` on the command line (or `--max-semi-space-size` in NODE_OPTIONS),
 * every built-in module weftd loads (net, stream, http, child_process, …) was compiled from
 * source at each start: ~12 ms of the ~72 ms to subnet.env and ~25 ms to READY=1 here
 * (docs/performance.md, "Issue #14, fifth pass"). So:
 *
 *   - `--max-semi-space-size` (systemd/weftd.service's NODE_OPTIONS) has sized the heap when the
 *     first line of JavaScript runs; the one-file loader (scripts/build-weftd-bundle.js) sets it
 *     back to its default before anything is compiled. The young generation stays capped (the
 *     heap read the flag at start-up; V8 does not read it again).
 *   - `--no-opt` (no TurboFan: src/lab/lab.ts WEFTD_NODE_ARGS says why) is set here once weftd is
 *     ready and this host's warm code cache is written (src/daemon/code-cache.ts), so that cache
 *     carries the default hash the next start compiles under. TurboFan may optimise a function
 *     or two of the start itself; nothing after it.
 *
 * Built-in modules first loaded after this (node:dns for a named endpoint, node:tls) are compiled
 * without Node's cache, as every one was before: once, off the start path.
 */

/** What runs once weftd is ready. */
export const RUNTIME_V8_FLAGS: readonly string[] = ['--no-opt'];

/** Set RUNTIME_V8_FLAGS (node:v8: loaded by then for the idle GC). Never throws: a flag is an optimisation. */
export function applyRuntimeV8Flags(set: (flag: string) => void = defaultSet): string | null {
  try {
    for (const flag of RUNTIME_V8_FLAGS) set(flag);
    return null;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

function defaultSet(flag: string): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  (require('node:v8') as typeof import('node:v8')).setFlagsFromString(flag);
}
