"""Orphan reconciler: disks and files of this driver that Kubernetes no longer knows.

A volume whose PersistentVolume is gone (deleted by hand, a lost DeleteVolume, a
cluster rebuilt) keeps using pool space forever. The reconciler lists what this
driver created on the RDS (slots with its exact id shape and its metadata comment,
files named after such slots under its base path) and compares with the volume
handles of PersistentVolumes and the snapshot handles of VolumeSnapshotContents of
this driver. It only reports by default; deletion is opt-in, and an orphan is acted
on only after it has been seen orphaned for the whole grace period. If Kubernetes
cannot be listed, the pass does nothing: "cannot see" never means "does not exist".
Nothing outside the driver's own prefix and base path is ever touched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from rds_csi.errors import RdsError
from rds_csi.ids import Naming
from rds_csi.meta import Meta, MetaError
from rds_csi.rds.client import RdsClient

log = logging.getLogger(__name__)

MODES = ("off", "report", "delete")


class ClusterVolumes(Protocol):
    """The Kubernetes side: ids this driver's PVs and snapshot contents refer to."""

    def volume_handles(self) -> set[str]: ...

    def snapshot_handles(self) -> set[str]: ...


class KubernetesVolumes:
    """ClusterVolumes from the Kubernetes API (in-cluster config, else KUBECONFIG)."""

    def __init__(self, driver_name: str) -> None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self._driver = driver_name
        self._core = client.CoreV1Api()
        self._custom = client.CustomObjectsApi()

    def volume_handles(self) -> set[str]:
        handles = set()
        for pv in self._core.list_persistent_volume().items:
            csi = pv.spec.csi if pv.spec else None
            if csi is not None and csi.driver == self._driver and csi.volume_handle:
                handles.add(csi.volume_handle)
        return handles

    def snapshot_handles(self) -> set[str]:
        from kubernetes.client.exceptions import ApiException

        try:
            contents = cast(dict[str, Any], self._custom.list_cluster_custom_object(
                "snapshot.storage.k8s.io", "v1", "volumesnapshotcontents"))
        except ApiException as exc:
            if exc.status == 404:  # snapshot CRDs not installed: no snapshots exist
                return set()
            raise
        handles = set()
        for item in contents.get("items", []):
            spec, status = item.get("spec", {}), item.get("status") or {}
            if spec.get("driver") != self._driver:
                continue
            handle = status.get("snapshotHandle") or spec.get("source", {}).get("snapshotHandle")
            if handle:
                handles.add(handle)
        return handles


@dataclass(frozen=True)
class Orphan:
    kind: str  # "volume", "snapshot", "file"
    slot: str
    file: str
    first_seen: float
    reason: str


@dataclass
class Report:
    orphans: list[Orphan] = field(default_factory=list)
    deleted: list[Orphan] = field(default_factory=list)
    skipped: str = ""  # why the pass did nothing


class OrphanReconciler:
    def __init__(self, rds: RdsClient, naming: Naming, cluster: ClusterVolumes, *,
                 grace_seconds: float = 3600.0, delete: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rds = rds
        self._naming = naming
        self._cluster = cluster
        self._grace = grace_seconds
        self._delete = delete
        self._clock = clock
        self._first_seen: dict[str, float] = {}

    def _candidates(self, volumes: set[str], snapshots: set[str]) -> list[tuple[str, str, str]]:
        """(kind, slot, file) of everything ours that Kubernetes does not reference."""
        found: list[tuple[str, str, str]] = []
        slots_with_disks: set[str] = set()
        for prefix, kind, known, is_id in (
            (self._naming.volume_prefix, "volume", volumes, self._naming.is_volume_id),
            (self._naming.snapshot_prefix, "snapshot", snapshots, self._naming.is_snapshot_id),
        ):
            for disk in self._rds.list_disks(prefix):
                if not is_id(disk.slot):
                    continue
                slots_with_disks.add(disk.slot)
                try:
                    Meta.decode(disk.comment or "")
                except MetaError:
                    continue  # not created by this driver: never touched
                if disk.slot not in known:
                    found.append((kind, disk.slot, disk.file_path or ""))
        base = self._naming.base_path + "/"
        for entry in self._rds.list_files(base):
            name = entry.name
            leaf = name.rsplit("/", 1)[-1]
            if entry.type == "directory" or not leaf.endswith(".img"):
                continue
            slot = leaf[: -len(".img")]
            if not (self._naming.is_volume_id(slot) or self._naming.is_snapshot_id(slot)):
                continue
            expected = {self._naming.file_path(slot), self._naming.snapshot_file_path(slot)}
            if name in expected and slot not in slots_with_disks:
                found.append(("file", slot, name))
        return found

    def run_once(self) -> Report:
        report = Report()
        try:
            volumes = self._cluster.volume_handles()
            snapshots = self._cluster.snapshot_handles()
        except Exception as exc:
            report.skipped = f"cannot list Kubernetes volumes: {exc}"
            log.warning("orphan scan skipped", extra={"fields": {"reason": report.skipped}})
            return report
        try:
            candidates = self._candidates(volumes, snapshots)
        except RdsError as exc:
            report.skipped = f"cannot list the RDS: {exc}"
            log.warning("orphan scan skipped", extra={"fields": {"reason": report.skipped}})
            return report
        now = self._clock()
        keys = {f"{kind}:{slot}" for kind, slot, _ in candidates}
        self._first_seen = {k: v for k, v in self._first_seen.items() if k in keys}
        for kind, slot, file in candidates:
            first = self._first_seen.setdefault(f"{kind}:{slot}", now)
            reason = ("backing file without a disk" if kind == "file"
                      else f"no {'PersistentVolume' if kind == 'volume' else 'snapshot content'}"
                      " references it")
            orphan = Orphan(kind, slot, file, first, reason)
            report.orphans.append(orphan)
            ripe = now - first >= self._grace
            log.warning("orphan on the RDS", extra={"fields": {
                "kind": kind, "slot": slot, "file": file, "reason": reason,
                "orphaned_for_s": round(now - first), "action":
                    "delete" if self._delete and ripe else "report"}})
            if self._delete and ripe:
                try:
                    self._remove(orphan)
                except RdsError as exc:
                    log.error("orphan removal failed", extra={"fields": {
                        "slot": slot, "error": str(exc)}})
                else:
                    report.deleted.append(orphan)
                    self._first_seen.pop(f"{kind}:{slot}", None)
        return report

    def _remove(self, orphan: Orphan) -> None:
        if orphan.kind != "file":
            self._rds.remove_disk(orphan.slot)
        if orphan.file and orphan.file.removeprefix("/").endswith(f"/{orphan.slot}.img"):
            self._rds.remove_file(orphan.file)


class ReconcilerLoop:
    """Runs the reconciler every ``interval`` seconds in a daemon thread."""

    def __init__(self, reconciler: OrphanReconciler, interval: float) -> None:
        self._reconciler = reconciler
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orphans", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._reconciler.run_once()
            except Exception:
                log.exception("orphan reconciler pass failed")
