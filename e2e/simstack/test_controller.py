"""ControllerService against the simulator over real SSH: CSI semantics RPC by RPC."""

from __future__ import annotations

import pytest

from rds_csi.controller import ControllerService
from rds_csi.csi import csi_pb2
from rds_csi.status import CsiError

from .conftest import GiB, SimEnv, block_cap, create_req, make_controller, mount_cap

Mode = csi_pb2.VolumeCapability.AccessMode


def code_of(fn, *args) -> str:
    with pytest.raises(CsiError) as err:
        fn(*args)
    return err.value.code.name


def test_create_is_idempotent_and_delete_leaves_nothing(controller: ControllerService,
                                                        sim_env: SimEnv) -> None:
    first = controller.create_volume(create_req("pvc-one", 2 * GiB)).volume
    again = controller.create_volume(create_req("pvc-one", 2 * GiB)).volume
    assert first == again
    assert first.capacity_bytes == 2 * GiB
    assert first.volume_context["nqn"] == f"nqn.2000-02.com.mikrotik:{first.volume_id}"
    assert first.volume_context["nvmeAddress"] == "127.0.0.1"
    assert first.volume_context["fsType"] == "ext4"
    assert dict(first.accessible_topology[0].segments) == {"rds-csi.io/rds": "rds"}
    assert sim_env.slots() == [first.volume_id]
    disk = next(d for d in sim_env.sim.device.disks() if d.slot == first.volume_id)
    assert disk.nvme_tcp_export
    assert len(sim_env.files()) == 1

    controller.delete_volume(csi_pb2.DeleteVolumeRequest(volume_id=first.volume_id))
    assert sim_env.slots() == []
    assert sim_env.files() == []
    controller.delete_volume(csi_pb2.DeleteVolumeRequest(volume_id=first.volume_id))  # again: OK
    controller.delete_volume(csi_pb2.DeleteVolumeRequest(volume_id="not-a-volume"))


def test_incompatible_repeat_is_already_exists(controller: ControllerService) -> None:
    controller.create_volume(create_req("pvc-two", GiB))
    assert code_of(controller.create_volume, create_req("pvc-two", 2 * GiB)) == "ALREADY_EXISTS"
    xfs = create_req("pvc-two", GiB, parameters={"fsType": "xfs"})
    assert code_of(controller.create_volume, xfs) == "ALREADY_EXISTS"


@pytest.mark.parametrize("req,code", [
    (csi_pb2.CreateVolumeRequest(volume_capabilities=[mount_cap()]), "INVALID_ARGUMENT"),
    (csi_pb2.CreateVolumeRequest(name="x"), "INVALID_ARGUMENT"),
    (create_req("x", caps=[mount_cap(Mode.MULTI_NODE_MULTI_WRITER)]), "INVALID_ARGUMENT"),
    (create_req("x", caps=[mount_cap(fs_type="btrfs")]), "INVALID_ARGUMENT"),
    (create_req("x", parameters={"bogus": "1"}), "INVALID_ARGUMENT"),
    (create_req("x", size=-5), "INVALID_ARGUMENT"),
    (create_req("x", size=2**62), "OUT_OF_RANGE"),
    (create_req("x", volume_content_source=csi_pb2.VolumeContentSource(
        snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id="snap-nope"))),
     "NOT_FOUND"),
    (create_req("x", volume_content_source=csi_pb2.VolumeContentSource(
        volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id="pvc-" + "0" * 28))),
     "NOT_FOUND"),
    (create_req("x", accessibility_requirements=csi_pb2.TopologyRequirement(requisite=[
        csi_pb2.Topology(segments={"rds-csi.io/rds": "other-rds"})])), "RESOURCE_EXHAUSTED"),
])
def test_create_rejections(controller: ControllerService, sim_env: SimEnv, req, code) -> None:
    assert code_of(controller.create_volume, req) == code
    assert sim_env.slots() == []


def test_rwx_block_is_allowed(controller: ControllerService) -> None:
    vol = controller.create_volume(create_req(
        "vm-disk", caps=[block_cap(Mode.MULTI_NODE_MULTI_WRITER)])).volume
    assert vol.volume_id


def test_pool_full_is_resource_exhausted(sim_env: SimEnv) -> None:
    controller = make_controller(sim_env)
    assert code_of(controller.create_volume, create_req("huge", 200 * GiB)) == \
        "RESOURCE_EXHAUSTED"
    sim_env.sim.faults.set_pool_full(True)
    assert code_of(controller.create_volume, create_req("small", GiB)) == "RESOURCE_EXHAUSTED"
    assert sim_env.slots() == [] and sim_env.files() == []


