"""The node plugin, as a CO sees it, on the embedded stack (`rds-sim stack --nodes 2`).

Everything goes through the driver's real gRPC sockets (node-1: mode all; node-2: mode node),
faults through the simulator's and the fabric's control sockets, and every byte written is
read back through the published paths. One stack for the module; each test cleans up its
volumes; the stack's teardown is checked for leftover processes, mounts and loop devices.

Conformance follows the CSI spec's Node error tables (v1.12) and what csi-sanity's node tests
check (missing fields -> INVALID_ARGUMENT; unknown volume or path -> NOT_FOUND, including a
relative ``some/path``; idempotent stage/publish/unpublish/unstage; publish without staging
path -> FAILED_PRECONDITION; second publish rules for SINGLE_NODE_SINGLE_WRITER).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from rds_csi.csi import csi_pb2
from rds_csi.ids import Naming

from .stackproc import RDS_SIM, StackProcess, leftovers

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the fabric backs namespaces "
                       "with loop devices and the node mounts them"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("mkfs.ext4", "mkfs.xfs", "blkid",
                                                          "losetup")),
                       reason="needs e2fsprogs, xfsprogs, util-linux"),
]

Mode = csi_pb2.VolumeCapability.AccessMode
Code = grpc.StatusCode
MiB = 1 << 20
FAST = {"reconnectDelay": "1"}  # the kernel retries every second, forever
SHORT_LOSS = {"ctrlLossTmo": "2", "reconnectDelay": "1"}  # controller deleted after ~2 s


# ---------------------------------------------------------------------- the stack


@pytest.fixture(scope="module")
def stack() -> Iterator[StackProcess]:
    if not RDS_SIM.exists():
        pytest.skip(f"{RDS_SIM} is missing")
    base = Path(tempfile.mkdtemp(prefix="sn-", dir="/tmp"))
    s = StackProcess.start(base, nodes=2, driver_args=["--monitor-interval=0.25",
                                                       "--log-level=info"])
    try:
        yield s
    finally:
        rc = s.stop()
        left = leftovers(base)
        shutil.rmtree(base, ignore_errors=True)
        tail = "".join(s.lines[-40:])
        assert rc == 0, f"rds-sim stack exited with {rc}:\n{tail}"
        assert not any(left.values()), f"rds-sim stack left things behind: {left}"


def _cap(block: bool = False, mode: int = Mode.SINGLE_NODE_WRITER, fs_type: str = "ext4",
         flags: tuple[str, ...] = ()) -> csi_pb2.VolumeCapability:
    access = csi_pb2.VolumeCapability.AccessMode(mode=mode)
    if block:
        return csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                        access_mode=access)
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
        access_mode=access)


@dataclass
class Vol:
    v: csi_pb2.Volume
    cap: csi_pb2.VolumeCapability
    staging: dict[str, str] = field(default_factory=dict)  # node -> staging path
    targets: list[tuple[str, str]] = field(default_factory=list)  # (node, target)

    @property
    def id(self) -> str:
        return self.v.volume_id

    @property
    def nqn(self) -> str:
        return self.v.volume_context["nqn"]


class Kubelet:
    """A minimal CO over the stack's sockets; cleans up what it set up."""

    def __init__(self, s: StackProcess, name: str) -> None:
        self.s = s
        self.dir = s.work / "kubelet" / name
        self.vols: list[Vol] = []

    def create(self, name: str, size: int = 64 * MiB, *, block: bool = False,
               mode: int = Mode.SINGLE_NODE_WRITER, fs_type: str = "ext4",
               params: dict[str, str] | None = None) -> Vol:
        cap = _cap(block, mode, fs_type)
        v = self.s.ctl.CreateVolume(csi_pb2.CreateVolumeRequest(
            name=f"{self.dir.name}-{name}"[:63],
            capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            volume_capabilities=[cap], parameters=params or {}), timeout=60).volume
        vol = Vol(v, cap)
        self.vols.append(vol)
        return vol

    def staging_path(self, vol: Vol, node: str = "node-1") -> str:
        return str(self.dir / node / "staging" / vol.id)

    def target_path(self, vol: Vol, pod: str = "p1", node: str = "node-1") -> str:
        return str(self.dir / node / "pods" / pod / vol.id)

    def stage(self, vol: Vol, node: str = "node-1", *, cap: csi_pb2.VolumeCapability | None = None,
              path: str | None = None) -> str:
        path = path or self.staging_path(vol, node)
        Path(path).mkdir(parents=True, exist_ok=True)  # the CO creates the staging directory
        self.s.node(node).NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
            volume_id=vol.id, staging_target_path=path, volume_capability=cap or vol.cap,
            volume_context=vol.v.volume_context), timeout=60)
        vol.staging[node] = path
        return path

    def publish(self, vol: Vol, node: str = "node-1", pod: str = "p1", *,
                readonly: bool = False, cap: csi_pb2.VolumeCapability | None = None,
                target: str | None = None) -> str:
        target = target or self.target_path(vol, pod, node)
        Path(target).parent.mkdir(parents=True, exist_ok=True)  # the CO creates the parent
        if (node, target) not in vol.targets:
            vol.targets.append((node, target))
        self.s.node(node).NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_id=vol.id, staging_target_path=vol.staging[node], target_path=target,
            volume_capability=cap or vol.cap, readonly=readonly,
            volume_context=vol.v.volume_context), timeout=60)
        return target

    def unpublish(self, vol: Vol, target: str, node: str = "node-1") -> None:
        self.s.node(node).NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=vol.id, target_path=target), timeout=60)
        with contextlib.suppress(ValueError):
            vol.targets.remove((node, target))

    def unstage(self, vol: Vol, node: str = "node-1") -> None:
        self.s.node(node).NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
            volume_id=vol.id, staging_target_path=vol.staging.get(node) or
            self.staging_path(vol, node)), timeout=60)
        vol.staging.pop(node, None)

    def stats(self, vol: Vol, path: str, node: str = "node-1"
              ) -> csi_pb2.NodeGetVolumeStatsResponse:
        return self.s.node(node).NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
            volume_id=vol.id, volume_path=path), timeout=30)

    def cleanup(self) -> None:
        errors = []
        for vol in self.vols:
            for node, target in list(vol.targets):
                try:
                    self.unpublish(vol, target, node)
                except grpc.RpcError as e:
                    errors.append(f"unpublish {vol.id} {target}: {e.details()}")
            for node in list(vol.staging):
                try:
                    self.unstage(vol, node)
                except grpc.RpcError as e:
                    errors.append(f"unstage {vol.id} on {node}: {e.details()}")
            try:
                self.s.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.id),
                                        timeout=60)
            except grpc.RpcError as e:
                errors.append(f"delete {vol.id}: {e.details()}")
        assert not errors, errors


