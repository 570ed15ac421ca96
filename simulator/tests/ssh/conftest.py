"""Fixtures for the SSH-face tests: a simulator on the fake device, and a TCP probe."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_device import FakeDevice

from rds_sim.server import Simulator


@pytest.fixture
def fake(tmp_path: Path) -> FakeDevice:
    return FakeDevice(tmp_path / "state")


@pytest.fixture
def sim(make_sim: Callable[..., Simulator], fake: FakeDevice) -> Simulator:
    """A started simulator whose device is the fake (transport behaviour only)."""
    return make_sim(device=fake)


def refuses_ssh(port: int, timeout: float = 2.0) -> bool:
    """True if a TCP connection to the port gets no SSH banner (refused or closed at once)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return not s.recv(64).startswith(b"SSH-")
    except OSError:
        return True


@pytest.fixture
def probe() -> Callable[[int], bool]:
    return refuses_ssh
