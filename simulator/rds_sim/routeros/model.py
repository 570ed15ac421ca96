"""The device's persistent state: disks, files, identity; saved as JSON atomically."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

STATE_VERSION = 1
T = TypeVar("T")


@dataclass
class Disk:
    """Change `slot` only through `State.rename_disk` (the slot index follows it)."""

    id: int
    slot: str
    type: str = "file"  # "file", or "raid" for the storage pool
    file_path: str = ""  # as given: with or without a leading '/'
    file_size: int = 0  # logical bytes of the backing file
    nvme_tcp_export: bool = False
    nvme_tcp_server_port: int = 4420
    nvme_tcp_server_nqn: str = ""
    nvme_tcp_server_allow_host_name: str = ""
    comment: str = ""
    disabled: bool = False
    mount_point: str = ""  # the pool's mount point (file name prefix of its files)
    size: int = 0  # the pool's size; file disks use file_size

    @property
    def is_file(self) -> bool:
        return self.type == "file"


@dataclass
class FileEntry:
    """Change `size` only through `State.resize_file` (pool accounting follows it)."""

    id: int
    name: str  # RouterOS name, never with a leading '/'
    type: str  # "directory" or "file"
    size: int = 0
    mtime: float = 0.0


@dataclass
class State:
    """The persistent lists, plus what is derived from them: the disk of a slot, the file of a
    name, the bytes used under a mount point. Read the lists freely; add, remove and rename disks
    and files only through the methods below, which keep the derived parts right."""

    identity: str
    disks: list[Disk] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    next_id: int = 1

    def __post_init__(self) -> None:
        self._by_slot = {d.slot: d for d in self.disks}
        self._by_name = {f.name: f for f in self.files}
        # commands keep slots and file names unique; a state file that does not is served by
        # scanning the lists (exact, slow)
        self._indexed = len(self._by_slot) == len(self.disks) and len(self._by_name) == len(
            self.files
        )
        self._used: dict[str, int] = {}  # mount point -> logical bytes of the files under it

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _index(self, index: dict[str, T], key: str, entry: T) -> None:
        if key in index:
            self._indexed = False  # a duplicate: scan from now on
        index[key] = entry

    # --- disks -------------------------------------------------------------------------

    def disks_with_slot(self, slot: str) -> list[Disk]:
        if not self._indexed:
            return [d for d in self.disks if d.slot == slot]
        d = self._by_slot.get(slot)
        return [] if d is None else [d]

    def disk(self, slot: str) -> Disk | None:
        found = self.disks_with_slot(slot)
        return found[0] if found else None

    def add_disk(self, d: Disk) -> None:
        self.disks.append(d)
        self._index(self._by_slot, d.slot, d)

    def remove_disk(self, d: Disk) -> None:
        self.disks.remove(d)
        if self._by_slot.get(d.slot) is d:
            del self._by_slot[d.slot]

    def rename_disk(self, d: Disk, slot: str) -> None:
        if self._by_slot.get(d.slot) is d:
            del self._by_slot[d.slot]
        d.slot = slot
        self._index(self._by_slot, d.slot, d)

    # --- files and pool accounting -----------------------------------------------------

    def files_named(self, name: str) -> list[FileEntry]:
        if not self._indexed:
            return [f for f in self.files if f.name == name]
        f = self._by_name.get(name)
        return [] if f is None else [f]

    def file(self, name: str) -> FileEntry | None:
        found = self.files_named(name)
        return found[0] if found else None

    def add_file(self, f: FileEntry) -> None:
        self.files.append(f)
        self._index(self._by_name, f.name, f)
        self._count(f, f.size)

    def resize_file(self, f: FileEntry, size: int) -> None:
        self._count(f, size - f.size)
        f.size = size

    def remove_files(self, names: set[str]) -> None:
        for f in self.files:
            if f.name in names:
                self._count(f, -f.size)
                self._by_name.pop(f.name, None)
        self.files = [f for f in self.files if f.name not in names]

    def used(self, mount_point: str) -> int:
        """Logical size of the regular files under a mount point: summed once, then kept."""
        if mount_point not in self._used:
            prefix = mount_point + "/"
            self._used[mount_point] = sum(
                f.size for f in self.files if f.type == "file" and f.name.startswith(prefix)
            )
        return self._used[mount_point]

    def _count(self, f: FileEntry, delta: int) -> None:
        if f.type != "file":
            return
        for mount_point in self._used:
            if f.name.startswith(mount_point + "/"):
                self._used[mount_point] += delta

    # --- JSON --------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        return cls(
            identity=data["identity"],
            disks=[Disk(**d) for d in data["disks"]],
            files=[FileEntry(**f) for f in data["files"]],
            next_id=data["next_id"],
        )


class StateFile:
    """`state.json`, rewritten atomically after every change.

    The bytes are exactly `json.dumps(state.to_json(), indent=1, sort_keys=True)`, but built from
    one piece of text per disk and file, cached by the entry's values (and their types), so a
    save re-encodes only the entries that changed since the last one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pieces: dict[tuple[Any, ...], str] = {}

    def load(self) -> State | None:
        if not self.path.exists():
            return None
        return State.from_json(json.loads(self.path.read_text()))

    def save(self, state: State) -> None:
        write_atomic(self.path, self.dumps(state).encode())

    def dumps(self, state: State) -> str:
        pieces: dict[tuple[Any, ...], str] = {}
        top = {
            "disks": self._list(state.disks, pieces),
            "files": self._list(state.files, pieces),
            "identity": json.dumps(state.identity),
            "next_id": json.dumps(state.next_id),
            "version": json.dumps(STATE_VERSION),
        }
        self._pieces = pieces  # drop the pieces of entries that changed or went away
        return "{\n" + ",\n".join(f" {json.dumps(k)}: {v}" for k, v in sorted(top.items())) + "\n}"

    def _list(self, entries: list[Any], pieces: dict[tuple[Any, ...], str]) -> str:
        if not entries:
            return "[]"
        out = []
        for e in entries:
            values = tuple(vars(e).values())
            key = (type(e), *values, *map(type, values))  # True == 1 == 1.0, but prints apart
            piece = self._pieces.get(key)
            if piece is None:  # the entry as json.dumps indents it two levels deep
                piece = json.dumps(vars(e), indent=1, sort_keys=True).replace("\n", "\n  ")
            pieces[key] = piece
            out.append(piece)
        return "[\n  " + ",\n  ".join(out) + "\n ]"


def write_atomic(path: Path, data: bytes) -> None:
    """tmp + fsync + rename + fsync(dir): a crash leaves the old or the new file, never half."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
