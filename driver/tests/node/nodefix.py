"""Test helpers for the node tests (not a conftest: module names collide across suites).

``SysTree`` writes a small sysfs tree by hand, laid out like Linux 6.1 with
CONFIG_NVME_MULTIPATH=y (Documentation/ABI/testing/sysfs-class-nvme*, drivers/nvme/host):
controller devices live under ``devices/virtual/nvme-fabrics/ctl/nvme<C>`` and are
linked from ``class/nvme``; subsystems under ``devices/virtual/nvme-subsystem/
nvme-subsys<S>`` (linked from ``class/nvme-subsystem``) link their controllers and hold
the namespace head disks ``nvme<S>n<N>``, which ``block/`` links to; each controller
directory has one ``nvme<S>c<C>n<N>`` entry per path.

``LoopDevice`` makes real loop devices for the real-tool tests (root only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from rds_csi.nvme.cli import ConnectOptions
from rds_csi.nvme.sysfs import Controller, Namespace

PREFIX = "nqn.2000-02.com.mikrotik"
VOL_A = "pvc-" + "a" * 28
VOL_B = "pvc-" + "b" * 28
NQN_A = f"{PREFIX}:{VOL_A}"
NQN_B = f"{PREFIX}:{VOL_B}"


def is_root() -> bool:
    return os.geteuid() == 0


class SysTree:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ctl = root / "devices/virtual/nvme-fabrics/ctl"
        self.subsys_dir = root / "devices/virtual/nvme-subsystem"
        for d in ("class/nvme", "class/nvme-subsystem", "block", "dev/block"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.ctl.mkdir(parents=True, exist_ok=True)
        self.subsys_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")

    def subsystem(self, s: int, nqn: str) -> Path:
        d = self.subsys_dir / f"nvme-subsys{s}"
        if not d.exists():
            self._write(d / "subsysnqn", nqn)
            os.symlink(f"../../devices/virtual/nvme-subsystem/nvme-subsys{s}",
                       self.root / "class/nvme-subsystem" / f"nvme-subsys{s}")
        return d

    def controller(self, c: int, nqn: str, *, s: int = 0, state: str = "live",
                   traddr: str = "10.0.0.1", trsvcid: str = "4420",
                   ctrl_loss_tmo: str = "off", subsystem: bool = True) -> Path:
        d = self.ctl / f"nvme{c}"
        self._write(d / "state", state)
        self._write(d / "subsysnqn", nqn)
        self._write(d / "transport", "tcp")
        self._write(d / "address", f"traddr={traddr},trsvcid={trsvcid},src_addr=10.0.0.9")
        self._write(d / "hostnqn", "nqn.2014-08.org.nvmexpress:uuid:host-1")
        self._write(d / "cntlid", str(c + 1))
        self._write(d / "dev", f"243:{c}")
        self._write(d / "ctrl_loss_tmo", ctrl_loss_tmo)
        self._write(d / "reconnect_delay", "5")
        self._write(d / "kato", "5")
        os.symlink(f"../../devices/virtual/nvme-fabrics/ctl/nvme{c}",
                   self.root / "class/nvme" / f"nvme{c}")
        if subsystem:
            sub = self.subsystem(s, nqn)
            os.symlink(f"../../nvme-fabrics/ctl/nvme{c}", sub / f"nvme{c}")
        return d

    def namespace(self, s: int, n: int, *, major: int = 259, minor: int = 0,
                  sectors: int = 2048, via: tuple[int, ...] = (0,)) -> Path:
        sub = self.subsys_dir / f"nvme-subsys{s}"
        d = sub / f"nvme{s}n{n}"
        self._write(d / "dev", f"{major}:{minor}")
        self._write(d / "size", str(sectors))
        self._write(d / "nsid", "1")
        os.symlink(f"../devices/virtual/nvme-subsystem/nvme-subsys{s}/nvme{s}n{n}",
                   self.root / "block" / f"nvme{s}n{n}")
        os.symlink(f"../../devices/virtual/nvme-subsystem/nvme-subsys{s}/nvme{s}n{n}",
                   self.root / "dev/block" / f"{major}:{minor}")
        for c in via:
            (self.ctl / f"nvme{c}" / f"nvme{s}c{c}n{n}").mkdir(parents=True)
        return d

    def set_state(self, c: int, state: str) -> None:
        self._write(self.ctl / f"nvme{c}" / "state", state)

    def remove_controller(self, c: int) -> None:
        (self.root / "class/nvme" / f"nvme{c}").unlink(missing_ok=True)
        for sub in self.subsys_dir.iterdir():
            (sub / f"nvme{c}").unlink(missing_ok=True)
        shutil.rmtree(self.ctl / f"nvme{c}", ignore_errors=True)

    def remove_namespace(self, s: int, n: int) -> None:
        d = self.subsys_dir / f"nvme-subsys{s}" / f"nvme{s}n{n}"
        devno = (d / "dev").read_text().strip() if d.exists() else ""
        (self.root / "block" / f"nvme{s}n{n}").unlink(missing_ok=True)
        if devno:
            (self.root / "dev/block" / devno).unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)
        for ctrl in self.ctl.iterdir():
            for entry in ctrl.glob(f"nvme{s}c*n{n}"):
                shutil.rmtree(entry)

    def remove_subsystem(self, s: int) -> None:
        (self.root / "class/nvme-subsystem" / f"nvme-subsys{s}").unlink(missing_ok=True)
        shutil.rmtree(self.subsys_dir / f"nvme-subsys{s}", ignore_errors=True)


# ---------------------------------------------------------------------- loop devices


class LoopDevice:
    """A loop device over a sparse file; detached (and the file removed) on close."""

    def __init__(self, backing: Path, size: int = 64 << 20, *, create: bool = True) -> None:
        self.backing = backing
        if create:
            with open(backing, "wb") as f:
                f.truncate(size)
        out = subprocess.run(["losetup", "--find", "--show", str(backing)],
                             capture_output=True, text=True, check=True)
        self.path = out.stdout.strip()
        st = os.stat(self.path)
        self.major, self.minor = os.major(st.st_rdev), os.minor(st.st_rdev)

    @property
    def devno(self) -> tuple[int, int]:
        return self.major, self.minor

    def namespace(self, name: str = "nvme0n1", size: int | None = None) -> Namespace:
        return Namespace(name=name, subsys_instance=0, head_instance=1, major=self.major,
                         minor=self.minor, size_bytes=size or self.size(), dev_path=self.path,
                         controllers=("nvme0",))

    def size(self) -> int:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)

    def grow(self, size: int) -> None:
        with open(self.backing, "r+b") as f:
            f.truncate(size)
        subprocess.run(["losetup", "-c", self.path], check=True)

    def close(self) -> None:
        subprocess.run(["losetup", "-d", self.path], capture_output=True, check=False)


def umount_all_under(root: Path) -> None:
    """Lazy-unmount every mount below ``root`` (deepest first); test cleanup."""
    text = Path("/proc/self/mountinfo").read_text()
    points = []
    for line in text.splitlines():
        mp = line.split(" ")[4].replace("\\040", " ")
        if mp == str(root) or mp.startswith(str(root) + "/"):
            points.append(mp)
    for mp in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True, check=False)


# ---------------------------------------------------------------------- fake host


@dataclass
class FakeHost:
    """An NvmeHost whose world the test sets: controllers, the current device."""

    nqn_prefix: str = PREFIX
    devices: dict[str, Namespace] = field(default_factory=dict)
    ctrls: dict[str, list[Controller]] = field(default_factory=dict)
    on_attach: dict[str, Namespace] = field(default_factory=dict)  # what a reconnect yields
    attach_error: str = ""
    present: set[tuple[int, int]] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)
    options: list[ConnectOptions] = field(default_factory=list)

    def owns(self, nqn: str) -> bool:
        return nqn.startswith(self.nqn_prefix + ":")

    def set_live(self, nqn: str, ns: Namespace | None, state: str = "live") -> None:
        self.ctrls[nqn] = [Controller(name="nvme0", instance=0, nqn=nqn, state=state)]
        if ns is not None:
            self.devices[nqn] = ns

    def lose(self, nqn: str) -> None:
        self.ctrls.pop(nqn, None)
        self.devices.pop(nqn, None)

    def attach(self, nqn: str, address: str, port: int, opts: ConnectOptions) -> Namespace:
        from rds_csi.nvme.host import AttachError

        self.calls.append(("attach", nqn))
        self.options.append(opts)
        if self.attach_error:
            raise AttachError(self.attach_error)
        if nqn in self.devices and any(c.state == "live" for c in self.ctrls.get(nqn, [])):
            return self.devices[nqn]
        ns = self.on_attach.get(nqn) or self.devices.get(nqn)
        if ns is None:
            raise AttachError(f"no namespace for {nqn}")
        self.set_live(nqn, ns)
        return ns

    def resolve(self, nqn: str) -> Namespace | None:
        return self.devices.get(nqn)

    def controllers(self, nqn: str) -> list[Controller]:
        return list(self.ctrls.get(nqn, []))

    def detach(self, nqn: str) -> None:
        from rds_csi.nvme.host import AttachError

        self.calls.append(("detach", nqn))
        if not self.owns(nqn):
            raise AttachError("not ours")
        self.lose(nqn)

    def rescan(self, nqn: str) -> Namespace | None:
        self.calls.append(("rescan", nqn))
        return self.devices.get(nqn)

    def connected_nqns(self) -> set[str]:
        return set(self.ctrls)

    def block_device_present(self, major: int, minor: int) -> bool:
        return (major, minor) in self.present or any(
            ns.devno == (major, minor) for ns in self.devices.values())
