"""The device's persistent state: disks, files, identity; saved as JSON atomically."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_VERSION = 1


@dataclass
class Disk:
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
    id: int
    name: str  # RouterOS name, never with a leading '/'
    type: str  # "directory" or "file"
    size: int = 0
    mtime: float = 0.0


@dataclass
class State:
    identity: str
    disks: list[Disk] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    next_id: int = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def disk(self, slot: str) -> Disk | None:
        return next((d for d in self.disks if d.slot == slot), None)

    def file(self, name: str) -> FileEntry | None:
        return next((f for f in self.files if f.name == name), None)

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


def save(path: Path, state: State) -> None:
    """tmp + fsync + rename + fsync(dir): a crash leaves the old or the new state, never half."""
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load(path: Path) -> State | None:
    if not path.exists():
        return None
    return State.from_json(json.loads(path.read_text()))
