"""NodeService: CSI semantics with a fake NvmeHost; real mounts on loop devices (root)."""

from __future__ import annotations

import json
import os
import threading

import grpc
import pytest
from nodefix import NQN_A, NQN_B, VOL_A, VOL_B, FakeHost, LoopDevice, is_root, umount_all_under

from rds_csi.csi import csi_pb2
from rds_csi.ids import Naming
from rds_csi.locks import OperationLocks
from rds_csi.metrics import Metrics
from rds_csi.mount import Mounter
from rds_csi.node import NodeConfig, NodeService
from rds_csi.nodestate import StateStore
from rds_csi.nvme.sysfs import Namespace
from rds_csi.status import CsiError

Mode = csi_pb2.VolumeCapability.AccessMode
CTX = {"nqn": NQN_A, "nvmeAddress": "10.0.0.1", "nvmePort": "4420", "fsType": "ext4",
       "ctrlLossTmo": "-1", "reconnectDelay": "5", "keepAliveTmo": "5",
       "migrationTimeoutSeconds": "300"}


def mount_cap(mode=Mode.SINGLE_NODE_WRITER, fs="ext4", flags=()):
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs, mount_flags=list(flags)),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode))


def block_cap(mode=Mode.SINGLE_NODE_WRITER):
    return csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                    access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode))


def fake_ns(minor=99, name="nvme0n1", size=1 << 30):
    return Namespace(name=name, subsys_instance=0, head_instance=1, major=259, minor=minor,
                     size_bytes=size, dev_path=f"/nonexistent/{name}", controllers=("nvme0",))


@pytest.fixture
def env(tmp_path):
    host = FakeHost()
    store = StateStore(tmp_path / "state")
    metrics = Metrics()
    svc = NodeService(NodeConfig(node_id="node-1", driver_name="rds-csi.io", rds_name="rds-1",
                                 max_volumes_per_node=17, naming=Naming(), resize_wait=0.2),
                      host, Mounter(), store, locks=OperationLocks(), metrics=metrics)
    yield svc, host, store, tmp_path
    umount_all_under(tmp_path)


def code_of(fn, *args):
    with pytest.raises(CsiError) as err:
        fn(*args)
    return err.value.code


def stage_req(tmp_path, cap=None, vol=VOL_A, ctx=None, staging=None):
    return csi_pb2.NodeStageVolumeRequest(
        volume_id=vol, staging_target_path=str(staging or tmp_path / "staging" / vol),
        volume_capability=cap or mount_cap(), volume_context=ctx if ctx is not None else CTX)


# ---------------------------------------------------------------------- no root needed


def test_capabilities_and_info(env):
    svc, *_ = env
    types = {c.rpc.type for c in svc.capabilities().capabilities}
    RPC = csi_pb2.NodeServiceCapability.RPC
    assert types == {RPC.STAGE_UNSTAGE_VOLUME, RPC.GET_VOLUME_STATS, RPC.EXPAND_VOLUME,
                     RPC.VOLUME_CONDITION, RPC.SINGLE_NODE_MULTI_WRITER}
    info = svc.info()
    assert info.node_id == "node-1" and info.max_volumes_per_node == 17
    assert dict(info.accessible_topology.segments) == {"rds-csi.io/rds": "rds-1"}


def test_missing_fields_are_invalid_argument(env):
    svc, _, _, tmp = env
    INVALID = grpc.StatusCode.INVALID_ARGUMENT
    r = stage_req(tmp)
    for field in ("volume_id", "staging_target_path", "volume_capability"):
        bad = csi_pb2.NodeStageVolumeRequest()
        bad.CopyFrom(r)
        bad.ClearField(field)
        assert code_of(svc.stage, bad) == INVALID, field
    assert code_of(svc.unstage, csi_pb2.NodeUnstageVolumeRequest(volume_id=VOL_A)) == INVALID
    assert code_of(svc.unstage, csi_pb2.NodeUnstageVolumeRequest(
        staging_target_path="/x")) == INVALID
    pub = csi_pb2.NodePublishVolumeRequest(volume_id=VOL_A, target_path=str(tmp / "t"),
                                           staging_target_path=str(tmp / "s"),
                                           volume_capability=mount_cap())
    for field in ("volume_id", "target_path", "volume_capability"):
        bad = csi_pb2.NodePublishVolumeRequest()
        bad.CopyFrom(pub)
        bad.ClearField(field)
        assert code_of(svc.publish, bad) == INVALID, field
    assert code_of(svc.unpublish, csi_pb2.NodeUnpublishVolumeRequest(volume_id=VOL_A)) == INVALID
    assert code_of(svc.stats, csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOL_A)) == INVALID
    assert code_of(svc.stats, csi_pb2.NodeGetVolumeStatsRequest(volume_path="/x")) == INVALID
    assert code_of(svc.expand, csi_pb2.NodeExpandVolumeRequest(volume_id=VOL_A)) == INVALID
    assert code_of(svc.stage, stage_req(tmp, staging="relative/path")) == INVALID


