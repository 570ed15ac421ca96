import sys
import tempfile
from pathlib import Path

import grpc
import pytest

from rds_csi.endpoint import parse_endpoint
from rds_csi.health import Readiness
from rds_csi.identity import IdentityService
from rds_csi.server import CsiServer

RDS_CSI = Path(sys.executable).parent / "rds-csi"


@pytest.fixture
def rds_csi_bin() -> Path:
    if not RDS_CSI.exists():
        pytest.fail(f"{RDS_CSI} is missing: install the project (make test does)")
    return RDS_CSI


@pytest.fixture
def short_tmp():
    """A short directory: unix socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="csi-") as d:
        yield Path(d)


@pytest.fixture
def csi_server(short_tmp):
    """Start CsiServer instances on unix sockets; stopped at the end of the test."""
    started = []

    def start(mode: str = "all", readiness: Readiness | None = None, metrics=None):
        sock = short_tmp / f"csi-{len(started)}.sock"
        identity = IdentityService("rds-csi.io", mode, readiness=readiness or Readiness())
        server = CsiServer(parse_endpoint(f"unix://{sock}"), identity, max_workers=4,
                           metrics=metrics)
        server.start()
        channel = grpc.insecure_channel(f"unix://{sock}")
        started.append((server, channel))
        return server, channel

    yield start
    for server, channel in started:
        channel.close()
        server.stop(0)