@pytest.fixture
def kube(stack: StackProcess, request: pytest.FixtureRequest) -> Iterator[Kubelet]:
    k = Kubelet(stack, request.node.name.replace("[", "-").replace("]", "")[:40])
    try:
        yield k
    finally:
        k.cleanup()


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as e:
        return e.code()
    return Code.OK


def _rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    try:
        call()
    except grpc.RpcError as e:
        return e
    raise AssertionError("the call succeeded")


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_block(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_block(path: str, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def _wait(what: str, pred: Callable[[], bool], timeout: float, period: float = 0.1) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(period)
    return time.monotonic() - start


def _healthy(k: Kubelet, vol: Vol, path: str, node: str = "node-1") -> bool:
    return not k.stats(vol, path, node).volume_condition.abnormal


def _log_since(s: StackProcess, mark: int) -> str:
    return "".join(s.lines[mark:])


# ---------------------------------------------------------------------- conformance


def test_info_capabilities_and_topology(stack: StackProcess, kube: Kubelet) -> None:
    caps = {c.rpc.type for c in stack.node().NodeGetCapabilities(
        csi_pb2.NodeGetCapabilitiesRequest()).capabilities}
    RPC = csi_pb2.NodeServiceCapability.RPC
    assert {RPC.STAGE_UNSTAGE_VOLUME, RPC.GET_VOLUME_STATS, RPC.EXPAND_VOLUME,
            RPC.VOLUME_CONDITION, RPC.SINGLE_NODE_MULTI_WRITER} <= caps
    plugin = {c.service.type for c in stack.identity.GetPluginCapabilities(
        csi_pb2.GetPluginCapabilitiesRequest()).capabilities}
    vol = kube.create("topo")
    want = dict(vol.v.accessible_topology[0].segments)
    assert want, "CreateVolume returned no accessible_topology"
    for node in ("node-1", "node-2"):
        info = stack.node(node).NodeGetInfo(csi_pb2.NodeGetInfoRequest())
        assert info.node_id == node
        assert info.max_volumes_per_node >= 0
        if csi_pb2.PluginCapability.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS in plugin:
            assert info.HasField("accessible_topology")
        # The node's topology must satisfy the volume's: same keys, same values.
        assert dict(info.accessible_topology.segments) == want


def test_error_codes(stack: StackProcess, kube: Kubelet) -> None:
    """Missing fields, unknown volumes and paths: the codes the spec and csi-sanity expect."""
    n = stack.node()
    vol = kube.create("codes")
    unknown = Naming().volume_slot("never-created")  # well-formed, no such volume
    d = str(kube.dir / "x")
    cap = _cap()
    S, U = csi_pb2.NodeStageVolumeRequest, csi_pb2.NodeUnstageVolumeRequest
    P, UP = csi_pb2.NodePublishVolumeRequest, csi_pb2.NodeUnpublishVolumeRequest
    ST, EX = csi_pb2.NodeGetVolumeStatsRequest, csi_pb2.NodeExpandVolumeRequest
    ctx = vol.v.volume_context
    cases: list[tuple[str, Callable[[], object], grpc.StatusCode]] = [
        ("stage: no volume id", lambda: n.NodeStageVolume(S(
            staging_target_path=d, volume_capability=cap)), Code.INVALID_ARGUMENT),
        ("stage: no staging path", lambda: n.NodeStageVolume(S(
            volume_id=vol.id, volume_capability=cap, volume_context=ctx)),
         Code.INVALID_ARGUMENT),
        ("stage: no capability", lambda: n.NodeStageVolume(S(
            volume_id=vol.id, staging_target_path=d, volume_context=ctx)),
         Code.INVALID_ARGUMENT),
        ("stage: relative staging path", lambda: n.NodeStageVolume(S(
            volume_id=vol.id, staging_target_path="rel/path", volume_capability=cap,
            volume_context=ctx)), Code.INVALID_ARGUMENT),
        ("stage: filesystem multi-node", lambda: n.NodeStageVolume(S(
            volume_id=vol.id, staging_target_path=d,
            volume_capability=_cap(mode=Mode.MULTI_NODE_MULTI_WRITER), volume_context=ctx)),
         Code.INVALID_ARGUMENT),
        ("stage: malformed volume id", lambda: n.NodeStageVolume(S(
            volume_id="no-such-volume", staging_target_path=d, volume_capability=cap,
            volume_context=ctx)), Code.NOT_FOUND),
        ("unstage: no volume id", lambda: n.NodeUnstageVolume(U(staging_target_path=d)),
         Code.INVALID_ARGUMENT),
        ("unstage: no staging path", lambda: n.NodeUnstageVolume(U(volume_id=vol.id)),
         Code.INVALID_ARGUMENT),
        ("unstage: malformed volume id", lambda: n.NodeUnstageVolume(U(
            volume_id="no-such-volume", staging_target_path=d)), Code.NOT_FOUND),
        ("publish: nothing", lambda: n.NodePublishVolume(P()), Code.INVALID_ARGUMENT),
        ("publish: no target path", lambda: n.NodePublishVolume(P(volume_id=unknown)),
         Code.INVALID_ARGUMENT),
        ("publish: no capability", lambda: n.NodePublishVolume(P(
            volume_id=unknown, target_path=d + "/t")), Code.INVALID_ARGUMENT),
        ("publish: no staging path (STAGE_UNSTAGE_VOLUME)", lambda: n.NodePublishVolume(P(
            volume_id=vol.id, target_path=d + "/t", volume_capability=cap)),
         Code.FAILED_PRECONDITION),
        ("publish: not staged", lambda: n.NodePublishVolume(P(
            volume_id=vol.id, target_path=d + "/t", staging_target_path=d,
            volume_capability=cap)), Code.FAILED_PRECONDITION),
        ("publish: malformed volume id", lambda: n.NodePublishVolume(P(
            volume_id="no-such-volume", target_path=d + "/t", staging_target_path=d,
            volume_capability=cap)), Code.NOT_FOUND),
        ("unpublish: no volume id", lambda: n.NodeUnpublishVolume(UP(target_path=d)),
         Code.INVALID_ARGUMENT),
        ("unpublish: no target path", lambda: n.NodeUnpublishVolume(UP(volume_id=unknown)),
         Code.INVALID_ARGUMENT),
        ("unpublish: malformed volume id", lambda: n.NodeUnpublishVolume(UP(
            volume_id="no-such-volume", target_path=d)), Code.NOT_FOUND),
        ("stats: no volume id", lambda: n.NodeGetVolumeStats(ST(volume_path="some/path")),
         Code.INVALID_ARGUMENT),
        ("stats: no volume path", lambda: n.NodeGetVolumeStats(ST(volume_id=unknown)),
         Code.INVALID_ARGUMENT),
        ("stats: unknown volume (csi-sanity: relative some/path)", lambda:
         n.NodeGetVolumeStats(ST(volume_id=unknown, volume_path="some/path")),
         Code.NOT_FOUND),
        ("stats: unknown volume", lambda: n.NodeGetVolumeStats(ST(
            volume_id=unknown, volume_path=str(kube.dir))), Code.NOT_FOUND),
        ("stats: created but not staged", lambda: n.NodeGetVolumeStats(ST(
            volume_id=vol.id, volume_path=str(kube.dir))), Code.NOT_FOUND),
        ("expand: no volume id", lambda: n.NodeExpandVolume(EX(volume_path=d)),
         Code.INVALID_ARGUMENT),
        ("expand: no volume path", lambda: n.NodeExpandVolume(EX(volume_id=vol.id)),
         Code.INVALID_ARGUMENT),
        ("expand: unknown volume (csi-sanity: relative some/path)", lambda:
         n.NodeExpandVolume(EX(volume_id=unknown, volume_path="some/path")), Code.NOT_FOUND),
        ("expand: unknown volume", lambda: n.NodeExpandVolume(EX(
            volume_id=unknown, volume_path=str(kube.dir))), Code.NOT_FOUND),
        ("expand: bad capacity range", lambda: n.NodeExpandVolume(EX(
            volume_id=vol.id, volume_path=str(kube.dir),
            capacity_range=csi_pb2.CapacityRange(required_bytes=2 * MiB, limit_bytes=MiB))),
         Code.OUT_OF_RANGE),
    ]
    kube.dir.mkdir(parents=True, exist_ok=True)
    got = {name: _code(call) for name, call, _ in cases}
    wrong = {name: f"{got[name].name}, expected {want.name}"
             for name, _, want in cases if got[name] != want}
    assert not wrong, wrong
    # Idempotent no-ops on things that are not there: OK, and nothing is created.
    n.NodeUnpublishVolume(UP(volume_id=unknown, target_path=d + "/never"))
    n.NodeUnstageVolume(U(volume_id=unknown, staging_target_path=d + "/never"))
    assert not os.path.exists(d + "/never")


@pytest.mark.parametrize("fs_type", ["ext4", "xfs"])
def test_filesystem_lifecycle(stack: StackProcess, kube: Kubelet, fs_type: str) -> None:
    size = 320 * MiB if fs_type == "xfs" else 64 * MiB  # mkfs.xfs >= 5.19 wants >= 300 MB
    vol = kube.create("fs", size, fs_type=fs_type, mode=Mode.SINGLE_NODE_MULTI_WRITER)
    n = stack.node()
    staging = kube.stage(vol)
    kube.stage(vol)  # idempotent
    ctx = vol.v.volume_context
    conflicts = {
        "other staging path": csi_pb2.NodeStageVolumeRequest(
            volume_id=vol.id, staging_target_path=staging + "-2", volume_capability=vol.cap,
            volume_context=ctx),
        "other filesystem": csi_pb2.NodeStageVolumeRequest(
            volume_id=vol.id, staging_target_path=staging,
            volume_capability=_cap(mode=Mode.SINGLE_NODE_MULTI_WRITER,
                                   fs_type="xfs" if fs_type == "ext4" else "ext4"),
            volume_context=ctx),
        "block on a filesystem stage": csi_pb2.NodeStageVolumeRequest(
            volume_id=vol.id, staging_target_path=staging,
            volume_capability=_cap(block=True), volume_context=ctx),
    }
    for what, req in conflicts.items():
        assert _code(lambda req=req: n.NodeStageVolume(req)) == Code.ALREADY_EXISTS, what
    target = kube.publish(vol)
    kube.publish(vol)  # idempotent
    assert _code(lambda: kube.publish(vol, readonly=True)) == Code.ALREADY_EXISTS
    assert _code(lambda: kube.publish(vol, pod="blk", cap=_cap(block=True))) == \
        Code.FAILED_PRECONDITION
    # SINGLE_NODE_MULTI_WRITER: a second pod on the node is fine; so is a read-only one.
    second = kube.publish(vol, pod="p2")
    ro = kube.publish(vol, pod="ro", readonly=True)
    data = os.urandom(3 * MiB + 17)
    _write_file(os.path.join(target, "data"), data)
    assert _read_file(os.path.join(second, "data")) == data
    assert _read_file(os.path.join(ro, "data")) == data
    with pytest.raises(OSError) as exc:
        _write_file(os.path.join(ro, "nope"), b"x")
    assert exc.value.errno == 30  # EROFS
    for path in (staging, target, ro):
        r = kube.stats(vol, path)
        assert not r.volume_condition.abnormal, r.volume_condition.message
        units = {u.unit: u for u in r.usage}
        b, i = units[csi_pb2.VolumeUsage.BYTES], units[csi_pb2.VolumeUsage.INODES]
        assert 0 < b.used <= b.total and b.available <= b.total and b.total <= size
        assert b.used >= len(data)
        assert 0 < i.used <= i.total and i.available <= i.total
    assert _code(lambda: kube.stats(vol, str(kube.dir / "elsewhere"))) == Code.NOT_FOUND
    for t in (target, second, ro):
        kube.unpublish(vol, t)
        kube.unpublish(vol, t)  # idempotent
        assert not os.path.lexists(t), "the SP must remove what it created at the target"
    kube.unstage(vol)
    kube.unstage(vol)  # idempotent
    assert not stack.controllers("node-1", vol.nqn), "unstage disconnects"
    with open("/proc/self/mountinfo") as f:
        assert staging not in f.read()
    # Stage again: same bytes, nothing reformatted.
    kube.stage(vol)
    assert _read_file(os.path.join(staging, "data")) == data


def test_single_writer_second_target_refused(stack: StackProcess, kube: Kubelet) -> None:
    vol = kube.create("snsw", mode=Mode.SINGLE_NODE_SINGLE_WRITER)
    kube.stage(vol)
    kube.publish(vol)
    kube.publish(vol)  # idempotent
    err = _rpc_error(lambda: kube.publish(vol, pod="p2"))
    assert err.code() == Code.FAILED_PRECONDITION, err.details()


def test_block_lifecycle(stack: StackProcess, kube: Kubelet) -> None:
    size = 48 * MiB
    vol = kube.create("blk", size, block=True, mode=Mode.SINGLE_NODE_MULTI_WRITER)
    kube.stage(vol)
    kube.stage(vol)  # idempotent
    assert _code(lambda: kube.stage(vol, cap=_cap())) == Code.ALREADY_EXISTS
    target = kube.publish(vol)
    kube.publish(vol)  # idempotent
    assert _code(lambda: kube.publish(vol, pod="fs", cap=_cap())) == Code.FAILED_PRECONDITION
    assert stat.S_ISBLK(os.lstat(target).st_mode)
    ro = kube.publish(vol, pod="ro", readonly=True)
    assert stat.S_IMODE(os.lstat(ro).st_mode) & 0o222 == 0, "read-only block node is writable"
    data = os.urandom(MiB)
    _write_block(target, 5 * MiB, data)
    assert _read_block(ro, 5 * MiB, MiB) == data
    r = kube.stats(vol, target)
    assert not r.volume_condition.abnormal, r.volume_condition.message
    assert [(u.unit, u.total) for u in r.usage] == [(csi_pb2.VolumeUsage.BYTES, size)]
    # Online growth of a block volume: the device shows the new size, nothing else to do.
    resp = stack.ctl.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.id, capacity_range=csi_pb2.CapacityRange(required_bytes=96 * MiB)))
    assert resp.capacity_bytes >= 96 * MiB
    grown = stack.node().NodeExpandVolume(csi_pb2.NodeExpandVolumeRequest(
        volume_id=vol.id, volume_path=target, volume_capability=vol.cap,
        capacity_range=csi_pb2.CapacityRange(required_bytes=96 * MiB)))
    assert grown.capacity_bytes >= 96 * MiB
    fd = os.open(target, os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_END) >= 96 * MiB
    finally:
        os.close(fd)
    assert _read_block(target, 5 * MiB, MiB) == data
    for t in (target, ro):
        kube.unpublish(vol, t)
        kube.unpublish(vol, t)
        assert not os.path.lexists(t)
    kube.unstage(vol)
    kube.unstage(vol)


