#!/usr/bin/env bash
# Install a weft release (made by scripts/release.sh; shipped in the tarball as install.sh):
#
#   tar -xzf weft-<version>-linux-<arch>-node<ABI>.tar.gz && sudo weft-<version>/install.sh
#
# Copies the release into $PREFIX (default /opt/weft; replaced as a whole, so an upgrade leaves
# no stale files) and links $BINDIR/weftd and $BINDIR/weft (default /usr/local/bin, where
# systemd/weftd.service expects weftd). Needs only Node.js with the ABI the release was built
# for; no npm, no compiler, no network. Does not start anything: install systemd/weftd.service
# yourself (docs/operators.md).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX="${PREFIX:-/opt/weft}"
BINDIR="${BINDIR:-/usr/local/bin}"
die() { echo "install.sh: $*" >&2; exit 1; }

command -v node >/dev/null || die "Node.js >= 20 is needed (scripts/install-deps.sh host, or your distribution's nodejs)"
# The native modules only load into the Node ABI they were compiled for: say so plainly.
want="$(cat "$HERE/.node-abi" 2>/dev/null || echo '')"
have="$(node -p process.versions.modules)"
[ -z "$want" ] || [ "$want" = "$have" ] \
  || die "this release was built for Node ABI $want, but $(command -v node) is $(node -v) (ABI $have): build a release with that Node (scripts/release.sh)"

if [ "$HERE" != "$PREFIX" ]; then
  tmp="${PREFIX}.new.$$"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$PREFIX")"
  cp -a "$HERE" "$tmp"
  rm -rf "$PREFIX"
  mv "$tmp" "$PREFIX"
fi
mkdir -p "$BINDIR"
# weftd: the one-file build (scripts/build-weftd-bundle.js; starts faster), else the compiled entry.
if [ -f "$PREFIX/dist/src/weftd.bundle.js" ]; then
  ln -sfn "$PREFIX/dist/src/weftd.bundle.js" "$BINDIR/weftd"
else
  ln -sfn "$PREFIX/dist/src/cli/weftd.js" "$BINDIR/weftd"
fi
ln -sfn "$PREFIX/dist/src/cli/weft.js" "$BINDIR/weft"
echo "install.sh: weft $("$BINDIR/weftd" --version) in $PREFIX, commands in $BINDIR"
