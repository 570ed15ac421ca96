"""Circuit breaker around a Transport.

When the RDS is down (a reboot takes tens of seconds), every caller would otherwise wait for its own
connect timeouts. After `failure_threshold` consecutive connection failures the breaker opens and
fails fast with `RdsUnavailable`; after `cooldown` seconds the next call (or `probe()`, which a
background loop or the CSI Probe may call) is let through as a trial: success closes the breaker,
failure re-opens it for another cool-down. Only connection-level failures count: a device that
answers with an error message is up.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable

from rds_csi.errors import ConnectionLost, RdsUnavailable
from rds_csi.rds import commands
from rds_csi.rds.transport import CommandOutput, Transport

log = logging.getLogger(__name__)


class BreakerState(enum.Enum):
    CLOSED = "closed"  # normal operation
    OPEN = "open"  # failing fast until the cool-down has passed
    HALF_OPEN = "half-open"  # one trial call in flight


class CircuitBreaker:
    """A Transport that fails fast while the wrapped Transport's RDS is unreachable."""

    def __init__(
        self,
        transport: Transport,
        *,
        failure_threshold: int = 3,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[BreakerState, BreakerState], None] | None = None,
        probe_command: str = commands.system_identity(),
        probe_timeout: float = 10.0,
        name: str = "rds",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self._transport = transport
        self._threshold = failure_threshold
        self._cooldown = cooldown
        self._clock = clock
        self._on_change = on_state_change
        self._probe_command = probe_command
        self._probe_timeout = probe_timeout
        self._name = name
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._last_error = ""

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def run(self, command: str, *, timeout: float) -> CommandOutput:
        self._admit()
        try:
            out = self._transport.run(command, timeout=timeout)
        except (RdsUnavailable, ConnectionLost) as e:
            self._record_failure(e)
            raise
        except BaseException:
            self._abandon_trial()
            raise
        self._record_success()
        return out

    def probe(self) -> BreakerState:
        """Try the RDS now if the breaker is closed or its cool-down has passed; return the state.

        Cheap enough for a background loop. Never raises for connection failures.
        """
        with contextlib.suppress(RdsUnavailable, ConnectionLost):
            self.run(self._probe_command, timeout=self._probe_timeout)
        return self._state

    def _admit(self) -> None:
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return
            wait = self._opened_at + self._cooldown - self._clock()
            if self._state is BreakerState.OPEN and wait <= 0:
                self._set_state(BreakerState.HALF_OPEN)
                return
            raise RdsUnavailable(
                f"{self._name} unavailable (circuit {self._state.value} after "
                f"{self._failures} consecutive connection failures; last: {self._last_error}); "
                f"next try in {max(wait, 0.0):.1f}s"
            )

    def _record_failure(self, error: Exception) -> None:
        with self._lock:
            self._failures += 1
            self._last_error = str(error)
            if self._state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
                self._opened_at = self._clock()
                self._set_state(BreakerState.OPEN)

    def _record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._set_state(BreakerState.CLOSED)

    def _abandon_trial(self) -> None:
        """An unexpected error says nothing about reachability: give the trial slot back."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._set_state(BreakerState.OPEN)

    def _set_state(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is new:
            return
        log.log(
            logging.INFO if new is BreakerState.CLOSED else logging.WARNING,
            "%s circuit breaker: %s -> %s",
            self._name,
            old.value,
            new.value,
        )
        if self._on_change is not None:
            self._on_change(old, new)
