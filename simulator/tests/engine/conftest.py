"""Fixtures: a fresh Device on a temporary state dir, with a NoneBackend to watch exports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rds_sim.device import CommandResult, Device
from rds_sim.exports import NoneBackend

ADD = (
    "/disk add type=file file-path=storage-pool/k8s/{slot}.img file-size={size} slot={slot}"
    " nvme-tcp-export=yes nvme-tcp-server-port=4420"
    " nvme-tcp-server-nqn=nqn.2000-02.com.mikrotik:{slot}"
)


@pytest.fixture
def backend() -> NoneBackend:
    return NoneBackend()


@pytest.fixture
def device(tmp_path: Path, backend: NoneBackend) -> Device:
    return Device(tmp_path / "state", export_backend=backend, pool_size=100 << 30)


Run = Callable[..., CommandResult]


@pytest.fixture
def run(device: Device) -> Run:
    def _run(line: str, width: int = 80, expect: int | None = 0) -> CommandResult:
        result = device.execute(line, width=width)
        if expect is not None:
            assert result.exit_status == expect, result.output
        return result

    return _run


def add(run: Run, slot: str, size: str = "1G", expect: int | None = 0) -> CommandResult:
    return run(ADD.format(slot=slot, size=size), expect=expect)