def test_capacity_follows_the_pool(sim_env: SimEnv) -> None:
    controller = make_controller(sim_env, capacity_reserve_bytes=10 * GiB)
    before = controller.get_capacity(csi_pb2.GetCapacityRequest()).available_capacity
    assert 80 * GiB < before <= 90 * GiB
    controller.create_volume(create_req("cap", 5 * GiB))
    after = controller.get_capacity(csi_pb2.GetCapacityRequest()).available_capacity
    assert before - after == 5 * GiB
    rwx_fs = csi_pb2.GetCapacityRequest(
        volume_capabilities=[mount_cap(Mode.MULTI_NODE_MULTI_WRITER)])
    assert controller.get_capacity(rwx_fs).available_capacity == 0
    other = csi_pb2.GetCapacityRequest(accessible_topology=csi_pb2.Topology(
        segments={"rds-csi.io/rds": "elsewhere"}))
    assert controller.get_capacity(other).available_capacity == 0
    assert code_of(controller.get_capacity,
                   csi_pb2.GetCapacityRequest(parameters={"nvmePort": "x"})) == "INVALID_ARGUMENT"


def test_list_volumes_paginates(controller: ControllerService) -> None:
    ids = sorted(controller.create_volume(create_req(f"pvc-l{i}")).volume.volume_id
                 for i in range(5))
    seen, token = [], ""
    while True:
        resp = controller.list_volumes(csi_pb2.ListVolumesRequest(max_entries=2,
                                                                  starting_token=token))
        assert len(resp.entries) <= 2
        seen += [e.volume.volume_id for e in resp.entries]
        assert all(not e.status.volume_condition.abnormal for e in resp.entries)
        token = resp.next_token
        if not token:
            break
    assert seen == ids
    assert code_of(controller.list_volumes,
                   csi_pb2.ListVolumesRequest(starting_token="bogus")) == "ABORTED"


def test_expand(controller: ControllerService, sim_env: SimEnv) -> None:
    vol = controller.create_volume(create_req("grow", GiB)).volume
    resp = controller.expand_volume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=3 * GiB),
        volume_capability=mount_cap()))
    assert resp.capacity_bytes == 3 * GiB and resp.node_expansion_required
    assert sim_env.sim.device.disk_file_path(vol.volume_id).stat().st_size == 3 * GiB
    same = controller.expand_volume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GiB),
        volume_capability=block_cap()))
    assert same.capacity_bytes == 3 * GiB and not same.node_expansion_required
    assert code_of(controller.expand_volume, csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.volume_id, capacity_range=csi_pb2.CapacityRange(limit_bytes=GiB))) == \
        "OUT_OF_RANGE"
    assert code_of(controller.expand_volume, csi_pb2.ControllerExpandVolumeRequest(
        volume_id="pvc-" + "1" * 28, capacity_range=csi_pb2.CapacityRange(required_bytes=GiB))) \
        == "NOT_FOUND"
    assert code_of(controller.expand_volume, csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.volume_id)) == "INVALID_ARGUMENT"
    assert code_of(controller.expand_volume, csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.volume_id, capacity_range=csi_pb2.CapacityRange(
            required_bytes=500 * GiB))) == "RESOURCE_EXHAUSTED"


def test_validate_volume_capabilities(controller: ControllerService) -> None:
    vol = controller.create_volume(create_req("val")).volume
    ok = controller.validate_volume_capabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id=vol.volume_id, volume_capabilities=[mount_cap(), block_cap()],
        volume_context=vol.volume_context))
    assert ok.HasField("confirmed") and len(ok.confirmed.volume_capabilities) == 2
    rwx = controller.validate_volume_capabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id=vol.volume_id, volume_capabilities=[mount_cap(Mode.MULTI_NODE_MULTI_WRITER)]))
    assert not rwx.HasField("confirmed") and "raw block" in rwx.message
    xfs = controller.validate_volume_capabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id=vol.volume_id, volume_capabilities=[mount_cap(fs_type="xfs")]))
    assert not xfs.HasField("confirmed")
    assert code_of(controller.validate_volume_capabilities,
                   csi_pb2.ValidateVolumeCapabilitiesRequest(
                       volume_id="pvc-" + "2" * 28, volume_capabilities=[mount_cap()])) == \
        "NOT_FOUND"
    assert code_of(controller.validate_volume_capabilities,
                   csi_pb2.ValidateVolumeCapabilitiesRequest(volume_id=vol.volume_id)) == \
        "INVALID_ARGUMENT"


