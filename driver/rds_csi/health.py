"""Readiness checks behind the CSI Probe RPC.

The controller plugs in "the RDS answers over SSH"; the node plugs in "the
nvme tooling is present". Probe reports ready only when every check passes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    reason: str = ""


class HealthCheck(Protocol):
    name: str

    def check(self) -> HealthResult: ...


class ExecutableCheck:
    """Ready when an executable exists, e.g. the ``nvme`` CLI on a node."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path

    def check(self) -> HealthResult:
        if os.path.isfile(self.path) and os.access(self.path, os.X_OK):
            return HealthResult(True)
        return HealthResult(False, f"{self.path} is missing or not executable")


class FunctionCheck:
    """Adapts a callable returning HealthResult (used by services to plug in)."""

    def __init__(self, name: str, fn: Callable[[], HealthResult]) -> None:
        self.name = name
        self._fn = fn

    def check(self) -> HealthResult:
        return self._fn()


class Readiness:
    """Runs all checks; logs a reason whenever readiness changes."""

    def __init__(self, checks: Sequence[HealthCheck] = ()) -> None:
        self._checks = list(checks)
        self._lock = threading.Lock()
        self._last: dict[str, bool] = {}

    def add(self, check: HealthCheck) -> None:
        with self._lock:
            self._checks.append(check)

    def ready(self) -> bool:
        with self._lock:
            checks = list(self._checks)
        all_ok = True
        for check in checks:
            try:
                result = check.check()
            except Exception as exc:  # a broken check means not ready, never a crash
                result = HealthResult(False, f"check raised {type(exc).__name__}: {exc}")
            with self._lock:
                changed = self._last.get(check.name) != result.ok
                self._last[check.name] = result.ok
            if changed:
                if result.ok:
                    log.info("health check passed", extra={"fields": {"check": check.name}})
                else:
                    log.warning(
                        "health check failed",
                        extra={"fields": {"check": check.name, "reason": result.reason}},
                    )
            all_ok = all_ok and result.ok
        return all_ok