def test_publish_without_staging_path_is_failed_precondition(env):
    svc, _, _, tmp = env
    req = csi_pb2.NodePublishVolumeRequest(volume_id=VOL_A, target_path=str(tmp / "t"),
                                           volume_capability=mount_cap())
    assert code_of(svc.publish, req) == grpc.StatusCode.FAILED_PRECONDITION
    req.staging_target_path = str(tmp / "never-staged")
    assert code_of(svc.publish, req) == grpc.StatusCode.FAILED_PRECONDITION


def test_unknown_volume_ids_are_not_found(env):
    svc, _, _, tmp = env
    NF = grpc.StatusCode.NOT_FOUND
    assert code_of(svc.stage, stage_req(tmp, vol="not-a-volume")) == NF
    assert code_of(svc.unpublish, csi_pb2.NodeUnpublishVolumeRequest(
        volume_id="pvc-xyz", target_path=str(tmp))) == NF
    # A real id whose path is not one of its paths.
    assert code_of(svc.stats, csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=VOL_A, volume_path=str(tmp))) == NF
    assert code_of(svc.stats, csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=VOL_A, volume_path=str(tmp / "missing"))) == NF


def test_unsupported_capability_and_bad_context(env):
    svc, _, _, tmp = env
    INVALID = grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(svc.stage, stage_req(tmp, cap=mount_cap(
        mode=Mode.MULTI_NODE_MULTI_WRITER))) == INVALID
    assert code_of(svc.stage, stage_req(tmp, cap=mount_cap(fs="btrfs"))) == INVALID
    assert code_of(svc.stage, stage_req(tmp, ctx={**CTX, "nvmeAddress": ""})) == INVALID
    assert code_of(svc.stage, stage_req(tmp, ctx={
        **CTX, "nqn": "nqn.2014-08.org.other:vol"})) == INVALID
    assert code_of(svc.stage, stage_req(tmp, ctx={**CTX, "ctrlLossTmo": "x"})) == INVALID
    assert code_of(svc.stage, stage_req(tmp, ctx={**CTX, "nvmeAddress": "a;b"})) == INVALID


def test_attach_failure_is_unavailable_and_rolled_back(env):
    svc, host, store, tmp = env
    host.attach_error = "connection refused"
    assert code_of(svc.stage, stage_req(tmp, cap=block_cap())) == grpc.StatusCode.UNAVAILABLE
    # The record written before the attach (so a crash mid-stage is known to unstage and to
    # the orphan cleanup) goes with the failed stage: kubelet does not unstage after a
    # final error, so nothing may stay behind.
    assert store.load(VOL_A) is None


def test_block_stage_unstage_with_fake_host(env):
    svc, host, store, tmp = env
    host.on_attach[NQN_A] = fake_ns()
    ctx = {**CTX, "ctrlLossTmo": "600", "reconnectDelay": "2", "keepAliveTmo": "7"}
    svc.stage(stage_req(tmp, cap=block_cap(Mode.MULTI_NODE_MULTI_WRITER), ctx=ctx))
    assert host.options[-1].ctrl_loss_tmo == 600 and host.options[-1].reconnect_delay == 2
    svc.stage(stage_req(tmp, cap=block_cap(Mode.MULTI_NODE_MULTI_WRITER), ctx=ctx))  # again
    state = store.load(VOL_A)
    assert state.phase == "staged" and state.block and state.devno == (259, 99)
    # Staged as block: a filesystem stage of the same volume is a conflict.
    assert code_of(svc.stage, stage_req(tmp)) == grpc.StatusCode.ALREADY_EXISTS
    staging = str(tmp / "staging" / VOL_A)
    svc.unstage(csi_pb2.NodeUnstageVolumeRequest(volume_id=VOL_A, staging_target_path=staging))
    assert ("detach", NQN_A) in host.calls and store.load(VOL_A) is None
    # Idempotent: not staged any more is OK.
    svc.unstage(csi_pb2.NodeUnstageVolumeRequest(volume_id=VOL_A, staging_target_path=staging))