def test_volume_condition(controller: ControllerService, sim_env: SimEnv) -> None:
    vol = controller.create_volume(create_req("cond")).volume
    req = csi_pb2.ControllerGetVolumeRequest(volume_id=vol.volume_id)
    assert not controller.get_volume(req).status.volume_condition.abnormal
    sim_env.sim.device.execute(f"/disk set [find slot={vol.volume_id}] nvme-tcp-export=no")
    cond = controller.get_volume(req).status.volume_condition
    assert cond.abnormal and "not exported" in cond.message
    # The device refuses to remove a file in use, so a missing file cannot be staged here;
    # a disabled disk is the other abnormal state an operator can cause.
    sim_env.sim.device.execute(f"/disk set [find slot={vol.volume_id}] nvme-tcp-export=yes "
                               "disabled=yes")
    cond = controller.get_volume(req).status.volume_condition
    assert cond.abnormal and "disabled" in cond.message
    assert code_of(controller.get_volume, csi_pb2.ControllerGetVolumeRequest(
        volume_id="pvc-" + "3" * 28)) == "NOT_FOUND"


def _write(sim_env: SimEnv, slot: str, offset: int, data: bytes) -> None:
    with open(sim_env.sim.device.disk_file_path(slot), "r+b") as f:
        f.seek(offset)
        f.write(data)


def _read(sim_env: SimEnv, slot: str, offset: int, length: int) -> bytes:
    with open(sim_env.sim.device.disk_file_path(slot), "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_snapshots_and_restore_copy_data(controller: ControllerService, sim_env: SimEnv) -> None:
    vol = controller.create_volume(create_req("src", GiB)).volume
    _write(sim_env, vol.volume_id, 4096, b"before-snapshot")
    snap = controller.create_snapshot(csi_pb2.CreateSnapshotRequest(
        source_volume_id=vol.volume_id, name="snap-1")).snapshot
    assert snap.ready_to_use and snap.source_volume_id == vol.volume_id
    assert snap.size_bytes == GiB and snap.creation_time.seconds > 0
    snap_disk = next(d for d in sim_env.sim.device.disks() if d.slot == snap.snapshot_id)
    assert not snap_disk.nvme_tcp_export  # snapshots are never exported
    _write(sim_env, vol.volume_id, 4096, b"AFTER-snapshot!")

    again = controller.create_snapshot(csi_pb2.CreateSnapshotRequest(
        source_volume_id=vol.volume_id, name="snap-1")).snapshot
    assert again == snap
    other = controller.create_volume(create_req("other")).volume
    assert code_of(controller.create_snapshot, csi_pb2.CreateSnapshotRequest(
        source_volume_id=other.volume_id, name="snap-1")) == "ALREADY_EXISTS"

    restored = controller.create_volume(create_req(
        "restored", 2 * GiB, volume_content_source=csi_pb2.VolumeContentSource(
            snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
                snapshot_id=snap.snapshot_id)))).volume
    assert restored.content_source.snapshot.snapshot_id == snap.snapshot_id
    assert restored.capacity_bytes == 2 * GiB
    assert _read(sim_env, restored.volume_id, 4096, 15) == b"before-snapshot"

    clone = controller.create_volume(create_req(
        "clone", 0, volume_content_source=csi_pb2.VolumeContentSource(
            volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=vol.volume_id)))).volume
    assert clone.capacity_bytes == GiB
    assert _read(sim_env, clone.volume_id, 4096, 15) == b"AFTER-snapshot!"
    assert code_of(controller.create_volume, create_req(
        "too-small", 0, volume_content_source=csi_pb2.VolumeContentSource(
            volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=vol.volume_id)),
        capacity_range=csi_pb2.CapacityRange(limit_bytes=GiB // 2))) in ("OUT_OF_RANGE",)

    # deleting the source volume keeps the snapshot usable
    controller.delete_volume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id))
    listed = controller.list_snapshots(csi_pb2.ListSnapshotsRequest(snapshot_id=snap.snapshot_id))
    assert [e.snapshot.snapshot_id for e in listed.entries] == [snap.snapshot_id]
    controller.delete_snapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    controller.delete_snapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert snap.snapshot_id not in sim_env.slots()
    assert not any(snap.snapshot_id in p.name for p in sim_env.files())


