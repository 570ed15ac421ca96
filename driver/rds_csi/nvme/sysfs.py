"""Read the kernel's NVMe host state from sysfs, by subsystem NQN.

What is read (Linux, CONFIG_NVME_MULTIPATH=y; every path is under a configurable root
so the node plugin runs unchanged against a simulated tree):

- ``<sysfs>/class/nvme/nvme<C>/``: ``state``, ``subsysnqn``, ``transport``,
  ``address`` (``traddr=..,trsvcid=..[,src_addr=..]``), ``hostnqn``, ``cntlid``,
  ``dev``, ``ctrl_loss_tmo``, ``reconnect_delay``, ``kato`` and one directory per
  path ``nvme<S>c<C>n<N>``.
- ``<sysfs>/class/nvme-subsystem/nvme-subsys<S>/``: ``subsysnqn``, an ``nvme<C>``
  entry per controller, the namespace head block devices ``nvme<S>n<N>``.
- ``<sysfs>/block/nvme<S>n<N>/dev`` (``major:minor``) and ``size`` (512-byte
  sectors); the block node is ``<dev>/nvme<S>n<N>``.

Nothing is cached: a controller can be deleted and its numbers reused between two
calls, so every answer comes from a fresh read. A file that vanishes while it is
read (the kernel deleting a controller) is treated as "not there".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

CTRL_RE = re.compile(r"^nvme(\d+)$")
SUBSYS_RE = re.compile(r"^nvme-subsys(\d+)$")
HEAD_RE = re.compile(r"^nvme(\d+)n(\d+)$")
PATH_RE = re.compile(r"^nvme(\d+)c(\d+)n(\d+)$")

# Controller states as printed by the kernel (drivers/nvme/host/core.c, nvme_sysfs_show_state).
LIVE = "live"
TRANSIENT_STATES = frozenset({"connecting", "resetting", "new"})
GONE_STATES = frozenset({"deleting", "deleting (no IO)", "dead"})
SECTOR = 512


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def parse_address(text: str) -> dict[str, str]:
    """``traddr=10.0.0.1,trsvcid=4420,src_addr=10.0.0.2`` -> dict (unknown keys kept)."""
    out: dict[str, str] = {}
    for part in text.replace("\n", ",").split(","):
        key, sep, value = part.strip().partition("=")
        if sep and key:
            out[key] = value.strip()
    return out


def parse_devno(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    major, sep, minor = text.strip().partition(":")
    if not sep or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


@dataclass(frozen=True)
class Controller:
    name: str  # nvme<C>
    instance: int
    nqn: str
    state: str
    transport: str = ""
    address: dict[str, str] = field(default_factory=dict)
    hostnqn: str = ""
    cntlid: str = ""
    ctrl_loss_tmo: str = ""
    reconnect_delay: str = ""
    kato: str = ""
    paths: tuple[str, ...] = ()  # nvme<S>c<C>n<N>

    @property
    def live(self) -> bool:
        return self.state == LIVE

    @property
    def traddr(self) -> str:
        return self.address.get("traddr", "")

    @property
    def trsvcid(self) -> str:
        return self.address.get("trsvcid", "")


@dataclass(frozen=True)
class Namespace:
    name: str  # nvme<S>n<N>, the multipath head block device
    subsys_instance: int
    head_instance: int
    major: int
    minor: int
    size_bytes: int
    dev_path: str  # <dev-root>/nvme<S>n<N>
    controllers: tuple[str, ...] = ()  # controllers with a path to this head

    @property
    def devno(self) -> tuple[int, int]:
        return self.major, self.minor

    @property
    def devno_text(self) -> str:
        return f"{self.major}:{self.minor}"


@dataclass(frozen=True)
class Subsystem:
    name: str
    instance: int
    nqn: str
    controllers: tuple[str, ...]
    namespaces: tuple[str, ...]


class NvmeSysfs:
    """A resolver over one sysfs root and one /dev root."""

    def __init__(self, sysfs_root: str | Path = "/sys", dev_root: str | Path = "/dev") -> None:
        self.sysfs_root = Path(sysfs_root)
        self.dev_root = Path(dev_root)

    # ------------------------------------------------------------------ paths

    @property
    def class_nvme(self) -> Path:
        return self.sysfs_root / "class" / "nvme"

    @property
    def class_subsys(self) -> Path:
        return self.sysfs_root / "class" / "nvme-subsystem"

    @property
    def block(self) -> Path:
        return self.sysfs_root / "block"

    def controller_dev_path(self, name: str) -> str:
        return str(self.dev_root / name)

    # ------------------------------------------------------------------ controllers

    def controller(self, name: str) -> Controller | None:
        m = CTRL_RE.match(name)
        if not m:
            return None
        base = self.class_nvme / name
        state = _read(base / "state")
        nqn = _read(base / "subsysnqn")
        if state is None or nqn is None:
            return None
        return Controller(
            name=name,
            instance=int(m.group(1)),
            nqn=nqn,
            state=state,
            transport=_read(base / "transport") or "",
            address=parse_address(_read(base / "address") or ""),
            hostnqn=_read(base / "hostnqn") or "",
            cntlid=_read(base / "cntlid") or "",
            ctrl_loss_tmo=_read(base / "ctrl_loss_tmo") or "",
            reconnect_delay=_read(base / "reconnect_delay") or "",
            kato=_read(base / "kato") or "",
            paths=tuple(e for e in _listdir(base) if PATH_RE.match(e)),
        )

    def controllers(self) -> list[Controller]:
        out = []
        for name in _listdir(self.class_nvme):
            ctrl = self.controller(name)
            if ctrl is not None:
                out.append(ctrl)
        return sorted(out, key=lambda c: c.instance)

    def controllers_for(self, nqn: str) -> list[Controller]:
        # One read (subsysnqn) per other controller, the full set only for matches: with
        # many volumes this runs several times per volume per monitor pass.
        out = []
        for name in _listdir(self.class_nvme):
            if not CTRL_RE.match(name) or _read(self.class_nvme / name / "subsysnqn") != nqn:
                continue
            ctrl = self.controller(name)
            if ctrl is not None and ctrl.nqn == nqn:
                out.append(ctrl)
        return sorted(out, key=lambda c: c.instance)

    # ------------------------------------------------------------------ subsystems

    def subsystems(self, only_nqn: str | None = None) -> list[Subsystem]:
        out = []
        for name in _listdir(self.class_subsys):
            m = SUBSYS_RE.match(name)
            if not m:
                continue
            base = self.class_subsys / name
            nqn = _read(base / "subsysnqn")
            if nqn is None or (only_nqn is not None and nqn != only_nqn):
                continue
            entries = _listdir(base)
            out.append(Subsystem(
                name=name,
                instance=int(m.group(1)),
                nqn=nqn,
                controllers=tuple(e for e in entries if CTRL_RE.match(e)),
                namespaces=tuple(e for e in entries if HEAD_RE.match(e)),
            ))
        return sorted(out, key=lambda s: s.instance)

    def subsystems_for(self, nqn: str) -> list[Subsystem]:
        return self.subsystems(only_nqn=nqn)

    # ------------------------------------------------------------------ namespaces

    def namespace(self, name: str, subsys: str | None = None) -> Namespace | None:
        """The head block device ``name`` (``nvme<S>n<N>``) with its dev and size."""
        m = HEAD_RE.match(name)
        if not m:
            return None
        candidates = [self.block / name]
        if subsys:
            candidates.append(self.class_subsys / subsys / name)
        for base in candidates:
            devno = parse_devno(_read(base / "dev"))
            size = _read(base / "size")
            if devno is None or size is None or not size.isdigit():
                continue
            return Namespace(
                name=name,
                subsys_instance=int(m.group(1)),
                head_instance=int(m.group(2)),
                major=devno[0],
                minor=devno[1],
                size_bytes=int(size) * SECTOR,
                dev_path=str(self.dev_root / name),
            )
        return None

    def namespaces_for(self, nqn: str,
                       ctrls: list[Controller] | None = None) -> list[Namespace]:
        """Every namespace head of the subsystem with this NQN, with the controllers
        that have a path to it (``nvme<S>c<C>n<N>`` under ``class/nvme/nvme<C>``).
        ``ctrls``: the NQN's controllers when the caller has just read them."""
        subsystems = self.subsystems_for(nqn)
        if not subsystems:
            return []
        if ctrls is None:
            ctrls = self.controllers_for(nqn)
        out = []
        for sub in subsystems:
            for head in sub.namespaces:
                ns = self.namespace(head, sub.name)
                if ns is None:
                    continue
                via = []
                for ctrl in ctrls:
                    path = f"nvme{ns.subsys_instance}c{ctrl.instance}n{ns.head_instance}"
                    if path in ctrl.paths:
                        via.append(ctrl.name)
                out.append(Namespace(**{**ns.__dict__, "controllers": tuple(sorted(via))}))
        return out

    def device_for(self, nqn: str,
                   ctrls: list[Controller] | None = None) -> Namespace | None:
        """The namespace head to use for this NQN now, or None.

        A stale mount can pin an old head while a reconnect creates a new one; the
        head reached through a live (then any non-deleting) controller wins, then the
        newest instance. ``ctrls``: the NQN's controllers when the caller has just
        read them; otherwise they are read here, once.
        """
        if ctrls is None:
            ctrls = self.controllers_for(nqn)
        heads = self.namespaces_for(nqn, ctrls)
        if not heads:
            return None
        states = {c.name: c.state for c in ctrls}

        def rank(ns: Namespace) -> tuple[int, int, int]:
            live = any(states.get(c) == LIVE for c in ns.controllers)
            usable = any(states.get(c) not in GONE_STATES for c in ns.controllers)
            return (int(live), int(usable), ns.head_instance)

        return max(heads, key=rank)

    def is_orphan(self, nqn: str) -> bool:
        """Connected (a controller exists) but no namespace block device."""
        return bool(self.controllers_for(nqn)) and not self.namespaces_for(nqn)

    def block_device_present(self, major: int, minor: int) -> bool:
        """Whether a block device with this number still exists."""
        if (self.sysfs_root / "dev" / "block" / f"{major}:{minor}").exists():
            return True
        for name in _listdir(self.block):
            if parse_devno(_read(self.block / name / "dev")) == (major, minor):
                return True
        return False

    def nqns(self) -> set[str]:
        """Every subsystem NQN with a controller or a subsystem on this host."""
        return {c.nqn for c in self.controllers()} | {s.nqn for s in self.subsystems()}