def _has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        eff = next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:"))
    return bool(eff & (1 << 24))  # CAP_SYS_RESOURCE


@pytest.mark.parametrize("fs_type", ["xfs", "ext4"])
def test_expand_filesystem_online(stack: StackProcess, kube: Kubelet, fs_type: str) -> None:
    size, new = (320 * MiB, 480 * MiB) if fs_type == "xfs" else (64 * MiB, 160 * MiB)
    vol = kube.create("grow", size, fs_type=fs_type)
    kube.stage(vol)
    target = kube.publish(vol)
    data = os.urandom(MiB)
    _write_file(os.path.join(target, "data"), data)
    before = os.statvfs(target)
    resp = stack.ctl.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.id, capacity_range=csi_pb2.CapacityRange(required_bytes=new)))
    assert resp.capacity_bytes >= new and resp.node_expansion_required
    req = csi_pb2.NodeExpandVolumeRequest(
        volume_id=vol.id, volume_path=target, staging_target_path=vol.staging["node-1"],
        volume_capability=vol.cap, capacity_range=csi_pb2.CapacityRange(required_bytes=new))
    try:
        got = stack.node().NodeExpandVolume(req)
    except grpc.RpcError as e:
        denied = any(t in (e.details() or "") for t in ("Permission denied to resize",
                                                         "Operation not permitted"))
        if fs_type == "ext4" and denied and not _has_cap_sys_resource():
            pytest.skip("ext4 online grow is denied here: no CAP_SYS_RESOURCE (resize2fs "
                        f"EXT4_IOC_RESIZE_FS gets EPERM): {e.details()}")
        raise
    assert got.capacity_bytes >= new
    after = os.statvfs(target)
    assert after.f_blocks * after.f_frsize > before.f_blocks * before.f_frsize
    assert after.f_blocks * after.f_frsize > (size + new) // 2
    stack.node().NodeExpandVolume(req)  # idempotent
    assert _read_file(os.path.join(target, "data")) == data
    units = {u.unit: u for u in kube.stats(vol, target).usage}
    assert units[csi_pb2.VolumeUsage.BYTES].total == after.f_blocks * after.f_frsize


