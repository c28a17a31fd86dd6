/**
 * The one-file weftd (scripts/build-weftd-bundle.js, issue #14 start-up) behaves as the compiled
 * entry dist/src/cli/weftd.js: same output and exit code for --help, --version and bad flags,
 * with its code cache used (weftd's NODE_OPTIONS) or not (none), and refuses code from another
 * build. The test builds its own bundle next to the entry (where the real one goes: modules find
 * the addon and package.json relative to that directory) and removes it afterwards.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WEFTD_NODE_ARGS, WEFTD_NODE_OPTIONS } from '../../src/lab/lab';

// dist/test/unit → the repository and the compiled tree.
const root = resolve(__dirname, '..', '..', '..');
const distSrc = join(root, 'dist', 'src');
const entry = join(distSrc, 'cli', 'weftd.js');
const bundle = join(distSrc, `weftd.bundle.test-${process.pid}.js`);
const bundleCode = bundle.replace(/\.js$/, '.code.js');
const bundleCache = bundle.replace(/\.js$/, '.code.cache');

interface Outcome { readonly status: number | null; readonly stdout: string; readonly stderr: string }

function run(file: string, args: readonly string[], nodeOptions = '', nodeArgs: readonly string[] = []): Outcome {
  // WEFT_*/FLANNELD_* variables of the caller would change what the flags parse to: none here.
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_OPTIONS: nodeOptions };
  const r = spawnSync(process.execPath, [...nodeArgs, file, ...args], { env, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('weftd bundle', () => {
  before(() => {
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'build-weftd-bundle.js'), '--outdir', distSrc, '--outfile', bundle], { encoding: 'utf8' });
    assert.equal(r.status, 0, `build-weftd-bundle failed: ${r.stderr}`);
    for (const f of [bundle, bundleCode, bundleCache]) assert.ok(existsSync(f), f);
  });
  after(() => {
    for (const f of [bundle, bundleCode, bundleCache]) rmSync(f, { force: true });
  });

  it('run as a command (systemd, install.sh\'s link), keeps NODE_EXTRA_CA_CERTS from Node\'s start and hands it to weftd', () => {
    // Node reads the variable before any JavaScript runs and warns when the file is missing: the
    // warning is the proof that Node saw it (~50 ms of CPU per start when the file is a CA bundle).
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_OPTIONS: '', NODE_EXTRA_CA_CERTS: '/nonexistent/weft-test-ca.pem' };
    const plain = spawnSync(process.execPath, ['-e', '0'], { env, encoding: 'utf8', timeout: 30_000 });
    assert.match(plain.stderr, /Ignoring extra certs from `\/nonexistent\/weft-test-ca\.pem`/, 'node itself parses it at start');
    const direct = spawnSync(bundle, ['--version'], { env, encoding: 'utf8', timeout: 30_000 });
    assert.equal(direct.status, 0, direct.stderr);
    assert.doesNotMatch(direct.stderr, /extra certs/);
    const seen = spawnSync(bundle, ['--version'], { env: { ...env, NODE_OPTIONS: `--require ${join(root, 'dist', 'test', 'unit', 'print-extra-ca.js')}` }, encoding: 'utf8', timeout: 30_000 });
    assert.match(seen.stderr, /WEFT_EXTRA_CA_CERTS=\/nonexistent\/weft-test-ca\.pem NODE_EXTRA_CA_CERTS=undefined/);
    // The compiled entry (npm's bin, a release's dist/src/cli/weftd.js) has the same shebang.
    assert.equal(readFileSync(entry, 'utf8').split('\n')[0], readFileSync(bundle, 'utf8').split('\n')[0]);
  });

  const cases: Array<{ name: string; args: string[]; status: number }> = [
    { name: '--help', args: ['--help'], status: 0 },
    { name: '--version', args: ['--version'], status: 0 },
    { name: 'an unknown flag', args: ['--no-such-flag'], status: 2 },
    { name: 'a flag without its value', args: ['--iface'], status: 2 },
    { name: 'a bad value', args: ['--subnet-lease-renew-margin=never'], status: 2 },
    { name: 'a bad etcd endpoint', args: ['--etcd-endpoints=not a url'], status: 2 },
  ];
  for (const c of cases) {
    it(`answers ${c.name} exactly as the compiled entry`, () => {
      const unbundled = run(entry, c.args);
      assert.equal(unbundled.status, c.status, `entry: ${unbundled.stderr}`);
      // With the code cache (made under weftd's NODE_OPTIONS) and without it (V8 rejects it).
      assert.deepEqual(run(bundle, c.args, WEFTD_NODE_OPTIONS, WEFTD_NODE_ARGS), unbundled);
      assert.deepEqual(run(bundle, c.args), unbundled);
    });
  }

  // Exit 0 also says the netlink package's native binding loaded from the bundle (it is
  // required when the daemon's modules load, before the flags are parsed).
  it('reports the package version, not "unknown" (package.json found from the bundle)', () => {
    const out = run(bundle, ['--version']);
    assert.match(out.stdout, /^weftd \d+\.\d+\.\d+/);
  });

  it('refuses code that is not from its build, and says what to do', () => {
    const saved = readFileSync(bundleCode);
    try {
      writeFileSync(bundleCode, saved.toString('utf8').replace(/\/\/# weftd-build \w+\n$/, '//# weftd-build 0000000000000000\n'));
      const out = run(bundle, ['--version']);
      assert.equal(out.status, 1);
      assert.match(out.stderr, /is not from the build of .*: rebuild \(npm run build\) or reinstall weft/);
    } finally {
      writeFileSync(bundleCode, saved);
    }
  });

  it('takes its cache made under weftd\'s NODE_OPTIONS also without them: the loader sets the heap flag back to V8\'s default first, so Node\'s cache of its own modules is taken too', () => {
    // The shipped cache is made under WEFTD_NODE_OPTIONS (--max-semi-space-size=2): a flag left
    // changed would stamp it with another flag hash than a run without it, and V8 would reject it
    // (and Node's cache of net, stream, http, … at every start: src/daemon/v8-flags.ts).
    assert.match(WEFTD_NODE_OPTIONS, /--max-semi-space-size=/);
    assert.deepEqual(WEFTD_NODE_ARGS, [], 'no V8 flag on node\'s command line: --no-opt is set at run time');
    for (const nodeOptions of [WEFTD_NODE_OPTIONS, '']) {
      const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_OPTIONS: nodeOptions, WEFT_TRACE_STARTUP: '1' };
      const r = spawnSync(process.execPath, [bundle, '--version'], { env, encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /modules loaded \(code cache: shipped\)/, `NODE_OPTIONS=${JSON.stringify(nodeOptions)}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /DeprecationWarning/);
    }
  });

  it('runs without its code cache (removed, or from another build)', () => {
    const kept = `${bundleCache}.kept`;
    copyFileSync(bundleCache, kept);
    try {
      rmSync(bundleCache);
      assert.deepEqual(run(bundle, ['--version'], WEFTD_NODE_OPTIONS), run(entry, ['--version']));
      writeFileSync(bundleCache, Buffer.concat([Buffer.from('ffffffffffffffff'), readFileSync(kept).subarray(16)]));
      assert.deepEqual(run(bundle, ['--version'], WEFTD_NODE_OPTIONS), run(entry, ['--version']));
    } finally {
      copyFileSync(kept, bundleCache);
      rmSync(kept, { force: true });
    }
  });
});
