#!/usr/bin/env bash
# Provision one VM of the Vagrant cluster (see Vagrantfile), as root, idempotently:
#
#   provision.sh ROLE IP ETCD_IP NETWORK
#     ROLE     etcd (also runs etcd and writes the network config) or node
#     IP       this VM's private address: weftd's --iface and public IP
#     ETCD_IP  where etcd listens
#     NETWORK  the flannel Network, e.g. 10.5.0.0/16
#
# Steps: packages (scripts/install-deps.sh, the same list CI uses) → etcd (etcd VM) → build weft
# from /opt/weft-src → weftd under systemd/weftd.service → Docker with systemd/docker-weft.conf.
set -euo pipefail
ROLE="$1"; IP="$2"; ETCD_IP="$3"; NETWORK="$4"
SRC=/opt/weft-src
APP=/opt/weft
ETCD="http://${ETCD_IP}:2379"
export DEBIAN_FRONTEND=noninteractive
log() { echo "provision[$(hostname)]: $*"; }

# 1. Packages.
roles=(host build)
[ "$ROLE" = etcd ] && roles+=(etcd)
bash "$SRC/scripts/install-deps.sh" "${roles[@]}"
export PATH="/usr/local/bin:$PATH"

# 2. etcd (v3 API), reachable from the other VMs.
if [ "$ROLE" = etcd ]; then
  cat > /etc/default/etcd <<EOF
ETCD_NAME=$(hostname)
ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:2379,${ETCD}
ETCD_ADVERTISE_CLIENT_URLS=${ETCD}
EOF
  systemctl enable etcd >/dev/null 2>&1 || true
  systemctl restart etcd
  for _ in $(seq 1 30); do ETCDCTL_API=3 etcdctl --endpoints="$ETCD" endpoint health >/dev/null 2>&1 && break; sleep 1; done
  log "etcd at $ETCD"
fi

# 3. weft, built on the VM (the native addon is compiled against this Node).
log "building weft in $APP"
mkdir -p "$APP"
cp -a "$SRC/." "$APP/"
(cd "$APP" && npm_config_nodedir=/usr/local npm ci --no-audit --no-fund && npm_config_nodedir=/usr/local npm run build)
chmod +x "$APP/dist/src/cli/weftd.js" "$APP/dist/src/cli/weft.js"
ln -sf "$APP/dist/src/cli/weftd.js" /usr/local/bin/weftd
ln -sf "$APP/dist/src/cli/weft.js" /usr/local/bin/weft

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
install -m 0644 "$APP/systemd/weftd.service" /etc/systemd/system/weftd.service
systemctl daemon-reload
systemctl enable weftd >/dev/null 2>&1
systemctl restart weftd   # returns once weftd said READY=1 (Type=notify)
log "weftd ready: $(grep FLANNEL_SUBNET /run/flannel/subnet.env)"

# 5. Docker, started after weftd with bip/mtu/ip-masq from subnet.env. The drop-in goes in
# before the package, so dockerd's very first start already uses the overlay subnet.
install -d /etc/systemd/system/docker.service.d
install -m 0644 "$APP/systemd/docker-weft.conf" /etc/systemd/system/docker.service.d/weft.conf
systemctl daemon-reload
command -v dockerd >/dev/null 2>&1 || apt-get install -y -qq docker.io >/dev/null
systemctl restart docker
log "docker0: $(ip -4 -o addr show dev docker0 | awk '{print $4}')"
weft leases --etcd-endpoints="$ETCD"
