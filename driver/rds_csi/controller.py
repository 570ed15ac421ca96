"""CSI Controller service: volumes, snapshots, clones, expansion, capacity on the RDS.

Each volume is a file-backed RouterOS disk exported over NVMe/TCP; each
snapshot is an unexported copy of a volume's file. Every operation "looks
before it acts and verifies after": the SSH connection can drop after a
command was sent, so the outcome is always read back from the device instead
of being assumed. The metadata the device cannot report (creation time, the
CSI name's digest, the source of a copy, the StorageClass parameters) lives in
the disk comment (see ``meta.py``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import Int64Value

from rds_csi import capabilities as caps_mod
from rds_csi.capacity import GiB, choose_size, fits
from rds_csi.csi import csi_pb2, csi_pb2_grpc
from rds_csi.errors import (
    AlreadyExists,
    ConnectionLost,
    InvalidValue,
    NoSuchItem,
    NotEnoughSpace,
    RdsCommandError,
    RdsError,
    RdsUnavailable,
)
from rds_csi.ids import IdError, Naming, validate_csi_name
from rds_csi.locks import OperationLocks
from rds_csi.meta import Meta, MetaError, name_digest, params_to_meta
from rds_csi.params import ParameterError, VolumeParams, parse_parameters
from rds_csi.rds.client import Disk, RdsClient
from rds_csi.rds.commands import NvmeExport
from rds_csi.rpc import csi_method
from rds_csi.status import (
    CsiError,
    aborted,
    already_exists,
    internal,
    invalid_argument,
    not_found,
    out_of_range,
    resource_exhausted,
    unavailable,
)

log = logging.getLogger(__name__)

RPC = csi_pb2.ControllerServiceCapability.RPC
CONTROLLER_CAPABILITIES = (
    RPC.CREATE_DELETE_VOLUME,
    RPC.LIST_VOLUMES,
    RPC.GET_CAPACITY,
    RPC.CREATE_DELETE_SNAPSHOT,
    RPC.LIST_SNAPSHOTS,
    RPC.CLONE_VOLUME,
    RPC.EXPAND_VOLUME,
    RPC.GET_VOLUME,
    RPC.VOLUME_CONDITION,
    RPC.SINGLE_NODE_MULTI_WRITER,
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class ControllerConfig:
    naming: Naming = field(default_factory=Naming)
    defaults: VolumeParams = field(default_factory=VolumeParams)
    pool: str = "storage-pool"  # slot or mount point of the pool disk
    capacity_reserve_bytes: int = 0
    default_volume_bytes: int = GiB
    topology_key: str = "rds-csi.io/rds"
    rds_name: str = "rds"


@contextlib.contextmanager
def rds_errors(action: str) -> Iterator[None]:
    """Map RDS client failures to the gRPC status a CO can act on."""
    try:
        yield
    except CsiError:
        raise
    except NotEnoughSpace as exc:
        raise resource_exhausted(f"{action}: the RDS storage pool is full ({exc.message})") from exc
    except InvalidValue as exc:
        raise invalid_argument(f"{action}: {exc}") from exc
    except RdsUnavailable as exc:
        raise unavailable(f"{action}: RDS unavailable: {exc}") from exc
    except ConnectionLost as exc:
        raise unavailable(f"{action}: connection to the RDS lost, outcome unknown: {exc}") from exc
    except NoSuchItem as exc:
        raise not_found(f"{action}: {exc.message}") from exc
    except RdsError as exc:
        raise internal(f"{action}: RDS error: {exc}") from exc


def _decode_meta(disk: Disk) -> Meta | None:
    if not disk.comment:
        return None
    try:
        return Meta.decode(disk.comment)
    except MetaError:
        return None


def _page_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _page_start(token: str, valid: Callable[[str], bool]) -> str:
    try:
        key = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        key = ""
    if not valid(key):
        raise aborted(f"starting_token {token!r} is not a token this driver issued")
    return key


def paginate(items: Sequence[tuple[str, _T]], max_entries: int, starting_token: str,
             valid_key: Callable[[str], bool]) -> tuple[list[_T], str]:
    """A page of ``items`` (sorted by key); the token names the next key, so deletions
    between pages never make a token invalid."""
    if max_entries < 0:
        raise invalid_argument(f"max_entries must not be negative, got {max_entries}")
    start = _page_start(starting_token, valid_key) if starting_token else ""
    remaining = [(k, v) for k, v in items if k >= start]
    if max_entries and len(remaining) > max_entries:
        return [v for _, v in remaining[:max_entries]], _page_token(remaining[max_entries][0])
    return [v for _, v in remaining], ""


class ControllerService:
    """The Controller RPCs as plain methods over an RdsClient."""

    def __init__(self, rds: RdsClient, config: ControllerConfig,
                 *, clock_ns: Callable[[], int] = time.time_ns,
                 locks: OperationLocks | None = None) -> None:
        self.rds = rds
        self.config = config
        self.naming = config.naming
        self._clock_ns = clock_ns
        self._locks = locks or OperationLocks()

    # ----------------------------------------------------------------- capabilities

    def capabilities(self) -> csi_pb2.ControllerGetCapabilitiesResponse:
        return csi_pb2.ControllerGetCapabilitiesResponse(capabilities=[
            csi_pb2.ControllerServiceCapability(rpc=RPC(type=t)) for t in CONTROLLER_CAPABILITIES
        ])

    # ----------------------------------------------------------------- helpers

    def _topology(self) -> csi_pb2.Topology:
        return csi_pb2.Topology(segments={self.config.topology_key: self.config.rds_name})

    def _reachable(self, topology: csi_pb2.Topology) -> bool:
        value = topology.segments.get(self.config.topology_key)
        return value is None or value == self.config.rds_name

    def _params(self, meta: Meta | None) -> VolumeParams:
        return meta.volume_params(self.config.defaults) if meta else self.config.defaults

    def volume_context(self, disk: Disk, meta: Meta | None) -> dict[str, str]:
        """Everything the node needs to attach; derived only from the device, so every RPC
        reports the same context for a volume."""
        p = self._params(meta)
        return {
            "nqn": disk.nqn or self.naming.nqn(disk.slot),
            "nvmeAddress": p.nvme_address,
            "nvmePort": str(disk.port or p.nvme_port),
            "fsType": p.fs_type,
            "ctrlLossTmo": str(p.ctrl_loss_tmo),
            "reconnectDelay": str(p.reconnect_delay),
            "keepAliveTmo": str(p.keep_alive_tmo),
            "migrationTimeoutSeconds": str(p.migration_timeout_seconds),
        }

    def _content_source(self, meta: Meta | None) -> csi_pb2.VolumeContentSource | None:
        if not meta or not meta.source:
            return None
        if self.naming.is_snapshot_id(meta.source):
            return csi_pb2.VolumeContentSource(
                snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=meta.source))
        return csi_pb2.VolumeContentSource(
            volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=meta.source))

    def _volume(self, disk: Disk, meta: Meta | None) -> csi_pb2.Volume:
        volume = csi_pb2.Volume(
            capacity_bytes=disk.size_bytes or (meta.size if meta else 0),
            volume_id=disk.slot,
            volume_context=self.volume_context(disk, meta),
            accessible_topology=[self._topology()],
        )
        source = self._content_source(meta)
        if source is not None:
            volume.content_source.CopyFrom(source)
        return volume

    def _condition(self, disk: Disk, *, check_file: bool) -> csi_pb2.VolumeCondition:
        problems = []
        if disk.disabled:
            problems.append("the disk is disabled on the RDS")
        if not disk.nvme_export:
            problems.append("the disk is not exported over NVMe/TCP")
        if check_file and disk.file_path:
            with rds_errors(f"checking the backing file of {disk.slot}"):
                if self.rds.get_file(disk.file_path) is None:
                    problems.append(f"the backing file {disk.file_path} is missing")
        if problems:
            return csi_pb2.VolumeCondition(abnormal=True, message="; ".join(problems))
        return csi_pb2.VolumeCondition(abnormal=False, message="volume is exported and healthy")

    def _get_disk(self, slot: str, action: str) -> Disk | None:
        with rds_errors(action):
            return self.rds.get_disk(slot)

    def _own_file(self, slot: str, file_path: str | None) -> bool:
        """Only ever delete files this driver named after the slot."""
        return file_path is not None and file_path.removeprefix("/").endswith(f"/{slot}.img")

    def _create(self, slot: str, action: str, create: Callable[[], None]) -> tuple[Disk, bool]:
        """Run a /disk add, converging to exactly one disk whatever the connection does.

        Returns the disk read back from the device and whether it already existed (the
        device said "already have such entry": another creator won, or a retry).
        """
        existed = False
        for attempt in (1, 2):
            with rds_errors(action):
                try:
                    create()
                except AlreadyExists:
                    existed = True  # another creator won, or an earlier attempt of ours
                except ConnectionLost:
                    # The add may or may not have run: look before acting again.
                    log.warning("connection lost during create; checking the device",
                                extra={"fields": {"slot": slot, "attempt": attempt}})
                    if self.rds.get_disk(slot) is None:
                        if attempt == 1:
                            continue
                        raise
            break
        disk = self._get_disk(slot, action)
        if disk is None:
            raise internal(f"{action}: the RDS accepted the command but disk {slot} is not there")
        return disk, existed

    def _look(self, slot: str, file_path: str, action: str) -> Disk | None:
        """Look before creating, in one command for the common case.

        A disk always has its backing file (the device creates both and refuses to remove
        a file in use), so no file means no disk. A file without its disk is what an
        interrupted delete leaves behind: it is removed so a new volume never starts with
        an old volume's data.
        """
        with rds_errors(action):
            if self.rds.get_file(file_path) is None:
                return None
            disk = self.rds.get_disk(slot)
            if disk is None:
                log.warning("removing a backing file left without its disk",
                            extra={"fields": {"slot": slot, "file": file_path}})
                self.rds.remove_file(file_path)
            return disk

    # ----------------------------------------------------------------- volumes

    def create_volume(self, req: csi_pb2.CreateVolumeRequest) -> csi_pb2.CreateVolumeResponse:
        try:
            name = validate_csi_name(req.name, "name")
        except IdError as exc:
            raise invalid_argument(str(exc)) from None
        if not req.volume_capabilities:
            raise invalid_argument("volume_capabilities are required")
        reason = caps_mod.first_unsupported(req.volume_capabilities)
        if reason:
            raise invalid_argument(reason)
        try:
            params = parse_parameters(dict(req.parameters), self.config.defaults)
            fs_type = caps_mod.requested_fs_type(req.volume_capabilities)
        except (ParameterError, ValueError) as exc:
            raise invalid_argument(str(exc)) from None
        if fs_type:
            params = replace(params, fs_type=fs_type)
        if not params.nvme_address:
            raise invalid_argument("no NVMe/TCP address: set the nvmeAddress parameter or the "
                                   "controller's --nvme-address")
        if req.HasField("accessibility_requirements"):
            requisite = req.accessibility_requirements.requisite
            if requisite and not any(self._reachable(t) for t in requisite):
                raise resource_exhausted(
                    f"volume can only be provisioned on RDS {self.config.rds_name!r} "
                    f"({self.config.topology_key}), which is not in the requisite topologies")
        required = req.capacity_range.required_bytes
        limit = req.capacity_range.limit_bytes
        size = choose_size(required, limit, default=self.config.default_volume_bytes)

        slot = self.naming.volume_slot(name)
        source_slot, source_kind = self._content_source_slot(req)
        with self._locks.hold(f"name:{name}", slot, operation=f"CreateVolume {name}"):
            file_path = self.naming.file_path(slot, params.volume_path or None)
            existing = self._look(slot, file_path, f"looking up volume {name}")
            if existing is not None:
                # A retry: answer from what exists, even if the source is gone meanwhile.
                disk = self._existing_volume(existing, name, req, params, source_slot)
                return csi_pb2.CreateVolumeResponse(volume=self._volume(disk, _decode_meta(disk)))
            if source_slot:
                size = self._size_from_source(source_slot, source_kind, size, required, limit)
            disk, fresh = self._new_volume(slot, name, size, params, source_slot, file_path)
            if not fresh:
                disk = self._existing_volume(disk, name, req, params, source_slot)
            return csi_pb2.CreateVolumeResponse(volume=self._volume(disk, _decode_meta(disk)))

    def _size_from_source(self, source_slot: str, source_kind: str, size: int, required: int,
                          limit: int) -> int:
        """The size of a copy: the source's when unspecified, else at least the source's."""
        source = self._get_disk(source_slot, f"reading source {source_slot}")
        source_meta = _decode_meta(source) if source else None
        if source is None or source_meta is None or source_meta.kind != source_kind:
            what = "snapshot" if source_kind == "snap" else "volume"
            raise not_found(f"source {what} {source_slot} does not exist")
        source_size = source.size_bytes or source_meta.size
        size = source_size if required == 0 and limit == 0 else max(size, source_size)
        if limit and size > limit:
            raise out_of_range(
                f"source {source_slot} is {source_size} bytes, more than limit_bytes {limit}")
        return size

    def _content_source_slot(self, req: csi_pb2.CreateVolumeRequest) -> tuple[str, str]:
        if not req.HasField("volume_content_source"):
            return "", ""
        src = req.volume_content_source
        kind = src.WhichOneof("type")
        if kind == "snapshot":
            sid = src.snapshot.snapshot_id
            if not sid:
                raise invalid_argument("volume_content_source.snapshot.snapshot_id is required")
            if not self.naming.is_snapshot_id(sid):
                raise not_found(f"source snapshot {sid} does not exist")
            return sid, "snap"
        if kind == "volume":
            vid = src.volume.volume_id
            if not vid:
                raise invalid_argument("volume_content_source.volume.volume_id is required")
            if not self.naming.is_volume_id(vid):
                raise not_found(f"source volume {vid} does not exist")
            return vid, "vol"
        raise invalid_argument("volume_content_source has no snapshot or volume")

    def _existing_volume(self, disk: Disk, name: str, req: csi_pb2.CreateVolumeRequest,
                         params: VolumeParams, source_slot: str) -> Disk:
        meta = _decode_meta(disk)
        if meta is None or meta.kind != "vol":
            raise already_exists(
                f"slot {disk.slot} exists on the RDS but was not created by this driver")
        if not meta.is_for(name):
            raise already_exists(
                f"slot {disk.slot} belongs to a different volume name (hash collision)")
        size = disk.size_bytes or meta.size
        if not fits(size, req.capacity_range.required_bytes, req.capacity_range.limit_bytes):
            raise already_exists(
                f"volume {name} already exists with {size} bytes, outside the requested range "
                f"[{req.capacity_range.required_bytes}, {req.capacity_range.limit_bytes or 'any'}]")
        if meta.source != source_slot:
            raise already_exists(
                f"volume {name} already exists with content source {meta.source or 'none'}, "
                f"not {source_slot or 'none'}")
        # The directory is not in the comment: the disk's own file path tells it.
        recorded = replace(self._params(meta), volume_path=params.volume_path)
        if disk.port:
            recorded = replace(recorded, nvme_port=disk.port)
        wanted_file = self.naming.file_path(disk.slot, params.volume_path or None)
        if (disk.file_path or "").removeprefix("/") != wanted_file:
            raise already_exists(
                f"volume {name} already exists at {disk.file_path}, not {wanted_file}")
        if recorded != params:
            raise already_exists(
                f"volume {name} already exists with different parameters ({recorded} != {params})")
        if not disk.nvme_export:
            # Half-created (or an operator turned the export off): repair on retry.
            log.warning("re-enabling the NVMe/TCP export of an existing volume",
                        extra={"fields": {"volume_id": disk.slot}})
            with rds_errors(f"exporting {disk.slot}"):
                self.rds.set_export(disk.slot, True)
            repaired = self._get_disk(disk.slot, f"reading {disk.slot}")
            if repaired is None or not repaired.nvme_export:
                raise internal(f"volume {disk.slot} could not be exported")
            return repaired
        return disk

    def _new_volume(self, slot: str, name: str, size: int, params: VolumeParams,
                    source_slot: str, file_path: str) -> tuple[Disk, bool]:
        """Create the disk. Returns it and True, or the disk that turned out to exist
        already (a racing creator, or our own earlier attempt) and False."""
        action = f"creating volume {name} ({slot})"
        meta = Meta("vol", name_digest(name), size, self._clock_ns(), source_slot,
                    params_to_meta(params))
        export = NvmeExport(nqn=self.naming.nqn(slot), port=params.nvme_port)
        if source_slot:
            disk, existed = self._create(slot, action, lambda: self.rds.create_disk_copy(
                slot, source_slot, file_path, size, export=export, comment=meta.encode()))
        else:
            disk, existed = self._create(slot, action, lambda: self.rds.create_disk(
                slot, file_path, size, export=export, comment=meta.encode()))
        created = _decode_meta(disk)
        if existed or created != meta:
            return disk, False  # not this call's creation: the caller checks compatibility
        if disk.size_bytes is not None and disk.size_bytes < size:
            # A copy comes out at the source's size; grow it to what was asked for.
            with rds_errors(f"growing {slot} to {size} bytes"):
                self.rds.resize_disk(slot, size)
            disk = self._get_disk(slot, action) or disk
        if not disk.nvme_export:
            with rds_errors(f"exporting {slot}"):
                self.rds.set_export(slot, True)
            disk = self._get_disk(slot, action) or disk
        if disk.size_bytes is not None and disk.size_bytes < size:
            raise internal(f"volume {slot} has {disk.size_bytes} bytes, expected {size}")
        log.info("volume created", extra={"fields": {
            "volume_id": slot, "name": name, "bytes": size, "source": source_slot}})
        return disk, True

    def delete_volume(self, req: csi_pb2.DeleteVolumeRequest) -> csi_pb2.DeleteVolumeResponse:
        vid = req.volume_id
        if not vid:
            raise invalid_argument("volume_id is required")
        if not self.naming.is_volume_id(vid):
            return csi_pb2.DeleteVolumeResponse()  # no such volume can exist: already deleted
        with self._locks.hold(vid, operation=f"DeleteVolume {vid}"):
            self._delete_disk(vid, self.naming.file_path(vid), "vol")
        return csi_pb2.DeleteVolumeResponse()

    def _delete_disk(self, slot: str, default_file: str, kind: str) -> None:
        action = f"deleting {slot}"
        disk = self._get_disk(slot, action)
        file_path = default_file
        if disk is not None:
            meta = _decode_meta(disk)
            if meta is None or meta.kind != kind:
                raise internal(f"slot {slot} on the RDS was not created by this driver as a "
                               f"{'volume' if kind == 'vol' else 'snapshot'}; not deleting it")
            file_path = disk.file_path or default_file
            with rds_errors(action):
                self.rds.remove_disk(slot)
        if self._own_file(slot, file_path):
            # The device refuses to remove a file a disk still uses, so success here also
            # confirms the disk is gone.
            with rds_errors(action):
                self.rds.remove_file(file_path)
        if disk is not None:
            log.info("deleted", extra={"fields": {"volume_id": slot, "file": file_path}})

    def validate_volume_capabilities(
        self, req: csi_pb2.ValidateVolumeCapabilitiesRequest
    ) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        if not req.volume_id:
            raise invalid_argument("volume_id is required")
        if not req.volume_capabilities:
            raise invalid_argument("volume_capabilities are required")
        disk = self._existing(req.volume_id, "validating")
        meta = _decode_meta(disk)
        reason = caps_mod.first_unsupported(req.volume_capabilities)
        if reason is None and req.volume_context:
            actual = self.volume_context(disk, meta)
            if dict(req.volume_context) != actual:
                reason = "volume_context does not match the volume's context"
        if reason is None and req.parameters:
            try:
                params = parse_parameters(dict(req.parameters), self.config.defaults)
            except ParameterError as exc:
                reason = str(exc)
            else:
                if params != self._params(meta):
                    reason = "parameters differ from those the volume was created with"
        if reason is None:
            fs_types = {c.mount.fs_type for c in req.volume_capabilities
                        if c.WhichOneof("access_type") == "mount"} - {""}
            recorded = self._params(meta).fs_type
            if fs_types - {recorded}:
                reason = f"volume was created for {recorded}, not {sorted(fs_types)}"
        if reason:
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message=reason)
        return csi_pb2.ValidateVolumeCapabilitiesResponse(
            confirmed=csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
                volume_context=req.volume_context,
                volume_capabilities=req.volume_capabilities,
                parameters=req.parameters,
            ))

    def _existing(self, volume_id: str, action: str) -> Disk:
        if not self.naming.is_volume_id(volume_id):
            raise not_found(f"volume {volume_id} does not exist")
        disk = self._get_disk(volume_id, f"{action} {volume_id}")
        if disk is None:
            raise not_found(f"volume {volume_id} does not exist")
        meta = _decode_meta(disk)
        if meta is None or meta.kind != "vol":
            raise not_found(f"volume {volume_id} does not exist (slot not managed by this driver)")
        return disk

    def _volumes(self) -> list[tuple[str, tuple[Disk, Meta]]]:
        with rds_errors("listing volumes"):
            disks = self.rds.list_disks(self.naming.volume_prefix)
        out = []
        for disk in disks:
            meta = _decode_meta(disk)
            if self.naming.is_volume_id(disk.slot) and meta is not None and meta.kind == "vol":
                out.append((disk.slot, (disk, meta)))
        return sorted(out, key=lambda item: item[0])

    def list_volumes(self, req: csi_pb2.ListVolumesRequest) -> csi_pb2.ListVolumesResponse:
        page, token = paginate(self._volumes(), req.max_entries, req.starting_token,
                               self.naming.is_volume_id)
        entries = []
        for disk, meta in page:
            entries.append(csi_pb2.ListVolumesResponse.Entry(
                volume=self._volume(disk, meta),
                status=csi_pb2.ListVolumesResponse.VolumeStatus(
                    volume_condition=self._condition(disk, check_file=False)),
            ))
        return csi_pb2.ListVolumesResponse(entries=entries, next_token=token)

    def get_volume(self, req: csi_pb2.ControllerGetVolumeRequest
                   ) -> csi_pb2.ControllerGetVolumeResponse:
        if not req.volume_id:
            raise invalid_argument("volume_id is required")
        disk = self._existing(req.volume_id, "reading")
        return csi_pb2.ControllerGetVolumeResponse(
            volume=self._volume(disk, _decode_meta(disk)),
            status=csi_pb2.ControllerGetVolumeResponse.VolumeStatus(
                volume_condition=self._condition(disk, check_file=True)),
        )

    def get_capacity(self, req: csi_pb2.GetCapacityRequest) -> csi_pb2.GetCapacityResponse:
        if req.parameters:
            try:
                parse_parameters(dict(req.parameters), self.config.defaults)
            except ParameterError as exc:
                raise invalid_argument(str(exc)) from None
        if caps_mod.first_unsupported(req.volume_capabilities):
            return csi_pb2.GetCapacityResponse(available_capacity=0)
        if req.HasField("accessible_topology") and not self._reachable(req.accessible_topology):
            return csi_pb2.GetCapacityResponse(available_capacity=0)
        with rds_errors("reading pool capacity"):
            pool = self.rds.get_pool(self.config.pool)
        available = max(0, pool.free_bytes - self.config.capacity_reserve_bytes)
        return csi_pb2.GetCapacityResponse(available_capacity=available,
                                           maximum_volume_size=Int64Value(value=available))

    def expand_volume(self, req: csi_pb2.ControllerExpandVolumeRequest
                      ) -> csi_pb2.ControllerExpandVolumeResponse:
        if not req.volume_id:
            raise invalid_argument("volume_id is required")
        if not req.HasField("capacity_range") or not (
            req.capacity_range.required_bytes or req.capacity_range.limit_bytes
        ):
            raise invalid_argument("capacity_range is required")
        if req.HasField("volume_capability"):
            reason = caps_mod.unsupported_reason(req.volume_capability)
            if reason:
                raise invalid_argument(reason)
        vid = req.volume_id
        with self._locks.hold(vid, operation=f"ControllerExpandVolume {vid}"):
            disk = self._existing(vid, "expanding")
            current = disk.size_bytes or 0
            required, limit = req.capacity_range.required_bytes, req.capacity_range.limit_bytes
            if limit and current > limit:
                raise out_of_range(f"volume {vid} is {current} bytes; shrinking to {limit} "
                                   "is not supported")
            target = choose_size(required, limit, default=current)
            if target > current:
                with rds_errors(f"expanding {vid} to {target} bytes"):
                    self.rds.resize_disk(vid, target)
                disk = self._existing(vid, "expanding")
                if (disk.size_bytes or 0) < target:
                    raise internal(f"volume {vid} is {disk.size_bytes} bytes after growing it to "
                                   f"{target}")
                log.info("volume expanded", extra={"fields": {
                    "volume_id": vid, "from": current, "to": disk.size_bytes}})
        block = req.HasField("volume_capability") and \
            req.volume_capability.WhichOneof("access_type") == "block"
        return csi_pb2.ControllerExpandVolumeResponse(
            capacity_bytes=disk.size_bytes or target, node_expansion_required=not block)

    # ----------------------------------------------------------------- snapshots

    def _snapshot(self, disk: Disk, meta: Meta) -> csi_pb2.Snapshot:
        created = Timestamp()
        created.FromNanoseconds(meta.created_ns)
        return csi_pb2.Snapshot(
            size_bytes=disk.size_bytes or meta.size,
            snapshot_id=disk.slot,
            source_volume_id=meta.source,
            creation_time=created,
            ready_to_use=True,
        )

    def create_snapshot(self, req: csi_pb2.CreateSnapshotRequest
                        ) -> csi_pb2.CreateSnapshotResponse:
        if not req.source_volume_id:
            raise invalid_argument("source_volume_id is required")
        try:
            name = validate_csi_name(req.name, "name")
        except IdError as exc:
            raise invalid_argument(str(exc)) from None
        for key in req.parameters:
            if not key.startswith("csi.storage.k8s.io/"):
                raise invalid_argument(f"unknown snapshot parameter {key!r}; none are supported")
        slot = self.naming.snapshot_slot(name)
        src = req.source_volume_id
        with self._locks.hold(f"snapshot:{name}", slot, operation=f"CreateSnapshot {name}"):
            file_path = self.naming.snapshot_file_path(slot)
            existing = self._look(slot, file_path, f"looking up snapshot {name}")
            if existing is None:
                source = self._existing(src, "snapshotting") \
                    if self.naming.is_volume_id(src) else None
                if source is None:
                    raise not_found(f"source volume {src} does not exist")
                size = source.size_bytes or 0
                action = f"creating snapshot {name} ({slot}) of {src}"
                meta = Meta("snap", name_digest(name), size, self._clock_ns(), src)
                existing, _ = self._create(slot, action, lambda: self.rds.create_disk_copy(
                    slot, src, file_path, size, export=None, comment=meta.encode()))
                log.info("snapshot created", extra={"fields": {
                    "snapshot_id": slot, "source": src, "bytes": size}})
            stored = _decode_meta(existing)
            if stored is None or stored.kind != "snap" or not stored.is_for(name):
                raise already_exists(f"slot {slot} exists but is not snapshot {name}")
            if stored.source != src:
                raise already_exists(
                    f"snapshot {name} already exists for volume {stored.source}, not {src}")
            disk = existing
            if disk.nvme_export:
                with rds_errors(f"unexporting snapshot {slot}"):
                    self.rds.set_export(slot, False)
            return csi_pb2.CreateSnapshotResponse(snapshot=self._snapshot(disk, stored))

    def delete_snapshot(self, req: csi_pb2.DeleteSnapshotRequest
                        ) -> csi_pb2.DeleteSnapshotResponse:
        sid = req.snapshot_id
        if not sid:
            raise invalid_argument("snapshot_id is required")
        if not self.naming.is_snapshot_id(sid):
            return csi_pb2.DeleteSnapshotResponse()
        with self._locks.hold(sid, operation=f"DeleteSnapshot {sid}"):
            self._delete_disk(sid, self.naming.snapshot_file_path(sid), "snap")
        return csi_pb2.DeleteSnapshotResponse()

    def list_snapshots(self, req: csi_pb2.ListSnapshotsRequest
                       ) -> csi_pb2.ListSnapshotsResponse:
        items: list[tuple[str, csi_pb2.Snapshot]] = []
        if req.snapshot_id:
            if self.naming.is_snapshot_id(req.snapshot_id):
                disk = self._get_disk(req.snapshot_id, "reading snapshot")
                meta = _decode_meta(disk) if disk else None
                if disk is not None and meta is not None and meta.kind == "snap":
                    items.append((disk.slot, self._snapshot(disk, meta)))
        else:
            with rds_errors("listing snapshots"):
                disks = self.rds.list_disks(self.naming.snapshot_prefix)
            for disk in disks:
                meta = _decode_meta(disk)
                if self.naming.is_snapshot_id(disk.slot) and meta and meta.kind == "snap":
                    items.append((disk.slot, self._snapshot(disk, meta)))
        if req.source_volume_id:
            items = [(k, s) for k, s in items if s.source_volume_id == req.source_volume_id]
        items.sort(key=lambda item: item[0])
        page, token = paginate(items, req.max_entries, req.starting_token,
                               self.naming.is_snapshot_id)
        return csi_pb2.ListSnapshotsResponse(
            entries=[csi_pb2.ListSnapshotsResponse.Entry(snapshot=s) for s in page],
            next_token=token,
        )

    # ----------------------------------------------------------------- health

    def rds_reachable(self) -> tuple[bool, str]:
        try:
            self.rds.ping()
        except RdsCommandError:
            return True, ""  # it answered, even if with an error
        except RdsError as exc:
            return False, str(exc)
        return True, ""


class ControllerServicer(csi_pb2_grpc.ControllerServicer):
    """Thin gRPC adapter; every method calls ControllerService."""

    def __init__(self, service: ControllerService) -> None:
        self._s = service

    @csi_method
    def CreateVolume(self, request: csi_pb2.CreateVolumeRequest,
                     context: grpc.ServicerContext) -> csi_pb2.CreateVolumeResponse:
        return self._s.create_volume(request)

    @csi_method
    def DeleteVolume(self, request: csi_pb2.DeleteVolumeRequest,
                     context: grpc.ServicerContext) -> csi_pb2.DeleteVolumeResponse:
        return self._s.delete_volume(request)

    @csi_method
    def ValidateVolumeCapabilities(
        self, request: csi_pb2.ValidateVolumeCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        return self._s.validate_volume_capabilities(request)

    @csi_method
    def ListVolumes(self, request: csi_pb2.ListVolumesRequest,
                    context: grpc.ServicerContext) -> csi_pb2.ListVolumesResponse:
        return self._s.list_volumes(request)

    @csi_method
    def GetCapacity(self, request: csi_pb2.GetCapacityRequest,
                    context: grpc.ServicerContext) -> csi_pb2.GetCapacityResponse:
        return self._s.get_capacity(request)

    @csi_method
    def ControllerGetCapabilities(
        self, request: csi_pb2.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetCapabilitiesResponse:
        return self._s.capabilities()

    @csi_method
    def ControllerExpandVolume(
        self, request: csi_pb2.ControllerExpandVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerExpandVolumeResponse:
        return self._s.expand_volume(request)

    @csi_method
    def ControllerGetVolume(
        self, request: csi_pb2.ControllerGetVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetVolumeResponse:
        return self._s.get_volume(request)

    @csi_method
    def CreateSnapshot(self, request: csi_pb2.CreateSnapshotRequest,
                       context: grpc.ServicerContext) -> csi_pb2.CreateSnapshotResponse:
        return self._s.create_snapshot(request)

    @csi_method
    def DeleteSnapshot(self, request: csi_pb2.DeleteSnapshotRequest,
                       context: grpc.ServicerContext) -> csi_pb2.DeleteSnapshotResponse:
        return self._s.delete_snapshot(request)

    @csi_method
    def ListSnapshots(self, request: csi_pb2.ListSnapshotsRequest,
                      context: grpc.ServicerContext) -> csi_pb2.ListSnapshotsResponse:
        return self._s.list_snapshots(request)
