#!/usr/bin/env node
/**
 * weftd as one file (issue #14, start-up): `npm run build` runs this after `build:ts`, from the
 * compiled entry dist/src/cli/weftd.js to dist/src/weftd.bundle.js, which systemd/weftd.service
 * (through the release's /usr/local/bin/weftd), the lab and the bench run. One file read and
 * compiled instead of ~200 modules resolved, stat'ed, read and wrapped one by one.
 *
 *   node scripts/build-weftd-bundle.js [--outdir DIR] [--outfile FILE]
 *
 * DIR is the compiled dist/src (default: this tree's); FILE the bundle (default DIR/weftd.bundle.js;
 * it must be in DIR for the reason below — the test writes a second one there).
 *
 * The bundle sits in dist/src/ on purpose: the two modules that find files relative to their own
 * directory (src/native.ts → ../../addon/build, src/version.ts → ../../package.json) were
 * compiled to dist/src/ too, so `__dirname` means the same directory in the bundle as unbundled.
 *
 * Left out of the bundle, loaded from node_modules at run time as before:
 *   - raw-socket and node-gyp-build: native addons (and their loader) cannot be bundled;
 *   - etcd3 (gRPC), loaded only with WEFT_ETCD_CLIENT=grpc: bundling it would only make the file
 *     every start reads bigger.
 * The `netlink` package is bundled (its JavaScript is the largest share of module loading) except
 * its native binding: its loader asked node-gyp-build for `__dirname + '/..'`, the package's own
 * directory, which in the bundle is rewritten to where Node resolves `netlink/package.json`.
 */
'use strict';
const path = require('node:path');
const fs = require('node:fs');

const root = path.resolve(__dirname, '..');
const argOut = process.argv.indexOf('--outdir');
const outdir = argOut > 0 ? path.resolve(process.argv[argOut + 1]) : path.join(root, 'dist', 'src');
const entry = path.join(outdir, 'cli', 'weftd.js');
const argFile = process.argv.indexOf('--outfile');
const outfile = argFile > 0 ? path.resolve(process.argv[argFile + 1]) : path.join(outdir, 'weftd.bundle.js');
if (path.dirname(outfile) !== outdir) {
  console.error(`build-weftd-bundle: ${outfile} must be in ${outdir} (modules find files relative to it)`);
  process.exit(2);
}

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
    build.onLoad({ filter: /[\\/]node_modules[\\/]netlink[\\/]dist[\\/]raw\.js$/ }, async (args) => {
      const text = await fs.promises.readFile(args.path, 'utf8');
      if (!text.includes(NETLINK_BINDING_DIR)) {
        throw new Error(`${args.path} no longer loads its binding from ${NETLINK_BINDING_DIR}: update scripts/build-weftd-bundle.js for this netlink version`);
      }
      return { contents: text.replace(NETLINK_BINDING_DIR, "require('path').dirname(require.resolve('netlink/package.json'))"), loader: 'js' };
    });
  },
};

esbuild.build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['raw-socket', 'node-gyp-build', 'etcd3', 'netlink/package.json'],
  plugins: [netlinkNativeDir],
  // Names kept (errors and logs print class names); whitespace only: less to read and scan.
  minifyWhitespace: true,
  keepNames: true,
  legalComments: 'none',
  logLevel: 'warning',
}).then(() => {
  fs.chmodSync(outfile, 0o755);
  console.log(`build-weftd-bundle: ${path.relative(process.cwd(), outfile)} (${(fs.statSync(outfile).size / 1024).toFixed(0)} KiB)`);
}, (err) => {
  console.error(`build-weftd-bundle: ${err.message}`);
  process.exit(1);
});
