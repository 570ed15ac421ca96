"""One simulated Linux NVMe/TCP host (kernel 6.1, CONFIG_NVME_MULTIPATH=y): its controllers,
subsystems and namespace heads, their state machines, and the sysfs and /dev trees it writes.

Numbering follows drivers/nvme/host/core.c: controllers and subsystems share one instance IDA
(`nvme_instance_ida`); a new subsystem takes the instance of the controller that created it and
gives it back only when the subsystem is released; namespace heads take instances from a
per-subsystem IDA starting at 1. A head whose block device is still mounted or open when its
last path goes away leaves sysfs and /dev (del_gendisk) but keeps its instance and its subsystem
until the holder lets go -- which is why a reconnect then gets new numbers.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import math
import os
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import blockdev
from .ida import Ida

if TYPE_CHECKING:
    from .engine import FabricEngine

log = logging.getLogger(__name__)

DEFAULT_CTRL_LOSS_TMO = 600
DEFAULT_RECONNECT_DELAY = 10
DEFAULT_KATO = 5
NVME_TCP_PORT = 4420
MODEL = "Linux"  # nvmet's default model number (RouterOS exports through Linux nvmet: inferred)
FIRMWARE = "5.6.3"  # nvmet reports the kernel release; RouterOS 7 runs Linux 5.6.3 (inferred)
SECTOR = 512


class ConnectError(Exception):
    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(message or os.strerror(err))
        self.errno = err


@dataclass
class ConnectOptions:
    nqn: str
    traddr: str
    trsvcid: int = NVME_TCP_PORT
    transport: str = "tcp"
    hostnqn: str | None = None
    hostid: str | None = None
    ctrl_loss_tmo: int | None = None  # None: kernel default; < 0: reconnect forever
    reconnect_delay: int | None = None
    keep_alive_tmo: int | None = None


@dataclass(eq=False)
class Subsystem:
    instance: int
    nqn: str
    serial: str
    ctrls: list[Controller] = field(default_factory=list)
    heads: list[Head] = field(default_factory=list)
    ns_ida: Ida = field(default_factory=lambda: Ida(1))

    @property
    def name(self) -> str:
        return f"nvme-subsys{self.instance}"


@dataclass(eq=False)
class Head:
    subsys: Subsystem
    instance: int
    nsid: int
    size: int  # bytes
    backing: str
    major: int
    minor: int
    loop: blockdev.Loop | None
    paths: list[Controller] = field(default_factory=list)
    zombie: bool = False  # gone from sysfs and /dev, numbers held by a mount or open fd
    dev_node: Path = Path()

    @property
    def name(self) -> str:
        return f"nvme{self.subsys.instance}n{self.instance}"


@dataclass(eq=False)
class Controller:
    instance: int
    subsys: Subsystem
    traddr: str
    trsvcid: int
    hostnqn: str
    hostid: str
    max_reconnects: int  # -1: forever
    reconnect_delay: int
    kato: int
    cntlid: int = 0
    state: str = "new"
    head: Head | None = None
    nr_reconnects: int = 0
    next_at: float | None = None  # next reconnect attempt
    detect_at: float | None = None  # keep-alive expiry while the network drops packets
    history: list[tuple[float, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"nvme{self.instance}"

    @property
    def ctrl_loss_tmo(self) -> int:
        return -1 if self.max_reconnects == -1 else self.max_reconnects * self.reconnect_delay

    @property
    def path_name(self) -> str:
        assert self.head is not None
        return f"nvme{self.subsys.instance}c{self.instance}n{self.head.instance}"


def _write(path: Path, text: str, mode: int = 0o444) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    os.symlink(target, link)


def _pad(s: str, n: int) -> str:
    return s[:n].ljust(n)


class FabricHost:
    """A node's kernel NVMe host. All methods run under the engine's lock."""

    def __init__(
        self, engine: FabricEngine, node_id: str, root: Path, hostnqn: str, hostid: str
    ) -> None:
        self.engine = engine
        self.node_id = node_id
        self.root = root
        self.hostnqn = hostnqn
        self.hostid = hostid
        self.sys = root / "sys"
        self.dev = root / "dev"
        self.ida = Ida(0)  # nvme_instance_ida: controllers and subsystems
        self.subsystems: list[Subsystem] = []
        self.ctrls: dict[int, Controller] = {}
        for d in ("class/nvme", "class/nvme-subsystem", "block",
                  "devices/virtual/nvme-fabrics/ctl", "devices/virtual/nvme-subsystem"):
            (self.sys / d).mkdir(parents=True, exist_ok=True)
        self.dev.mkdir(parents=True, exist_ok=True)
        etc = root / "etc" / "nvme"
        etc.mkdir(parents=True, exist_ok=True)
        _write(etc / "hostnqn", hostnqn + "\n", 0o644)
        _write(etc / "hostid", hostid + "\n", 0o644)

    # --- queries ------------------------------------------------------------------------------

    @property
    def lock(self) -> threading.RLock:
        return self.engine.lock

    def controllers(self) -> list[Controller]:
        return [self.ctrls[k] for k in sorted(self.ctrls)]

    def find_ctrl(self, name: str) -> Controller | None:
        for c in self.ctrls.values():
            if c.name == name:
                return c
        return None

    def now(self) -> float:
        return self.engine.clock.now()

    # --- connect / disconnect -----------------------------------------------------------------

    def connect(self, o: ConnectOptions) -> Controller:
        """What a write to /dev/nvme-fabrics does (after nvme-cli's own checks)."""
        self.reap()
        if o.transport != "tcp":
            raise ConnectError(errno.EINVAL, f"no handler for transport {o.transport}")
        hostnqn = o.hostnqn or self.hostnqn
        hostid = o.hostid or self.hostid
        try:
            uuid.UUID(hostid)
        except ValueError:
            raise ConnectError(errno.EINVAL, f"Invalid hostid {hostid}") from None
        delay = o.reconnect_delay if o.reconnect_delay is not None else DEFAULT_RECONNECT_DELAY
        if delay <= 0:
            raise ConnectError(errno.EINVAL, f"Invalid reconnect_delay {delay}")
        tmo = o.ctrl_loss_tmo if o.ctrl_loss_tmo is not None else DEFAULT_CTRL_LOSS_TMO
        max_reconnects = -1 if tmo < 0 else math.ceil(tmo / delay)
        kato = o.keep_alive_tmo if o.keep_alive_tmo is not None else DEFAULT_KATO
        if kato < 0:
            raise ConnectError(errno.EINVAL, f"Invalid keep_alive_tmo {kato}")
        backend = self.engine.backend
        err, cntlid = backend.admit(self.node_id, o.traddr, o.trsvcid, o.nqn, hostnqn)
        if err:
            raise ConnectError(err)
        export = backend.find(o.nqn, o.trsvcid)
        assert export is not None
        instance = self.ida.alloc()
        subsys = next((s for s in self.subsystems if s.nqn == o.nqn), None)
        if subsys is None:
            serial = hashlib.sha1(o.nqn.encode()).hexdigest()[:16]
            subsys = Subsystem(instance, o.nqn, serial)
            self.subsystems.append(subsys)
            self._write_subsys(subsys)
        ctrl = Controller(instance, subsys, o.traddr, o.trsvcid, hostnqn, hostid,
                          max_reconnects, delay, kato, cntlid)
        subsys.ctrls.append(ctrl)
        self.ctrls[instance] = ctrl
        self._set_state(ctrl, "new")
        self._set_state(ctrl, "connecting")
        try:
            self._attach_ns(ctrl, export.path, export.size)
        except Exception:
            self.delete(ctrl)
            raise
        self._set_state(ctrl, "live")
        log.info("%s: %s connected to %s as %s", self.node_id, ctrl.name, o.nqn,
                 ctrl.head.name if ctrl.head else "?")
        return ctrl

    def _attach_ns(self, ctrl: Controller, backing: Path, size: int) -> None:
        subsys = ctrl.subsys
        head = next((h for h in subsys.heads if not h.zombie and h.paths and h.nsid == 1), None)
        if head is None:
            loop = self.engine.loops.acquire(backing)
            head = Head(subsys, subsys.ns_ida.alloc(), 1, size, loop.backing, loop.major,
                        loop.minor, loop)
            subsys.heads.append(head)
            head.paths.append(ctrl)
            ctrl.head = head
            self._write_head(head)
        else:
            head.paths.append(ctrl)
            ctrl.head = head
        self._write_path(ctrl)

    def delete(self, ctrl: Controller) -> None:
        """nvme_delete_ctrl: namespaces, then the controller, then maybe the subsystem."""
        if ctrl.instance not in self.ctrls:
            return
        self._set_state(ctrl, "deleting")
        head = ctrl.head
        if head is not None:
            self._remove_path(ctrl)
            head.paths.remove(ctrl)
            ctrl.head = None
            if not head.paths:
                self._remove_head(head)
        if ctrl.cntlid:
            self.engine.backend.release(ctrl.subsys.nqn, ctrl.cntlid)
            ctrl.cntlid = 0
        self._remove_ctrl_files(ctrl)
        del self.ctrls[ctrl.instance]
        subsys = ctrl.subsys
        subsys.ctrls.remove(ctrl)
        if ctrl.instance != subsys.instance:
            self.ida.free(ctrl.instance)
        ctrl.history.append((self.now(), "deleted"))
        # releases this subsystem when nothing is left in it; a zombie head whose last holder
        # closed it meanwhile is gone in the kernel already (released on last close), so it
        # must not keep the subsystem alive here
        self.reap()
        log.info("%s: %s deleted", self.node_id, ctrl.name)

    def _remove_head(self, head: Head) -> None:
        """Last path gone: del_gendisk, and free the numbers unless something holds the disk."""
        held = blockdev.is_held(head.dev_node, head.major, head.minor)
        self._remove_head_files(head)
        if head.loop is not None:
            self.engine.loops.release(head.loop)
            head.loop = None
        if held:
            head.zombie = True
            log.info("%s: %s still held: numbers stay taken", self.node_id, head.name)
        else:
            head.subsys.heads.remove(head)
            head.subsys.ns_ida.free(head.instance)

    def _maybe_release_subsys(self, subsys: Subsystem) -> None:
        if subsys.ctrls or subsys.heads:
            return
        self.subsystems.remove(subsys)
        self.ida.free(subsys.instance)
        (self.sys / "class/nvme-subsystem" / subsys.name).unlink(missing_ok=True)
        shutil.rmtree(self.sys / "devices/virtual/nvme-subsystem" / subsys.name,
                      ignore_errors=True)

    def reap(self) -> None:
        """Release zombie heads nobody holds any more (and subsystems they kept alive)."""
        for subsys in list(self.subsystems):
            for head in [h for h in subsys.heads if h.zombie]:
                if not blockdev.is_held(head.dev_node, head.major, head.minor):
                    subsys.heads.remove(head)
                    subsys.ns_ida.free(head.instance)
            self._maybe_release_subsys(subsys)

    def has_zombies(self) -> bool:
        return any(h.zombie for s in self.subsystems for h in s.heads)

    # --- state machine ------------------------------------------------------------------------

    def _set_state(self, ctrl: Controller, state: str, at: float | None = None) -> None:
        ctrl.state = state
        ctrl.history.append((self.now() if at is None else at, state))
        if ctrl.instance in self.ctrls:
            self._write_ctrl(ctrl)

    def check_link(self, ctrl: Controller) -> None:
        """The target or network changed: does this live controller's association survive?"""
        if ctrl.state != "live":
            return
        backend = self.engine.backend
        now = self.now()
        if backend.blocked(self.node_id, ctrl.trsvcid):  # packets vanish: only keep-alive
            if ctrl.detect_at is None and ctrl.kato > 0:  # expiry notices
                ctrl.detect_at = now + ctrl.kato
            return
        ctrl.detect_at = None
        if not backend.alive(self.node_id, ctrl.traddr, ctrl.trsvcid, ctrl.subsys.nqn):
            self.error_recovery(ctrl, now)  # the target closed the connection (or rebooted)

    def error_recovery(self, ctrl: Controller, at: float) -> None:
        ctrl.detect_at = None
        self._set_state(ctrl, "resetting", at)
        if ctrl.cntlid:
            self.engine.backend.release(ctrl.subsys.nqn, ctrl.cntlid)
            ctrl.cntlid = 0
        self._set_state(ctrl, "connecting", at)
        ctrl.nr_reconnects = 0
        self._reconnect_or_remove(ctrl, at)

    def _reconnect_or_remove(self, ctrl: Controller, at: float) -> None:
        if ctrl.max_reconnects == -1 or ctrl.nr_reconnects < ctrl.max_reconnects:
            ctrl.next_at = at + ctrl.reconnect_delay
        else:
            log.info("%s: %s: ctrl_loss_tmo expired, removing", self.node_id, ctrl.name)
            ctrl.next_at = None
            self.delete(ctrl)

    def reconnect(self, ctrl: Controller, at: float) -> None:
        ctrl.next_at = None
        ctrl.nr_reconnects += 1
        backend = self.engine.backend
        err, cntlid = backend.admit(self.node_id, ctrl.traddr, ctrl.trsvcid, ctrl.subsys.nqn,
                                    ctrl.hostnqn)
        if err:
            self._reconnect_or_remove(ctrl, at)
            return
        ctrl.cntlid = cntlid
        ctrl.nr_reconnects = 0
        export = backend.find(ctrl.subsys.nqn, ctrl.trsvcid)
        head = ctrl.head
        if export is not None and head is not None:
            if str(Path(export.path).resolve()) != head.backing:
                self._swap_backing(head, export.path)
            if export.size != head.size:
                head.size = export.size
                self._write_head(head)
                self._write_path(ctrl)
        self._set_state(ctrl, "live", at)

    def _swap_backing(self, head: Head, backing: Path) -> None:
        if head.loop is not None:
            self.engine.loops.release(head.loop)
        loop = self.engine.loops.acquire(backing)
        head.loop, head.backing, head.major, head.minor = loop, loop.backing, loop.major, loop.minor
        self._write_head(head)

    def due(self) -> float | None:
        times = [t for c in self.ctrls.values() for t in (c.next_at, c.detect_at) if t is not None]
        return min(times) if times else None

    def run_due(self, now: float) -> None:
        """Run every controller event due at or before `now`, in time order."""
        while True:
            events = []
            for c in self.ctrls.values():
                if c.detect_at is not None and c.detect_at <= now:
                    events.append((c.detect_at, 0, c.instance))
                if c.next_at is not None and c.next_at <= now:
                    events.append((c.next_at, 1, c.instance))
            if not events:
                return
            at, kind, inst = min(events)
            c = self.ctrls[inst]
            if kind == 0:
                c.detect_at = None
                if not self.engine.backend.alive(self.node_id, c.traddr, c.trsvcid, c.subsys.nqn):
                    self.error_recovery(c, at)
            else:
                self.reconnect(c, at)

    def poll_sysfs_writes(self) -> None:
        """Writes to delete_controller / reset_controller (what nvme-cli itself does)."""
        for c in list(self.ctrls.values()):
            d = self._ctrl_dir(c)
            try:
                if (d / "delete_controller").stat().st_size > 0:
                    self.delete(c)
                    continue
                if (d / "reset_controller").stat().st_size > 0:
                    _write(d / "reset_controller", "", 0o200)
                    if c.state == "live":
                        self.error_recovery(c, self.now())
                        self.reconnect(c, self.now())
            except FileNotFoundError:
                continue

    def target_changed(self, size_paths: dict[str, int]) -> None:
        for c in list(self.ctrls.values()):
            if c.state == "live" and c.head is not None and c.head.backing in size_paths:
                new = size_paths[c.head.backing]
                if new != c.head.size:  # namespace attribute changed AEN -> rescan
                    c.head.size = new
                    self._write_head(c.head)
                    self._write_path(c)
            self.check_link(c)

    def shutdown(self) -> None:
        for c in self.controllers():
            self.delete(c)
        for s in list(self.subsystems):
            for h in list(s.heads):
                s.heads.remove(h)
                s.ns_ida.free(h.instance)
            self._maybe_release_subsys(s)

    # --- sysfs and /dev -----------------------------------------------------------------------

    def _ctrl_dir(self, c: Controller) -> Path:
        return self.sys / "devices/virtual/nvme-fabrics/ctl" / c.name

    def _subsys_dir(self, s: Subsystem) -> Path:
        return self.sys / "devices/virtual/nvme-subsystem" / s.name

    def address(self, c: Controller) -> str:
        a = f"traddr={c.traddr},trsvcid={c.trsvcid}"
        if c.state == "live":  # nvme_tcp_get_address adds src_addr while the admin queue is live
            a += f",src_addr={self.engine.source_address}"
        return a

    def _write_ctrl(self, c: Controller) -> None:
        d = self._ctrl_dir(c)
        new = not d.exists()
        d.mkdir(parents=True, exist_ok=True)
        tmo = "off" if c.max_reconnects == -1 else str(c.ctrl_loss_tmo)
        major = self.engine.char_major
        attrs = {
            "state": c.state,
            "address": self.address(c),
            "cntlid": str(c.cntlid),
        }
        if new:
            attrs.update({
                "subsysnqn": c.subsys.nqn,
                "transport": "tcp",
                "hostnqn": c.hostnqn,
                "hostid": c.hostid,
                "dev": f"{major}:{c.instance}",
                "ctrl_loss_tmo": tmo,
                "reconnect_delay": str(c.reconnect_delay),
                "fast_io_fail_tmo": "off",
                "kato": str(c.kato),
                "model": _pad(MODEL, 40),
                "serial": _pad(c.subsys.serial, 20),
                "firmware_rev": _pad(FIRMWARE, 8),
                "numa_node": "-1",
                "queue_count": str((os.cpu_count() or 1) + 1),
                "sqsize": "127",
                "cntrltype": "io",
                "dctype": "none",
                "uevent": (f"MAJOR={major}\nMINOR={c.instance}\nDEVNAME={c.name}\n"
                           f"NVME_TRTYPE=tcp\nNVME_TRADDR={c.traddr}\n"
                           f"NVME_TRSVCID={c.trsvcid}\nNVME_HOST_TRADDR=none\n"
                           f"NVME_HOST_IFACE=none\n").rstrip("\n"),
            })
        for k, v in attrs.items():
            _write(d / k, v + "\n", 0o644 if k in ("ctrl_loss_tmo", "reconnect_delay",
                                                    "fast_io_fail_tmo") else 0o444)
        if new:
            for k in ("delete_controller", "reset_controller", "rescan_controller"):
                _write(d / k, "", 0o200)
            _symlink(self.sys / "class/nvme" / c.name,
                     f"../../devices/virtual/nvme-fabrics/ctl/{c.name}")
            _symlink(self._subsys_dir(c.subsys) / c.name, f"../../nvme-fabrics/ctl/{c.name}")
            try:
                blockdev.make_node(self.dev / c.name, "c", major, c.instance, 0o600)
            except OSError as e:  # no mknod rights: the char device is cosmetic
                log.debug("mknod %s: %s", c.name, e)

    def _remove_ctrl_files(self, c: Controller) -> None:
        (self.sys / "class/nvme" / c.name).unlink(missing_ok=True)
        (self._subsys_dir(c.subsys) / c.name).unlink(missing_ok=True)
        shutil.rmtree(self._ctrl_dir(c), ignore_errors=True)
        blockdev.remove_node(self.dev / c.name)

    def _write_subsys(self, s: Subsystem) -> None:
        d = self._subsys_dir(s)
        d.mkdir(parents=True, exist_ok=True)
        for k, v in {
            "subsysnqn": s.nqn,
            "model": _pad(MODEL, 40),
            "serial": _pad(s.serial, 20),
            "firmware_rev": _pad(FIRMWARE, 8),
            "iopolicy": "numa",
            "subsystype": "nvm",
        }.items():
            _write(d / k, v + "\n")
        _symlink(self.sys / "class/nvme-subsystem" / s.name,
                 f"../../devices/virtual/nvme-subsystem/{s.name}")

    def _ns_uuid(self, head: Head) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{head.subsys.nqn}/{head.nsid}"))

    def _write_head(self, h: Head) -> None:
        d = self._subsys_dir(h.subsys) / h.name
        (d / "queue").mkdir(parents=True, exist_ok=True)
        u = self._ns_uuid(h)
        for k, v in {
            "dev": f"{h.major}:{h.minor}",
            "size": str(h.size // SECTOR),
            "ro": "0",
            "removable": "0",
            "hidden": "0",
            "nsid": str(h.nsid),
            "uuid": u,
            "nguid": u,
            "wwid": f"uuid.{u}",
            "uevent": f"MAJOR={h.major}\nMINOR={h.minor}\nDEVNAME={h.name}\nDEVTYPE=disk",
            "queue/logical_block_size": str(SECTOR),
            "queue/physical_block_size": str(SECTOR),
            "queue/hw_sector_size": str(SECTOR),
            "queue/rotational": "0",
        }.items():
            _write(d / k, v + "\n")
        _symlink(self.sys / "block" / h.name,
                 f"../devices/virtual/nvme-subsystem/{h.subsys.name}/{h.name}")
        h.dev_node = self.dev / h.name
        blockdev.make_node(h.dev_node, "b", h.major, h.minor, 0o660)

    def _remove_head_files(self, h: Head) -> None:
        (self.sys / "block" / h.name).unlink(missing_ok=True)
        shutil.rmtree(self._subsys_dir(h.subsys) / h.name, ignore_errors=True)
        blockdev.remove_node(h.dev_node)

    def _write_path(self, c: Controller) -> None:
        assert c.head is not None
        d = self._ctrl_dir(c) / c.path_name
        d.mkdir(parents=True, exist_ok=True)
        for k, v in {
            "nsid": str(c.head.nsid),
            "size": str(c.head.size // SECTOR),
            "hidden": "1",
            "ana_grpid": "1",
            "ana_state": "optimized",
        }.items():
            _write(d / k, v + "\n")

    def _remove_path(self, c: Controller) -> None:
        shutil.rmtree(self._ctrl_dir(c) / c.path_name, ignore_errors=True)
