#!/bin/sh
# Prepare this machine for the kernel tier (idempotent; root; Debian):
#   - apt packages: qemu-system-x86, busybox-static, nvme-cli, xfsprogs, kmod, cpio
#   - Debian's stock linux-image-6.1.0-*-amd64, fetched ONCE into a cache outside the repo,
#     extracted (never installed into /boot), depmod'ed
#   - a busybox initramfs that mounts the host's / read-only over 9p with a tmpfs overlay,
#     shows the extracted modules under /usr/lib/modules/<ver> and switch_roots into the guest
#     script named on the kernel command line (rdsvm.init=...)
# Cache: $RDS_CSI_KERNEL_CACHE, default /var/cache/rds-csi-kernel. It ends with a file
# `ready` holding the kernel version; e2e/kernel/vm.py reads it.
set -eu

CACHE="${RDS_CSI_KERNEL_CACHE:-/var/cache/rds-csi-kernel}"
HERE="$(cd "$(dirname "$0")" && pwd)"
# bump when the initramfs recipe below changes, so a cached one is rebuilt
RECIPE=3

need_pkgs=""
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_pkgs="$need_pkgs qemu-system-x86"
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx switch_root || need_pkgs="$need_pkgs busybox-static"
command -v nvme >/dev/null 2>&1 || need_pkgs="$need_pkgs nvme-cli"
command -v mkfs.xfs >/dev/null 2>&1 || need_pkgs="$need_pkgs xfsprogs"
command -v depmod >/dev/null 2>&1 || need_pkgs="$need_pkgs kmod"
command -v cpio >/dev/null 2>&1 || need_pkgs="$need_pkgs cpio"
command -v ip >/dev/null 2>&1 || need_pkgs="$need_pkgs iproute2"
if ! dpkg -s busybox-static >/dev/null 2>&1; then
    case "$need_pkgs" in *busybox-static*) ;; *) need_pkgs="$need_pkgs busybox-static" ;; esac
fi
updated=0
if [ -n "$need_pkgs" ]; then
    echo "setup.sh: installing$need_pkgs"
    apt-get update -q
    updated=1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need_pkgs
fi

mkdir -p "$CACHE"
if [ -f "$CACHE/ready" ] && [ "$(cat "$CACHE/recipe" 2>/dev/null)" = "$RECIPE" ]; then
    echo "setup.sh: kernel cache ready: $CACHE ($(cat "$CACHE/ready"))"
    exit 0
fi

# --- the kernel package (once) ---
if [ ! -f "$CACHE/kernel-version" ]; then
    [ "$updated" = 1 ] || apt-get update -q
    pkg="$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -1)"
    [ -n "$pkg" ] || { echo "setup.sh: no linux-image-6.1.0-*-amd64 in apt" >&2; exit 1; }
    ver="${pkg#linux-image-}"
    echo "setup.sh: fetching $pkg"
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download -q "$pkg")
    rm -rf "$CACHE/root"
    dpkg -x "$tmp"/*.deb "$CACHE/root"
    rm -rf "$tmp"
    echo "$ver" >"$CACHE/kernel-version"
fi
ver="$(cat "$CACHE/kernel-version")"
ROOT="$CACHE/root"
MODDIR="$ROOT/lib/modules/$ver"
[ -d "$MODDIR" ] || MODDIR="$ROOT/usr/lib/modules/$ver"
[ -d "$MODDIR" ] || { echo "setup.sh: no modules in $ROOT" >&2; exit 1; }
# one place for the module tree whatever the package layout: $CACHE/modules/lib/modules/<ver>
mkdir -p "$CACHE/modules/lib/modules"
ln -sfn "$MODDIR" "$CACHE/modules/lib/modules/$ver"
depmod -b "$CACHE/modules" "$ver"
cp "$ROOT/boot/vmlinuz-$ver" "$CACHE/vmlinuz"

# --- the initramfs ---
INITRD="$(mktemp -d)"
trap 'rm -rf "$INITRD"' EXIT
mkdir -p "$INITRD/bin" "$INITRD/mods" "$INITRD/proc" "$INITRD/sys" "$INITRD/dev" "$INITRD/newroot" \
    "$INITRD/lower" "$INITRD/rw"
cp /bin/busybox "$INITRD/bin/busybox"
for a in sh mount umount mkdir insmod switch_root cat echo sleep ln mknod; do
    ln -s busybox "$INITRD/bin/$a"
done
: >"$INITRD/mods/order"
for m in virtio_pci virtio_console virtio_net 9pnet_virtio 9p overlay; do
    modprobe -d "$CACHE/modules" -S "$ver" --show-depends "$m" | while read -r kind path _rest; do
        [ "$kind" = insmod ] || continue
        base="$(basename "$path")"
        grep -qx "$base" "$INITRD/mods/order" && continue
        case "$path" in
            *.ko.xz) xz -dc "$path" >"$INITRD/mods/${base%.xz}"; base="${base%.xz}" ;;
            *.ko.zst) zstd -qdc "$path" >"$INITRD/mods/${base%.zst}"; base="${base%.zst}" ;;
            *) cp "$path" "$INITRD/mods/$base" ;;
        esac
        grep -qx "$base" "$INITRD/mods/order" || echo "$base" >>"$INITRD/mods/order"
    done
done
cp "$HERE/guest/initramfs-init.sh" "$INITRD/init"
chmod +x "$INITRD/init"
echo "$ver" >"$INITRD/kernel-version"
echo "$MODDIR" >"$INITRD/module-tree"
(cd "$INITRD" && find . | cpio -o -H newc --quiet | gzip -1) >"$CACHE/initramfs.cpio.gz.tmp"
mv "$CACHE/initramfs.cpio.gz.tmp" "$CACHE/initramfs.cpio.gz"
echo "$RECIPE" >"$CACHE/recipe"
echo "$ver" >"$CACHE/ready"
echo "setup.sh: kernel cache ready: $CACHE ($ver)"