def test_list_snapshots_filters_and_pages(controller: ControllerService) -> None:
    a = controller.create_volume(create_req("a")).volume.volume_id
    b = controller.create_volume(create_req("b")).volume.volume_id
    snaps_a = {controller.create_snapshot(csi_pb2.CreateSnapshotRequest(
        source_volume_id=a, name=f"sa{i}")).snapshot.snapshot_id for i in range(3)}
    controller.create_snapshot(csi_pb2.CreateSnapshotRequest(source_volume_id=b, name="sb"))
    by_source = controller.list_snapshots(csi_pb2.ListSnapshotsRequest(source_volume_id=a))
    assert {e.snapshot.snapshot_id for e in by_source.entries} == snaps_a
    everything, token = [], ""
    while True:
        page = controller.list_snapshots(csi_pb2.ListSnapshotsRequest(max_entries=1,
                                                                     starting_token=token))
        everything += [e.snapshot.snapshot_id for e in page.entries]
        token = page.next_token
        if not token:
            break
    assert len(everything) == 4 == len(set(everything))
    none = controller.list_snapshots(csi_pb2.ListSnapshotsRequest(snapshot_id="snap-missing"))
    assert list(none.entries) == []
    assert code_of(controller.list_snapshots,
                   csi_pb2.ListSnapshotsRequest(starting_token="zzz")) == "ABORTED"
    assert code_of(controller.create_snapshot, csi_pb2.CreateSnapshotRequest(
        source_volume_id="pvc-" + "4" * 28, name="orphan")) == "NOT_FOUND"
    assert code_of(controller.create_snapshot, csi_pb2.CreateSnapshotRequest(name="x")) == \
        "INVALID_ARGUMENT"
    assert code_of(controller.create_snapshot, csi_pb2.CreateSnapshotRequest(
        source_volume_id=a)) == "INVALID_ARGUMENT"


def test_half_created_volumes_are_repaired(controller: ControllerService, sim_env: SimEnv) -> None:
    vol = controller.create_volume(create_req("half")).volume
    sim_env.sim.device.execute(f"/disk set [find slot={vol.volume_id}] nvme-tcp-export=no")
    again = controller.create_volume(create_req("half")).volume
    assert again.volume_id == vol.volume_id
    disk = next(d for d in sim_env.sim.device.disks() if d.slot == vol.volume_id)
    assert disk.nvme_tcp_export
    # a file left without its disk (crash between the two) is cleaned on retry
    sim_env.sim.device.execute(f"/disk remove [find slot={vol.volume_id}]")
    assert len(sim_env.files()) == 1
    third = controller.create_volume(create_req("half")).volume
    assert third.volume_id == vol.volume_id
    assert len(sim_env.files()) == 1 and sim_env.slots() == [vol.volume_id]


def test_capabilities(controller: ControllerService) -> None:
    names = {csi_pb2.ControllerServiceCapability.RPC.Type.Name(c.rpc.type)
             for c in controller.capabilities().capabilities}
    assert {"CREATE_DELETE_VOLUME", "CREATE_DELETE_SNAPSHOT", "LIST_SNAPSHOTS", "CLONE_VOLUME",
            "EXPAND_VOLUME", "GET_CAPACITY", "LIST_VOLUMES", "GET_VOLUME",
            "VOLUME_CONDITION"} <= names
    assert "PUBLISH_UNPUBLISH_VOLUME" not in names


def test_volume_path_class_is_idempotent(controller: ControllerService, sim_env: SimEnv) -> None:
    req = create_req("vm-class", parameters={"volumePath": "storage-pool/vms"})
    first = controller.create_volume(req).volume
    assert controller.create_volume(req).volume == first
    assert [p.parent.name for p in sim_env.files()] == ["vms"]
    other_dir = create_req("vm-class", parameters={"volumePath": "storage-pool/other"})
    assert code_of(controller.create_volume, other_dir) == "ALREADY_EXISTS"
    controller.delete_volume(csi_pb2.DeleteVolumeRequest(volume_id=first.volume_id))
    assert sim_env.files() == [] and sim_env.slots() == []


def test_retry_of_a_restore_succeeds_after_its_snapshot_is_gone(
        controller: ControllerService) -> None:
    vol = controller.create_volume(create_req("base")).volume
    snap = controller.create_snapshot(csi_pb2.CreateSnapshotRequest(
        source_volume_id=vol.volume_id, name="base-snap")).snapshot
    req = create_req("restore", volume_content_source=csi_pb2.VolumeContentSource(
        snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snap.snapshot_id)))
    restored = controller.create_volume(req).volume
    controller.delete_snapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert controller.create_volume(req).volume == restored
