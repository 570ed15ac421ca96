"""What menu handlers work on: the state under one lock, the backing files, the export backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..exports import Export, ExportBackend
from . import model
from .behaviour import Behaviour
from .model import Disk, FileEntry, State
from .storage import Storage, parents


@dataclass
class ExecContext:
    """Per command line: console width, and the listing of the last print (for item numbers)."""

    width: int = 80
    listings: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class Traffic:
    read_ops: int = 0
    write_ops: int = 0
    read_bps: int = 0
    write_bps: int = 0


class Runtime:
    def __init__(
        self,
        state_dir: Path,
        behaviour: Behaviour,
        backend: ExportBackend,
        identity: str,
        pool_size: int,
    ) -> None:
        self.lock = threading.RLock()
        self.behaviour = behaviour
        self.backend = backend
        self.state_file = model.StateFile(state_dir / "state.json")
        self.storage = Storage(state_dir / "files")
        self.boot_time = time.time()
        self.traffic: dict[str, Traffic] = {}
        self.on_reboot: Callable[[], None] = lambda: None
        loaded = self.state_file.load()
        if loaded is None:
            loaded = State(identity=identity)
            pool = Disk(loaded.new_id(), "storage-pool", type="raid", mount_point="storage-pool")
            loaded.add_disk(pool)
            self.storage.mkdir("storage-pool")
            mtime = self.storage.mtime("storage-pool")
            loaded.add_file(FileEntry(loaded.new_id(), "storage-pool", "directory", 0, mtime))
        self.state = loaded
        for d in self.state.disks:
            if not d.is_file:
                d.size = pool_size  # the pool's size is configuration, not state
        self.persist()

    def persist(self) -> None:
        self.state_file.save(self.state)

    # --- pool accounting -----------------------------------------------------------------

    def pools(self) -> list[Disk]:
        return [d for d in self.state.disks if d.mount_point]

    def pool_of(self, file_name: str) -> Disk | None:
        return next((p for p in self.pools() if file_name.startswith(p.mount_point + "/")), None)

    def used(self, pool: Disk) -> int:
        """Logical size of every file under the pool (removed disks' files still count)."""
        return self.state.used(pool.mount_point)

    def free(self, pool: Disk) -> int:
        return max(0, pool.size - self.used(pool))

    # --- files ---------------------------------------------------------------------------

    def add_file(self, name: str, size: int) -> FileEntry:
        """Record a file and its parent directories (they appear in /file like on the device)."""
        now = time.time()
        for parent in parents(name):
            if self.state.file(parent) is None:
                self.state.add_file(FileEntry(self.state.new_id(), parent, "directory", 0, now))
        entry = FileEntry(self.state.new_id(), name, "file", size, self.storage.mtime(name))
        self.state.add_file(entry)
        return entry

    def resize_file(self, name: str, size: int) -> None:
        self.storage.resize(name, size)
        entry = self.state.file(name)
        if entry is not None:
            self.state.resize_file(entry, size)
            entry.mtime = self.storage.mtime(name)

    # --- exports -------------------------------------------------------------------------

    def export_of(self, d: Disk) -> Export | None:
        if not d.is_file or not d.nvme_tcp_export or d.disabled:
            return None
        hosts = [h for h in d.nvme_tcp_server_allow_host_name.split(",") if h]
        return Export(
            slot=d.slot,
            nqn=d.nvme_tcp_server_nqn,
            port=d.nvme_tcp_server_port,
            path=self.storage.host_path(d.file_path),
            size=d.file_size,
            allowed_hosts=hosts,
        )

    def exports(self) -> list[Export]:
        return [e for d in self.state.disks if (e := self.export_of(d)) is not None]

    def sync_export(self, before: Export | None, after: Export | None) -> None:
        """Tell the backend what changed between two views of one disk's export."""
        if before == after:
            return
        if before is not None and (
            after is None
            or (before.slot, before.nqn, before.port, before.path)
            != (after.slot, after.nqn, after.port, after.path)
        ):
            self.backend.export_removed(before)
            before = None
        if after is None:
            return
        if before is None:
            self.backend.export_added(after)
        else:
            self.backend.export_changed(after)
