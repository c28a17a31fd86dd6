/**
 * The V8 flags weftd sets once it is ready (src/daemon/v8-flags.ts): --no-opt, and a failure to
 * set it is reported, never thrown (an optimisation must not take the daemon down).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RUNTIME_V8_FLAGS, applyRuntimeV8Flags } from '../../src/daemon/v8-flags';

describe('runtime V8 flags', () => {
  it('sets --no-opt', () => {
    const set: string[] = [];
    assert.equal(applyRuntimeV8Flags((f) => set.push(f)), null);
    assert.deepEqual(set, ['--no-opt']);
    assert.deepEqual(RUNTIME_V8_FLAGS, ['--no-opt']);
  });

  it('a flag V8 refuses is a message, not an exception', () => {
    assert.equal(applyRuntimeV8Flags(() => { throw new Error('no such flag'); }), 'no such flag');
  });
});
