#!/usr/bin/env node
/**
 * weftd as one file with a V8 code cache (issue #14, start-up). `npm run build` runs this after
 * `build:ts`; from the compiled entry dist/src/cli/weftd.js it writes, in dist/src/:
 *
 *   weftd.bundle.js          what runs: systemd/weftd.service (the release links it as
 *                            /usr/local/bin/weftd), the lab and the bench. A small loader that
 *                            compiles the code below with its code cache and runs it as a module.
 *   weftd.bundle.code.js     every module weftd loads at start, in one file (esbuild): one read and
 *                            one compile instead of ~200 modules resolved, stat'ed, read, wrapped.
 *   weftd.bundle.code.cache  V8's code cache of it, made by a `--version` run under the NODE_OPTIONS
 *                            weftd runs with (src/lab/lab.ts WEFTD_NODE_OPTIONS, the same as the
 *                            unit file's): the modules' top-level code is not compiled again.
 *
 *   node scripts/build-weftd-bundle.js [--outdir DIR] [--outfile FILE]
 *
 * DIR is the compiled dist/src (default: this tree's); FILE the loader (default
 * DIR/weftd.bundle.js; the code and cache are named after it). FILE must be in DIR: the two
 * modules that find files relative to their own directory (src/native.ts → ../../addon/build,
 * src/version.ts → ../../package.json) were compiled to dist/src/ too, so `__dirname` means the
 * same directory in the bundle as unbundled.
 *
 * The cache is only an optimisation: V8 rejects it when its version or flags differ (e.g. another
 * NODE_OPTIONS in /etc/default/weftd), and the loader ignores it unless it was made from this very
 * build of the code (a build id in all three files) and its CRC-32 matches; weftd then compiles as
 * usual. The loader prefers this host's warm cache, which weftd writes once it is ready (all the
 * start path compiled, not only the modules' top levels: src/daemon/code-cache.ts; systemd's
 * CacheDirectory=weft, else $WEFT_CACHE_DIR or /var/cache/weft). Measured: docs/performance.md,
 * "Start-up".
 *
 * Left out of the bundle, loaded from node_modules at run time as before:
 *   - raw-socket and node-gyp-build: native addons (and their loader) cannot be bundled;
 *   - etcd3 (gRPC) and cockatiel (only its wire uses it), loaded only with WEFT_ETCD_CLIENT=grpc:
 *     bundling them would only make the file every start reads bigger, and etcd3 shares its
 *     cockatiel with ours as unbundled.
 * Of the `netlink` package only its raw socket (dist/raw.js) is bundled (weft decodes rtnetlink
 * itself, src/netlink/decode.ts); the package's index stays external (only the kernel WireGuard
 * path loads it, lazily). The raw socket's native binding: its loader asked node-gyp-build for `__dirname + '/..'`, the package's own
 * directory, which in the bundle is rewritten to where Node resolves `netlink/package.json`.
 */
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');
const { randomBytes } = require('node:crypto');

const root = path.resolve(__dirname, '..');
const argOut = process.argv.indexOf('--outdir');
const outdir = argOut > 0 ? path.resolve(process.argv[argOut + 1]) : path.join(root, 'dist', 'src');
// How weftd runs (src/lab/lab.ts, systemd/weftd.service): node's own flags in the loader's shebang,
// V8's in NODE_OPTIONS. The shipped code cache is made under both (V8 rejects a cache of other flags).
const { WEFTD_NODE_OPTIONS, WEFTD_NODE_ARGS: NODE_ARGS } = require(path.join(outdir, 'lab', 'lab.js'));
const entry = path.join(outdir, 'cli', 'weftd.js');
const argFile = process.argv.indexOf('--outfile');
const loaderFile = argFile > 0 ? path.resolve(process.argv[argFile + 1]) : path.join(outdir, 'weftd.bundle.js');
if (path.dirname(loaderFile) !== outdir || !loaderFile.endsWith('.js')) {
  console.error(`build-weftd-bundle: ${loaderFile} must be a .js file in ${outdir} (modules find files relative to it)`);
  process.exit(2);
}
const codeFile = loaderFile.replace(/\.js$/, '.code.js');
const cacheFile = loaderFile.replace(/\.js$/, '.code.cache');

if (!fs.existsSync(entry)) {
  console.error(`build-weftd-bundle: ${entry} is missing: compile first (npm run build:ts)`);
  process.exit(1);
}

let esbuild;
try {
  esbuild = require('esbuild');
} catch (err) {
  console.error(`build-weftd-bundle: esbuild is not installed (a devDependency): run npm ci (${err.message})`);
  process.exit(1);
}

