"""The resilience monitor: report kernel reconnects, reconnect lost controllers, repair
renumbered devices (real mounts on loop devices for the filesystem and block cases)."""

from __future__ import annotations

import os

import pytest
from nodefix import NQN_A, NQN_B, PREFIX, VOL_A, FakeHost, LoopDevice, is_root, umount_all_under

from rds_csi.csi import csi_pb2
from rds_csi.ids import Naming
from rds_csi.locks import OperationLocks
from rds_csi.metrics import Metrics
from rds_csi.monitor import ResilienceMonitor
from rds_csi.mount import Mounter
from rds_csi.node import NodeConfig, NodeService
from rds_csi.nodestate import STAGED, StateStore, VolumeState
from rds_csi.nvme.sysfs import Namespace

Mode = csi_pb2.VolumeCapability.AccessMode
CTX = {"nqn": NQN_A, "nvmeAddress": "10.0.0.1", "nvmePort": "4420", "fsType": "ext4"}


def ns(minor, name="nvme0n1", dev_path="/nonexistent"):
    return Namespace(name=name, subsys_instance=0, head_instance=1, major=259, minor=minor,
                     size_bytes=1 << 30, dev_path=dev_path, controllers=("nvme0",))


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def world(tmp_path):
    host = FakeHost()
    store = StateStore(tmp_path / "state")
    locks = OperationLocks()
    metrics = Metrics()
    clock = Clock()
    mon = ResilienceMonitor(store, host, Mounter(), locks=locks, metrics=metrics,
                            clock=clock, sleep=lambda s: None, backoff_initial=1,
                            backoff_max=8)
    svc = NodeService(NodeConfig(node_id="n1", naming=Naming()), host, Mounter(), store,
                      locks=locks, metrics=metrics)
    yield mon, svc, host, store, clock, tmp_path
    umount_all_under(tmp_path)


def count(metrics, action, result="ok"):
    return metrics.monitor_actions.labels(action, result)._value.get()


def block_state(tmp_path, devno=(259, 1)):
    return VolumeState(volume_id=VOL_A, nqn=NQN_A, address="10.0.0.1", port=4420,
                       staging_path=str(tmp_path / "staging"), block=True, phase=STAGED,
                       device_name="nvme0n1", device_major=devno[0], device_minor=devno[1])


def test_kernel_reconnecting_is_only_reported(world):
    mon, _, host, store, _, tmp = world
    store.save(block_state(tmp))
    host.set_live(NQN_A, ns(1), state="connecting")
    assert mon.tick() == {VOL_A: "reconnecting"}
    assert mon.tick() == {VOL_A: "reconnecting"}
    cond = mon.condition(VOL_A)
    assert cond.abnormal and "kernel is reconnecting" in cond.message
    assert host.calls == []  # nothing done behind the kernel's back
    assert count(mon.metrics, "reconnecting") == 1
    assert mon.metrics.volume_abnormal.labels(VOL_A)._value.get() == 1
    host.set_live(NQN_A, ns(1))
    assert mon.tick() == {VOL_A: "ok"}
    assert count(mon.metrics, "live_again") == 1
    assert not mon.condition(VOL_A).abnormal
    assert mon.metrics.volume_abnormal.labels(VOL_A)._value.get() == 0


def test_lost_controller_is_reconnected_with_backoff(world):
    mon, _, host, store, clock, tmp = world
    store.save(block_state(tmp))
    host.attach_error = "connection refused"
    assert mon.tick() == {VOL_A: "reconnect-failed"}
    assert "reconnect failed: connection refused" in mon.condition(VOL_A).message
    assert mon.tick() == {VOL_A: "reconnect-failed"}  # inside the backoff: no attempt
    assert host.calls.count(("attach", NQN_A)) == 1
    clock.now += 1.5
    mon.tick()
    assert host.calls.count(("attach", NQN_A)) == 2
    clock.now += 1.5  # backoff doubled to 2 s
    mon.tick()
    assert host.calls.count(("attach", NQN_A)) == 2
    host.attach_error = ""
    host.on_attach[NQN_A] = ns(1)
    clock.now += 10
    assert mon.tick() == {VOL_A: "reconnected"}
    assert count(mon.metrics, "reconnect") == 1 and count(mon.metrics, "reconnect", "error") == 2