# ---------------------------------------------------------------------- scenarios


def test_a_reboot_shorter_than_ctrl_loss(stack: StackProcess, kube: Kubelet) -> None:
    """The kernel reconnects on its own: nothing to repair, same device, condition
    abnormal during the outage and normal after."""
    vol = kube.create("short", params=FAST)
    kube.stage(vol)
    target = kube.publish(vol)
    data = os.urandom(2 * MiB)
    _write_file(os.path.join(target, "data"), data)
    before = stack.namespaces("node-1", vol.nqn)
    assert len(before) == 1
    assert _healthy(kube, vol, target)
    mark = len(stack.lines)
    stack.reboot(3)
    seen: list[str] = []

    def abnormal() -> bool:
        c = kube.stats(vol, target).volume_condition
        if c.abnormal:
            seen.append(c.message)
        return c.abnormal

    _wait("an abnormal condition during the outage", abnormal, 10, 0.05)
    assert set(stack.controllers("node-1", vol.nqn).values()) <= {"connecting", "resetting"}
    _wait("the volume to be normal again", lambda: _healthy(kube, vol, target), 30)
    assert "reconnecting" in seen[0] or "not live" in seen[0], seen
    assert stack.namespaces("node-1", vol.nqn) == before, "the device changed"
    assert list(stack.controllers("node-1", vol.nqn).values()) == ["live"]
    log = _log_since(stack, mark)
    assert vol.id in log  # the monitor reported it
    for repair in ("recovering staging mount", "re-pointed block device node",
                   "reconnecting lost NVMe/TCP connection"):
        assert repair not in log, f"unexpected repair: {repair}\n{log[-3000:]}"
    assert _read_file(os.path.join(target, "data")) == data
    _write_file(os.path.join(target, "after"), b"written after the reboot")
    assert _read_file(os.path.join(target, "after")) == b"written after the reboot"


