"""A tiny imitation of nvmet's configfs on an ordinary directory, for unit tests.

What it imitates (the rules of Linux 6.1's nvmet configfs that the harness must respect):
- mkdir of a subsystem, namespace, port, host or referral creates that item's attribute files and
  default groups (allowed_hosts/, namespaces/, subsystems/, referrals/, ana_groups/1/); mkdir
  anywhere else is refused (EPERM), as configfs only creates items inside groups;
- rmdir ignores attribute files and default groups but refuses an item that still has children
  (ENOTEMPTY) or that a symlink points at (EBUSY);
- an attribute must exist to be written (no O_CREAT on configfs);
- namespace device_path/device_uuid/buffered_io are refused while enabled (EBUSY); enable=1 needs
  an existing device_path (ENOENT), a regular file needs buffered_io=1 when `o_direct_ok` is False
  (EINVAL, as tmpfs/overlay refuse O_DIRECT);
- port addr_* are refused while a subsystem is linked (EACCES); linking needs addr_trtype set;
- allow_any_host=1 is refused while allowed hosts exist and vice versa (EINVAL); allowed_hosts
  links must point into hosts/, port links into subsystems/.

What it cannot check: anything the kernel does with the configuration (listening sockets,
controllers, I/O, the discovery log), the exact text the kernel reads back (values are stored as
written, without the kernel's normalisation), which attributes a given kernel version has, write
atomicity, and permission bits of real configfs attributes.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from rds_sim.nvmet import ConfigfsIO

SUBSYS_ATTRS = {
    "attr_allow_any_host": "0", "attr_version": "1.3", "attr_serial": "0123456789abcdef",
    "attr_model": "Linux", "attr_cntlid_min": "1", "attr_cntlid_max": "65519",
    "attr_pi_enable": "0", "attr_qid_max": "128",
}
NS_ATTRS = {
    "device_path": "", "device_uuid": "00000000-0000-0000-0000-000000000000",
    "device_nguid": "00000000-0000-0000-0000-000000000000", "ana_grpid": "1", "enable": "0",
    "buffered_io": "0",
}
PORT_ATTRS = {
    "addr_trtype": "", "addr_adrfam": "", "addr_traddr": "", "addr_trsvcid": "",
    "addr_treq": "not specified", "addr_tsas": "", "param_inline_data_size": "-1",
    "param_pi_enable": "0",
}
REFERRAL_ATTRS = {"addr_trtype": "", "addr_adrfam": "", "addr_traddr": "", "addr_trsvcid": "",
                  "addr_treq": "not specified", "addr_portid": "0", "enable": "0"}
WRITE_ONLY = {"revalidate_size"}


def _err(code: int, path: Path) -> OSError:
    return OSError(code, os.strerror(code), str(path))


class FakeConfigfs(ConfigfsIO):
    def __init__(self, root: Path, *, o_direct_ok: bool = False) -> None:
        self.root = root
        self.o_direct_ok = o_direct_ok
        self.ops: list[tuple[str, str]] = []  # (op, path relative to root), for order checks
        for d in ("subsystems", "ports", "hosts"):
            (root / d).mkdir(parents=True, exist_ok=True)

    def rel(self, path: Path) -> tuple[str, ...]:
        return Path(path).relative_to(self.root).parts

    def kind(self, path: Path) -> str:
        p = self.rel(path)
        match p:
            case ("subsystems", _):
                return "subsystem"
            case ("subsystems", _, "namespaces", nsid) if nsid.isdigit():
                return "namespace"
            case ("ports", portid) if portid.isdigit():
                return "port"
            case ("ports", _, "referrals", _):
                return "referral"
            case ("hosts", _):
                return "host"
        return "none"

    # --- ConfigfsIO ---

    def mkdir(self, path: Path) -> None:
        path = Path(path)
        kind = self.kind(path)
        if kind == "none":
            raise _err(errno.EPERM, path)
        if kind == "namespace" and not 1 <= int(path.name) <= 0xFFFFFFFE:
            raise _err(errno.EINVAL, path)
        os.mkdir(path)
        self.ops.append(("mkdir", "/".join(self.rel(path))))
        attrs: dict[str, str] = {}
        if kind == "subsystem":
            attrs = SUBSYS_ATTRS
            (path / "allowed_hosts").mkdir()
            (path / "namespaces").mkdir()
        elif kind == "namespace":
            attrs = NS_ATTRS
            self._attr(path / "revalidate_size", "", write_only=True)
        elif kind == "port":
            attrs = PORT_ATTRS
            (path / "subsystems").mkdir()
            (path / "referrals").mkdir()
            (path / "ana_groups" / "1").mkdir(parents=True)
            self._attr(path / "ana_groups" / "1" / "ana_state", "optimized")
        elif kind == "referral":
            attrs = REFERRAL_ATTRS
        for name, value in attrs.items():
            self._attr(path / name, value)

    def _attr(self, path: Path, value: str, write_only: bool = False) -> None:
        path.write_text(value)
        path.chmod(stat.S_IWUSR if write_only else stat.S_IRUSR | stat.S_IWUSR)

    def rmdir(self, path: Path) -> None:
        path = Path(path)
        kind = self.kind(path)
        if kind == "none":
            raise _err(errno.EPERM, path)
        children = {
            "subsystem": [path / "allowed_hosts", path / "namespaces"],
            "port": [path / "subsystems", path / "referrals"],
        }.get(kind, [])
        for c in children:
            if any(c.iterdir()):
                raise _err(errno.ENOTEMPTY, path)
        if kind == "port" and any(g.name != "1" for g in (path / "ana_groups").iterdir()):
            raise _err(errno.ENOTEMPTY, path)
        if self._linked(path):
            raise _err(errno.EBUSY, path)
        self.ops.append(("rmdir", "/".join(self.rel(path))))
        shutil.rmtree(path)

    def _linked(self, target: Path) -> bool:
        for dirpath, dirnames, filenames in os.walk(self.root):
            for n in dirnames + filenames:
                p = Path(dirpath) / n
                if p.is_symlink() and Path(os.readlink(p)) == target:
                    return True
        return False

    def symlink(self, target: Path, link: Path) -> None:
        target, link = Path(target), Path(link)
        parts = self.rel(link)
        match parts:
            case ("subsystems", nqn, "allowed_hosts", _):
                if self.rel(target)[:1] != ("hosts",) or not target.is_dir():
                    raise _err(errno.EINVAL, link)
                if (self.root / "subsystems" / nqn / "attr_allow_any_host").read_text() == "1":
                    raise _err(errno.EINVAL, link)  # "can't add hosts when allow_any_host is set"
            case ("ports", portid, "subsystems", _):
                if self.rel(target)[:1] != ("subsystems",) or not target.is_dir():
                    raise _err(errno.EINVAL, link)
                if not (self.root / "ports" / portid / "addr_trtype").read_text():
                    raise _err(errno.EINVAL, link)  # port has no transport type
            case _:
                raise _err(errno.EPERM, link)
        if os.path.lexists(link):
            raise _err(errno.EEXIST, link)
        os.symlink(target, link)
        self.ops.append(("link", "/".join(parts)))

    def unlink(self, link: Path) -> None:
        link = Path(link)
        if not link.is_symlink():
            raise _err(errno.EPERM if link.exists() else errno.ENOENT, link)
        os.unlink(link)
        self.ops.append(("unlink", "/".join(self.rel(link))))

    def write(self, path: Path, value: str) -> None:
        path = Path(path)
        if not path.is_file():
            raise _err(errno.ENOENT, path)
        item, name = path.parent, path.name
        kind = self.kind(item)
        if kind == "namespace":
            enabled = (item / "enable").read_text() == "1"
            if name in ("device_path", "device_uuid", "device_nguid", "buffered_io") and enabled:
                raise _err(errno.EBUSY, path)
            if name == "enable" and value.strip() == "1" and not enabled:
                dev = Path((item / "device_path").read_text())
                if not str(dev) or not dev.exists():
                    raise _err(errno.ENOENT, path)
                if (stat.S_ISREG(dev.stat().st_mode) and not self.o_direct_ok
                        and (item / "buffered_io").read_text() != "1"):
                    raise _err(errno.EINVAL, path)
        elif kind == "port" and name.startswith("addr_"):
            if any((item / "subsystems").iterdir()):
                raise _err(errno.EACCES, path)
        elif (kind == "subsystem" and name == "attr_allow_any_host" and value.strip() == "1"
              and any((item / "allowed_hosts").iterdir())):
            raise _err(errno.EINVAL, path)
        if name in WRITE_ONLY:
            self.ops.append(("write", f"{'/'.join(self.rel(path))}={value}"))
            return
        path.write_text(value.strip())
        self.ops.append(("write", f"{'/'.join(self.rel(path))}={value}"))

    def read(self, path: Path) -> str:
        if Path(path).name in WRITE_ONLY:
            raise _err(errno.EACCES, Path(path))
        return super().read(path)
