#!/usr/bin/env bash
# Provision one VM of the Vagrant cluster (see Vagrantfile), as root, idempotently:
#
#   provision.sh ROLE IP ETCD_IP NETWORK
#     ROLE     etcd (also runs etcd and writes the network config) or node
#     IP       this VM's private address: weftd's --iface and public IP
#     ETCD_IP  where etcd listens
#     NETWORK  the flannel Network, e.g. 10.5.0.0/16
#
# The Vagrantfile has uploaded into /tmp/weft-provision/: install-deps.sh, the release tarball
# (scripts/release.sh, built once on the host: nothing is compiled here and no npm runs) and,
# when given, a local Node.js tarball or .deb (WEFT_NODE_TARBALL / WEFT_NODE_DEB, already
# pointing at the uploaded file).
#
# Steps: packages (install-deps.sh host [etcd], the list CI uses) → etcd (etcd VM) → install the
# release into /opt/weft → network config (etcd VM) → weftd under systemd/weftd.service, waited
# for with a bound → Docker with systemd/docker-weft.conf.
#
# Environment: WEFT_READY_TIMEOUT (seconds to wait for weftd's READY=1, default 900: under
# software emulation weft1 may still be installing packages when weft3 gets here),
# WEFT_NODE_SOURCE / WEFT_NODE_TARBALL / WEFT_NODE_DEB / WEFT_NODE_VERSION (install-deps.sh).
set -euo pipefail
ROLE="$1"; IP="$2"; ETCD_IP="$3"; NETWORK="$4"
UP=/tmp/weft-provision
ETCD="http://${ETCD_IP}:2379"
READY_TIMEOUT="${WEFT_READY_TIMEOUT:-900}"
export DEBIAN_FRONTEND=noninteractive
log() { echo "provision[$(hostname)]: $*"; }
die() { echo "provision[$(hostname)]: ERROR: $*" >&2; exit 1; }

# 1. Packages: what a host running weftd needs (no compiler: the release is prebuilt), plus
# busybox-static for vagrant/check.sh's container image.
roles=(host)
[ "$ROLE" = etcd ] && roles+=(etcd)
bash "$UP/install-deps.sh" "${roles[@]}"
export PATH="/usr/local/bin:$PATH"
command -v busybox >/dev/null 2>&1 || apt-get install -y -qq busybox-static >/dev/null

# 2. etcd (v3 API), reachable from the other VMs.
if [ "$ROLE" = etcd ]; then
  cat > /etc/default/etcd <<EOF
ETCD_NAME=$(hostname)
ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:2379,${ETCD}
ETCD_ADVERTISE_CLIENT_URLS=${ETCD}
EOF
  systemctl enable etcd >/dev/null 2>&1 || true
  systemctl restart etcd
  healthy=0
  for _ in $(seq 1 60); do
    if ETCDCTL_API=3 etcdctl --endpoints="$ETCD" endpoint health >/dev/null 2>&1; then healthy=1; break; fi
    sleep 1
  done
  [ "$healthy" = 1 ] || die "etcd is not healthy at $ETCD after 60 s: see 'journalctl -u etcd' on $(hostname)"
  log "etcd at $ETCD"
fi

# 3. weft from the release tarball (scripts/release.sh), into /opt/weft with /usr/local/bin links.
tarball="$(find "$UP" -maxdepth 1 -name 'weft-*.tar.gz' | head -n 1)"
[ -n "$tarball" ] || die "no weft release in $UP: on the host run 'npm run release' before 'vagrant up'"
rm -rf "$UP/release" && mkdir -p "$UP/release"
tar -xzf "$tarball" -C "$UP/release"
installer="$(find "$UP/release" -mindepth 2 -maxdepth 2 -name install.sh | head -n 1)"
[ -n "$installer" ] || die "$tarball has no install.sh: rebuild it with scripts/release.sh"
"$installer"
rm -rf "$UP/release"

if [ "$ROLE" = etcd ]; then
  mkdir -p /etc/weft
  printf '{"Network":"%s","Backend":{"Type":"vxlan"}}\n' "$NETWORK" > /etc/weft/network.json
  # Validated with weftd's own rules; a second run finds the same document and changes nothing.
  weft config set /etc/weft/network.json --etcd-endpoints="$ETCD"
fi

# 4. weftd under systemd. --ip-masq: weftd masquerades traffic leaving the overlay, so Docker
# is told --ip-masq=false (docker-opts inverts FLANNEL_IPMASQ) and nothing is NATed twice.
cat > /etc/default/weftd <<EOF
WEFTD_OPTS=--etcd-endpoints=${ETCD} --iface=${IP} --ip-masq
EOF
install -m 0644 /opt/weft/systemd/weftd.service /etc/systemd/system/weftd.service
systemctl daemon-reload
systemctl enable weftd >/dev/null 2>&1
# weftd on weft2/weft3 may start before weft1 has etcd or the network config; it waits for
# them, and a plain `systemctl restart` of a Type=notify unit would block until READY=1 with no
# bound of ours. So: start without blocking and poll, with a deadline and a clear message.
systemctl restart --no-block weftd
start=$SECONDS; next_note=30
while :; do
  state="$(systemctl is-active weftd 2>/dev/null || true)"
  # No job left for weftd: on a second provisioning the old weftd is "active" until the queued
  # restart has stopped it.
  [ "$state" = active ] && [ -s /run/flannel/subnet.env ] \
    && [ -z "$(systemctl list-jobs --no-legend weftd.service 2>/dev/null)" ] && break
  waited=$((SECONDS - start))
  if [ "$waited" -ge "$READY_TIMEOUT" ]; then
    journalctl -u weftd -n 20 --no-pager >&2 || true
    die "weftd is not ready after ${READY_TIMEOUT} s (state: $state). It needs etcd at $ETCD and the network config that weft1's provisioning writes: if weft1 is still provisioning, run 'vagrant provision $(hostname)' once it is done; otherwise see the log above"
  fi
  if [ "$waited" -ge "$next_note" ]; then
    log "waiting for weftd (${waited} s, $state): $(journalctl -u weftd -n 1 --no-pager -o cat 2>/dev/null | cut -c1-160)"
    next_note=$((next_note + 30))
  fi
  sleep 2
done
log "weftd ready: $(grep FLANNEL_SUBNET /run/flannel/subnet.env)"

# 5. Docker, started after weftd with bip/mtu/ip-masq from subnet.env. The drop-in goes in
# before the package, so dockerd's very first start already uses the overlay subnet.
install -d /etc/systemd/system/docker.service.d
install -m 0644 /opt/weft/systemd/docker-weft.conf /etc/systemd/system/docker.service.d/weft.conf
systemctl daemon-reload
# Without Recommends (perl, python3, git, criu, binutils, needrestart: ~50 packages, minutes under
# emulation), but with apparmor: Debian's kernel enables AppArmor, and Docker 20.10 then needs
# apparmor_parser to load its docker-default profile or no container starts.
command -v dockerd >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends docker.io apparmor >/dev/null
systemctl restart docker
log "docker0: $(ip -4 -o addr show dev docker0 | awk '{print $4}')"
weft leases --etcd-endpoints="$ETCD"
