"""The rds-csi process in controller mode over its real gRPC socket, against the simulator."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time

import grpc
import pytest

from rds_csi.csi import csi_pb2

from .conftest import DriverProcess, GiB, SimEnv, create_req

SECRET = "s3cr3t-value-never-logged"


def _probe(driver: DriverProcess) -> bool:
    return bool(driver.identity.Probe(csi_pb2.ProbeRequest(), timeout=15).ready.value)


def test_lifecycle_over_grpc(driver: DriverProcess, sim_env: SimEnv) -> None:
    caps = driver.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    assert any(c.service.type == c.service.CONTROLLER_SERVICE for c in caps.capabilities)
    assert _probe(driver)
    ctl = driver.controller
    vol = ctl.CreateVolume(create_req("grpc-vol", 2 * GiB, secrets={"password": SECRET}),
                           timeout=30).volume
    assert vol.capacity_bytes == 2 * GiB
    snap = ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
        source_volume_id=vol.volume_id, name="grpc-snap"), timeout=30).snapshot
    listed = ctl.ListVolumes(csi_pb2.ListVolumesRequest(), timeout=30)
    assert [e.volume.volume_id for e in listed.entries] == [vol.volume_id]
    ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id), timeout=30)
    ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id), timeout=30)
    assert sim_env.slots() == [] and sim_env.files() == []
    with pytest.raises(grpc.RpcError) as err:
        ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id=vol.volume_id, node_id="n1"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED

    driver.proc.terminate()
    assert driver.proc.wait(20) == 0
    log_text = (sim_env.work / "driver.log").read_text()
    assert SECRET not in log_text
    entries = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    methods = [e["method"] for e in entries if e["msg"] == "rpc"]
    assert methods.count("CreateVolume") == 1 and methods.count("DeleteVolume") == 1
    create = next(e for e in entries if e["msg"] == "rpc" and e["method"] == "CreateVolume")
    assert create["volume_id"] == "" and create["code"] == "OK"
    delete = next(e for e in entries if e["msg"] == "rpc" and e["method"] == "DeleteVolume")
    assert delete["volume_id"] == vol.volume_id


def test_concurrent_same_name_is_aborted(driver: DriverProcess, sim_env: SimEnv) -> None:
    sim_env.sim.faults.add_latency("/disk add", 1.0)

    def create() -> str:
        try:
            driver.controller.CreateVolume(create_req("slow"), timeout=30)
            return "OK"
        except grpc.RpcError as err:
            assert "CreateVolume slow" in (err.details() or "")
            return err.code().name

    with cf.ThreadPoolExecutor(2) as pool:
        first = pool.submit(create)
        time.sleep(0.3)
        second = pool.submit(create)
        results = sorted([first.result(), second.result()])
    assert results == ["ABORTED", "OK"]
    assert len(sim_env.slots()) == 1


def test_probe_follows_rds_availability(driver: DriverProcess, sim_env: SimEnv) -> None:
    assert _probe(driver)
    sim_env.sim.reboot(3)
    time.sleep(0.2)
    assert not _probe(driver)
    with pytest.raises(grpc.RpcError) as err:
        driver.controller.CreateVolume(create_req("while-down"), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    deadline = time.monotonic() + 20
    while not _probe(driver):
        assert time.monotonic() < deadline, "Probe never became ready after the reboot"
        time.sleep(0.3)
    driver.controller.CreateVolume(create_req("after-up"), timeout=30)
