#!/usr/bin/env bash
# Build a Debian 12 (bookworm) box for vagrant-libvirt with debootstrap, for machines that cannot
# fetch one from a box catalogue. As root:
#
#   vagrant/box/build-box.sh [OUT.box]            (default ./weft-debian12.box)
#   vagrant box add --name weft/debian12 OUT.box  (the name the Vagrantfile uses; WEFT_BOX)
#
# The box: an 8 GB qcow2 (sparse, ~0.5 GB) with one ext4 partition and GRUB (BIOS), Debian's
# kernel, openssh-server, sudo, rsync, busybox-static, ifupdown with DHCP on the first NIC (eth0:
# the kernel's net.ifnames=0, so the name does not depend on the PCI slot), and the user vagrant
# (password vagrant, passwordless sudo, Vagrant's well-known insecure public key, which `vagrant up`
# replaces with a fresh key on first boot). debootstrap writes straight into the mounted image,
# so file capabilities (ping's cap_net_raw and the like) are kept: nothing is copied through tar.
#
# Needs: debootstrap, qemu-img (qemu-utils), sfdisk (fdisk), losetup/mount (util-linux),
# mkfs.ext4 (e2fsprogs), loop devices, and the Debian mirror (WEFT_DEBIAN_MIRROR, default
# http://deb.debian.org/debian; a proxy through the usual http_proxy). apt-get install debootstrap
# qemu-utils fdisk. Took 151 s here (2 cores, Debian mirror reachable); the box is ~265 MB.
#
# Environment: WEFT_DEBIAN_MIRROR, WEFT_BOX_SIZE (disk size, default 8G), WEFT_BOX_WORKDIR (where
# the raw image is built, default a directory under /var/tmp; needs ~2 GB free).
set -euo pipefail
OUT="$(realpath -m "${1:-weft-debian12.box}")"
MIRROR="${WEFT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SIZE="${WEFT_BOX_SIZE:-8G}"
SUITE=bookworm
# Vagrant's insecure public key (github.com/hashicorp/vagrant keys/vagrant.pub).
VAGRANT_KEY='ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure public key'
# busybox-static: vagrant/check.sh's container image. In the box because installing it later
# triggers update-initramfs (busybox goes into the initramfs), still running after 30 min per VM
# under emulation on a busy host; here the initramfs is built once, on the host, by debootstrap.
PACKAGES=linux-image-amd64,grub-pc,openssh-server,sudo,rsync,ifupdown,isc-dhcp-client,ca-certificates,curl,systemd-sysv,dbus,iproute2,iputils-ping,netbase,less,busybox-static
CMDLINE="net.ifnames=0 biosdevname=0 console=tty0 console=ttyS0,115200"
log() { echo "build-box: $*"; }
die() { echo "build-box: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, loop devices and mount need it)"
# In a private mount namespace: with shared propagation (systemd's default) the image's mounts
# would be copied into other mount namespaces (containers), keep the file system alive after our
# umount and leave grub.cfg in an unreplayed journal.
if [ -z "${WEFT_BOX_UNSHARED:-}" ]; then
  command -v unshare >/dev/null || die "unshare is missing: apt-get install util-linux"
  WEFT_BOX_UNSHARED=1 exec unshare --mount --propagation private bash "$0" "$@"
fi
[ "$(uname -m)" = x86_64 ] || die "builds an amd64 box with BIOS GRUB: run it on x86_64"
for tool in debootstrap qemu-img sfdisk losetup mkfs.ext4 e2fsck dumpe2fs blkid; do
  command -v "$tool" >/dev/null || die "$tool is missing: apt-get install debootstrap qemu-utils fdisk util-linux e2fsprogs"
done

work="$(mktemp -d "${WEFT_BOX_WORKDIR:-/var/tmp}/weft-box.XXXXXX")"
raw="$work/disk.raw"; root="$work/root"; loop=""; part=""
cleanup() {
  set +e
  for m in dev/pts dev proc sys ""; do mountpoint -q "$root/$m" && umount -l "$root/$m"; done
  [ -n "$part" ] && losetup -d "$part"
  [ -n "$loop" ] && losetup -d "$loop"
  rm -rf "$work"
}
trap cleanup EXIT
start=$SECONDS

log "disk: $SIZE raw image, one bootable ext4 partition"
truncate -s "$SIZE" "$raw"
echo 'start=2048, type=83, bootable' | sfdisk --quiet --label dos "$raw"
# Two loop devices, the whole disk (for GRUB's boot sector) and the partition at its offset:
# partition scanning of loop devices does not work everywhere (containers without udev).
loop="$(losetup --find --show "$raw")"
part="$(losetup --find --show --offset $((2048 * 512)) "$raw")"
mkfs.ext4 -q -L root "$part"
uuid="$(blkid -s UUID -o value "$part")"
mkdir -p "$root"
mount "$part" "$root"

log "debootstrap $SUITE from $MIRROR (the slow part)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above): check the mirror $MIRROR"; }

