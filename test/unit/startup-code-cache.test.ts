/**
 * src/daemon/code-cache.ts: what weftd does with the one-file build's warm code cache hook once
 * ready (the loader's side, end to end on a real lab: test/e2e/startup-code-cache.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { saveWarmCodeCache, warmCodeCacheHook, type WarmCodeCacheHook } from '../../src/daemon/code-cache';

const HOOK = Symbol.for('weft.warmCodeCache');

function scopeWith(hook: WarmCodeCacheHook): Record<symbol, unknown> {
  return { [HOOK]: hook };
}

describe('warm code cache hook', () => {
  it('unbundled (no loader, no hook): nothing to do', () => {
    assert.equal(warmCodeCacheHook({}), null);
    assert.deepEqual(saveWarmCodeCache({}), { kind: 'unbundled' });
    assert.equal(warmCodeCacheHook({ [HOOK]: { file: 'x' } }), null, 'not a hook without save()');
  });

  it('this host\'s cache was used: not written again', () => {
    let saved = 0;
    const scope = scopeWith({ used: 'warm', file: '/c/f', save: () => { saved++; return '/c/f'; } });
    assert.deepEqual(saveWarmCodeCache(scope), { kind: 'used', file: '/c/f' });
    assert.equal(saved, 0);
  });

  it('compiled with the build\'s cache (or none): written once, then the hook is gone', () => {
    for (const used of ['shipped', 'none'] as const) {
      let saved = 0;
      const scope = scopeWith({ used, file: '/c/f', save: () => { saved++; return '/c/f'; } });
      assert.deepEqual(saveWarmCodeCache(scope), { kind: 'written', file: '/c/f', compiledWith: used });
      assert.deepEqual(saveWarmCodeCache(scope), { kind: 'unbundled' });
      assert.equal(saved, 1);
    }
  });

  it('a write that fails is reported with its cause, never thrown', () => {
    const cause = Object.assign(new Error('EROFS: read-only file system'), { code: 'EROFS' });
    const out = saveWarmCodeCache(scopeWith({ used: 'shipped', file: '/c/f', save: () => { throw cause; } }));
    assert.deepEqual(out, { kind: 'failed', file: '/c/f', error: cause });
  });
});