def test_b_outage_longer_than_ctrl_loss_renumbers(stack: StackProcess, kube: Kubelet) -> None:
    """ctrl_loss_tmo expires, the controller is deleted, the driver reconnects; the device
    comes back under a new name and the filesystem and block publishes are repaired with no
    NodeStage/NodePublish call."""
    fs = kube.create("long-fs", params=SHORT_LOSS)
    blk = kube.create("long-blk", 32 * MiB, block=True, params=SHORT_LOSS)
    kube.stage(fs)
    kube.stage(blk)
    fs_target = kube.publish(fs)
    blk_target = kube.publish(blk)
    fs_data, blk_data = os.urandom(2 * MiB), os.urandom(MiB)
    _write_file(os.path.join(fs_target, "data"), fs_data)
    _write_block(blk_target, 3 * MiB, blk_data)
    names = {v.id: stack.namespaces("node-1", v.nqn) for v in (fs, blk)}
    assert all(len(n) == 1 for n in names.values()), names
    # A running VM keeps its disk open: the old block device stays held through the outage.
    held = os.open(blk_target, os.O_RDONLY)
    mark = len(stack.lines)
    try:
        stack.reboot(6)
        _wait("the controllers to be deleted (ctrl_loss_tmo)",
              lambda: not stack.controllers("node-1", fs.nqn)
              and not stack.controllers("node-1", blk.nqn), 15)
        assert kube.stats(fs, fs_target).volume_condition.abnormal
        assert kube.stats(blk, blk_target).volume_condition.abnormal
        took = _wait("both volumes normal again",
                     lambda: _healthy(kube, fs, fs_target) and _healthy(kube, blk, blk_target),
                     60)
    finally:
        os.close(held)
    log = _log_since(stack, mark)
    for v in (fs, blk):
        now = stack.namespaces("node-1", v.nqn)
        assert len(now) == 1 and now != names[v.id], f"{v.id}: {names[v.id]} -> {now}"
    assert "reconnected" in log
    assert "recovering staging mount" in log and "re-established publish bind mount" in log
    assert "re-pointed block device node" in log
    for rpc in ("NodeStageVolume", "NodePublishVolume"):
        assert rpc not in log, f"{rpc} was called during the repair"
    assert _read_file(os.path.join(fs_target, "data")) == fs_data
    assert _read_block(blk_target, 3 * MiB, MiB) == blk_data
    node = os.lstat(blk_target).st_rdev
    dev = stack.root("node-1") / "dev" / stack.namespaces("node-1", blk.nqn)[0]
    assert node == os.lstat(dev).st_rdev, "the publish node does not point at the new device"
    _write_file(os.path.join(fs_target, "after"), b"after the renumbering")
    assert _read_file(os.path.join(fs_target, "after")) == b"after the renumbering"
    print(f"repaired {took:.1f}s after ctrl_loss_tmo expiry: {names} -> "
          f"{ {v.id: stack.namespaces('node-1', v.nqn) for v in (fs, blk)} }")