def test_busy_volume_is_skipped(world):
    mon, _, host, store, _, tmp = world
    store.save(block_state(tmp))
    with mon.locks.hold(VOL_A, operation="NodePublishVolume"):
        assert mon.tick() == {VOL_A: "busy"}
    assert host.calls == []


def test_volumes_still_staging_are_left_alone(world):
    mon, _, _host, store, _, tmp = world
    from dataclasses import replace

    store.save(replace(block_state(tmp), phase="staging"))
    assert mon.tick() == {}


def test_orphan_cleanup_only_for_unaccounted_driver_nqns(world):
    mon, _, host, store, _, tmp = world
    store.save(block_state(tmp))
    host.set_live(NQN_A, ns(1))
    host.set_live(NQN_B, ns(2))
    host.set_live("nqn.2014-08.org.example:foreign", ns(3))
    assert mon.clean_orphans() == [NQN_B]
    assert ("detach", NQN_A) not in host.calls
    assert ("detach", "nqn.2014-08.org.example:foreign") not in host.calls
    assert count(mon.metrics, "orphan_cleaned") == 1
    assert mon._volume_id(NQN_B) == NQN_B[len(PREFIX) + 1:]


# ---------------------------------------------------------------------- real devices

needs_root = pytest.mark.skipif(not is_root(), reason="needs root for loop devices and mount")


@pytest.fixture
def loops(tmp_path):
    if not is_root():
        pytest.skip("needs root for loop devices and mount")
    made = []

    def make(backing=None, size=64 << 20):
        dev = LoopDevice(backing or tmp_path / "volume.img", size, create=backing is None)
        made.append(dev)
        return dev

    yield made, make
    umount_all_under(tmp_path)
    for d in made:
        d.close()


def stage_fs(svc, tmp, dev):
    svc.host.on_attach[NQN_A] = dev.namespace()
    staging = str(tmp / "staging")
    cap = csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type="ext4"),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER))
    svc.stage(csi_pb2.NodeStageVolumeRequest(volume_id=VOL_A, staging_target_path=staging,
                                             volume_capability=cap, volume_context=CTX))
    targets = []
    for i, ro in ((1, False), (2, True)):
        target = str(tmp / f"pod{i}" / "mount")
        svc.publish(csi_pb2.NodePublishVolumeRequest(
            volume_id=VOL_A, staging_target_path=staging, target_path=target,
            volume_capability=cap, readonly=ro))
        targets.append(target)
    return staging, targets


@needs_root
def test_filesystem_renumbering_is_repaired_without_a_pod_restart(world, loops):
    mon, svc, host, store, _, tmp = world
    _made, make = loops
    old = make()
    staging, (rw_target, ro_target) = stage_fs(svc, tmp, old)
    with open(os.path.join(rw_target, "before"), "w") as f:
        f.write("written before the outage")
        f.flush()
        os.fsync(f.fileno())
    os.sync()
    assert mon.tick() == {VOL_A: "ok"}
    # ctrl_loss_tmo expires: the controller and the device are gone; a new connect gets
    # a new device number (here: another loop device over the same backing file).
    host.lose(NQN_A)
    new = make(backing=old.backing)
    host.on_attach[NQN_A] = new.namespace("nvme0n2")
    assert mon.tick() == {VOL_A: "reconnected+remounted"}
    assert svc.mounter.mounts_at(staging)[-1].devno == new.devno
    for target in (rw_target, ro_target):
        assert svc.mounter.mounts_at(target)[-1].devno == new.devno
        with open(os.path.join(target, "before")) as f:
            assert f.read() == "written before the outage"
    assert svc.mounter.mounts_at(ro_target)[-1].read_only
    assert not svc.mounter.mounts_at(rw_target)[-1].read_only
    with open(os.path.join(rw_target, "after"), "w") as f:
        f.write("written after the repair")
    state = store.load(VOL_A)
    assert state.devno == new.devno and state.device_name == "nvme0n2"
    assert count(mon.metrics, "remount") == 1 and count(mon.metrics, "rebind") == 2
    assert not mon.condition(VOL_A).abnormal
    assert mon.tick() == {VOL_A: "ok"}  # stable afterwards


