#!/usr/bin/env bash
# Prove the Vagrant cluster works, from the host, after `vagrant up` (run from anywhere):
#
#   vagrant/check.sh
#
# For each VM: weftd is active under systemd; docker0 holds the VM's FLANNEL_SUBNET address (the
# .1 of its lease, from /run/flannel/subnet.env); `weft leases` lists one lease per VM. Then a
# busybox container on each VM (the image imported from busybox-static, as `weft lab --runtime
# docker` does: nothing is pulled) pings the container on every other VM, and the matrix is
# printed. Exit status 0 only when every check passed. The containers are removed at the end.
#
# Environment: WEFT_SUBNET_PREFIX as for the Vagrantfile (where etcd is: <prefix>.11).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
VMS=(weft1 weft2 weft3)
ETCD="http://${WEFT_SUBNET_PREFIX:-192.168.56}.11:2379"
IMAGE=weft-busybox
NAME=weft-check
failures=0
ok() { printf '  ok    %s\n' "$*"; }
bad() { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }

command -v vagrant >/dev/null || { echo "check.sh: vagrant is not installed" >&2; exit 1; }
# One `vagrant ssh-config`, then plain ssh: `vagrant ssh` starts Ruby for every command.
cfg="$(mktemp)"
trap 'rm -f "$cfg"' EXIT
vagrant ssh-config "${VMS[@]}" > "$cfg" 2>/dev/null \
  || { echo "check.sh: 'vagrant ssh-config' failed: are the VMs up? (cd vagrant && vagrant status)" >&2; exit 1; }
# The command goes to the VM's root shell on stdin: no quoting through ssh.
on() { local vm="$1"; shift; printf '%s\n' "$*" | ssh -F "$cfg" -o LogLevel=ERROR "$vm" sudo sh -s; }

# The image, as the lab builds it: static busybox, a link per applet, /etc/passwd; docker import.
# shellcheck disable=SC2016  # expanded by the VM's shell, not here
build_image='docker image inspect '"$IMAGE"' >/dev/null 2>&1 && exit 0
b=$(command -v busybox) || { echo "busybox-static is missing (apt-get install busybox-static)" >&2; exit 1; }
r=$(mktemp -d) && mkdir -p $r/bin $r/tmp $r/etc $r/proc $r/sys $r/dev && cp $b $r/bin/busybox
for a in $($b --list); do [ "$a" = busybox ] || [ -e $r/bin/$a ] || ln -s busybox $r/bin/$a; done
echo root:x:0:0:root:/:/bin/sh > $r/etc/passwd
tar -C $r -c . | docker import - '"$IMAGE"' >/dev/null && rm -rf $r'

echo "weftd, subnet and docker0 on each VM:"
declare -A ip
for vm in "${VMS[@]}"; do
  state="$(on "$vm" "systemctl is-active weftd" || true)"
  if [ "$state" = active ]; then ok "$vm: weftd active"; else bad "$vm: weftd is '$state' (vagrant ssh $vm -c 'journalctl -u weftd')"; fi
  subnet="$(on "$vm" "sed -n s/^FLANNEL_SUBNET=//p /run/flannel/subnet.env" || true)"
  bridge="$(on "$vm" "ip -4 -o addr show dev docker0" | awk '{print $4}' || true)"
  if [ -n "$subnet" ] && [ "$bridge" = "$subnet" ]; then ok "$vm: docker0 $bridge = FLANNEL_SUBNET"
  else bad "$vm: docker0 has '${bridge:-nothing}', FLANNEL_SUBNET is '${subnet:-unset}'"; fi
  on "$vm" "$build_image" || bad "$vm: could not import the $IMAGE image"
  on "$vm" "docker rm -f $NAME >/dev/null 2>&1; docker run -d --name $NAME $IMAGE sleep 999999999 >/dev/null" \
    || bad "$vm: docker run failed"
  ip[$vm]="$(on "$vm" "docker inspect -f {{.NetworkSettings.IPAddress}} $NAME" 2>/dev/null || true)"
  if [ -n "${ip[$vm]}" ]; then ok "$vm: container $NAME at ${ip[$vm]}"; else bad "$vm: container $NAME has no address"; fi
done
trap 'for vm in "${VMS[@]}"; do on "$vm" "docker rm -f $NAME >/dev/null 2>&1" || true; done; rm -f "$cfg"' EXIT

echo "leases in etcd ($ETCD):"
leases="$(on weft1 "weft leases --etcd-endpoints=$ETCD" || true)"
printf '%s\n' "$leases" | sed 's/^/        /'
count="$(printf '%s\n' "$leases" | grep -cE '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+ ' || true)"
if [ "$count" = "${#VMS[@]}" ]; then ok "$count leases"; else bad "$count leases, expected ${#VMS[@]}"; fi

echo "ping matrix (container → container, across VMs):"
printf '  %-8s' 'from\to'; printf '%-8s' "${VMS[@]}"; echo
for from in "${VMS[@]}"; do
  printf '  %-8s' "$from"
  for to in "${VMS[@]}"; do
    # '·' by hand: printf pads by bytes, and it is two.
    if [ "$from" = "$to" ]; then printf '·       '; continue; fi
    if [ -n "${ip[$to]}" ] && on "$from" "docker exec $NAME ping -c 2 -W 3 ${ip[$to]}" >/dev/null 2>&1; then
      printf '%-8s' 'ok'
    else
      printf '%-8s' 'FAIL'; failures=$((failures + 1))
    fi
  done
  echo
done

if [ "$failures" -gt 0 ]; then echo "check.sh: $failures check(s) failed"; exit 1; fi
echo "check.sh: all checks passed"