def test_c_orphan_connection_cleaned_on_restart(stack: StackProcess, kube: Kubelet) -> None:
    orphan = kube.create("orphan", 16 * MiB, block=True)
    kept = kube.create("kept", 16 * MiB, block=True)
    kube.stage(kept, "node-2")
    target = kube.publish(kept, "node-2")
    ctx = orphan.v.volume_context
    hostnqn = (stack.root("node-2") / "etc/nvme/hostnqn").read_text().strip()
    r = stack.nvme("node-2", "connect", "-t", "tcp", "-a", ctx["nvmeAddress"], "-s",
                   ctx["nvmePort"], "-n", orphan.nqn, "-q", hostnqn)
    assert r.returncode == 0, r.stderr
    assert stack.controllers("node-2", orphan.nqn) == {
        name: "live" for name in stack.controllers("node-2", orphan.nqn)} != {}
    mark = len(stack.lines)
    stack.restart_drivers()
    _wait("the orphan connection to be disconnected",
          lambda: not stack.controllers("node-2", orphan.nqn), 20)
    assert "disconnected orphan NVMe connection" in _log_since(stack, mark)
    # The staged volume's connection was accounted for and left alone.
    assert list(stack.controllers("node-2", kept.nqn).values()) == ["live"]
    assert _healthy(kube, kept, target, "node-2")
    # node-1 had nothing to clean.
    assert not stack.controllers("node-1", orphan.nqn)


