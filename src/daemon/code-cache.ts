/**
 * This host's warm V8 code cache of the one-file weftd (issue #14, start-up). The loader that
 * scripts/build-weftd-bundle.js generates compiles weftd's code with the first cache V8 accepts:
 * this host's warm one, else the one shipped with the build. The shipped one comes from a
 * `--version` run, so it holds the modules' top-level code only; every function of the start
 * path (flags, etcd client, lease, netlink, subnet.env) was still compiled lazily at each start,
 * ~40 ms of CPU (docs/performance.md, "Start-up"). Once weftd is ready, everything the start
 * path ran is compiled: the loader's `save()` writes that as this host's cache, so the next
 * start compiles nothing it ran before.
 *
 * Built on this host by the node that runs it: the cache file's key is the build, node's
 * version, the architecture and the flags, and V8 itself rejects a cache from another V8 or
 * other flags (the loader then compiles as usual and weftd writes a new one). Written once per
 * build (not when the warm cache was used), atomically (tmp + rename), into a directory only
 * root can write. Unbundled (dist/src/cli/weftd.js, tests) there is no loader: nothing happens.
 */

/** What the loader puts at globalThis[Symbol.for('weft.warmCodeCache')]. */
export interface WarmCodeCacheHook {
  /** The cache this start compiled with: this host's ('warm'), the build's ('shipped'), or none V8 accepted. */
  readonly used: 'warm' | 'shipped' | 'none';
  /** Where this host's cache is (or would be) written. */
  readonly file: string;
  /** Write this host's cache; the file written, or null when the warm one was used (nothing to do). Throws on I/O errors. */
  save(): string | null;
}

const HOOK = Symbol.for('weft.warmCodeCache');

function isHook(x: unknown): x is WarmCodeCacheHook {
  return typeof x === 'object' && x !== null && typeof (x as { save?: unknown }).save === 'function'
    && typeof (x as { file?: unknown }).file === 'string';
}

/** The loader's hook, or null when weftd runs unbundled. */
export function warmCodeCacheHook(scope: object = globalThis): WarmCodeCacheHook | null {
  const x: unknown = (scope as Record<symbol, unknown>)[HOOK];
  return isHook(x) ? x : null;
}

export type WarmCodeCacheOutcome =
  | { readonly kind: 'unbundled' }
  | { readonly kind: 'used'; readonly file: string }
  | { readonly kind: 'written'; readonly file: string; readonly compiledWith: 'shipped' | 'none' }
  | { readonly kind: 'failed'; readonly file: string; readonly error: unknown };

/**
 * Write this host's cache if this start did not use it. Never throws: a cache is an optimisation.
 * Once: the hook is dropped from `scope`, so the loader's compiled script it holds can go.
 */
export function saveWarmCodeCache(scope: object = globalThis): WarmCodeCacheOutcome {
  const hook = warmCodeCacheHook(scope);
  if (hook === null) return { kind: 'unbundled' };
  delete (scope as Record<symbol, unknown>)[HOOK];
  if (hook.used === 'warm') return { kind: 'used', file: hook.file };
  try {
    const file = hook.save();
    if (file === null) return { kind: 'used', file: hook.file };
    return { kind: 'written', file, compiledWith: hook.used };
  } catch (error) {
    return { kind: 'failed', file: hook.file, error };
  }
}