@needs_root
def test_filesystem_repair_is_refused_while_the_old_device_exists(world, loops):
    mon, svc, host, _store, _, tmp = world
    _, make = loops
    old = make()
    staging, _ = stage_fs(svc, tmp, old)
    new = make(backing=old.backing)
    host.set_live(NQN_A, new.namespace("nvme0n2"))
    host.present.add(old.devno)  # the old head is still there
    assert mon.tick() == {VOL_A: "refused"}
    cond = mon.condition(VOL_A)
    assert cond.abnormal and "recovery refused" in cond.message and "still exists" in \
        cond.message
    assert svc.mounter.mounts_at(staging)[-1].devno == old.devno  # untouched
    assert count(mon.metrics, "refused") == 1
    mon.tick()
    assert count(mon.metrics, "refused") == 1  # logged and counted once per reason


@needs_root
def test_filesystem_repair_is_refused_when_the_new_device_is_blank(world, loops):
    mon, svc, host, _, _, tmp = world
    _, make = loops
    old = make()
    _staging, _ = stage_fs(svc, tmp, old)
    blank = LoopDevice(tmp / "blank.img", 64 << 20)
    try:
        host.set_live(NQN_A, blank.namespace("nvme0n2"))
        assert mon.tick() == {VOL_A: "refused"}
        assert "never formats" in mon.condition(VOL_A).message
        assert svc.mounter.probe(blank.path) is None
    finally:
        blank.close()


@needs_root
def test_block_publish_nodes_are_repointed(world, loops):
    mon, svc, host, store, _, tmp = world
    _, make = loops
    old = make()
    host.on_attach[NQN_A] = old.namespace()
    staging = str(tmp / "staging")
    cap = csi_pb2.VolumeCapability(
        block=csi_pb2.VolumeCapability.BlockVolume(),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=Mode.MULTI_NODE_MULTI_WRITER))
    svc.stage(csi_pb2.NodeStageVolumeRequest(volume_id=VOL_A, staging_target_path=staging,
                                             volume_capability=cap, volume_context=CTX))
    target = str(tmp / "pod" / "dev")
    svc.publish(csi_pb2.NodePublishVolumeRequest(volume_id=VOL_A, staging_target_path=staging,
                                                 target_path=target, volume_capability=cap))
    with open(target, "r+b") as f:
        f.write(b"block payload")
    host.lose(NQN_A)
    new = make(backing=old.backing)
    host.on_attach[NQN_A] = new.namespace("nvme0n2")
    assert mon.tick() == {VOL_A: "reconnected+repointed"}
    assert svc.mounter.block_node(target) == new.devno
    with open(target, "rb") as f:
        assert f.read(13) == b"block payload"
    assert store.load(VOL_A).devno == new.devno
    assert count(mon.metrics, "repoint") == 1


def test_condition_logging_is_rate_limited_while_abnormal(world, caplog):
    """A countdown in an abnormal message must not log a line every pass."""
    import logging

    from rds_csi.monitor import REPEAT_LOG_S, _Track
    from rds_csi.node import HEALTHY, Condition

    mon, _svc, _host, _store, clock, tmp = world
    state, track = block_state(tmp), _Track()
    caplog.set_level(logging.INFO, logger="rds_csi.monitor")

    def lines() -> int:
        return sum(1 for r in caplog.records if r.getMessage() == "volume condition")

    mon._report(state, track, Condition(True, "lost; next attempt in 3s"))
    assert lines() == 1
    for left in (2, 1, 0):
        clock.now += 1
        mon._report(state, track, Condition(True, f"lost; next attempt in {left}s"))
    assert lines() == 1  # same abnormal state, changing message: quiet
    assert track.condition is not None and track.condition.message.endswith("0s")
    clock.now += REPEAT_LOG_S
    mon._report(state, track, Condition(True, "lost; reconnect failed: refused"))
    assert lines() == 2  # a reminder after REPEAT_LOG_S
    mon._report(state, track, HEALTHY)
    assert lines() == 3  # turning normal is always logged
