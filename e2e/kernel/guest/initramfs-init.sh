#!/bin/sh
# /init of the micro-VM initramfs (busybox). Mounts the host's / (9p, read-only) under a tmpfs
# overlay, shows the cached kernel's modules under /usr/lib/modules/<ver> and switch_roots into
# the script named by rdsvm.init= on the kernel command line.
export PATH=/bin
mount -t proc proc /proc
mount -t sys sysfs /sys 2>/dev/null || mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "rdsvm-initramfs: $*"; sleep 1; echo o >/proc/sysrq-trigger; exit 1; }
while read -r m; do insmod "/mods/$m" || fail "insmod $m"; done </mods/order
init=""
for w in $(cat /proc/cmdline); do
    case "$w" in rdsvm.init=*) init="${w#rdsvm.init=}" ;; esac
done
[ -n "$init" ] || fail "no rdsvm.init= on the kernel command line"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose root /lower \
    || fail "cannot mount the host root over 9p"
mount -t tmpfs -o mode=0755 rw /rw || fail "tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || fail "overlay"
ver="$(cat /kernel-version)"
tree="$(cat /module-tree)"
mkdir -p "/newroot/usr/lib/modules/$ver"
mount -o bind "/newroot$tree" "/newroot/usr/lib/modules/$ver" || fail "modules bind mount"
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
umount /sys
umount /proc
exec switch_root /newroot "$init"