def test_concurrent_operation_on_a_volume_is_aborted(env):
    svc, host, _, tmp = env
    host.on_attach[NQN_A] = fake_ns()
    with svc.locks.hold(VOL_A, operation="NodeStageVolume"):
        assert code_of(svc.stage, stage_req(tmp, cap=block_cap())) == grpc.StatusCode.ABORTED
    svc.stage(stage_req(tmp, cap=block_cap()))


def test_conditions_from_controller_states(env):
    svc, host, _store, tmp = env
    host.on_attach[NQN_A] = fake_ns()
    svc.stage(stage_req(tmp, cap=block_cap()))
    staging = str(tmp / "staging" / VOL_A)
    os.makedirs(staging, exist_ok=True)
    req = csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOL_A, volume_path=staging)
    r = svc.stats(req)
    assert not r.volume_condition.abnormal and r.usage[0].total == 1 << 30
    host.set_live(NQN_A, fake_ns(), state="connecting")
    r = svc.stats(req)
    assert r.volume_condition.abnormal and "reconnecting" in r.volume_condition.message
    assert "nvme0=connecting" in r.volume_condition.message
    host.lose(NQN_A)
    r = svc.stats(req)
    assert r.volume_condition.abnormal and "no NVMe controller" in r.volume_condition.message
    host.set_live(NQN_A, None)
    r = svc.stats(req)
    assert r.volume_condition.abnormal and "no namespace" in r.volume_condition.message


# ---------------------------------------------------------------------- real mounts

needs_root = pytest.mark.skipif(not is_root(), reason="needs root for loop devices and mount")


@pytest.fixture
def loopdev(tmp_path):
    if not is_root():
        pytest.skip("needs root for loop devices and mount")
    devs = []

    def make(size=64 << 20, backing=None):
        dev = LoopDevice(backing or tmp_path / f"vol{len(devs)}.img", size,
                         create=backing is None)
        devs.append(dev)
        return dev

    yield make
    umount_all_under(tmp_path)
    for d in devs:
        d.close()


