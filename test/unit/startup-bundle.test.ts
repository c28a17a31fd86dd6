/**
 * The one-file weftd (scripts/build-weftd-bundle.js, issue #14 start-up) behaves as the compiled
 * entry dist/src/cli/weftd.js: same output and exit code for --help, --version and bad flags.
 * The test builds its own bundle next to the entry (where the real one goes: modules find the
 * addon and package.json relative to that directory) and removes it afterwards.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';

// dist/test/unit → the repository and the compiled tree.
const root = resolve(__dirname, '..', '..', '..');
const distSrc = join(root, 'dist', 'src');
const entry = join(distSrc, 'cli', 'weftd.js');
const bundle = join(distSrc, `weftd.bundle.test-${process.pid}.js`);

interface Outcome { readonly status: number | null; readonly stdout: string; readonly stderr: string }

function run(file: string, args: readonly string[]): Outcome {
  // WEFT_*/FLANNELD_* variables of the caller would change what the flags parse to: none here.
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  const r = spawnSync(process.execPath, [file, ...args], { env, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('weftd bundle', () => {
  before(() => {
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'build-weftd-bundle.js'), '--outdir', distSrc, '--outfile', bundle], { encoding: 'utf8' });
    assert.equal(r.status, 0, `build-weftd-bundle failed: ${r.stderr}`);
    assert.ok(existsSync(bundle));
  });
  after(() => rmSync(bundle, { force: true }));

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
      const bundled = run(bundle, c.args);
      assert.equal(unbundled.status, c.status, `entry: ${unbundled.stderr}`);
      assert.deepEqual(bundled, unbundled);
    });
  }

  // Exit 0 also says the netlink package's native binding loaded from the bundle (it is
  // required when the daemon's modules load, before the flags are parsed).
  it('reports the package version, not "unknown" (package.json found from the bundle)', () => {
    const out = run(bundle, ['--version']);
    assert.match(out.stdout, /^weftd \d+\.\d+\.\d+/);
  });
});
