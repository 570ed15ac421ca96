"""The block/filesystem boundary: probe, format, mount, bind, unmount, resize, stats.

One real implementation over the real tools (blkid, mkfs.ext4, mkfs.xfs, mount,
umount, resize2fs, xfs_growfs) and the kernel's own tables (/proc/self/mountinfo,
/proc/<pid>/fd, /sys/dev/block/<maj:min>/holders). Tests run it on loop devices.

Formatting is only ever done after a probe said "blank" (blkid exit 2). Any other
probe outcome (an error, an ambivalent result, a partition table without a
filesystem) is a refusal: a volume that might hold data is never formatted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("rds_csi.mount")

Runner = Callable[[Sequence[str], float], subprocess.CompletedProcess[str]]
FS_TYPES = ("ext4", "xfs")
_OCTAL = re.compile(r"\\([0-7]{3})")
_SAFE_OPTION = re.compile(r"^[A-Za-z0-9_.,=:/@+\-]{1,256}$")


def run_command(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=False)


class MountError(Exception):
    """A mount-layer command failed; the message names the command and its stderr."""


class ProbeError(MountError):
    """The probe could not say whether the device is blank: never format it."""


# ---------------------------------------------------------------------- mountinfo


def unescape(field: str) -> str:
    r"""Undo the kernel's octal escapes in mountinfo (``\040`` space, ``\011`` tab,
    ``\012`` newline, ``\134`` backslash)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class MountInfo:
    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: tuple[str, ...]  # per-mount options (ro/rw, nosuid, ...)
    optional: tuple[str, ...]  # shared:N, master:N, ...
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def devno(self) -> tuple[int, int]:
        return self.major, self.minor

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def parse_mountinfo_line(line: str) -> MountInfo | None:
    """One line of /proc/<pid>/mountinfo (proc(5)); None for a malformed line."""
    parts = line.rstrip("\n").split(" ")
    try:
        sep = parts.index("-", 6)
    except ValueError:
        return None
    if len(parts) < sep + 3 or sep < 6:
        return None
    major, colon, minor = parts[2].partition(":")
    if not colon or not major.isdigit() or not minor.isdigit():
        return None
    try:
        mount_id, parent_id = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return MountInfo(
        mount_id=mount_id,
        parent_id=parent_id,
        major=int(major),
        minor=int(minor),
        root=unescape(parts[3]),
        mount_point=unescape(parts[4]),
        options=tuple(parts[5].split(",")),
        optional=tuple(p for p in parts[6:sep] if p),
        fstype=unescape(parts[sep + 1]),
        source=unescape(parts[sep + 2]),
        super_options=tuple(parts[sep + 3].split(",")) if len(parts) > sep + 3 else (),
    )


def parse_mountinfo(text: str) -> list[MountInfo]:
    out = []
    for line in text.splitlines():
        if line.strip():
            info = parse_mountinfo_line(line)
            if info is not None:
                out.append(info)
    return out


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class FsStats:
    total_bytes: int
    available_bytes: int
    used_bytes: int
    total_inodes: int
    free_inodes: int
    used_inodes: int


@dataclass(frozen=True)
class Holder:
    kind: str  # "mount", "process", "holder"
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.detail}"


def validate_mount_flags(flags: Iterable[str]) -> list[str]:
    """Mount flags from a request reach ``mount -o`` only when they look like options."""
    out = []
    for flag in flags:
        if not _SAFE_OPTION.match(flag):
            raise ValueError(f"mount flag {flag!r} contains characters that are not allowed")
        out.append(flag)
    return out


