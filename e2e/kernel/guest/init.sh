#!/bin/sh
# PID 1 of a micro-VM after switch_root (the host's / read-only under a tmpfs overlay).
# Mounts the usual filesystems, loads configfs, then runs the command agent on the virtio
# serial port named rdsvm.agent. When the agent exits the VM powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
# /tmp stays the host's (read-only, writes go to the tmpfs overlay): a checkout under the
# host's /tmp (CI clones anywhere) must stay visible to the guest.
# disk images live on a real tmpfs: nvmet on a file on the overlay (Linux 6.1) reports a
# 1-byte logical block (the overlay inode has no i_blkbits), and the host sees a 0-size disk
mount -t tmpfs -o mode=0755 tmpfs /srv
modprobe configfs 2>/dev/null
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
name=vm
for w in $(cat /proc/cmdline); do
    case "$w" in rdsvm.name=*) name="${w#rdsvm.name=}" ;; esac
done
hostname "$name"
echo "127.0.0.1 localhost $name" >/etc/hosts
ip link set lo up
# each VM its own NVMe host identity (the host's /etc/nvme is shared read-only otherwise)
mkdir -p /etc/nvme
uuid="$(cat /proc/sys/kernel/random/uuid)"
echo "nqn.2014-08.org.nvmexpress:uuid:$uuid" >/etc/nvme/hostnqn
echo "$uuid" >/etc/nvme/hostid
echo "rdsvm: guest $name up in $(cut -d' ' -f1 /proc/uptime) s"
python3 -S "$(dirname "$0")/agent.py"
echo "rdsvm: agent exited ($?), powering off"
sync
echo o >/proc/sysrq-trigger
sleep 10