const NETLINK_BINDING_DIR = "__dirname + '/..'";
const netlinkNativeDir = {
  name: 'netlink-native-dir',
  setup(build) {
    // The package's index (rt, nl80211, genl, wg struct tables) is required only by the kernel
    // WireGuard path (src/netlink/wireguard.ts, lazily): left out of the bundle, loaded from
    // node_modules if that path ever runs. The raw socket (netlink/dist/raw) stays bundled.
    build.onResolve({ filter: /^netlink$/ }, () => ({ path: 'netlink', external: true }));
    build.onLoad({ filter: /[\\/]node_modules[\\/]netlink[\\/]dist[\\/]raw\.js$/ }, async (args) => {
      const text = await fs.promises.readFile(args.path, 'utf8');
      if (!text.includes(NETLINK_BINDING_DIR)) {
        throw new Error(`${args.path} no longer loads its binding from ${NETLINK_BINDING_DIR}: update scripts/build-weftd-bundle.js for this netlink version`);
      }
      return { contents: text.replace(NETLINK_BINDING_DIR, "require('path').dirname(require.resolve('netlink/package.json'))"), loader: 'js' };
    });
  },
};

/** The loader: plain CommonJS, only node: built-ins, nothing to resolve. */
function loaderText(buildId) {
  return `#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS WEFT_EXTRA_CA_CERTS=\${NODE_EXTRA_CA_CERTS} ${['node', ...NODE_ARGS].join(' ')}
// weftd: generated by scripts/build-weftd-bundle.js (build ${buildId}); same flags, output and
// exit codes as dist/src/cli/weftd.js. Compiles ${path.basename(codeFile)} with a V8 code cache
// and runs it as this module. The cache, first that V8 accepts (same V8, same flags), else none:
//   1. this host's warm cache, \$CACHE_DIRECTORY (systemd's CacheDirectory=weft) or \$WEFT_CACHE_DIR
//      or /var/cache/weft, weftd-<build>-<key>.code-cache: written by weftd itself once it is
//      ready (src/daemon/code-cache.ts), so it holds every function the start path compiled;
//   2. ${path.basename(cacheFile)}, shipped with the build (a --version run: module top levels only).
// A missing, foreign or rejected cache only means compiling as usual (and writing the warm one).
'use strict';
// First, before anything is compiled: V8 rejects every code cache made under other flags than the
// current ones, Node's cache of its own modules included. --max-semi-space-size (NODE_OPTIONS)
// sized the heap at start-up and is not read again: back to its default, the flags are V8's
// defaults again and every cache is taken (src/daemon/v8-flags.ts). Through the binding: node:v8
// would itself be compiled without its cache (~6 ms); the binding's deprecation warning is muted.
{
  const muted = process.noDeprecation;
  process.noDeprecation = true;
  try {
    process.binding('v8').setFlagsFromString('--max-semi-space-size=0');
  } catch {
    // No such binding in this node: the caches are rejected, weftd starts as before.
  } finally {
    process.noDeprecation = muted;
  }
}
const { readFileSync, writeFileSync, writeSync, fsyncSync, openSync, fstatSync, closeSync, mkdirSync, renameSync, readdirSync, statSync, unlinkSync } = require('node:fs');
const { join } = require('node:path');
const { Script } = require('node:vm');
// A V8 code cache carries a hash of the flags it was made under: no V8 flag may be left changed
// at run time (idle-gc turns --expose-gc on and off again), or V8 rejects every warm cache.
const BUILD = ${JSON.stringify(buildId)};
const codeFile = join(__dirname, ${JSON.stringify(path.basename(codeFile))});
const cacheFile = join(__dirname, ${JSON.stringify(path.basename(cacheFile))});
const code = readFileSync(codeFile, 'utf8');
if (!code.endsWith('//# weftd-build ' + BUILD + '\\n')) {
  process.stderr.write('weftd: ' + codeFile + ' is not from the build of ' + __filename + ': rebuild (npm run build) or reinstall weft\\n');
  process.exit(1);
}
// One warm cache per build, node binary and flag set (FNV-1a: no crypto module to load for it).
// The binary by its version and its file (inode, size, mtime): a node rebuilt or replaced under
// the same version string gets a cache of its own, never one another V8 build wrote.
let nodeFile = '';
try {
  const st = statSync(process.execPath);
  nodeFile = st.ino + ':' + st.size + ':' + st.mtimeMs;
} catch {
  // Unreadable: the version alone.
}
let h = 0x811c9dc5;
for (const ch of [process.version, process.arch, nodeFile, process.execArgv.join(' '), process.env.NODE_OPTIONS || ''].join('\\0')) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
const cacheDir = (process.env.CACHE_DIRECTORY || '').split(':')[0] || process.env.WEFT_CACHE_DIR || '/var/cache/weft';
const warmFile = join(cacheDir, 'weftd-' + BUILD + '-' + h.toString(16) + '.code-cache');
// V8 12.x and older (Node 20) do not checksum a code cache: a corrupt one aborts the process
// while it deserializes, at every start. Each file is the build id, the CRC-32 of V8's data
// (zlib's, through the binding: 0.5 ms for 0.5 MB, where loading node:zlib costs 4 ms), the data.
function checksum(data) {
  let crc32;
  try {
    crc32 = process.binding('zlib').crc32;
  } catch {
    // No such binding in this node: the public one.
  }
  const v = typeof crc32 === 'function' ? crc32(data, 0) : require('node:zlib').crc32(data);
  return (v >>> 0).toString(16).padStart(8, '0');
}
function cacheBytes(data) {
  return Buffer.concat([Buffer.from(BUILD + checksum(data), 'latin1'), data]);
}
/** The cache in \`file\` after its build id and checksum; \`owned\`: only a file of ours no one else may write (code runs from it). */
function readCache(file, owned) {
  let fd;
  try {
    fd = openSync(file, 'r');
    if (owned) {
      const st = fstatSync(fd);
      if (st.uid !== process.geteuid() || (st.mode & 0o022) !== 0) return undefined;
    }
    const c = readFileSync(fd);
    const data = c.subarray(BUILD.length + 8);
    return c.subarray(0, BUILD.length + 8).toString('latin1') === BUILD + checksum(data) ? data : undefined;
  } catch {
    return undefined;   // none yet (or unreadable): the next one
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
let source = 'warm';
let cachedData = readCache(warmFile, true);
if (cachedData === undefined) {
  source = 'shipped';
  cachedData = readCache(cacheFile, false);
}
const script = new Script('(function (exports, require, module, __filename, __dirname) {' + code + '\\n})', { filename: codeFile, ...(cachedData ? { cachedData } : {}) });
const used = cachedData !== undefined && !script.cachedDataRejected ? source : 'none';
// Only for the build: the cache is made after a run, so it holds the functions that run compiled.
if (process.env.WEFT_BUNDLE_WRITE_CACHE === cacheFile) {
  process.on('exit', () => writeFileSync(cacheFile, cacheBytes(script.createCachedData())));
}
// What src/daemon/code-cache.ts calls once weftd is ready (its interface: WarmCodeCacheHook there).
globalThis[Symbol.for('weft.warmCodeCache')] = {
  used,
  file: warmFile,
  save() {
    if (used === 'warm') return null;
    mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
    const tmp = warmFile + '.' + process.pid + '.tmp';
    // Synced before the rename: after a power loss the file is whole or absent, never torn.
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, cacheBytes(script.createCachedData()));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, warmFile);
    // Other builds' caches (an upgrade leaves the old one) go once a week old.
    for (const f of readdirSync(cacheDir)) {
      const p = join(cacheDir, f);
      try {
        if (f.startsWith('weftd-') && p !== warmFile && statSync(p).mtimeMs < Date.now() - 7 * 86400e3) unlinkSync(p);
      } catch {
        // Removed meanwhile by another weftd: fine.
      }
    }
    return warmFile;
  },
};
script.runInThisContext()(module.exports, require, module, codeFile, __dirname);
`;
}

