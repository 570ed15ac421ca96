"""Simulated NVMe/TCP host fabric: per-node kernel NVMe hosts driven by the simulated target.

Public API (imported lazily so the per-node `nvme` client starts fast):
FabricEngine, FabricBackend, FabricHost, ConnectOptions, ConnectError, FakeClock,
MonotonicClock, unmount_under.
"""

from __future__ import annotations

from typing import Any

_WHERE = {
    "FabricEngine": "engine",
    "FabricBackend": "target",
    "FabricHost": "host",
    "ConnectOptions": "host",
    "ConnectError": "host",
    "FakeClock": "clock",
    "MonotonicClock": "clock",
    "unmount_under": "blockdev",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
