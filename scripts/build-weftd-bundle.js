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
 * build of the code (a build id in all three files); weftd then compiles as usual. Measured:
 * docs/performance.md, "Start-up".
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
  return `#!/usr/bin/env node
// weftd: generated by scripts/build-weftd-bundle.js (build ${buildId}); same flags, output and
// exit codes as dist/src/cli/weftd.js. Compiles ${path.basename(codeFile)} with the V8 code cache
// ${path.basename(cacheFile)} when that was made from this build and V8 accepts it (same V8, same
// flags), else compiles it as usual; then runs it as this module.
'use strict';
const { readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const { Script } = require('node:vm');
const BUILD = ${JSON.stringify(buildId)};
const codeFile = join(__dirname, ${JSON.stringify(path.basename(codeFile))});
const cacheFile = join(__dirname, ${JSON.stringify(path.basename(cacheFile))});
const code = readFileSync(codeFile, 'utf8');
if (!code.endsWith('//# weftd-build ' + BUILD + '\\n')) {
  process.stderr.write('weftd: ' + codeFile + ' is not from the build of ' + __filename + ': rebuild (npm run build) or reinstall weft\\n');
  process.exit(1);
}
let cachedData;
try {
  const c = readFileSync(cacheFile);
  if (c.subarray(0, BUILD.length).toString('latin1') === BUILD) cachedData = c.subarray(BUILD.length);
} catch {
  // No cache (being built, or removed): compile as usual.
}
const script = new Script('(function (exports, require, module, __filename, __dirname) {' + code + '\\n})', { filename: codeFile, ...(cachedData ? { cachedData } : {}) });
// Only for the build: the cache is made after a run, so it holds the functions that run compiled.
if (process.env.WEFT_BUNDLE_WRITE_CACHE === cacheFile) {
  process.on('exit', () => writeFileSync(cacheFile, Buffer.concat([Buffer.from(BUILD, 'latin1'), script.createCachedData()])));
}
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
  const { WEFTD_NODE_OPTIONS } = require(path.join(outdir, 'lab', 'lab.js'));
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_OPTIONS: WEFTD_NODE_OPTIONS, WEFT_BUNDLE_WRITE_CACHE: cacheFile };
  const run = spawnSync(process.execPath, [loaderFile, '--version'], { env, encoding: 'utf8' });
  if (run.status !== 0 || !fs.existsSync(cacheFile)) {
    throw new Error(`the bundle's --version run failed (exit ${run.status}): ${run.stderr.trim()}`);
  }
  const kib = (f) => `${(fs.statSync(f).size / 1024).toFixed(0)} KiB`;
  console.log(`build-weftd-bundle: ${path.relative(process.cwd(), loaderFile)} (code ${kib(codeFile)}, cache ${kib(cacheFile)}, NODE_OPTIONS=${WEFTD_NODE_OPTIONS})`);
}

main().catch((err) => {
  console.error(`build-weftd-bundle: ${err.message}`);
  process.exit(1);
});
