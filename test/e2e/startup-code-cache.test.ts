/**
 * The one-file weftd's warm V8 code cache (issue #14, start-up; src/daemon/code-cache.ts and the
 * loader scripts/build-weftd-bundle.js generates), end to end: a real etcd, the real kernel in
 * network namespaces (prefix ws<pid>c-), the bundle built by the test next to the compiled entry.
 * Every path below must start weftd and write subnet.env: the first start (the build's cache,
 * then this host's written), the next (this host's cache used), and the fallbacks — a cache V8
 * rejects, a cache someone else could have written, a cache directory that cannot be created.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab } from '../../src/lab';
import { waitUntil } from './helpers/shell';

const root = resolve(__dirname, '..', '..', '..');
const distSrc = join(root, 'dist', 'src');
const bundle = join(distSrc, `weftd.bundle.test-cc${process.pid}.js`);
const bundleFiles = [bundle, bundle.replace(/\.js$/, '.code.js'), bundle.replace(/\.js$/, '.code.cache')];
const PREFIX = `ws${process.pid}c-`;
const scratch = mkdtempSync(join(tmpdir(), `ws${process.pid}-codecache-`));
const cacheDir = join(scratch, 'cache');

let lab: Lab;

interface Start { readonly codeCache: string; readonly log: string }

/** Start the bundle on h1 with `cacheDirectory`, wait for subnet.env (startDaemon) and READY's aftermath, stop it. */
async function startOnce(cacheDirectory: string, settle: (log: string) => boolean): Promise<Start> {
  const logFile = lab.logFile('h1');
  const offset = existsSync(logFile) ? statSync(logFile).size : 0;
  await lab.startDaemon('h1', { weftdPath: bundle, extraEnv: { WEFT_CACHE_DIR: cacheDirectory, WEFT_LOG_FORMAT: 'json' } });
  const logNow = (): string => readFileSync(logFile).subarray(offset).toString('utf8');
  await waitUntil(() => settle(logNow()), 20_000, 'weftd to get there (its log: ' + logFile + ')');
  await lab.stopDaemon('h1');
  const log = logNow();
  assert.match(log, /"msg":"wrote subnet file"/, log);
  const m = /"msg":"weftd starting".*"codeCache":"(\w+)"/.exec(log);
  assert.ok(m, log);
  return { codeCache: m[1]!, log };
}

const ready = (log: string): boolean => /"msg":"ready: subnet/.test(log);
const wrote = (log: string): boolean => /"msg":"wrote this host's V8 code cache/.test(log);
const cacheFiles = (): string[] => (existsSync(cacheDir) ? readdirSync(cacheDir).filter((f) => f.endsWith('.code-cache')) : []);

describe('weftd bundle: this host\'s warm code cache', { timeout: 300_000 }, () => {
  before(async () => {
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'build-weftd-bundle.js'), '--outdir', distSrc, '--outfile', bundle], { encoding: 'utf8' });
    assert.equal(r.status, 0, `build-weftd-bundle failed: ${r.stderr}`);
    lab = await Lab.up({ prefix: PREFIX, name: `ws${process.pid}c`, stateDir: join(scratch, 'lab'), hosts: 1, healthzPort: 0, containers: false, startDaemons: false });
  });

  after(async () => {
    await lab?.down();
    for (const f of bundleFiles) rmSync(f, { force: true });
    rmSync(scratch, { recursive: true, force: true });
  });

  test('the first start compiles with the build\'s cache and writes this host\'s, root-only, atomically', async () => {
    const s = await startOnce(cacheDir, (log) => wrote(log));
    assert.equal(s.codeCache, 'shipped');
    const files = cacheFiles();
    assert.equal(files.length, 1, readdirSync(cacheDir).join(' '));
    assert.equal(statSync(join(cacheDir, files[0]!)).mode & 0o777, 0o600);
    assert.equal(statSync(cacheDir).mode & 0o777, 0o700);
    assert.deepEqual(readdirSync(cacheDir).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left');
  });

  test('the next start uses it, and does not write it again', async () => {
    const before = statSync(join(cacheDir, cacheFiles()[0]!)).mtimeMs;
    const s = await startOnce(cacheDir, ready);
    assert.equal(s.codeCache, 'warm');
    assert.doesNotMatch(s.log, /V8 code cache/);
    assert.equal(statSync(join(cacheDir, cacheFiles()[0]!)).mtimeMs, before);
  });

  test('a corrupt cache is not run (V8 does not check, it would abort): the build\'s is used, then it is rewritten', async () => {
    const file = join(cacheDir, cacheFiles()[0]!);
    const good = readFileSync(file);
    // Build id and checksum kept, V8's data garbled: V8 11 would abort deserializing it.
    const bad = Buffer.concat([good.subarray(0, 24), Buffer.alloc(good.length - 24, 0x5a)]);
    writeFileSync(file, bad, { mode: 0o600 });
    const s = await startOnce(cacheDir, (log) => wrote(log));
    assert.equal(s.codeCache, 'shipped');
    assert.ok(!readFileSync(file).equals(bad), 'rewritten');
    assert.equal((await startOnce(cacheDir, ready)).codeCache, 'warm');
  });

  test('a cache others could have written is not run: the build\'s is used', async () => {
    const file = join(cacheDir, cacheFiles()[0]!);
    chmodSync(file, 0o666);
    try {
      const s = await startOnce(cacheDir, (log) => wrote(log));
      assert.equal(s.codeCache, 'shipped');
    } finally {
      chmodSync(file, 0o600);
    }
  });

  test('a cache directory that cannot be made: weftd starts, writes subnet.env and says what to do, once', async () => {
    const blocked = join(scratch, 'a-file');
    writeFileSync(blocked, '');
    const s = await startOnce(join(blocked, 'cache'), (log) => /could not write this host's V8 code cache/.test(log));
    assert.equal(s.codeCache, 'shipped');
    assert.equal(s.log.match(/could not write this host's V8 code cache/g)?.length, 1);
    assert.match(s.log, /CacheDirectory=weft.*WEFT_CACHE_DIR/);
    assert.match(s.log, /"msg":"ready: subnet/);
  });
});