@needs_root
def test_filesystem_lifecycle(env, loopdev):
    svc, host, store, tmp = env
    dev = loopdev()
    host.on_attach[NQN_A] = dev.namespace()
    staging = str(tmp / "staging" / VOL_A)
    svc.stage(stage_req(tmp, cap=mount_cap(flags=["noatime"])))
    mounts = svc.mounter.mounts_at(staging)
    assert mounts[-1].devno == dev.devno and "noatime" in mounts[-1].options
    svc.stage(stage_req(tmp, cap=mount_cap(flags=["noatime"])))  # already staged: OK
    assert len(svc.mounter.mounts_at(staging)) == 1
    assert code_of(svc.stage, stage_req(tmp, cap=mount_cap(flags=["sync"]))) == \
        grpc.StatusCode.ALREADY_EXISTS
    assert code_of(svc.stage, stage_req(tmp, cap=mount_cap(fs="xfs", flags=["noatime"]))) == \
        grpc.StatusCode.ALREADY_EXISTS
    data = json.loads((tmp / "state" / "volumes" / f"{VOL_A}.json").read_text())
    assert data["version"] == 1 and data["nqn"] == NQN_A and data["fs_type"] == "ext4"
    assert data["staging_path"] == staging and data["mount_flags"] == ["noatime"]
    assert data["phase"] == "staged" and data["address"] == "10.0.0.1" and data["port"] == 4420

    target = str(tmp / "pods" / "p1" / "mount")
    pub = csi_pb2.NodePublishVolumeRequest(volume_id=VOL_A, staging_target_path=staging,
                                           target_path=target, volume_capability=mount_cap())
    svc.publish(pub)
    svc.publish(pub)  # idempotent
    with open(os.path.join(target, "file"), "w") as f:
        f.write("payload")
    ro_target = str(tmp / "pods" / "p2" / "mount")
    ro = csi_pb2.NodePublishVolumeRequest()
    ro.CopyFrom(pub)
    ro.target_path, ro.readonly = ro_target, True
    svc.publish(ro)
    assert svc.mounter.mounts_at(ro_target)[-1].read_only
    with pytest.raises(OSError):
        open(os.path.join(ro_target, "x"), "w").close()
    # Same target, different read-only flag: incompatible.
    rw_again = csi_pb2.NodePublishVolumeRequest()
    rw_again.CopyFrom(ro)
    rw_again.readonly = False
    assert code_of(svc.publish, rw_again) == grpc.StatusCode.ALREADY_EXISTS

    stats = svc.stats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOL_A, volume_path=target))
    assert not stats.volume_condition.abnormal
    units = {u.unit: u for u in stats.usage}
    assert units[csi_pb2.VolumeUsage.BYTES].total > 50 << 20
    assert units[csi_pb2.VolumeUsage.INODES].used > 0

    unstage = csi_pb2.NodeUnstageVolumeRequest(volume_id=VOL_A, staging_target_path=staging)
    with pytest.raises(CsiError) as err:
        svc.unstage(unstage)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and target in err.value.message
    for t in (target, ro_target):
        svc.unpublish(csi_pb2.NodeUnpublishVolumeRequest(volume_id=VOL_A, target_path=t))
        svc.unpublish(csi_pb2.NodeUnpublishVolumeRequest(volume_id=VOL_A, target_path=t))
        assert not os.path.exists(t)
    # Someone else holds the device: unstage refuses and keeps the connection.
    fd = os.open(dev.path, os.O_RDONLY)
    try:
        assert code_of(svc.unstage, unstage) == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        os.close(fd)
    svc.unstage(unstage)
    assert not svc.mounter.is_mount_point(staging)
    assert ("detach", NQN_A) in host.calls and store.load(VOL_A) is None
    # Data survived: stage again, no reformat.
    host.on_attach[NQN_A] = dev.namespace()
    svc.stage(stage_req(tmp))
    with open(os.path.join(staging, "file")) as f:
        assert f.read() == "payload"
    assert svc.metrics.node_actions.labels("format", "ok")._value.get() == 1


@needs_root
def test_never_formats_a_device_that_does_not_probe_blank(env, loopdev):
    svc, host, _, tmp = env
    dev = loopdev()
    with open(dev.path, "r+b") as f:  # a DOS partition table, no filesystem
        f.seek(446)
        f.write(bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little")
                + (4096).to_bytes(4, "little") + bytes(48) + b"\x55\xaa")
    host.on_attach[NQN_A] = dev.namespace()
    with pytest.raises(CsiError) as err:
        svc.stage(stage_req(tmp))
    assert err.value.code == grpc.StatusCode.INTERNAL and "refusing to format" in \
        err.value.message
    # An existing filesystem of another type is not reformatted either.
    svc.mounter.format(dev.path, "ext4")
    host.lose(NQN_A)
    svc.store.delete(VOL_A)
    with pytest.raises(CsiError) as err:
        svc.stage(stage_req(tmp, cap=mount_cap(fs="xfs")))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION


