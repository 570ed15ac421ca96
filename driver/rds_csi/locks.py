"""Per-key operation locks: a second concurrent call on the same volume is ABORTED.

The CSI spec lets a plugin refuse an operation on a volume that already has
one in flight (ABORTED; the CO retries with backoff). Waiting instead would
pile up threads behind a slow RDS and can deadlock two calls that take locks
in different orders.

Background holders (the node's resilience monitor) are different: their checks
are short and a CO must not see ABORTED (and back off for seconds) because a
routine pass happened to be looking at the volume. A caller that passes
``wait`` waits up to that long for a background holder; background holders
themselves never wait, so no cycle can form.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rds_csi.status import aborted


class OperationLocks:
    def __init__(self) -> None:
        self._guard = threading.Condition(threading.Lock())
        self._held: dict[str, tuple[str, bool]] = {}  # key -> (operation, background)

    @contextmanager
    def hold(self, *keys: str, operation: str, wait: float = 0.0,
             background: bool = False) -> Iterator[None]:
        """Hold every key (all or none); raise ABORTED naming the conflicting operation.

        ``wait``: seconds to wait while the conflicting holder is a background one.
        ``background``: this hold is a background check (others may wait for it)."""
        wanted = sorted({k for k in keys if k})
        deadline = time.monotonic() + wait
        with self._guard:
            while True:
                busy = [k for k in wanted if k in self._held]
                if not busy:
                    break
                op, bg = self._held[busy[0]]
                left = deadline - time.monotonic()
                if not bg or left <= 0:
                    raise aborted(
                        f"an operation ({op}) is already in progress for {busy[0]}; "
                        "retry later"
                    )
                self._guard.wait(left)
            for key in wanted:
                self._held[key] = (operation, background)
        try:
            yield
        finally:
            with self._guard:
                for key in wanted:
                    self._held.pop(key, None)
                self._guard.notify_all()

    def busy(self, key: str) -> bool:
        with self._guard:
            return key in self._held
