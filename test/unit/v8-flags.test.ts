/**
 * The V8 flags weftd sets at run time (src/daemon/v8-flags.ts): --no-opt once its modules are
 * loaded, the defaults back while this host's code cache is made, and a failure to set a flag is
 * reported, never thrown (an optimisation must not take the daemon down).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RUNTIME_V8_FLAGS, applyRuntimeV8Flags, withDefaultV8Flags } from '../../src/daemon/v8-flags';

describe('runtime V8 flags', () => {
  it('sets --no-opt', () => {
    const set: string[] = [];
    assert.equal(applyRuntimeV8Flags((f) => set.push(f)), null);
    assert.deepEqual(set, ['--no-opt']);
    assert.deepEqual(RUNTIME_V8_FLAGS, ['--no-opt']);
  });

  it('a code cache is made under the defaults, and the runtime flags are back afterwards, also when it throws', () => {
    const set: string[] = [];
    const seen: string[] = [];
    assert.equal(withDefaultV8Flags(() => { seen.push(...set); return 7; }, (f) => set.push(f)), 7);
    assert.deepEqual(seen, ['--opt']);
    assert.deepEqual(set, ['--opt', '--no-opt']);
    set.length = 0;
    assert.throws(() => withDefaultV8Flags(() => { throw new Error('disk full'); }, (f) => set.push(f)), /disk full/);
    assert.deepEqual(set, ['--opt', '--no-opt']);
  });

  it('a flag V8 refuses is a message, not an exception', () => {
    assert.equal(applyRuntimeV8Flags(() => { throw new Error('no such flag'); }), 'no such flag');
    assert.equal(withDefaultV8Flags(() => 'saved', () => { throw new Error('no such flag'); }), 'saved');
  });

  it('the real setter takes the flags without a warning', () => {
    // In a child: the flags must not leak into this test process.
    const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
    const script = `const f = require(${JSON.stringify(require.resolve('../../src/daemon/v8-flags'))});
      process.stdout.write(String(f.applyRuntimeV8Flags()) + ' ' + f.withDefaultV8Flags(() => 'ok'));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    assert.equal(r.stdout, 'null ok');
    assert.equal(r.stderr, '', 'no DeprecationWarning');
  });
});
