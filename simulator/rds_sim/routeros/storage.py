"""Backing files of file disks, as real sparse files under <state-dir>/files/.

RouterOS file names map to host paths component by component; `..`, `.`, empty components and
NUL are refused, and the resolved path must stay inside the root, so no name escapes it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path

FICLONE = 0x40049409  # ioctl: reflink the whole file (btrfs, xfs)


def normalize(name: str) -> str | None:
    """`/storage-pool/k8s/x.img` -> `storage-pool/k8s/x.img`; None if not a safe name."""
    if name.startswith("/"):
        name = name[1:]
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") or "\0" in p for p in parts):
        return None
    return "/".join(parts)


def parents(name: str) -> list[str]:
    """`a/b/c.img` -> [`a`, `a/b`]."""
    parts = name.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._real_root = os.path.realpath(root)

    def host_path(self, name: str) -> Path:
        norm = normalize(name)
        if norm is None:
            raise ValueError(f"unsafe file name {name!r}")
        path = self.root.joinpath(*norm.split("/"))
        real = os.path.realpath(path)
        if os.path.commonpath([real, self._real_root]) != self._real_root:
            raise ValueError(f"file name {name!r} escapes the storage root")
        return path

    def mkdir(self, name: str) -> None:
        self.host_path(name).mkdir(parents=True, exist_ok=True)

    def create(self, name: str, size: int) -> None:
        """A sparse file of `size` bytes (no data blocks written)."""
        path = self.host_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)

    def resize(self, name: str, size: int) -> None:
        os.truncate(self.host_path(name), size)

    def copy(self, src: str, dst: str, size: int) -> None:
        """Copy data: reflink if the filesystem can, else a sparse-aware copy_file_range."""
        spath, dpath = self.host_path(src), self.host_path(dst)
        dpath.parent.mkdir(parents=True, exist_ok=True)
        with open(spath, "rb") as s, open(dpath, "wb") as d:
            try:
                fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
            except OSError:
                _sparse_copy(s.fileno(), d.fileno(), os.fstat(s.fileno()).st_size)
            d.truncate(size)

    def remove(self, name: str) -> None:
        path = self.host_path(name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def mtime(self, name: str) -> float:
        return self.host_path(name).stat().st_mtime


def _sparse_copy(src: int, dst: int, length: int) -> None:
    """Copy only the data extents (SEEK_DATA/SEEK_HOLE), so holes stay holes."""
    pos = 0
    while pos < length:
        try:
            start = os.lseek(src, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only a hole remains
                return
            start, end = pos, length  # no SEEK_DATA support: copy everything
        else:
            end = os.lseek(src, start, os.SEEK_HOLE)
        _copy_range(src, dst, start, end)
        pos = end


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    off = start
    while off < end:
        try:
            n = os.copy_file_range(src, dst, end - off, off, off)
        except OSError:
            os.lseek(src, off, os.SEEK_SET)
            os.lseek(dst, off, os.SEEK_SET)
            n = os.write(dst, os.read(src, min(end - off, 1 << 20)))
        if n == 0:
            return
        off += n