log "configuring: fstab, network, apt, vagrant user, ssh, GRUB"
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" > "$root/etc/fstab"
echo debian12 > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian12\n' > "$root/etc/hosts"
cat > "$root/etc/network/interfaces" <<'EOF'
# The first NIC (Vagrant's management network) by DHCP; Vagrant configures the others.
auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
EOF
# What a user's VM needs from the network: Debian's own mirrors, nothing of the build machine.
cat > "$root/etc/apt/sources.list" <<EOF
deb http://deb.debian.org/debian $SUITE main
deb http://deb.debian.org/debian $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF

for m in dev dev/pts proc sys; do mount --bind "/$m" "$root/$m"; done
chroot "$root" /bin/bash -euo pipefail -s <<EOF
export DEBIAN_FRONTEND=noninteractive
useradd --create-home --shell /bin/bash vagrant
echo vagrant:vagrant | chpasswd
install -d -o vagrant -g vagrant -m 0700 /home/vagrant/.ssh
echo '$VAGRANT_KEY' > /home/vagrant/.ssh/authorized_keys
chown vagrant:vagrant /home/vagrant/.ssh/authorized_keys
chmod 0600 /home/vagrant/.ssh/authorized_keys
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant
# No DNS lookup of the client on every login (slow when the VM has no reverse DNS).
echo 'UseDNS no' > /etc/ssh/sshd_config.d/vagrant.conf
# Host keys are generated on first boot, so every VM made from the box has its own.
rm -f /etc/ssh/ssh_host_*
cat > /etc/systemd/system/ssh-hostkeys.service <<'UNIT'
[Unit]
Description=Generate SSH host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable ssh-hostkeys.service ssh.service >/dev/null
: > /etc/machine-id
apt-get clean
EOF

# GRUB by hand: grub-install and update-grub cannot tell that the partition's loop device is part
# of the disk's. core.img looks for /boot/grub on (hd0,msdos1) and goes into the gap after the
# MBR. In the VM, a kernel upgrade runs update-grub, which sees /dev/vda1 and works as usual.
chroot "$root" env LOOP="$loop" UUID="$uuid" CMDLINE="$CMDLINE" /bin/bash -euo pipefail -s <<'GRUB'
sed -i "s/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/; s/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX=\"$CMDLINE\"/" /etc/default/grub
install -d /boot/grub/i386-pc
cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst /usr/lib/grub/i386-pc/boot.img /boot/grub/i386-pc/
grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img -p '(hd0,msdos1)/boot/grub' biosdisk part_msdos ext2
echo "(hd0) $LOOP" > /tmp/device.map
grub-bios-setup --skip-fs-probe --device-map=/tmp/device.map --directory=/boot/grub/i386-pc "$LOOP"
rm /tmp/device.map
kernel="$(cd /boot && find . -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -n 1)"
initrd="initrd.img-${kernel#vmlinuz-}"
[ -n "$kernel" ] && [ -f "/boot/$initrd" ] || { echo "build-box: no kernel/initrd in the image's /boot" >&2; exit 1; }
cat > /boot/grub/grub.cfg <<CFG
# Written by weft's vagrant/box/build-box.sh; the first update-grub in the VM replaces it.
set timeout=1
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root $UUID
menuentry 'Debian GNU/Linux 12' {
  linux /boot/$kernel root=UUID=$UUID ro $CMDLINE
  initrd /boot/$initrd
}
CFG
echo 'grub-pc grub-pc/install_devices multiselect /dev/vda' | debconf-set-selections
GRUB
rm -rf "$root"/var/lib/apt/lists/* "$root"/tmp/*
for m in dev/pts dev proc sys; do umount "$root/$m"; done
# Discard the free blocks (the loop device punches holes into the raw file): a smaller qcow2.
fstrim "$root" 2>/dev/null || true
# Read-only before unmounting: the journal is checkpointed into the file system even if another
# mount namespace still holds a propagated copy of this mount. GRUB does not replay a journal: a
# grub.cfg left only in the journal is a box that stops at the GRUB prompt.
sync
mount -o remount,ro "$root"
umount "$root"
e2fsck -fp "$part" >/dev/null || [ $? -le 1 ] || die "e2fsck found errors in the image's file system"
if dumpe2fs -h "$part" 2>/dev/null | grep -q needs_recovery; then die "the image's journal was not checkpointed (is $root still mounted somewhere?)"; fi
losetup -d "$part"; part=""
losetup -d "$loop"; loop=""

log "qcow2 and the box"
qemu-img convert -c -O qcow2 "$raw" "$work/box.img"
virtual_gb="$(qemu-img info --output=json "$work/box.img" | sed -n 's/.*"virtual-size": *\([0-9]*\).*/\1/p' | head -n 1)"
virtual_gb=$(( virtual_gb / 1024 / 1024 / 1024 ))
printf '{"provider":"libvirt","format":"qcow2","virtual_size":%s}\n' "$virtual_gb" > "$work/metadata.json"
cat > "$work/Vagrantfile" <<'EOF'
# Box defaults for vagrant-libvirt (no serial console setting: vagrant-libvirt 0.11.2 fails to
# load a box Vagrantfile with lv.serial).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.disk_bus = "virtio"
  end
end
EOF
tar -C "$work" -czf "$OUT" metadata.json Vagrantfile box.img
log "$OUT ($(du -h "$OUT" | cut -f1)) in $((SECONDS - start)) s; add it with: vagrant box add --name weft/debian12 $OUT"
