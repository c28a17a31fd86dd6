#!/usr/bin/env bash
# Build weft once into a release tarball that installs on any host with the same Node ABI and
# CPU architecture, with no npm, compiler or network there (the Vagrant VMs install it this way):
#
#   scripts/release.sh [OUT_DIR]          (npm run release; OUT_DIR defaults to ./release)
#
# → OUT_DIR/weft-<version>-linux-<arch>-node<ABI>.tar.gz, one directory weft-<version>/ with:
#   dist/src/         the compiled TypeScript (tsc into the staging dir; tests and benches left out)
#   addon/build/Release/weft_native.node   weft's addon, compiled in the staging dir
#   node_modules/     production dependencies (`npm ci --omit=dev`): netlink and raw-socket are
#                     native too and compiled there, which is why the name carries the Node ABI
#   package.json, systemd/, install.sh
#
# Needs what `npm ci` needs (node, npm, g++, make, python3, the npm registry or npm's cache) and
# Node's headers: npm_config_nodedir if set, else the prefix `node` is installed under.
# The shared tree's dist/ and addon/build/ are not touched: everything is built in a staging dir.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/release}" && cd "${1:-$ROOT/release}" && pwd)"

die() { echo "release.sh: $*" >&2; exit 1; }
{ command -v node && command -v npm; } >/dev/null || die "node and npm are needed (scripts/install-deps.sh host build)"
[ -x "$ROOT/node_modules/.bin/tsc" ] || die "TypeScript is missing: run 'npm ci' in $ROOT first"

# Node's headers, from where node really is (/usr for Debian's or nodesource's package,
# /usr/local for the nodejs.org tarball), unless the caller says otherwise.
if [ -z "${npm_config_nodedir:-}" ]; then
  npm_config_nodedir="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
fi
[ -f "$npm_config_nodedir/include/node/common.gypi" ] \
  || die "Node's headers are not in $npm_config_nodedir/include/node (common.gypi missing): install them (Debian: apt-get install libnode-dev) or set npm_config_nodedir"
export npm_config_nodedir

version="$(node -p "require('$ROOT/package.json').version")"
abi="$(node -p process.versions.modules)"
arch="$(node -p process.arch)"
name="weft-${version}"
tarball="$OUT/${name}-linux-${arch}-node${abi}.tar.gz"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stage="$work/$name"
mkdir -p "$stage"

echo "release.sh: staging $name (Node $(node -v), ABI $abi, $arch, headers in $npm_config_nodedir)"
cp "$ROOT/package.json" "$ROOT/package-lock.json" "$stage/"
mkdir -p "$stage/scripts" "$stage/addon"
cp "$ROOT/scripts/patch-netlink.js" "$stage/scripts/"   # the postinstall npm ci runs
cp -r "$ROOT/addon/src" "$ROOT/addon/binding.gyp" "$stage/addon/"
cp -r "$ROOT/systemd" "$stage/"
install -m 0755 "$ROOT/scripts/release-install.sh" "$stage/install.sh"
echo "$abi" > "$stage/.node-abi"   # install.sh refuses another ABI

# Production dependencies; netlink's postinstall patch and rebuild run here.
(cd "$stage" && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
# weft's addon (node-addon-api is a production dependency; npm puts its node-gyp on PATH).
(cd "$stage" && npm run --silent build:addon >/dev/null)
[ -f "$stage/addon/build/Release/weft_native.node" ] || die "the addon did not build"
# Keep only the module; the object files are not needed at run time.
find "$stage/addon/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
find "$stage/addon/build/Release" -mindepth 1 ! -name weft_native.node -exec rm -rf {} +
rm -rf "$stage/addon/src" "$stage/addon/binding.gyp"

# TypeScript into the staging dir. A type error fails the release (tsc still emits, but a
# release is not made from a tree that does not type-check).
"$ROOT/node_modules/.bin/tsc" -p "$ROOT/tsconfig.json" --outDir "$stage/dist" --sourceMap false \
  || die "tsc reported errors: fix them before releasing"
rm -rf "$stage/dist/test" "$stage/dist/bench"
chmod 0755 "$stage/dist/src/cli/weftd.js" "$stage/dist/src/cli/weft.js"

# weftd as one file (issue #14, start-up; scripts/build-weftd-bundle.js): what install.sh links
# as $BINDIR/weftd and so what systemd/weftd.service runs. Built with this tree's esbuild.
node "$ROOT/scripts/build-weftd-bundle.js" --outdir "$stage/dist/src" >/dev/null || die "the weftd bundle did not build"
node "$stage/dist/src/weftd.bundle.js" --version >/dev/null || die "weftd.bundle.js --version failed in the staged release"

# Smoke test from the staging dir: the CLI and the addon load.
node "$stage/dist/src/cli/weftd.js" --version >/dev/null || die "weftd --version failed in the staged release"
node -e "require('$stage/dist/src/native.js').loadNative()" || die "the staged addon does not load"

tar -czf "$tarball" -C "$work" --owner=0 --group=0 "$name"
echo "$tarball"