def _xfs_superblock() -> bytes:
    with tempfile.NamedTemporaryFile(dir="/tmp") as f:
        f.truncate(320 * MiB)
        subprocess.run(["mkfs.xfs", "-q", "-f", f.name], check=True, capture_output=True)
        return f.read(512)


def test_d_refuses_to_format_on_probe_error(stack: StackProcess, kube: Kubelet) -> None:
    """ext4 with an XFS superblock in sector 0: `blkid -p` calls it ambivalent (exit 8).
    NodeStageVolume must fail, format nothing and leave every byte as it was."""
    vol = kube.create("ambiguous", 64 * MiB, block=True)
    kube.stage(vol, "node-2")
    dev = kube.publish(vol, "node-2")
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True)
    _write_block(dev, 0, _xfs_superblock())
    probe = subprocess.run(["blkid", "-p", dev], capture_output=True, text=True)
    assert probe.returncode in (1, 8), (probe.returncode, probe.stdout, probe.stderr)
    before = hashlib.sha256(_read_block(dev, 0, 64 * MiB)).hexdigest()
    kube.unpublish(vol, dev, "node-2")
    kube.unstage(vol, "node-2")
    fs_cap = _cap()
    err = _rpc_error(lambda: kube.stage(vol, "node-1", cap=fs_cap))
    assert "refusing to format" in (err.details() or ""), err.details()
    assert err.code() != Code.OK
    vol.staging.pop("node-1", None)
    # A refused stage leaves nothing behind: no record, no connection.
    assert not stack.controllers("node-1", vol.nqn)
    assert _code(lambda: kube.stats(vol, kube.staging_path(vol))) == Code.NOT_FOUND
    # Retrying does not change the answer (and still formats nothing).
    assert "refusing to format" in (_rpc_error(lambda: kube.stage(vol, cap=fs_cap)).details()
                                    or "")
    vol.staging.pop("node-1", None)
    kube.stage(vol, "node-1")
    dev = kube.publish(vol, "node-1")
    assert hashlib.sha256(_read_block(dev, 0, 64 * MiB)).hexdigest() == before


