"""Crash and fault cases: every one ends with the right number of disks and no orphaned files."""

from __future__ import annotations

import concurrent.futures as cf
import time

import pytest

from rds_csi.controller import ControllerService
from rds_csi.csi import csi_pb2
from rds_csi.status import CsiError

from .conftest import GiB, SimEnv, create_req, make_controller


def retry_create(controller: ControllerService, name: str, timeout: float = 30.0) -> str:
    """What a CO does: retry with backoff on UNAVAILABLE/ABORTED until it succeeds."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return controller.create_volume(create_req(name)).volume.volume_id
        except CsiError as err:
            if err.code.name not in ("UNAVAILABLE", "ABORTED") or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


@pytest.mark.parametrize("when", ["before", "after"])
def test_connection_dropped_around_disk_add_converges_to_one_disk(sim_env: SimEnv,
                                                                  when: str) -> None:
    controller = make_controller(sim_env)
    sim_env.sim.faults.drop("/disk add", nth=1, when=when)
    vol = controller.create_volume(create_req("dropped")).volume
    assert sim_env.slots() == [vol.volume_id]
    assert len(sim_env.files()) == 1
    adds = [e for e in sim_env.sim.command_log() if e.command.startswith("/disk add")]
    # before: the first add never ran, so it was sent again; after: it ran, so it was not.
    assert len(adds) == (2 if when == "before" else 1)
    assert controller.create_volume(create_req("dropped")).volume == vol


def test_drop_on_every_add_is_unavailable_then_recovers(sim_env: SimEnv) -> None:
    controller = make_controller(sim_env)
    sim_env.sim.faults.drop("/disk add", nth=None, when="before")
    with pytest.raises(CsiError) as err:
        controller.create_volume(create_req("flaky"))
    assert err.value.code.name == "UNAVAILABLE"
    assert sim_env.slots() == [] and sim_env.files() == []
    sim_env.sim.faults.clear()
    vol = controller.create_volume(create_req("flaky")).volume
    assert sim_env.slots() == [vol.volume_id] and len(sim_env.files()) == 1


def test_nth_add_dropped_after_in_a_burst(sim_env: SimEnv) -> None:
    controller = make_controller(sim_env)
    sim_env.sim.faults.drop("/disk add", nth=3, when="after")
    ids = [retry_create(controller, f"burst-{i}") for i in range(6)]
    assert sim_env.slots() == sorted(ids)
    assert len(sim_env.files()) == 6


def test_rds_reboot_during_a_burst_of_creates(sim_env: SimEnv) -> None:
    controller = make_controller(sim_env)
    sim_env.sim.faults.add_latency("/disk add", 0.05)
    names = [f"reboot-{i}" for i in range(16)]
    with cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(retry_create, controller, n, 60.0) for n in names]
        time.sleep(0.2)
        sim_env.sim.reboot(1.5)
        ids = [f.result() for f in futures]
    assert len(set(ids)) == 16
    assert sim_env.slots() == sorted(ids)
    assert len(sim_env.files()) == 16
    # every volume is exported and carries its metadata after the reboot
    listed = controller.list_volumes(csi_pb2.ListVolumesRequest())
    assert sorted(e.volume.volume_id for e in listed.entries) == sorted(ids)
    assert all(not e.status.volume_condition.abnormal for e in listed.entries)


def test_fails_fast_while_the_rds_is_down(sim_env: SimEnv) -> None:
    controller = make_controller(sim_env)
    controller.create_volume(create_req("before-down"))
    sim_env.sim.reboot(3)
    codes = []
    for _ in range(5):
        start = time.monotonic()
        with pytest.raises(CsiError) as err:
            controller.create_volume(create_req("during-down"))
        codes.append((err.value.code.name, time.monotonic() - start))
    assert all(code == "UNAVAILABLE" for code, _ in codes)
    assert codes[-1][1] < 0.5  # the breaker is open: no waiting for connect timeouts
    ok, reason = controller.rds_reachable()
    assert not ok and reason
    time.sleep(3.5)
    assert retry_create(controller, "during-down")
    assert controller.rds_reachable() == (True, "")


def test_duplicate_concurrent_creates_make_one_disk(sim_env: SimEnv) -> None:
    controller = make_controller(sim_env)
    sim_env.sim.faults.add_latency("/disk add", 0.3)

    def attempt() -> str:
        try:
            return controller.create_volume(create_req("same")).volume.volume_id
        except CsiError as err:
            return err.code.name

    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: attempt(), range(8)))
    ids = {r for r in results if r.startswith("pvc-")}
    assert len(ids) == 1
    assert set(results) - ids <= {"ABORTED"}
    assert sim_env.slots() == sorted(ids) and len(sim_env.files()) == 1
    # two controller replicas (separate lock tables) racing on one name also converge
    other = make_controller(sim_env)
    with cf.ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda c: c.create_volume(create_req("race")).volume.volume_id,
                             [controller, other]))
    assert both[0] == both[1]
    assert len(sim_env.slots()) == 2 and len(sim_env.files()) == 2


def test_injected_device_errors_map_to_status(sim_env: SimEnv) -> None:
    controller = make_controller(sim_env)
    sim_env.sim.faults.fail("/disk add", "failure: not enough space", nth=1)
    with pytest.raises(CsiError) as err:
        controller.create_volume(create_req("fail"))
    assert err.value.code.name == "RESOURCE_EXHAUSTED"
    sim_env.sim.faults.fail("/disk add", "failure: unexpected trouble", nth=None)
    with pytest.raises(CsiError) as err:
        controller.create_volume(create_req("fail"))
    assert err.value.code.name == "INTERNAL" and "unexpected trouble" in err.value.message
    sim_env.sim.faults.clear()
    controller.create_volume(create_req("fail", GiB))
    assert len(sim_env.slots()) == 1 and len(sim_env.files()) == 1
