"""Kernel tier fixtures: an RDS micro-VM and a node micro-VM joined by a virtual cable.

Every test here is skipped with the reason when micro-VMs cannot run (no qemu, no kernel cache:
run e2e/kernel/setup.sh, or `make e2e-vm`). On a host whose own kernel has nvmet and nvme-tcp
the same tests run on the host itself (RDS_CSI_KERNEL_MODE=local; not exercised yet).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_rig import RDS_ADDR, Pair
from vm import Cable, LocalGuest, MicroVM, start_all, unavailable_reason

HERE = Path(__file__).resolve().parent


def _mode() -> str:
    return os.environ.get("RDS_CSI_KERNEL_MODE", "vm")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None if _mode() == "local" else unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"kernel tier: {reason}")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    if _mode() == "local":
        local = LocalGuest("local")
        yield Pair(local, local, "127.0.0.1", lambda on: local.partition(4420, on))
        local.stop()
        return
    cable = Cable()
    rds = MicroVM("rds", netdevs=[cable.end(1)])
    node = MicroVM("node1", netdevs=[cable.end(2)])
    try:
        started = time.monotonic()
        start_all([rds, node])
        print(f"\nboot: rds {rds.boot_seconds:.1f} s, node1 {node.boot_seconds:.1f} s "
              f"(both ready {time.monotonic() - started:.1f} s)")
        yield Pair(rds, node, RDS_ADDR, lambda on: node.set_link(cable.id, not on))
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            for vm in (rds, node):
                print(f"\n--- console of {vm.name} ---\n{vm.console(80)}")
        rds.cleanup()
        node.cleanup()
