"""What the device exports over NVMe/TCP, and the backends that make exports real.

The Device only decides *which* disks are exported; a backend turns that into something a host
can connect to (nothing, a simulated fabric, Linux nvmet). Keeping this a small event interface lets
every backend be swapped without touching the RouterOS engine.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Export:
    """One NVMe/TCP export of a file disk."""

    slot: str
    nqn: str
    port: int
    path: Path  # host path of the backing file
    size: int  # bytes
    allowed_hosts: list[str] = field(default_factory=list)  # host NQNs; empty = any host


class ExportBackend(Protocol):
    """Told by the Device whenever the set of exports changes."""

    def export_added(self, e: Export) -> None: ...

    def export_removed(self, e: Export) -> None: ...

    def export_changed(self, e: Export) -> None: ...  # size or allowed hosts changed

    def device_down(self) -> None: ...  # every export went away (reboot begins)

    def device_up(self, exports: list[Export]) -> None: ...  # exports are back (boot ends)


@dataclass(frozen=True)
class ExportEvent:
    """One call the NoneBackend received, for tests."""

    kind: str  # "added" | "removed" | "changed" | "down" | "up"
    slot: str | None = None
    export: Export | None = None


class NoneBackend:
    """Bookkeeping only: the current exports and the events that led there."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.exports: dict[str, Export] = {}
        self.events: list[ExportEvent] = []
        self.up = True

    def export_added(self, e: Export) -> None:
        with self._lock:
            self.exports[e.slot] = e
            self.events.append(ExportEvent("added", e.slot, e))

    def export_removed(self, e: Export) -> None:
        with self._lock:
            self.exports.pop(e.slot, None)
            self.events.append(ExportEvent("removed", e.slot, e))

    def export_changed(self, e: Export) -> None:
        with self._lock:
            self.exports[e.slot] = e
            self.events.append(ExportEvent("changed", e.slot, e))

    def device_down(self) -> None:
        with self._lock:
            self.exports.clear()
            self.up = False
            self.events.append(ExportEvent("down"))

    def device_up(self, exports: list[Export]) -> None:
        with self._lock:
            self.exports = {e.slot: e for e in exports}
            self.up = True
            self.events.append(ExportEvent("up"))
