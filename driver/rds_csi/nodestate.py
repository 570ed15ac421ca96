"""What this node has staged and published: one small JSON file per volume.

``<state-dir>/volumes/<volume_id>.json``, written atomically (temporary file,
fsync, rename, fsync of the directory), so a restarted node plugin knows which
volumes to watch and repair. The file never holds a device *name* to be used:
the last seen ``major:minor`` is kept only to notice that the kernel renumbered
the volume; every use resolves the device by NQN.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger("rds_csi.nodestate")

FORMAT_VERSION = 1
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

STAGING = "staging"  # attach done, filesystem not yet mounted: not repaired by the monitor
STAGED = "staged"


class StateError(Exception):
    """A state file that cannot be read or written."""


@dataclass(frozen=True)
class PublishTarget:
    read_only: bool = False
    mount_flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class VolumeState:
    volume_id: str
    nqn: str
    address: str
    port: int
    staging_path: str
    block: bool
    fs_type: str = ""  # "" for block volumes
    mount_flags: tuple[str, ...] = ()
    read_only: bool = False  # staged read-only (reader-only access mode)
    ctrl_loss_tmo: int = -1
    reconnect_delay: int = 5
    keep_alive_tmo: int = 5
    host_nqn: str = ""
    phase: str = STAGING
    device_major: int = -1  # last seen, only to notice renumbering
    device_minor: int = -1
    device_name: str = ""
    publish: dict[str, PublishTarget] = field(default_factory=dict)

    @property
    def devno(self) -> tuple[int, int] | None:
        if self.device_major < 0:
            return None
        return self.device_major, self.device_minor

    def with_device(self, name: str, major: int, minor: int) -> VolumeState:
        return replace(self, device_name=name, device_major=major, device_minor=minor)

    def with_publish(self, target: str, pub: PublishTarget | None) -> VolumeState:
        targets = dict(self.publish)
        if pub is None:
            targets.pop(target, None)
        else:
            targets[target] = pub
        return replace(self, publish=targets)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["mount_flags"] = list(self.mount_flags)
        data["publish"] = {t: {"read_only": p.read_only, "mount_flags": list(p.mount_flags)}
                           for t, p in sorted(self.publish.items())}
        return {"version": FORMAT_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeState:
        if data.get("version") != FORMAT_VERSION:
            raise StateError(f"unsupported state format version {data.get('version')!r}")
        fields = dict(data)
        fields.pop("version")
        fields["mount_flags"] = tuple(fields.get("mount_flags", ()))
        fields["publish"] = {
            str(t): PublishTarget(read_only=bool(p.get("read_only", False)),
                                  mount_flags=tuple(p.get("mount_flags", ())))
            for t, p in dict(fields.get("publish", {})).items()
        }
        try:
            return cls(**fields)
        except TypeError as exc:
            raise StateError(f"bad state file: {exc}") from exc


class StateStore:
    """One JSON file per volume under ``<state_dir>/volumes``."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir) / "volumes"
        self._lock = threading.Lock()

    def _path(self, volume_id: str) -> Path:
        if not _SAFE_ID.match(volume_id):
            raise StateError(f"volume id {volume_id!r} cannot name a state file")
        return self.dir / f"{volume_id}.json"

    def load(self, volume_id: str) -> VolumeState | None:
        path = self._path(volume_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc}") from exc
        try:
            return VolumeState.from_json(json.loads(text))
        except (ValueError, AttributeError) as exc:
            raise StateError(f"cannot parse {path}: {exc}") from exc

    def save(self, state: VolumeState) -> None:
        path = self._path(state.volume_id)
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{state.volume_id}.", suffix=".tmp",
                                       dir=self.dir)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(state.to_json(), f, indent=1, sort_keys=True)
                    f.write("\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def delete(self, volume_id: str) -> None:
        with self._lock:
            self._path(volume_id).unlink(missing_ok=True)

    def all(self) -> list[VolumeState]:
        out: list[VolumeState] = []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return out
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                state = self.load(name[: -len(".json")])
            except StateError as exc:
                log.error("ignoring unreadable state file", extra={"fields": {
                    "file": name, "error": str(exc)}})
                continue
            if state is not None:
                out.append(state)
        return out
