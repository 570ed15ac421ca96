"""Fixtures of the sim-stack tier: the RouterOS simulator on 127.0.0.1 over real SSH,
the driver's ControllerService on the real SSH transport, and the rds-csi process."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import paramiko
import pytest

from rds_csi.controller import ControllerConfig, ControllerService
from rds_csi.csi import csi_pb2, csi_pb2_grpc
from rds_csi.ids import Naming
from rds_csi.params import VolumeParams
from rds_csi.rds import CircuitBreaker, RdsClient, SshConfig, SshTransport
from rds_csi.rds.transport import sha256_fingerprint
from rds_sim.server import Simulator

GiB = 1 << 30


@dataclass
class SimEnv:
    sim: Simulator
    key_file: Path
    fingerprint: str
    work: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sim.port}"

    def ssh_config(self, **overrides: object) -> SshConfig:
        values: dict[str, object] = dict(
            host="127.0.0.1", port=self.sim.port, username="admin",
            private_key_file=self.key_file, host_key_fingerprint=self.fingerprint,
            connect_timeout=3.0, connect_attempts=2, backoff_initial=0.05, backoff_max=0.2,
        )
        values.update(overrides)
        return SshConfig(**values)  # type: ignore[arg-type]

    def slots(self) -> list[str]:
        return sorted(d.slot for d in self.sim.device.disks() if d.slot != "storage-pool")

    def files(self) -> list[Path]:
        root = self.sim.state_dir / "files"
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def sim_env() -> Iterator[SimEnv]:
    with tempfile.TemporaryDirectory(prefix="simstack-") as tmp:
        work = Path(tmp)
        key = paramiko.RSAKey.generate(2048)
        key_file = work / "id_rsa"
        key.write_private_key_file(str(key_file))
        host_key = paramiko.RSAKey.generate(2048)
        sim = Simulator(work / "rds", authorized_keys=[key], host_key=host_key,
                        pool_size=100 * GiB, control_socket=False)
        sim.start()
        try:
            yield SimEnv(sim, key_file, sha256_fingerprint(host_key), work)
        finally:
            sim.stop()


def make_controller(env: SimEnv, **config: object) -> ControllerService:
    transport = CircuitBreaker(SshTransport(env.ssh_config()), failure_threshold=3, cooldown=0.5)
    cfg = ControllerConfig(
        naming=Naming(),
        defaults=VolumeParams(nvme_address="127.0.0.1"),
        **config,  # type: ignore[arg-type]
    )
    return ControllerService(RdsClient(transport, timeout=10), cfg)


@pytest.fixture
def controller(sim_env: SimEnv) -> ControllerService:
    return make_controller(sim_env)


def mount_cap(mode: int = csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER,
              fs_type: str = "") -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs_type),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode))


def block_cap(mode: int = csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
              ) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        block=csi_pb2.VolumeCapability.BlockVolume(),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode))


def create_req(name: str, size: int = GiB, **kwargs: object) -> csi_pb2.CreateVolumeRequest:
    caps = kwargs.pop("caps", [mount_cap()])
    kwargs.setdefault("capacity_range", csi_pb2.CapacityRange(required_bytes=size))
    return csi_pb2.CreateVolumeRequest(
        name=name, volume_capabilities=caps, **kwargs)  # type: ignore[arg-type]


@dataclass
class DriverProcess:
    proc: subprocess.Popen[str]
    channel: grpc.Channel
    sock: Path

    @property
    def identity(self) -> csi_pb2_grpc.IdentityStub:
        return csi_pb2_grpc.IdentityStub(self.channel)

    @property
    def controller(self) -> csi_pb2_grpc.ControllerStub:
        return csi_pb2_grpc.ControllerStub(self.channel)


@pytest.fixture
def driver(sim_env: SimEnv) -> Iterator[DriverProcess]:
    """`rds-csi --mode controller` as a process, talking to the simulator over SSH."""
    sock = sim_env.work / "csi.sock"
    log = open(sim_env.work / "driver.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "rds-csi"), "--mode", "controller",
         "--endpoint", f"unix://{sock}", "--rds-address", sim_env.address,
         "--rds-key-file", str(sim_env.key_file),
         "--rds-host-key-fingerprint", sim_env.fingerprint, "--nvme-address", "127.0.0.1",
         "--log-format", "json"],
        stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while not sock.exists():
        assert proc.poll() is None, (sim_env.work / "driver.log").read_text()
        assert time.monotonic() < deadline, "rds-csi did not start"
        time.sleep(0.05)
    channel = grpc.insecure_channel(f"unix://{sock}")
    try:
        yield DriverProcess(proc, channel, sock)
    finally:
        channel.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