@needs_root
def test_block_publish_makes_a_node_with_the_current_number(env, loopdev):
    svc, host, _, tmp = env
    dev = loopdev()
    host.on_attach[NQN_A] = dev.namespace()
    staging = str(tmp / "staging" / VOL_A)
    svc.stage(stage_req(tmp, cap=block_cap()))
    target = str(tmp / "pods" / "p1" / "dev" / VOL_A)
    pub = csi_pb2.NodePublishVolumeRequest(volume_id=VOL_A, staging_target_path=staging,
                                           target_path=target, volume_capability=block_cap())
    svc.publish(pub)
    svc.publish(pub)
    assert svc.mounter.block_node(target) == dev.devno
    with open(target, "r+b") as f:
        f.write(b"raw block data")
    stats = svc.stats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOL_A, volume_path=target))
    assert not stats.volume_condition.abnormal and stats.usage[0].total == 64 << 20
    # Publishing a filesystem volume's way on a block volume is refused.
    fs_pub = csi_pb2.NodePublishVolumeRequest()
    fs_pub.CopyFrom(pub)
    fs_pub.volume_capability.CopyFrom(mount_cap())
    assert code_of(svc.publish, fs_pub) == grpc.StatusCode.FAILED_PRECONDITION
    unstage = csi_pb2.NodeUnstageVolumeRequest(volume_id=VOL_A, staging_target_path=staging)
    assert code_of(svc.unstage, unstage) == grpc.StatusCode.FAILED_PRECONDITION
    svc.unpublish(csi_pb2.NodeUnpublishVolumeRequest(volume_id=VOL_A, target_path=target))
    assert not os.path.lexists(target)
    svc.unstage(unstage)


@needs_root
def test_expand_block_reports_the_new_size(env, loopdev):
    svc, host, _, tmp = env
    dev = loopdev(32 << 20)
    host.on_attach[NQN_A] = dev.namespace()
    staging = str(tmp / "staging" / VOL_A)
    svc.stage(stage_req(tmp, cap=block_cap()))
    os.makedirs(staging, exist_ok=True)
    dev.grow(64 << 20)
    req = csi_pb2.NodeExpandVolumeRequest(
        volume_id=VOL_A, volume_path=staging,
        capacity_range=csi_pb2.CapacityRange(required_bytes=64 << 20))
    # The (fake) rescan still shows the old size: retry later.
    assert code_of(svc.expand, req) == grpc.StatusCode.UNAVAILABLE
    host.devices[NQN_A] = dev.namespace()
    assert svc.expand(req).capacity_bytes == 64 << 20
    assert ("rescan", NQN_A) in host.calls


@needs_root
def test_expand_xfs_online(env, loopdev):
    import shutil as _sh

    if _sh.which("xfs_growfs") is None:
        pytest.skip("xfsprogs is not installed")
    svc, host, _, tmp = env
    dev = loopdev(320 << 20)
    host.on_attach[NQN_A] = dev.namespace()
    staging = str(tmp / "staging" / VOL_A)
    svc.stage(stage_req(tmp, cap=mount_cap(fs="xfs")))
    before = svc.mounter.statvfs(staging).total_bytes
    dev.grow(640 << 20)
    host.devices[NQN_A] = dev.namespace()
    r = svc.expand(csi_pb2.NodeExpandVolumeRequest(
        volume_id=VOL_A, volume_path=staging,
        capacity_range=csi_pb2.CapacityRange(required_bytes=640 << 20)))
    assert r.capacity_bytes == 640 << 20
    assert svc.mounter.statvfs(staging).total_bytes > before * 1.5


@needs_root
def test_stats_reports_a_stale_mount(env, loopdev):
    svc, host, _, tmp = env
    dev = loopdev()
    host.on_attach[NQN_A] = dev.namespace()
    staging = str(tmp / "staging" / VOL_A)
    svc.stage(stage_req(tmp))
    host.devices[NQN_A] = fake_ns(minor=123, name="nvme0n2")  # renumbered
    r = svc.stats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOL_A, volume_path=staging))
    assert r.volume_condition.abnormal
    assert "stale mount" in r.volume_condition.message and "259:123" in \
        r.volume_condition.message


@needs_root
def test_two_volumes_in_parallel(env, loopdev):
    svc, host, _, tmp = env
    a, b = loopdev(), loopdev()
    host.on_attach[NQN_A] = a.namespace()
    host.on_attach[NQN_B] = b.namespace("nvme1n1")
    errors = []

    def stage(vol, nqn):
        try:
            svc.stage(stage_req(tmp, vol=vol, ctx={**CTX, "nqn": nqn}))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=stage, args=a_) for a_ in
               ((VOL_A, NQN_A), (VOL_B, NQN_B))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert svc.mounter.mounts_at(str(tmp / "staging" / VOL_B))[-1].devno == b.devno
