"""mountinfo parsing (unit) and the mount boundary with the real tools on loop devices."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from nodefix import LoopDevice, is_root, umount_all_under

from rds_csi.mount import (
    Mounter,
    MountError,
    ProbeError,
    parse_mountinfo,
    unescape,
    validate_mount_flags,
)

SAMPLE = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
    "36 22 259:0 / /var/lib/kubelet/plugins/kubernetes.io/csi/rds-csi.io/abc/globalmount "
    "rw,relatime shared:30 - ext4 /dev/nvme0n1 rw\n"
    "40 22 259:0 / /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pvc\\040with\\040space/"
    "mount ro,relatime shared:30 master:2 - ext4 /dev/nvme0n1 rw\n"
    "41 22 0:5 / /dev/pts rw,nosuid,noexec - devpts devpts rw,gid=5,mode=620\n"
    "42 22 7:3 /sub\\134dir /mnt/tab\\011name rw - xfs /dev/loop3 rw,attr2\n"
    "garbage line without separator\n"
    "\n"
)


def test_unescape():
    assert unescape("a\\040b\\011c\\012d\\134e") == "a b\tc\nd\\e"
    assert unescape("plain") == "plain"


def test_parse_mountinfo_fields():
    mounts = parse_mountinfo(SAMPLE)
    assert len(mounts) == 5
    root, stage, pub, pts, xfs = mounts
    assert root.mount_point == "/" and root.devno == (8, 1) and root.optional == ("shared:1",)
    assert root.super_options == ("rw", "errors=remount-ro")
    assert stage.fstype == "ext4" and stage.source == "/dev/nvme0n1" and not stage.read_only
    assert pub.mount_point.endswith("/pvc with space/mount")
    assert pub.read_only and pub.optional == ("shared:30", "master:2")
    assert pts.optional == () and pts.devno == (0, 5)
    assert xfs.root == "/sub\\dir" and xfs.mount_point == "/mnt/tab\tname"


def test_mounts_at_and_of_from_a_fixture_file(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(SAMPLE)
    m = Mounter(mountinfo_path=str(info), proc_root=str(tmp_path / "noproc"))
    assert [x.mount_id for x in m.mounts_of(259, 0)] == [36, 40]
    assert m.is_mount_point("/dev/pts")
    assert not m.is_mount_point("/dev")
    holders = m.holders(259, 0, ignore_mounts=[
        "/var/lib/kubelet/plugins/kubernetes.io/csi/rds-csi.io/abc/globalmount"])
    assert [h.kind for h in holders] == ["mount"]
    assert "pvc with space" in str(holders[0])


def test_mount_flags_are_validated():
    assert validate_mount_flags(["noatime", "discard", "data=ordered"]) == [
        "noatime", "discard", "data=ordered"]
    for bad in ["a b", "x;y", "", "$(id)"]:
        with pytest.raises(ValueError):
            validate_mount_flags([bad])


def test_unreadable_mountinfo_is_a_mount_error(tmp_path):
    with pytest.raises(MountError):
        Mounter(mountinfo_path=str(tmp_path / "none")).mounts()


def test_probe_refuses_on_blkid_errors():
    """Exit 2 is blank; 0 with a TYPE is a filesystem; anything else is a refusal."""

    def runner(code, out=""):
        return lambda argv, timeout: subprocess.CompletedProcess(argv, code, out, "boom")

    assert Mounter(runner=runner(2)).probe("/dev/x") is None
    assert Mounter(runner=runner(0, "DEVNAME=/dev/x\nTYPE=xfs\n")).probe("/dev/x") == "xfs"
    for code in (1, 4, 8):
        with pytest.raises(ProbeError):
            Mounter(runner=runner(code)).probe("/dev/x")
    with pytest.raises(ProbeError, match="PTTYPE=dos"):
        Mounter(runner=runner(0, "DEVNAME=/dev/x\nPTTYPE=dos\n")).probe("/dev/x")


# ---------------------------------------------------------------------- real tools

needs_root = pytest.mark.skipif(not is_root(), reason="needs root for loop devices and mount")


@pytest.fixture
def loop(tmp_path):
    if not is_root():
        pytest.skip("needs root for loop devices and mount")
    devices: list[LoopDevice] = []

    def make(size: int = 64 << 20, name: str = "disk") -> LoopDevice:
        dev = LoopDevice(tmp_path / f"{name}{len(devices)}.img", size)
        devices.append(dev)
        return dev

    yield make
    umount_all_under(tmp_path)
    for dev in devices:
        dev.close()


@needs_root
def test_probe_format_mount_bind_ro_unmount(loop, tmp_path):
    dev = loop()
    m = Mounter()
    assert m.probe(dev.path) is None
    m.format(dev.path, "ext4")
    assert m.probe(dev.path) == "ext4"
    stage = tmp_path / "stage dir"  # a space: \040 in mountinfo
    stage.mkdir()
    m.mount(dev.path, str(stage), "ext4", ["noatime"])
    (top,) = m.mounts_at(str(stage))
    assert top.devno == dev.devno and top.fstype == "ext4" and "noatime" in top.options
    (stage / "data").write_text("hello")
    target = tmp_path / "pod" / "mount"
    target.mkdir(parents=True)
    m.bind_mount(str(stage), str(target), read_only=True)
    (pub,) = m.mounts_at(str(target))
    assert pub.read_only and pub.devno == dev.devno
    assert (target / "data").read_text() == "hello"
    with pytest.raises(OSError):
        (target / "new").write_text("x")
    holders = m.holders(*dev.devno, ignore_mounts=[str(stage)])
    assert [h.kind for h in holders] == ["mount"] and "pod/mount" in holders[0].detail
    m.unmount(str(target))
    m.unmount(str(stage))
    assert not m.is_mount_point(str(stage))
    assert m.holders(*dev.devno) == []


@needs_root
def test_probe_refuses_a_partition_table(loop):
    dev = loop()
    # A DOS partition table with one Linux partition, written by hand (no sfdisk here).
    entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + \
        (4096).to_bytes(4, "little")
    with open(dev.path, "r+b") as f:
        f.seek(440)
        f.write(b"\x12\x34\x56\x78\x00\x00" + entry + bytes(48) + b"\x55\xaa")
    with pytest.raises(ProbeError, match="PTTYPE"):
        Mounter().probe(dev.path)


@needs_root
def test_open_fd_holder_is_found(loop):
    dev = loop()
    fd = os.open(dev.path, os.O_RDONLY)
    try:
        holders = Mounter().holders(*dev.devno)
        assert any(h.kind == "process" and f"pid {os.getpid()}" in h.detail for h in holders)
    finally:
        os.close(fd)
    assert Mounter().open_fds(*dev.devno) == []


@needs_root
def test_mknod_block_creates_and_repoints(loop, tmp_path):
    a, b = loop(), loop()
    node = tmp_path / "pods" / "dev0"
    node.parent.mkdir()
    Mounter.mknod_block(str(node), *a.devno)
    assert Mounter.block_node(str(node)) == a.devno
    Mounter.mknod_block(str(node), *a.devno)  # idempotent
    Mounter.mknod_block(str(node), *b.devno)  # re-point
    assert Mounter.block_node(str(node)) == b.devno
    assert Mounter.device_size(str(node)) == 64 << 20
    assert Mounter.block_node(str(tmp_path)) is None


def _has_cap(bit: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


@needs_root
@pytest.mark.skipif(not _has_cap(24), reason="online ext4 resize (EXT4_IOC_RESIZE_FS) needs "
                    "CAP_SYS_RESOURCE, which this environment does not grant")
def test_online_grow_ext4(loop, tmp_path):
    dev = loop(32 << 20)
    m = Mounter()
    m.format(dev.path, "ext4")
    mnt = tmp_path / "m"
    mnt.mkdir()
    m.mount(dev.path, str(mnt), "ext4")
    before = m.statvfs(str(mnt))
    dev.grow(64 << 20)
    m.resize("ext4", dev.path, str(mnt))
    after = m.statvfs(str(mnt))
    assert after.total_bytes > before.total_bytes * 1.5
    assert after.total_inodes >= before.total_inodes and after.used_bytes > 0
    assert m.check_path(str(mnt)) is None


@needs_root
@pytest.mark.skipif(shutil.which("mkfs.xfs") is None, reason="xfsprogs is not installed")
def test_xfs_format_and_online_grow(loop, tmp_path):
    dev = loop(320 << 20)
    m = Mounter()
    m.format(dev.path, "xfs")
    assert m.probe(dev.path) == "xfs"
    mnt = tmp_path / "x"
    mnt.mkdir()
    m.mount(dev.path, str(mnt), "xfs")
    before = m.statvfs(str(mnt)).total_bytes
    dev.grow(640 << 20)
    m.resize("xfs", dev.path, str(mnt))
    assert m.statvfs(str(mnt)).total_bytes > before * 1.5


@needs_root
def test_mount_failure_names_the_command(tmp_path):
    with pytest.raises(MountError, match="mount -t ext4"):
        Mounter().mount("/dev/nonexistent-device", str(tmp_path), "ext4")


def test_check_path_reports_missing(tmp_path):
    assert "ENOENT" in Mounter.check_path(str(Path(tmp_path) / "gone"))
