"""CircuitBreaker with a fake clock and a scripted Transport."""

from __future__ import annotations

import pytest

from rds_csi.errors import CommandTimeout, ConnectionLost, RdsUnavailable
from rds_csi.rds.breaker import BreakerState, CircuitBreaker
from rds_csi.rds.transport import CommandOutput


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Flaky:
    """A Transport whose next outcomes are scripted: an exception to raise or output to return."""

    def __init__(self) -> None:
        self.down: BaseException | None = None
        self.calls: list[str] = []

    def run(self, command: str, *, timeout: float) -> CommandOutput:
        self.calls.append(command)
        if self.down is not None:
            raise self.down
        return CommandOutput(f"ok {command}", 0)


Setup = tuple[CircuitBreaker, Flaky, Clock, list[tuple[BreakerState, BreakerState]]]


@pytest.fixture
def setup() -> Setup:
    flaky, clock = Flaky(), Clock()
    changes: list[tuple[BreakerState, BreakerState]] = []
    b = CircuitBreaker(
        flaky,
        failure_threshold=3,
        cooldown=5.0,
        clock=clock,
        on_state_change=lambda old, new: changes.append((old, new)),
    )
    return b, flaky, clock, changes


def test_opens_after_consecutive_failures_and_fails_fast(setup: Setup) -> None:
    b, flaky, _, changes = setup
    flaky.down = RdsUnavailable("connection refused")
    for _ in range(3):
        assert b.state is BreakerState.CLOSED
        with pytest.raises(RdsUnavailable, match="connection refused"):
            b.run("x", timeout=1)
    assert b.state is BreakerState.OPEN
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]
    with pytest.raises(RdsUnavailable, match=r"circuit open .*refused.*try in 5\.0s"):
        b.run("x", timeout=1)
    assert len(flaky.calls) == 3  # failed fast: not sent


def test_success_resets_the_count(setup: Setup) -> None:
    b, flaky, _, _ = setup
    for _ in range(5):
        flaky.down = ConnectionLost("dropped")
        with pytest.raises(ConnectionLost):
            b.run("x", timeout=1)
        with pytest.raises(ConnectionLost):
            b.run("x", timeout=1)
        flaky.down = None
        b.run("x", timeout=1)
    assert b.state is BreakerState.CLOSED
    assert b.consecutive_failures == 0


def test_trial_after_cooldown_closes_on_success(setup: Setup) -> None:
    b, flaky, clock, changes = setup
    flaky.down = CommandTimeout("timed out")
    for _ in range(3):
        with pytest.raises(CommandTimeout):
            b.run("x", timeout=1)
    clock.now += 4.9
    with pytest.raises(RdsUnavailable, match=r"next try in 0\.1s"):
        b.run("x", timeout=1)
    clock.now += 0.1
    flaky.down = None
    assert b.run("trial", timeout=1).stdout == "ok trial"
    assert b.state is BreakerState.CLOSED
    assert changes == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


def test_failed_trial_reopens_for_another_cooldown(setup: Setup) -> None:
    b, flaky, clock, _ = setup
    flaky.down = RdsUnavailable("down")
    for _ in range(3):
        with pytest.raises(RdsUnavailable):
            b.run("x", timeout=1)
    clock.now += 5
    with pytest.raises(RdsUnavailable, match=r"^down$"):
        b.run("trial", timeout=1)  # the trial reaches the transport
    assert b.state is BreakerState.OPEN
    with pytest.raises(RdsUnavailable, match="circuit open"):
        b.run("x", timeout=1)
    clock.now += 5
    flaky.down = None
    b.run("x", timeout=1)
    assert b.state is BreakerState.CLOSED


def test_only_one_trial_while_half_open(setup: Setup) -> None:
    b, flaky, clock, _ = setup
    flaky.down = RdsUnavailable("down")
    for _ in range(3):
        with pytest.raises(RdsUnavailable):
            b.run("x", timeout=1)
    clock.now += 5

    class Reentrant:
        def run(self, command: str, *, timeout: float) -> CommandOutput:
            # a second caller arrives while the trial is in flight
            with pytest.raises(RdsUnavailable, match="circuit half-open"):
                b.run("concurrent", timeout=1)
            return CommandOutput("", 0)

    b._transport = Reentrant()
    b.run("trial", timeout=1)
    assert b.state is BreakerState.CLOSED


def test_device_errors_and_bugs_do_not_count(setup: Setup) -> None:
    b, flaky, clock, _ = setup
    flaky.down = ValueError("a bug")
    for _ in range(5):
        with pytest.raises(ValueError):
            b.run("x", timeout=1)
    assert b.state is BreakerState.CLOSED
    flaky.down = RdsUnavailable("down")
    for _ in range(3):
        with pytest.raises(RdsUnavailable):
            b.run("x", timeout=1)
    clock.now += 5
    flaky.down = ValueError("a bug")
    with pytest.raises(ValueError):
        b.run("trial", timeout=1)
    assert b.state is BreakerState.OPEN  # the trial slot is given back
    flaky.down = None
    b.run("x", timeout=1)
    assert b.state is BreakerState.CLOSED


def test_probe_runs_a_cheap_command_and_never_raises(setup: Setup) -> None:
    b, flaky, clock, _ = setup
    flaky.down = RdsUnavailable("down")
    for _ in range(3):
        assert b.probe() in (BreakerState.CLOSED, BreakerState.OPEN)
    assert b.probe() is BreakerState.OPEN
    assert flaky.calls == ["/system identity print"] * 3
    clock.now += 5
    flaky.down = None
    assert b.probe() is BreakerState.CLOSED


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(Flaky(), failure_threshold=0)
