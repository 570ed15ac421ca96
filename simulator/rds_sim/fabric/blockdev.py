"""Real block devices behind simulated namespaces: loop devices, device nodes, holders.

A namespace is a loop device over the RDS disk's backing file; every host attached to the same
file shares one loop device, so all of them see the same bytes. Whether a (deleted) namespace is
still held -- by a mount of its device node or an open file descriptor -- is read from
/proc/self/mountinfo and /proc/*/fd, as the kernel's reference counts would see it.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_NS_NODE = re.compile(r"^nvme\d+n\d+$")

log = logging.getLogger(__name__)

LOSETUP = "losetup"


class LoopError(Exception):
    pass


@dataclass
class Loop:
    path: str  # /dev/loopN
    major: int
    minor: int
    backing: str
    refs: int = 0


def _run(*args: str) -> str:
    r = subprocess.run(args, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise LoopError(f"{' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r.stdout


class LoopPool:
    """One loop device per backing file, shared and reference counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_file: dict[str, Loop] = {}
        self._ever: dict[str, Loop] = {}  # every loop this pool attached (teardown detaches all)

    def acquire(self, backing: Path) -> Loop:
        key = str(Path(backing).resolve())
        with self._lock:
            loop = self._by_file.get(key)
            if loop is None:
                dev = _run(LOSETUP, "--find", "--show", key).strip()
                st = os.stat(dev)
                loop = Loop(dev, os.major(st.st_rdev), os.minor(st.st_rdev), key)
                self._by_file[key] = loop
                self._ever[dev] = loop
                log.debug("attached %s over %s", dev, key)
            loop.refs += 1
            return loop

    def release(self, loop: Loop) -> None:
        with self._lock:
            loop.refs -= 1
            if loop.refs > 0:
                return
            if self._by_file.get(loop.backing) is loop:
                del self._by_file[loop.backing]
        _detach(loop)

    def refresh_capacity(self, backing: Path) -> None:
        key = str(Path(backing).resolve())
        with self._lock:
            loop = self._by_file.get(key)
        if loop is not None:
            try:
                _run(LOSETUP, "--set-capacity", loop.path)
            except LoopError as e:
                log.warning("%s", e)

    def active(self) -> list[Loop]:
        with self._lock:
            return list(self._by_file.values())

    def close(self) -> None:
        """Detach every loop device this pool ever attached (busy ones detach on last close)."""
        with self._lock:
            loops = list(self._ever.values())
            self._by_file.clear()
            self._ever.clear()
        for loop in loops:
            _detach(loop)


def _detach(loop: Loop) -> None:
    # LOOP_CLR_FD on a device still open (mounted) sets autoclear: it goes away on last close.
    try:
        out = _run(LOSETUP, "--noheadings", "--output", "BACK-FILE", loop.path)
    except LoopError:
        return  # already gone
    if out.strip() and out.strip() != loop.backing and not out.strip().startswith(loop.backing):
        return  # the number was reused by someone else's loop device
    try:
        _run(LOSETUP, "--detach", loop.path)
        log.debug("detached %s", loop.path)
    except LoopError as e:
        log.debug("%s", e)
        return
    # The kernel frees a namespace head's minor the moment the disk is released, and the next
    # disk takes the lowest free one. A loop detach can lag (a short-lived opener such as a
    # probe defers it to the last close): wait a moment so the next `losetup --find` sees the
    # number free, as the next nvme disk would. A device that stays open (a mount) keeps it.
    backing = Path("/sys/block") / Path(loop.path).name / "loop" / "backing_file"
    deadline = time.monotonic() + 1.0
    while backing.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def make_node(path: Path, kind: str, major: int, minor: int, mode: int) -> None:
    flag = stat.S_IFBLK if kind == "b" else stat.S_IFCHR
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    os.mknod(path, flag | mode, os.makedev(major, minor))
    os.chmod(path, mode)


def remove_node(path: Path) -> None:
    path.unlink(missing_ok=True)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class MountEntry:
    majmin: str
    mount_point: str
    source: str


def mounts() -> list[MountEntry]:
    entries = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split()
            try:
                sep = parts.index("-")
            except ValueError:
                continue
            source = parts[sep + 2] if len(parts) > sep + 2 else ""
            entries.append(MountEntry(parts[2], _unescape(parts[4]), _unescape(source)))
    return entries


def is_held(node: Path, major: int, minor: int) -> bool:
    """Is the block device node `node` (major:minor) mounted or open by any process?"""
    names = {str(node), os.path.realpath(node) if node.exists() else str(node)}
    majmin = f"{major}:{minor}"
    for m in mounts():
        if m.majmin == majmin and m.source in names:
            return True
    targets = names | {n + " (deleted)" for n in names}
    want = os.makedev(major, minor)
    dev_dir = os.path.dirname(str(node))
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
                if link in targets:
                    return True
                # Opened through another node for the same number (a kubelet block publish
                # node, a VM's disk path): the kernel holds the disk all the same. The loop
                # device is shared between nodes, so another node's own nvme node is not.
                if link.startswith("/dev/") or (_NS_NODE.match(os.path.basename(link))
                                                and os.path.dirname(link) != dev_dir):
                    continue
                st = os.stat(f"{fd_dir}/{fd}")
                if stat.S_ISBLK(st.st_mode) and st.st_rdev == want:
                    return True
            except OSError:
                continue
    return False


def unmount_under(root: Path) -> list[str]:
    """Unmount every mount point under `root`, deepest first; returns what was unmounted."""
    base = os.path.realpath(root).rstrip("/") + "/"
    done: list[str] = []
    for _ in range(5):
        points = sorted(
            {m.mount_point for m in mounts() if (m.mount_point + "/").startswith(base)},
            key=len,
            reverse=True,
        )
        if not points:
            break
        for p in points:
            r = subprocess.run(["umount", p], capture_output=True, check=False)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", p], capture_output=True, check=False)
            done.append(p)
    return done
