"""Orphan reconciler against the simulator, with an in-memory Kubernetes."""

from __future__ import annotations

from dataclasses import dataclass, field

from rds_csi.controller import ControllerService
from rds_csi.csi import csi_pb2
from rds_csi.orphans import OrphanReconciler

from .conftest import SimEnv, create_req


@dataclass
class FakeCluster:
    volumes: set[str] = field(default_factory=set)
    snapshots: set[str] = field(default_factory=set)
    broken: bool = False

    def volume_handles(self) -> set[str]:
        if self.broken:
            raise ConnectionError("apiserver unreachable")
        return set(self.volumes)

    def snapshot_handles(self) -> set[str]:
        return set(self.snapshots)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reports_then_deletes_only_ripe_orphans_of_this_driver(
        controller: ControllerService, sim_env: SimEnv) -> None:
    kept = controller.create_volume(create_req("kept")).volume.volume_id
    lost = controller.create_volume(create_req("lost")).volume.volume_id
    snap = controller.create_snapshot(csi_pb2.CreateSnapshotRequest(
        source_volume_id=kept, name="s1")).snapshot.snapshot_id
    # Things that are not ours: a foreign disk and a foreign file under another path,
    # and a disk with our prefix but no rds-csi comment.
    dev = sim_env.sim.device
    assert dev.execute('/disk add type=file file-path=storage-pool/other/db.img file-size=1G '
                       'slot=database').exit_status == 0
    assert dev.execute('/disk add type=file file-path=storage-pool/k8s/manual.img file-size=1G '
                       'slot="pvc-' + "f" * 28 + '"').exit_status == 0
    # A file left without its disk (interrupted delete)
    dev.execute(f"/disk remove [find slot={lost}]")
    cluster = FakeCluster(volumes={kept})
    clock = Clock()
    rec = OrphanReconciler(controller.rds, controller.naming, cluster, grace_seconds=60,
                           delete=True, clock=clock)
    report = rec.run_once()
    kinds = sorted((o.kind, o.slot) for o in report.orphans)
    assert kinds == [("file", lost), ("snapshot", snap)]
    assert report.deleted == []  # not ripe yet
    clock.now += 61
    report = rec.run_once()
    assert sorted(o.slot for o in report.deleted) == sorted([lost, snap])
    slots = sim_env.slots()
    assert kept in slots and "database" in slots and "pvc-" + "f" * 28 in slots
    assert lost not in slots and snap not in slots
    names = {p.name for p in sim_env.files()}
    assert f"{lost}.img" not in names and f"{snap}.img" not in names
    assert "db.img" in names and "manual.img" in names and f"{kept}.img" in names


def test_report_mode_and_unreachable_cluster_never_delete(controller: ControllerService,
                                                         sim_env: SimEnv) -> None:
    vol = controller.create_volume(create_req("alone")).volume.volume_id
    clock = Clock()
    rec = OrphanReconciler(controller.rds, controller.naming, FakeCluster(), grace_seconds=0,
                           delete=False, clock=clock)
    report = rec.run_once()
    assert [o.slot for o in report.orphans] == [vol] and report.deleted == []
    broken = OrphanReconciler(controller.rds, controller.naming, FakeCluster(broken=True),
                              grace_seconds=0, delete=True, clock=clock)
    report = broken.run_once()
    assert report.skipped and report.orphans == [] and vol in sim_env.slots()


def test_an_orphan_that_gets_its_pv_back_resets_the_grace(controller: ControllerService,
                                                        sim_env: SimEnv) -> None:
    vol = controller.create_volume(create_req("late-pv")).volume.volume_id
    cluster, clock = FakeCluster(), Clock()
    rec = OrphanReconciler(controller.rds, controller.naming, cluster, grace_seconds=60,
                           delete=True, clock=clock)
    rec.run_once()
    cluster.volumes.add(vol)  # the provisioner created the PV after all
    clock.now += 30
    assert rec.run_once().orphans == []
    cluster.volumes.clear()
    clock.now += 40
    assert rec.run_once().deleted == []  # first seen again only now
    assert vol in sim_env.slots()
