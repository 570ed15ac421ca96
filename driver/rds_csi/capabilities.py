"""Which CSI volume capabilities this driver supports, and why.

Filesystem volumes (ext4/xfs) are single-node only: two kernels mounting the
same ext4 corrupt it. Raw block volumes may be attached read-write on several
nodes because KubeVirt live migration needs the target to open the disk while
the source still has it; QEMU coordinates the I/O, the driver bounds the dual
attach.
"""

from __future__ import annotations

from collections.abc import Sequence

from rds_csi.csi import csi_pb2
from rds_csi.params import FS_TYPES

Mode = csi_pb2.VolumeCapability.AccessMode

SINGLE_NODE_MODES = frozenset({
    Mode.SINGLE_NODE_WRITER,
    Mode.SINGLE_NODE_READER_ONLY,
    Mode.SINGLE_NODE_SINGLE_WRITER,
    Mode.SINGLE_NODE_MULTI_WRITER,
})
BLOCK_MODES = SINGLE_NODE_MODES | {Mode.MULTI_NODE_MULTI_WRITER, Mode.MULTI_NODE_READER_ONLY}
MOUNT_MODES = SINGLE_NODE_MODES


def mode_name(mode: int) -> str:
    return str(csi_pb2.VolumeCapability.AccessMode.Mode.Name(mode))


def unsupported_reason(cap: csi_pb2.VolumeCapability) -> str | None:
    """None when supported, else a message naming the problem."""
    kind = cap.WhichOneof("access_type")
    if kind is None:
        return "volume capability has neither block nor mount access type"
    if not cap.HasField("access_mode") or cap.access_mode.mode == Mode.UNKNOWN:
        return "volume capability has no access mode"
    mode = cap.access_mode.mode
    if mode not in Mode.Mode.values():
        return f"unknown access mode {mode}"
    if kind == "block":
        if mode not in BLOCK_MODES:
            return f"access mode {mode_name(mode)} is not supported for block volumes"
        return None
    fs_type = cap.mount.fs_type
    if fs_type and fs_type not in FS_TYPES:
        return f"filesystem {fs_type!r} is not supported (use {' or '.join(FS_TYPES)})"
    if mode not in MOUNT_MODES:
        return (
            f"access mode {mode_name(mode)} is refused for filesystem volumes: a filesystem "
            "cannot be mounted on several nodes; multi-node access (ReadWriteMany) is only "
            "for raw block volumes (KubeVirt live migration)"
        )
    return None


def first_unsupported(caps: Sequence[csi_pb2.VolumeCapability]) -> str | None:
    for cap in caps:
        reason = unsupported_reason(cap)
        if reason:
            return reason
    return None


def requested_fs_type(caps: Sequence[csi_pb2.VolumeCapability]) -> str:
    """The one fs_type the mount capabilities ask for ('' if none); two different is an error."""
    kinds = {c.mount.fs_type for c in caps if c.WhichOneof("access_type") == "mount"} - {""}
    if len(kinds) > 1:
        raise ValueError(f"volume capabilities ask for different filesystems: {sorted(kinds)}")
    return kinds.pop() if kinds else ""


def is_block_only(caps: Sequence[csi_pb2.VolumeCapability]) -> bool:
    return bool(caps) and all(c.WhichOneof("access_type") == "block" for c in caps)
