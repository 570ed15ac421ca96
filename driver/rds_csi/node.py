"""CSI Node service: stage (attach + format/mount), publish (bind / block node),
stats with volume condition, online expansion.

Plain Python over three boundaries (NvmeHost, Mounter, StateStore); the gRPC
servicer at the bottom only translates. Device names are never kept for use:
each RPC resolves the volume's current block device by NQN through sysfs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from rds_csi.capabilities import unsupported_reason
from rds_csi.csi import csi_pb2, csi_pb2_grpc
from rds_csi.ids import Naming
from rds_csi.locks import OperationLocks
from rds_csi.metrics import Metrics
from rds_csi.mount import FS_TYPES, Mounter, MountError
from rds_csi.nodestate import (
    STAGED,
    STAGING,
    PublishTarget,
    StateError,
    StateStore,
    VolumeState,
)
from rds_csi.nvme.cli import ConnectOptions
from rds_csi.nvme.host import AttachError, NvmeHost
from rds_csi.nvme.sysfs import LIVE, TRANSIENT_STATES, Namespace
from rds_csi.params import ParameterError, validate_address
from rds_csi.rpc import csi_method
from rds_csi.status import (
    CsiError,
    already_exists,
    failed_precondition,
    internal,
    invalid_argument,
    not_found,
    unavailable,
)

log = logging.getLogger("rds_csi.node")

Mode = csi_pb2.VolumeCapability.AccessMode
RPC = csi_pb2.NodeServiceCapability.RPC
NODE_CAPABILITIES = (
    RPC.STAGE_UNSTAGE_VOLUME,
    RPC.GET_VOLUME_STATS,
    RPC.EXPAND_VOLUME,
    RPC.VOLUME_CONDITION,
    RPC.SINGLE_NODE_MULTI_WRITER,
)
READ_ONLY_MODES = frozenset({Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY})
# One publish target per node (ReadWriteOncePod). SINGLE_NODE_WRITER stays permissive like
# SINGLE_NODE_MULTI_WRITER: COs that predate the split use it for pods sharing a volume.
SINGLE_WRITER_MODES = frozenset({Mode.SINGLE_NODE_SINGLE_WRITER})
BLOCK_NODE_MODE = 0o660
BLOCK_NODE_MODE_RO = 0o440  # a read-only block publish: no write permission on the node


def block_node_mode(read_only: bool) -> int:
    return BLOCK_NODE_MODE_RO if read_only else BLOCK_NODE_MODE


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    driver_name: str = "rds-csi.io"
    rds_name: str = "rds"
    max_volumes_per_node: int = 0
    naming: Naming = field(default_factory=Naming)
    host_nqn: str = ""  # passed to nvme connect -q when set
    resize_wait: float = 10.0  # seconds to wait for a rescan to show the new size
    monitor_wait: float = 10.0  # seconds an RPC waits for the monitor's check of its volume

    @property
    def topology_key(self) -> str:
        return f"{self.driver_name}/rds"


@dataclass(frozen=True)
class Condition:
    abnormal: bool
    message: str

    def to_proto(self) -> csi_pb2.VolumeCondition:
        return csi_pb2.VolumeCondition(abnormal=self.abnormal, message=self.message)


HEALTHY = Condition(False, "volume is healthy")


def connect_options(state: VolumeState) -> ConnectOptions:
    return ConnectOptions(ctrl_loss_tmo=state.ctrl_loss_tmo,
                          reconnect_delay=state.reconnect_delay,
                          keep_alive_tmo=state.keep_alive_tmo,
                          host_nqn=state.host_nqn)


def assess(host: NvmeHost, mounter: Mounter, state: VolumeState,
           path: str | None = None) -> tuple[Condition, Namespace | None]:
    """How the volume is doing right now, read from sysfs and mountinfo.

    ``path`` is the staging path or a publish target to check; None checks the
    staging mount (filesystems) or every publish node (block).
    """
    ctrls = host.controllers(state.nqn)
    ns = host.resolve(state.nqn)
    if not ctrls:
        return Condition(True, f"no NVMe controller for {state.nqn}: the connection was lost "
                               "(ctrl_loss_tmo expired or disconnected); the node plugin "
                               "is reconnecting"), ns
    if not any(c.state == LIVE for c in ctrls):
        states = ", ".join(f"{c.name}={c.state}" for c in ctrls)
        if any(c.state in TRANSIENT_STATES for c in ctrls):
            return Condition(True, f"NVMe/TCP controller not live ({states}): the kernel is "
                                   "reconnecting; I/O is queued"), ns
        return Condition(True, f"NVMe/TCP controller not live ({states})"), ns
    if ns is None:
        return Condition(True, f"controller for {state.nqn} is live but has no namespace "
                               "block device"), None
    if state.block:
        targets = [path] if path and path != state.staging_path else list(state.publish)
        for target in targets:
            node = mounter.block_node(target)
            if node is None:
                return Condition(True, f"{target} is not a block device node"), ns
            if node != ns.devno:
                return Condition(True, f"{target} points at {node[0]}:{node[1]} but the "
                                       f"volume is now {ns.devno_text} ({ns.name})"), ns
        return HEALTHY, ns
    where = path or state.staging_path
    try:
        mounts = mounter.mounts_at(where)
    except MountError as exc:
        return Condition(True, str(exc)), ns
    if not mounts:
        return Condition(True, f"{where} is not mounted"), ns
    top = mounts[-1]
    if top.devno != ns.devno:
        return Condition(True, f"stale mount at {where}: mounted from {top.major}:{top.minor} "
                               f"but the volume is now {ns.devno_text} ({ns.name})"), ns
    problem = mounter.check_path(where)
    if problem:
        return Condition(True, f"stale mount: {problem}"), ns
    return HEALTHY, ns


class NodeService:
    """The Node RPCs as plain methods."""

    def __init__(
        self,
        config: NodeConfig,
        host: NvmeHost,
        mounter: Mounter,
        store: StateStore,
        *,
        locks: OperationLocks | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.host = host
        self.mounter = mounter
        self.store = store
        self.locks = locks or OperationLocks()
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._sleep = sleep

    # ------------------------------------------------------------------ helpers

    def _count(self, action: str, result: str) -> None:
        self.metrics.node_actions.labels(action, result).inc()

    def _hold(self, volume_id: str, operation: str) -> contextlib.AbstractContextManager[None]:
        """The volume's lock: ABORTED while another RPC works on it; waits (up to
        monitor_wait) while the monitor is only checking it."""
        return self.locks.hold(volume_id, operation=operation, wait=self.config.monitor_wait)

    def _check_id(self, volume_id: str) -> None:
        if not volume_id:
            raise invalid_argument("volume_id is required")
        if not self.config.naming.is_volume_id(volume_id):
            raise not_found(f"volume {volume_id!r} does not exist (not a volume id of this "
                            "driver)")

    def _load(self, volume_id: str) -> VolumeState | None:
        try:
            return self.store.load(volume_id)
        except StateError as exc:
            raise internal(f"node state of {volume_id}: {exc}") from exc

    def _save(self, state: VolumeState) -> None:
        try:
            self.store.save(state)
        except (StateError, OSError) as exc:
            raise internal(f"cannot record node state of {state.volume_id}: {exc}") from exc

    @contextlib.contextmanager
    def _mount_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (MountError, OSError) as exc:  # ProbeError is a MountError
            raise internal(f"{action}: {exc}") from exc

    @staticmethod
    def _abs(path: str, what: str) -> str:
        if not path:
            raise invalid_argument(f"{what} is required")
        if not os.path.isabs(path) or "\x00" in path:
            raise invalid_argument(f"{what} must be an absolute path, got {path!r}")
        return os.path.normpath(path)

    def _capability(self, req_cap: csi_pb2.VolumeCapability, present: bool) -> None:
        if not present:
            raise invalid_argument("volume_capability is required")
        reason = unsupported_reason(req_cap)
        if reason:
            raise invalid_argument(reason)

    def _context(self, volume_id: str, ctx: dict[str, str]) -> tuple[str, str, int,
                                                                      ConnectOptions, str]:
        nqn = ctx.get("nqn") or self.config.naming.nqn(volume_id)
        if not self.host.owns(nqn):
            raise invalid_argument(f"volume_context nqn {nqn!r} is not under this driver's "
                                   f"NQN prefix {self.config.naming.nqn_prefix}")
        address = ctx.get("nvmeAddress", "")
        if not address:
            raise invalid_argument("volume_context has no nvmeAddress: was the volume created "
                                   "by this driver?")
        try:
            address = validate_address(address)
            port = int(ctx.get("nvmePort", "4420"))
            opts = ConnectOptions(
                ctrl_loss_tmo=int(ctx.get("ctrlLossTmo", "-1")),
                reconnect_delay=int(ctx.get("reconnectDelay", "5")),
                keep_alive_tmo=int(ctx.get("keepAliveTmo", "5")),
                host_nqn=self.config.host_nqn,
            )
        except (ParameterError, ValueError) as exc:
            raise invalid_argument(f"volume_context: {exc}") from exc
        if not 0 < port < 65536:
            raise invalid_argument(f"volume_context nvmePort {port} is out of range")
        fs_type = ctx.get("fsType", "")
        return nqn, address, port, opts, fs_type

    def _attach(self, nqn: str, address: str, port: int, opts: ConnectOptions) -> Namespace:
        try:
            ns = self.host.attach(nqn, address, port, opts)
        except AttachError as exc:
            self._count("attach", "error")
            raise unavailable(f"cannot attach {nqn} from {address}:{port}: {exc}") from exc
        self._count("attach", "ok")
        return ns

    def _staged(self, volume_id: str, staging_path: str | None = None) -> VolumeState:
        state = self._load(volume_id)
        if state is None or state.phase != STAGED:
            raise failed_precondition(f"volume {volume_id} is not staged on node "
                                      f"{self.config.node_id}")
        if staging_path is not None and state.staging_path != staging_path:
            raise failed_precondition(f"volume {volume_id} is staged at {state.staging_path}, "
                                      f"not at {staging_path}")
        return state

    # ------------------------------------------------------------------ stage

    def stage(self, req: csi_pb2.NodeStageVolumeRequest) -> csi_pb2.NodeStageVolumeResponse:
        if not req.volume_id:
            raise invalid_argument("volume_id is required")
        staging = self._abs(req.staging_target_path, "staging_target_path")
        self._capability(req.volume_capability, req.HasField("volume_capability"))
        self._check_id(req.volume_id)
        cap = req.volume_capability
        block = cap.WhichOneof("access_type") == "block"
        nqn, address, port, opts, ctx_fs = self._context(req.volume_id,
                                                         dict(req.volume_context))
        fs_type = "" if block else (cap.mount.fs_type or ctx_fs or "ext4")
        if not block and fs_type not in FS_TYPES:
            raise invalid_argument(f"filesystem {fs_type!r} is not supported")
        read_only = cap.access_mode.mode in READ_ONLY_MODES
        flags = tuple(cap.mount.mount_flags) if not block else ()
        if read_only and not block and "ro" not in flags:
            flags = (*flags, "ro")
        with self._hold(req.volume_id, "NodeStageVolume"):
            existing = self._load(req.volume_id)
            if existing is not None:
                conflict = None
                if existing.staging_path != staging:
                    conflict = f"is staged at {existing.staging_path}"
                elif existing.block != block:
                    conflict = f"is staged as a {'block' if existing.block else 'filesystem'} " \
                               "volume"
                elif existing.fs_type != fs_type:
                    conflict = f"is staged with filesystem {existing.fs_type}"
                elif sorted(existing.mount_flags) != sorted(flags):
                    conflict = f"is staged with mount flags {list(existing.mount_flags)}"
                elif existing.nqn != nqn:
                    conflict = f"is staged from {existing.nqn}"
                if conflict:
                    raise already_exists(f"volume {req.volume_id} {conflict} on node "
                                         f"{self.config.node_id}, incompatible with this "
                                         "request")
            state = VolumeState(
                volume_id=req.volume_id, nqn=nqn, address=address, port=port,
                staging_path=staging, block=block, fs_type=fs_type, mount_flags=flags,
                read_only=read_only, ctrl_loss_tmo=opts.ctrl_loss_tmo,
                reconnect_delay=opts.reconnect_delay, keep_alive_tmo=opts.keep_alive_tmo,
                host_nqn=opts.host_nqn, phase=STAGING,
                publish=dict(existing.publish) if existing else {},
            )
            if existing is None:
                # Recorded before anything happens on the host, so an interrupted
                # stage is known to unstage and to the orphan cleanup.
                self._save(state)
            try:
                ns = self._attach(nqn, address, port, opts)
                state = state.with_device(ns.name, ns.major, ns.minor)
                if not block:
                    self._stage_filesystem(state, ns)
            except CsiError:
                if existing is None or existing.phase != STAGED:
                    self._roll_back(state)
                raise
            state = replace(state, phase=STAGED)
            self._save(state)
            log.info("staged", extra={"fields": {
                "volume_id": req.volume_id, "device": ns.name, "devno": ns.devno_text,
                "staging": staging, "block": block, "fs_type": fs_type}})
        return csi_pb2.NodeStageVolumeResponse()

    def _roll_back(self, state: VolumeState) -> None:
        """A stage that failed leaves nothing behind: no record, and no connection unless
        something on the node uses the device. (A CO may never call NodeUnstageVolume
        after a final error; kubelet does not.)"""
        try:
            ns = self.host.resolve(state.nqn)
            users = self.mounter.holders(ns.major, ns.minor) if ns is not None else []
            if users:
                log.warning("failed stage: device in use, connection kept", extra={"fields": {
                    "volume_id": state.volume_id, "holders": [str(h) for h in users]}})
            elif self.host.owns(state.nqn) and self.host.controllers(state.nqn):
                self.host.detach(state.nqn)
                self._count("detach", "ok")
            self.store.delete(state.volume_id)
        except (AttachError, MountError, StateError, OSError) as exc:
            log.warning("failed stage: cleanup incomplete", extra={"fields": {
                "volume_id": state.volume_id, "error": str(exc)}})

    def _stage_filesystem(self, state: VolumeState, ns: Namespace) -> None:
        staging = state.staging_path
        with self._mount_errors(f"stage {state.volume_id}"):
            mounts = self.mounter.mounts_at(staging)
            if mounts:
                top = mounts[-1]
                if top.devno == ns.devno:
                    if top.fstype != state.fs_type:
                        raise already_exists(f"{staging} is mounted with {top.fstype}, not "
                                             f"{state.fs_type}")
                    return  # already staged correctly
                raise already_exists(
                    f"{staging} already has a mount of {top.source} ({top.major}:{top.minor}), "
                    f"not volume {state.volume_id} ({ns.devno_text})")
            elsewhere = [m.mount_point for m in self.mounter.mounts_of(ns.major, ns.minor)]
            if elsewhere:
                raise failed_precondition(f"{ns.name} of volume {state.volume_id} is already "
                                          f"mounted at {', '.join(elsewhere)}")
            found = self.mounter.probe(ns.dev_path)
            if found is None:
                self.mounter.format(ns.dev_path, state.fs_type)
                self._count("format", "ok")
            elif found != state.fs_type:
                raise failed_precondition(f"volume {state.volume_id} holds a {found} filesystem, "
                                          f"but {state.fs_type} was requested; not reformatting")
            Path(staging).mkdir(parents=True, exist_ok=True)
            self.mounter.mount(ns.dev_path, staging, state.fs_type, state.mount_flags)
            self._count("mount", "ok")

    # ------------------------------------------------------------------ unstage

    def unstage(self, req: csi_pb2.NodeUnstageVolumeRequest
                ) -> csi_pb2.NodeUnstageVolumeResponse:
        if not req.volume_id:
            raise invalid_argument("volume_id is required")
        staging = self._abs(req.staging_target_path, "staging_target_path")
        self._check_id(req.volume_id)
        with self._hold(req.volume_id, "NodeUnstageVolume"):
            state = self._load(req.volume_id)
            if state is not None and state.staging_path != staging:
                raise failed_precondition(f"volume {req.volume_id} is staged at "
                                          f"{state.staging_path}, not at {staging}")
            nqn = state.nqn if state else self.config.naming.nqn(req.volume_id)
            if state is not None:
                still = [t for t in state.publish if self._target_in_use(t)]
                if still:
                    raise failed_precondition(f"volume {req.volume_id} is still published at "
                                              f"{', '.join(still)}")
            ns = self.host.resolve(nqn)
            with self._mount_errors(f"unstage {req.volume_id}"):
                ours = self.mounter.mounts_at(staging)
                if ns is not None:
                    others = self.mounter.holders(ns.major, ns.minor, ignore_mounts=[staging])
                    if others:
                        raise failed_precondition(
                            f"volume {req.volume_id} ({ns.name}) is still in use: "
                            f"{'; '.join(map(str, others))}")
                for _ in ours:
                    self.mounter.unmount(staging)
                    self._count("unmount", "ok")
            if ns is not None:
                left = self.mounter.holders(ns.major, ns.minor)
                if left:
                    raise failed_precondition(f"volume {req.volume_id} ({ns.name}) is still in "
                                              f"use after unmount: {'; '.join(map(str, left))}")
            if self.host.owns(nqn) and self.host.controllers(nqn):
                try:
                    self.host.detach(nqn)
                    self._count("detach", "ok")
                except AttachError as exc:
                    self._count("detach", "error")
                    raise internal(f"cannot disconnect {nqn}: {exc}") from exc
            self.store.delete(req.volume_id)
            log.info("unstaged", extra={"fields": {"volume_id": req.volume_id, "nqn": nqn}})
        return csi_pb2.NodeUnstageVolumeResponse()

    def _target_in_use(self, target: str) -> bool:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return False
        return stat.S_ISBLK(st.st_mode) or self.mounter.is_mount_point(target)

    # ------------------------------------------------------------------ publish

    def publish(self, req: csi_pb2.NodePublishVolumeRequest
                ) -> csi_pb2.NodePublishVolumeResponse:
        if not req.volume_id:
            raise invalid_argument("volume_id is required")
        target = self._abs(req.target_path, "target_path")
        self._capability(req.volume_capability, req.HasField("volume_capability"))
        if not req.staging_target_path:
            raise failed_precondition("staging_target_path is required: this plugin stages "
                                      "volumes (STAGE_UNSTAGE_VOLUME)")
        staging = self._abs(req.staging_target_path, "staging_target_path")
        self._check_id(req.volume_id)
        cap = req.volume_capability
        block = cap.WhichOneof("access_type") == "block"
        read_only = req.readonly or cap.access_mode.mode in READ_ONLY_MODES
        flags = tuple(cap.mount.mount_flags) if not block else ()
        with self._hold(req.volume_id, "NodePublishVolume"):
            state = self._staged(req.volume_id, staging)
            if state.block != block:
                raise failed_precondition(
                    f"volume {req.volume_id} is staged as a "
                    f"{'block' if state.block else 'filesystem'} volume; cannot publish it as "
                    f"{'block' if block else 'a filesystem'}")
            if not block and cap.mount.fs_type and cap.mount.fs_type != state.fs_type:
                raise already_exists(f"volume {req.volume_id} is staged with {state.fs_type}, "
                                     f"not {cap.mount.fs_type}")
            pub = PublishTarget(read_only=read_only, mount_flags=flags)
            known = state.publish.get(target)
            if known is not None and known != pub:
                raise already_exists(
                    f"volume {req.volume_id} is already published at {target} with "
                    f"read_only={known.read_only} mount_flags={list(known.mount_flags)}")
            others = sorted(t for t in state.publish if t != target)
            if others and cap.access_mode.mode in SINGLE_WRITER_MODES:
                # The spec's second-publish table: a single-writer mode allows one target.
                raise failed_precondition(
                    f"volume {req.volume_id} is already published at {', '.join(others)} and "
                    f"its access mode {Mode.Mode.Name(cap.access_mode.mode)} allows one "
                    "target on the node")
            # Record first: a crash between the mount and the save must not leave a
            # publish the unstage check cannot see.
            state = state.with_publish(target, pub)
            self._save(state)
            if block:
                self._publish_block(state, target, pub)
            else:
                self._publish_filesystem(state, target, pub)
            log.info("published", extra={"fields": {
                "volume_id": req.volume_id, "target": target, "read_only": read_only}})
        return csi_pb2.NodePublishVolumeResponse()

    def _publish_block(self, state: VolumeState, target: str, pub: PublishTarget) -> None:
        ns = self.host.resolve(state.nqn)
        if ns is None:
            raise unavailable(f"volume {state.volume_id} has no block device right now "
                              f"({state.nqn} is not connected); retry")
        with self._mount_errors(f"publish {state.volume_id}"):
            try:
                st = os.lstat(target)
            except FileNotFoundError:
                st = None
            if st is not None:
                if self.mounter.is_mount_point(target):
                    raise already_exists(f"{target} is a mount point, not this driver's block "
                                         "device node")
                if stat.S_ISDIR(st.st_mode):
                    raise already_exists(f"{target} is a directory; a block volume needs a "
                                         "device node there")
                if stat.S_ISREG(st.st_mode) and st.st_size > 0:
                    raise already_exists(f"{target} is a non-empty file")
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            self.mounter.mknod_block(target, ns.major, ns.minor,
                                     block_node_mode(pub.read_only))
            self._count("mknod", "ok")

    def _publish_filesystem(self, state: VolumeState, target: str, pub: PublishTarget) -> None:
        with self._mount_errors(f"publish {state.volume_id}"):
            staged = self.mounter.mounts_at(state.staging_path)
            if not staged:
                raise failed_precondition(f"volume {state.volume_id} is not mounted at its "
                                          f"staging path {state.staging_path}")
            devno = staged[-1].devno
            mounts = self.mounter.mounts_at(target)
            if mounts:
                top = mounts[-1]
                if top.devno != devno:
                    raise already_exists(f"{target} already has a mount of {top.source} "
                                         f"({top.major}:{top.minor})")
                if top.read_only != pub.read_only:
                    raise already_exists(f"{target} is mounted {'ro' if top.read_only else 'rw'}"
                                         f", requested {'ro' if pub.read_only else 'rw'}")
                return
            Path(target).mkdir(parents=True, exist_ok=True)
            self.mounter.bind_mount(state.staging_path, target, read_only=pub.read_only)
            self._count("bind", "ok")

    # ------------------------------------------------------------------ unpublish

    def unpublish(self, req: csi_pb2.NodeUnpublishVolumeRequest
                  ) -> csi_pb2.NodeUnpublishVolumeResponse:
        if not req.volume_id:
            raise invalid_argument("volume_id is required")
        target = self._abs(req.target_path, "target_path")
        self._check_id(req.volume_id)
        with self._hold(req.volume_id, "NodeUnpublishVolume"):
            with self._mount_errors(f"unpublish {req.volume_id}"):
                for _ in self.mounter.mounts_at(target):
                    self.mounter.unmount(target)
                    self._count("unmount", "ok")
                try:
                    st = os.lstat(target)
                except FileNotFoundError:
                    st = None
                if st is not None:
                    if stat.S_ISDIR(st.st_mode):
                        try:
                            os.rmdir(target)
                        except OSError as exc:
                            raise internal(f"cannot remove {target}: {exc}") from exc
                    elif stat.S_ISBLK(st.st_mode) or (stat.S_ISREG(st.st_mode)
                                                      and st.st_size == 0):
                        os.unlink(target)
                    else:
                        raise internal(f"{target} is neither a mount, a directory nor a device "
                                       "node this driver created; not removing it")
            state = self._load(req.volume_id)
            if state is not None and target in state.publish:
                self._save(state.with_publish(target, None))
            log.info("unpublished", extra={"fields": {"volume_id": req.volume_id,
                                                      "target": target}})
        return csi_pb2.NodeUnpublishVolumeResponse()

    # ------------------------------------------------------------------ stats

    def _volume_path(self, volume_id: str, path: str) -> str:
        """volume_path of NodeGetVolumeStats/NodeExpandVolume: required; a path that cannot
        be a staging or publish path (not absolute) holds no volume: NOT_FOUND, as the spec's
        "does not exist on the specified volume_path" (and csi-sanity) want."""
        if not path:
            raise invalid_argument("volume_path is required")
        self._check_id(volume_id)
        if not os.path.isabs(path) or "\x00" in path:
            raise not_found(f"volume {volume_id} is not at {path!r}: staging and publish "
                            "paths are absolute")
        return os.path.normpath(path)

    def _path_state(self, volume_id: str, path: str) -> VolumeState:
        if not os.path.lexists(path):
            raise not_found(f"{path} does not exist")
        state = self._load(volume_id)
        if state is None or state.phase != STAGED:
            raise not_found(f"volume {volume_id} is not staged on node {self.config.node_id}")
        if path != state.staging_path and path not in state.publish:
            raise not_found(f"{path} is not a staging or publish path of volume {volume_id}")
        return state

    def stats(self, req: csi_pb2.NodeGetVolumeStatsRequest
              ) -> csi_pb2.NodeGetVolumeStatsResponse:
        if not req.volume_id:
            raise invalid_argument("volume_id is required")
        path = self._volume_path(req.volume_id, req.volume_path)
        state = self._path_state(req.volume_id, path)
        condition, ns = assess(self.host, self.mounter, state,
                               None if path == state.staging_path and state.block else path)
        usage: list[csi_pb2.VolumeUsage] = []
        Unit = csi_pb2.VolumeUsage.Unit
        if state.block:
            if ns is not None:
                usage.append(csi_pb2.VolumeUsage(unit=Unit.BYTES, total=ns.size_bytes))
        elif not condition.abnormal:
            try:
                fs = self.mounter.statvfs(path)
            except OSError as exc:
                condition = Condition(True, f"statfs {path} failed: {exc.strerror}")
            else:
                usage = [
                    csi_pb2.VolumeUsage(unit=Unit.BYTES, total=fs.total_bytes,
                                        available=fs.available_bytes, used=fs.used_bytes),
                    csi_pb2.VolumeUsage(unit=Unit.INODES, total=fs.total_inodes,
                                        available=fs.free_inodes, used=fs.used_inodes),
                ]
        return csi_pb2.NodeGetVolumeStatsResponse(usage=usage,
                                                  volume_condition=condition.to_proto())

    # ------------------------------------------------------------------ expand

    def expand(self, req: csi_pb2.NodeExpandVolumeRequest
               ) -> csi_pb2.NodeExpandVolumeResponse:
        if not req.volume_id:
            raise invalid_argument("volume_id is required")
        path = self._volume_path(req.volume_id, req.volume_path)
        if req.HasField("volume_capability"):
            reason = unsupported_reason(req.volume_capability)
            if reason:
                raise invalid_argument(reason)
        required = req.capacity_range.required_bytes if req.HasField("capacity_range") else 0
        limit = req.capacity_range.limit_bytes if req.HasField("capacity_range") else 0
        if required < 0 or limit < 0 or (limit and required > limit):
            raise CsiError(grpc.StatusCode.OUT_OF_RANGE,
                           f"capacity_range required={required} limit={limit} is not valid")
        with self._hold(req.volume_id, "NodeExpandVolume"):
            state = self._path_state(req.volume_id, path)
            ns = self.host.rescan(state.nqn)
            deadline = self._clock() + self.config.resize_wait
            while ns is not None and ns.size_bytes < required and self._clock() < deadline:
                self._sleep(0.2)
                ns = self.host.resolve(state.nqn)
            if ns is None:
                raise unavailable(f"volume {req.volume_id} has no block device right now; "
                                  "retry when it is reconnected")
            if ns.size_bytes < required:
                raise unavailable(f"{ns.name} still reports {ns.size_bytes} bytes after a "
                                  f"rescan, {required} requested; retry")
            if limit and ns.size_bytes > limit:
                raise CsiError(grpc.StatusCode.OUT_OF_RANGE,
                               f"device is {ns.size_bytes} bytes, above limit_bytes {limit}")
            if not state.block:
                mounts = self.mounter.mounts_at(state.staging_path)
                if not mounts or mounts[-1].devno != ns.devno:
                    raise failed_precondition(f"volume {req.volume_id} is not mounted from "
                                              f"{ns.name} at {state.staging_path}")
                with self._mount_errors(f"expand {req.volume_id}"):
                    self.mounter.resize(state.fs_type, ns.dev_path, state.staging_path)
                self._count("resize", "ok")
            log.info("expanded", extra={"fields": {"volume_id": req.volume_id,
                                                   "bytes": ns.size_bytes}})
            return csi_pb2.NodeExpandVolumeResponse(capacity_bytes=ns.size_bytes)

    # ------------------------------------------------------------------ info

    def capabilities(self) -> csi_pb2.NodeGetCapabilitiesResponse:
        return csi_pb2.NodeGetCapabilitiesResponse(capabilities=[
            csi_pb2.NodeServiceCapability(rpc=RPC(type=t)) for t in NODE_CAPABILITIES])

    def info(self) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(
            node_id=self.config.node_id,
            max_volumes_per_node=self.config.max_volumes_per_node,
            accessible_topology=csi_pb2.Topology(
                segments={self.config.topology_key: self.config.rds_name}),
        )


class NodeServicer(csi_pb2_grpc.NodeServicer):
    def __init__(self, service: NodeService) -> None:
        self._service = service

    @csi_method
    def NodeStageVolume(self, request: csi_pb2.NodeStageVolumeRequest,
                        context: grpc.ServicerContext) -> csi_pb2.NodeStageVolumeResponse:
        return self._service.stage(request)

    @csi_method
    def NodeUnstageVolume(self, request: csi_pb2.NodeUnstageVolumeRequest,
                          context: grpc.ServicerContext) -> csi_pb2.NodeUnstageVolumeResponse:
        return self._service.unstage(request)

    @csi_method
    def NodePublishVolume(self, request: csi_pb2.NodePublishVolumeRequest,
                          context: grpc.ServicerContext) -> csi_pb2.NodePublishVolumeResponse:
        return self._service.publish(request)

    @csi_method
    def NodeUnpublishVolume(self, request: csi_pb2.NodeUnpublishVolumeRequest,
                            context: grpc.ServicerContext
                            ) -> csi_pb2.NodeUnpublishVolumeResponse:
        return self._service.unpublish(request)

    @csi_method
    def NodeGetVolumeStats(self, request: csi_pb2.NodeGetVolumeStatsRequest,
                           context: grpc.ServicerContext
                           ) -> csi_pb2.NodeGetVolumeStatsResponse:
        return self._service.stats(request)

    @csi_method
    def NodeExpandVolume(self, request: csi_pb2.NodeExpandVolumeRequest,
                         context: grpc.ServicerContext) -> csi_pb2.NodeExpandVolumeResponse:
        return self._service.expand(request)

    @csi_method
    def NodeGetCapabilities(self, request: csi_pb2.NodeGetCapabilitiesRequest,
                            context: grpc.ServicerContext
                            ) -> csi_pb2.NodeGetCapabilitiesResponse:
        return self._service.capabilities()

    @csi_method
    def NodeGetInfo(self, request: csi_pb2.NodeGetInfoRequest,
                    context: grpc.ServicerContext) -> csi_pb2.NodeGetInfoResponse:
        return self._service.info()