class Mounter:
    """Real tools, configurable table locations (so tests can point at fixtures)."""

    def __init__(
        self,
        *,
        mountinfo_path: str = "/proc/self/mountinfo",
        proc_root: str = "/proc",
        sysfs_root: str = "/sys",
        runner: Runner = run_command,
        timeout: float = 120.0,
    ) -> None:
        self.mountinfo_path = mountinfo_path
        self.proc_root = Path(proc_root)
        self.sysfs_root = Path(sysfs_root)
        self._run = runner
        self.timeout = timeout

    def _call(self, argv: list[str], *, check: bool = True,
              timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        try:
            result = self._run(argv, timeout or self.timeout)
        except FileNotFoundError as exc:
            raise MountError(f"{argv[0]} is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise MountError(f"{' '.join(argv)} timed out") from exc
        if check and result.returncode != 0:
            msg = (result.stderr or result.stdout).strip()
            raise MountError(f"{' '.join(argv)} failed (exit {result.returncode}): {msg}")
        return result

    # ------------------------------------------------------------------ probe/format

    def probe(self, device: str) -> str | None:
        """The filesystem type on ``device``; None when blank. ProbeError otherwise."""
        result = self._call(["blkid", "-p", "-o", "export", device], check=False)
        if result.returncode == 2:
            return None
        if result.returncode != 0:
            raise ProbeError(f"blkid -p {device} failed (exit {result.returncode}): "
                             f"{(result.stderr or result.stdout).strip()}; refusing to format")
        tags = {}
        for line in result.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                tags[key.strip()] = value.strip()
        if tags.get("TYPE"):
            return tags["TYPE"]
        found = ", ".join(f"{k}={v}" for k, v in sorted(tags.items()) if k != "DEVNAME")
        raise ProbeError(f"{device} holds something that is not a filesystem ({found}); "
                         "refusing to format")

    def format(self, device: str, fs_type: str) -> None:
        if fs_type == "ext4":
            argv = ["mkfs.ext4", "-F", "-q", device]
        elif fs_type == "xfs":
            argv = ["mkfs.xfs", "-q", device]  # no -f: mkfs.xfs refuses an existing fs
        else:
            raise MountError(f"filesystem {fs_type!r} is not supported")
        self._call(argv, timeout=max(self.timeout, 600.0))
        log.info("formatted", extra={"fields": {"device": device, "fs_type": fs_type}})

    # ------------------------------------------------------------------ mount

    def mount(self, source: str, target: str, fs_type: str,
              options: Sequence[str] = ()) -> None:
        argv = ["mount", "-t", fs_type]
        opts = validate_mount_flags(options)
        if opts:
            argv += ["-o", ",".join(opts)]
        self._call([*argv, source, target])

    def bind_mount(self, source: str, target: str, *, read_only: bool = False,
                   options: Sequence[str] = ()) -> None:
        self._call(["mount", "--bind", source, target])
        extra = validate_mount_flags(options)
        if read_only or extra:
            # A bind mount ignores ro on the first call: remount it (mount(8)).
            opts = ["remount", "bind", *(["ro"] if read_only else []), *extra]
            try:
                self._call(["mount", "-o", ",".join(opts), target])
            except MountError:
                self._call(["umount", target], check=False)
                raise

    def unmount(self, target: str, *, lazy: bool = False) -> None:
        argv = ["umount", *(["-l"] if lazy else []), target]
        self._call(argv)

    # ------------------------------------------------------------------ tables

    def mounts(self) -> list[MountInfo]:
        try:
            text = Path(self.mountinfo_path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise MountError(f"cannot read {self.mountinfo_path}: {exc}") from exc
        return parse_mountinfo(text)

    @staticmethod
    def _canonical(path: str) -> str:
        return os.path.realpath(path)

    def mounts_at(self, path: str) -> list[MountInfo]:
        """Mounts whose mount point is ``path`` (stacked mounts: last is on top)."""
        want = {path.rstrip("/") or "/", self._canonical(path)}
        return [m for m in self.mounts() if m.mount_point in want]

    def is_mount_point(self, path: str) -> bool:
        return bool(self.mounts_at(path))

    def mounts_of(self, major: int, minor: int) -> list[MountInfo]:
        return [m for m in self.mounts() if m.devno == (major, minor)]

    def open_fds(self, major: int, minor: int) -> list[tuple[int, str]]:
        """(pid, command) of processes with the block device ``major:minor`` open."""
        want = os.makedev(major, minor)
        found: list[tuple[int, str]] = []
        try:
            pids = [p for p in os.listdir(self.proc_root) if p.isdigit()]
        except OSError:
            return found
        for pid in pids:
            fd_dir = self.proc_root / pid / "fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd in fds:
                try:
                    st = os.stat(fd_dir / fd)
                except OSError:
                    continue
                if stat.S_ISBLK(st.st_mode) and st.st_rdev == want:
                    try:
                        comm = (self.proc_root / pid / "comm").read_text().strip()
                    except OSError:
                        comm = "?"
                    found.append((int(pid), comm))
                    break
        return found

    def holders(self, major: int, minor: int, *,
                ignore_mounts: Iterable[str] = ()) -> list[Holder]:
        """Who keeps this block device busy: mounts, open file descriptors, stacked
        devices (/sys/dev/block/M:m/holders). Mount points in ``ignore_mounts`` are ours."""
        ignored = {self._canonical(p) for p in ignore_mounts} | set(ignore_mounts)
        out = [Holder("mount", f"{m.mount_point} ({m.fstype})")
               for m in self.mounts_of(major, minor) if m.mount_point not in ignored]
        out += [Holder("process", f"pid {pid} ({comm})")
                for pid, comm in self.open_fds(major, minor)]
        holders_dir = self.sysfs_root / "dev" / "block" / f"{major}:{minor}" / "holders"
        with contextlib.suppress(OSError):
            out += [Holder("holder", name) for name in sorted(os.listdir(holders_dir))]
        return out

    # ------------------------------------------------------------------ resize/stats

    def resize(self, fs_type: str, device: str, mount_point: str) -> None:
        """Grow a mounted filesystem to its device's size (online)."""
        if fs_type == "ext4":
            self._call(["resize2fs", device], timeout=max(self.timeout, 600.0))
        elif fs_type == "xfs":
            self._call(["xfs_growfs", mount_point], timeout=max(self.timeout, 600.0))
        else:
            raise MountError(f"cannot grow filesystem {fs_type!r}")

    @staticmethod
    def statvfs(path: str) -> FsStats:
        st = os.statvfs(path)
        total = st.f_blocks * st.f_frsize
        avail = st.f_bavail * st.f_frsize
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        return FsStats(total_bytes=total, available_bytes=avail, used_bytes=used,
                       total_inodes=st.f_files, free_inodes=st.f_ffree,
                       used_inodes=st.f_files - st.f_ffree)

    @staticmethod
    def check_path(path: str) -> str | None:
        """None when ``path`` answers; else why not (a stale or dead mount)."""
        try:
            os.statvfs(path)
            os.listdir(path)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            return f"{path} does not answer: {name} ({exc.strerror})"
        return None

    # ------------------------------------------------------------------ block nodes

    @staticmethod
    def mknod_block(path: str, major: int, minor: int, mode: int = 0o660) -> None:
        """Create (or re-point) the block device node ``path`` at ``major:minor``,
        replacing it atomically when it exists with another number."""
        want = os.makedev(major, minor)
        try:
            st = os.lstat(path)
            if stat.S_ISBLK(st.st_mode) and st.st_rdev == want:
                return
        except FileNotFoundError:
            pass
        tmp = f"{path}.rds-csi-tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.mknod(tmp, stat.S_IFBLK | mode, want)
        os.chmod(tmp, mode)  # exactly ``mode``, whatever the umask
        os.replace(tmp, path)

    @staticmethod
    def block_node(path: str) -> tuple[int, int] | None:
        """major:minor of the block node at ``path``; None if it is not one."""
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISBLK(st.st_mode):
            return None
        return os.major(st.st_rdev), os.minor(st.st_rdev)

    @staticmethod
    def device_size(path: str) -> int:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)
