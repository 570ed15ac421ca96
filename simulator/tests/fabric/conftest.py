"""Fixtures: a fabric engine on a fake clock, exports over real files, guaranteed cleanup."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rds_sim.exports import Export
from rds_sim.fabric.blockdev import unmount_under
from rds_sim.fabric.clock import FakeClock
from rds_sim.fabric.engine import FabricEngine

MiB = 1024 * 1024


def _loop_ok() -> bool:
    return os.geteuid() == 0 and shutil.which("losetup") is not None and os.path.exists(
        "/dev/loop-control"
    )


requires_loop = pytest.mark.skipif(not _loop_ok(), reason="needs root, losetup, /dev/loop-control")


def loops_over(path: Path) -> list[str]:
    r = subprocess.run(["losetup", "-j", str(path)], capture_output=True, text=True, check=False)
    return [line for line in r.stdout.splitlines() if line.strip()]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    # short paths: unix sockets live under the node roots
    return tmp_path


@pytest.fixture
def engine(workdir: Path) -> Iterator[FabricEngine]:
    if not _loop_ok():
        pytest.skip("needs root, losetup, /dev/loop-control")
    eng = FabricEngine(workdir / "fabric", clock=FakeClock())
    try:
        yield eng
    finally:
        unmount_under(workdir)
        eng.close()
        leftover = [f for f in workdir.rglob("*.img") for _ in loops_over(f)]
        assert not leftover, f"loop devices left behind over {leftover}"


@pytest.fixture
def make_export(engine: FabricEngine, workdir: Path) -> Callable[..., Export]:
    disks = workdir / "disks"
    disks.mkdir(exist_ok=True)

    def make(slot: str, size: int = 64 * MiB, port: int = 4420,
             allowed: list[str] | None = None, add: bool = True) -> Export:
        path = disks / f"{slot}.img"
        if not path.exists():
            with path.open("wb") as f:
                f.truncate(size)
        e = Export(slot, f"nqn.2000-02.com.mikrotik:{slot}", port, path, size,
                   list(allowed or []))
        if add:
            engine.backend.export_added(e)
        return e

    return make
