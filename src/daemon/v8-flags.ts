/**
 * weftd's V8 flags, set at run time instead of on node's command line.
 *
 * V8 stamps every code cache with a hash of the flags that differ from their defaults and
 * rejects a cache made under another hash — Node's own embedded cache of its built-in modules
 * included. With `--no-opt` on the command line (or `--max-semi-space-size` in NODE_OPTIONS),
 * every built-in module weftd loads (net, stream, http, child_process, …) was compiled from
 * source at each start (docs/performance.md, "Issue #14, fifth pass"). So:
 *
 *   - `--max-semi-space-size` (systemd/weftd.service's NODE_OPTIONS) has sized the heap when the
 *     first line of JavaScript runs; the one-file loader (scripts/build-weftd-bundle.js) sets it
 *     back to its default before anything is compiled. The young generation stays capped (the
 *     heap read the flag at start-up; V8 does not read it again).
 *   - `--no-opt` (no TurboFan: src/lab/lab.ts WEFTD_NODE_ARGS says why) is set by the entry as
 *     soon as weftd's modules are loaded (they load net, stream, events, fs, … with Node's cache),
 *     before anything can run hot: a single TurboFan job maps the optimizing compiler's code in,
 *     ~3.5 MB more RSS for good. Built-in modules loaded later (node:http for the health port,
 *     child_process for iptables, node:v8) compile without Node's cache, as all did before.
 *   - This host's warm code cache (src/daemon/code-cache.ts) is written with the flags back at
 *     their defaults (withDefaultV8Flags), the hash the next start compiles under.
 */

/** What weftd runs with once its modules are loaded. */
export const RUNTIME_V8_FLAGS: readonly string[] = ['--no-opt'];
/** The same flags at V8's defaults (a flag at its default is left out of the hash). */
const DEFAULT_V8_FLAGS: readonly string[] = ['--opt'];

export type SetV8Flag = (flag: string) => void;

/** Set RUNTIME_V8_FLAGS. Never throws (a flag is an optimisation): the reason it failed, or null. */
export function applyRuntimeV8Flags(set: SetV8Flag = setV8Flag): string | null {
  try {
    for (const flag of RUNTIME_V8_FLAGS) set(flag);
    return null;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** Run `fn` with V8's default flags (what a code cache must be made under), then weftd's again. */
export function withDefaultV8Flags<T>(fn: () => T, set: SetV8Flag = setV8Flag): T {
  try {
    for (const flag of DEFAULT_V8_FLAGS) set(flag);
  } catch {
    // Left as they are: the cache is made under them and the next start compiles without it.
  }
  try {
    return fn();
  } finally {
    applyRuntimeV8Flags(set);
  }
}

/**
 * v8.setFlagsFromString through the binding: `node:v8` itself would be compiled without Node's
 * cache once a flag is changed (~2 ms), and loading it here would load it before subnet.env.
 * The binding is deprecated (DEP0111, a warning on stderr): muted for this call.
 */
function setV8Flag(flag: string): void {
  const muted = process.noDeprecation;
  process.noDeprecation = true;
  let binding: { readonly setFlagsFromString?: unknown } | null = null;
  try {
    // Not in @types/node: the binding is internal API, checked before use.
    binding = (process as unknown as { binding(name: string): { readonly setFlagsFromString?: unknown } }).binding('v8');
  } catch {
    // No such binding in this node: the public module below.
  } finally {
    process.noDeprecation = muted;
  }
  if (binding !== null && typeof binding.setFlagsFromString === 'function') {
    (binding.setFlagsFromString as (flags: string) => void)(flag);
    return;
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  (require('node:v8') as typeof import('node:v8')).setFlagsFromString(flag);
}