def test_e_unstage_refused_while_held(stack: StackProcess, kube: Kubelet) -> None:
    fs = kube.create("held-fs")
    blk = kube.create("held-blk", 16 * MiB, block=True)
    staging = kube.stage(fs)
    target = kube.publish(fs)
    _write_file(os.path.join(target, "f"), b"held")
    err = _rpc_error(lambda: kube.unstage(fs))
    assert err.code() == Code.FAILED_PRECONDITION and "published" in (err.details() or "")
    assert _read_file(os.path.join(staging, "f")) == b"held"
    kube.unpublish(fs, target)
    kube.unstage(fs)
    # Block: the pod is gone (unpublished) but a process still has the device open.
    kube.stage(blk)
    node = kube.publish(blk)
    fd = os.open(node, os.O_RDWR)
    try:
        kube.unpublish(blk, node)
        err = _rpc_error(lambda: kube.unstage(blk))
        assert err.code() == Code.FAILED_PRECONDITION, err.details()
        assert f"pid {os.getpid()}" in (err.details() or ""), err.details()
        assert list(stack.controllers("node-1", blk.nqn).values()) == ["live"]
    finally:
        os.close(fd)
    kube.unstage(blk)
    assert not stack.controllers("node-1", blk.nqn)


def test_f_two_nodes_share_a_multi_writer_block_volume(stack: StackProcess,
                                                       kube: Kubelet) -> None:
    vol = kube.create("rwx", 32 * MiB, block=True, mode=Mode.MULTI_NODE_MULTI_WRITER)
    kube.stage(vol, "node-1")
    kube.stage(vol, "node-2")
    t1 = kube.publish(vol, "node-1")
    t2 = kube.publish(vol, "node-2")
    a, b = os.urandom(MiB), os.urandom(MiB)
    _write_block(t1, 0, a)
    assert _read_block(t2, 0, MiB) == a
    _write_block(t2, 8 * MiB, b)
    assert _read_block(t1, 8 * MiB, MiB) == b
    assert stack.namespaces("node-1", vol.nqn) and stack.namespaces("node-2", vol.nqn)
    kube.unpublish(vol, t2, "node-2")
    kube.unstage(vol, "node-2")
    assert not stack.controllers("node-2", vol.nqn)
    assert _read_block(t1, 8 * MiB, MiB) == b  # node-1 unaffected
