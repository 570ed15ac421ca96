"""Per-key operation locks: a second concurrent call on the same volume is ABORTED.

The CSI spec lets a plugin refuse an operation on a volume that already has
one in flight (ABORTED; the CO retries with backoff). Waiting instead would
pile up threads behind a slow RDS and can deadlock two calls that take locks
in different orders.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rds_csi.status import aborted


class OperationLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[str, str] = {}

    @contextmanager
    def hold(self, *keys: str, operation: str) -> Iterator[None]:
        """Hold every key (all or none); raise ABORTED naming the conflicting operation."""
        wanted = sorted({k for k in keys if k})
        with self._guard:
            for key in wanted:
                if key in self._held:
                    raise aborted(
                        f"an operation ({self._held[key]}) is already in progress for {key}; "
                        "retry later"
                    )
            for key in wanted:
                self._held[key] = operation
        try:
            yield
        finally:
            with self._guard:
                for key in wanted:
                    self._held.pop(key, None)

    def busy(self, key: str) -> bool:
        with self._guard:
            return key in self._held
