"""The node plugin against the simulated NVMe/TCP fabric: `rds-sim stack` runs the
simulated RDS, a simulated node host and the rds-csi process (mode all, node flags
pointing at the fabric's sysfs/dev/nvme). Stage, publish, write, reboot the RDS,
verify the data through the same publish path (no pod restart)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rds_csi.csi import csi_pb2, csi_pb2_grpc

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the fabric backs "
                                "namespaces with loop devices and the node mounts them")

RDS_SIM = Path(sys.executable).parent / "rds-sim"
Mode = csi_pb2.VolumeCapability.AccessMode


class Stack:
    def __init__(self, work: Path, sock: Path, proc: subprocess.Popen[str],
                 lines: list[str]) -> None:
        self.work, self.sock, self.proc, self.lines = work, sock, proc, lines
        self.channel = grpc.insecure_channel(f"unix://{sock}")
        self.ctl = csi_pb2_grpc.ControllerStub(self.channel)
        self.node = csi_pb2_grpc.NodeStub(self.channel)

    def control(self, req: dict[str, object]) -> dict[str, object]:
        from rds_sim.control import request

        return request(self.work / "rds", req)


@pytest.fixture
def stack() -> Iterator[Stack]:
    if not RDS_SIM.exists():
        pytest.skip(f"{RDS_SIM} is missing")
    with tempfile.TemporaryDirectory(prefix="ns-") as d:
        work = Path(d)
        sock = work / "csi.sock"
        proc = subprocess.Popen(
            [str(RDS_SIM), "stack", "--csi-endpoint", f"unix://{sock}", "--workdir",
             str(work / "w"), "--driver-arg=--monitor-interval=0.5"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip() == "ready":
                break
        if not lines or lines[-1].strip() != "ready":
            proc.kill()
            pytest.fail("rds-sim stack did not start:\n" + "".join(lines))
        if not any("rds-csi --mode all" in ln for ln in lines):
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            pytest.skip("rds-sim stack did not start the node service:\n" + "".join(lines))
        s = Stack(work / "w", sock, proc, lines)
        # Keep draining the output (driver logs): a full pipe would block the driver.
        threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                         daemon=True).start()
        grpc.channel_ready_future(s.channel).result(timeout=30)
        try:
            yield s
        finally:
            s.channel.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _cap(block: bool = False) -> csi_pb2.VolumeCapability:
    access = csi_pb2.VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER)
    if block:
        return csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                        access_mode=access)
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type="ext4"), access_mode=access)


def _wait_healthy(s: Stack, vol: str, path: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    msg = ""
    while time.monotonic() < deadline:
        r = s.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
            volume_id=vol, volume_path=path))
        if not r.volume_condition.abnormal:
            return r.volume_condition.message
        msg = r.volume_condition.message
        time.sleep(0.5)
    raise AssertionError(f"volume still abnormal: {msg}")


@pytest.mark.slow
@pytest.mark.parametrize("params", [{}, {"ctrlLossTmo": "2", "reconnectDelay": "1"}],
                         ids=["reconnect-forever", "ctrl-loss-then-renumber"])
def test_stage_publish_write_reboot_verify(stack: Stack, params: dict[str, str]) -> None:
    s = stack
    vol = s.ctl.CreateVolume(csi_pb2.CreateVolumeRequest(
        name="pvc-fabric", capacity_range=csi_pb2.CapacityRange(required_bytes=64 << 20),
        volume_capabilities=[_cap()], parameters=params)).volume
    staging = str(s.work / "kubelet" / "staging" / vol.volume_id)
    target = str(s.work / "kubelet" / "pods" / "p1" / "mount")
    s.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
        volume_id=vol.volume_id, staging_target_path=staging, volume_capability=_cap(),
        volume_context=vol.volume_context))
    s.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
        volume_id=vol.volume_id, staging_target_path=staging, target_path=target,
        volume_capability=_cap()))
    with open(os.path.join(target, "before"), "w") as f:
        f.write("data before the reboot")
        f.flush()
        os.fsync(f.fileno())
    _wait_healthy(s, vol.volume_id, target)
    s.control({"op": "reboot", "seconds": 5})
    time.sleep(1)
    _wait_healthy(s, vol.volume_id, target, timeout=90)
    with open(os.path.join(target, "before")) as f:
        assert f.read() == "data before the reboot"
    log = "".join(s.lines)
    if params:
        # ctrl_loss_tmo (2 s) < outage (5 s): the controller was deleted, the monitor
        # reconnected and moved the mounts to the new device.
        assert "reconnected" in log, log[-4000:]
    with open(os.path.join(target, "after"), "w") as f:
        f.write("data after")
        f.flush()
        os.fsync(f.fileno())
    s.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
        volume_id=vol.volume_id, target_path=target))
    s.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
        volume_id=vol.volume_id, staging_target_path=staging))
    # Stage again: the data is there, nothing was reformatted.
    s.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
        volume_id=vol.volume_id, staging_target_path=staging, volume_capability=_cap(),
        volume_context=vol.volume_context))
    with open(os.path.join(staging, "after")) as f:
        assert f.read() == "data after"
    s.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
        volume_id=vol.volume_id, staging_target_path=staging))