async function main() {
  const buildId = randomBytes(8).toString('hex');
  await esbuild.build({
    entryPoints: [entry],
    outfile: codeFile,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['raw-socket', 'node-gyp-build', 'etcd3', 'cockatiel', 'netlink/package.json'],
    plugins: [netlinkNativeDir],
    // Names kept (errors and logs print class names); whitespace only: less to read and scan.
    minifyWhitespace: true,
    keepNames: true,
    legalComments: 'none',
    logLevel: 'warning',
    footer: { js: `//# weftd-build ${buildId}` },
  });
  // The loader runs the code as a function body: the entry's shebang goes.
  let code = fs.readFileSync(codeFile, 'utf8').replace(/^#!.*\n/, '');
  if (!code.endsWith('\n')) code += '\n';
  fs.writeFileSync(codeFile, code);
  fs.chmodSync(codeFile, 0o644);   // run through the loader only
  fs.rmSync(cacheFile, { force: true });
  fs.writeFileSync(loaderFile, loaderText(buildId), { mode: 0o755 });
  fs.chmodSync(loaderFile, 0o755);

  // The cache, from a run under weftd's own NODE_OPTIONS (V8 rejects a cache made under other flags).
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_OPTIONS: WEFTD_NODE_OPTIONS, WEFT_BUNDLE_WRITE_CACHE: cacheFile };
  const run = spawnSync(process.execPath, [...NODE_ARGS, loaderFile, '--version'], { env, encoding: 'utf8' });
  if (run.status !== 0 || !fs.existsSync(cacheFile)) {
    throw new Error(`the bundle's --version run failed (exit ${run.status}): ${run.stderr.trim()}`);
  }
  const kib = (f) => `${(fs.statSync(f).size / 1024).toFixed(0)} KiB`;
  console.log(`build-weftd-bundle: ${path.relative(process.cwd(), loaderFile)} (code ${kib(codeFile)}, cache ${kib(cacheFile)}, ${['node', ...NODE_ARGS].join(' ')}, NODE_OPTIONS=${WEFTD_NODE_OPTIONS})`);
}

main().catch((err) => {
  console.error(`build-weftd-bundle: ${err.message}`);
  process.exit(1);
});
