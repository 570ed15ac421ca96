"""CsiServer in-process: real gRPC over a unix socket."""

import logging
import stat
import threading
import time

import grpc
import pytest

from rds_csi.csi import csi_pb2, csi_pb2_grpc
from rds_csi.endpoint import parse_endpoint
from rds_csi.health import FunctionCheck, HealthResult, Readiness
from rds_csi.identity import IdentityService
from rds_csi.metrics import Metrics
from rds_csi.server import CsiServer, parse_config


def test_identity_over_grpc(csi_server) -> None:
    _, channel = csi_server("node")
    stub = csi_pb2_grpc.IdentityStub(channel)
    info = stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=5)
    assert info.name == "rds-csi.io"
    caps = stub.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest(), timeout=5)
    assert len(caps.capabilities) == 2
    assert stub.Probe(csi_pb2.ProbeRequest(), timeout=5).ready.value is True


def test_socket_permissions_and_removal(csi_server) -> None:
    server, _ = csi_server()
    path = server.endpoint.socket_path
    mode = stat.S_IMODE(path.stat().st_mode)
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert mode == 0o660
    server.stop(0)
    assert not path.exists()


def test_stale_socket_is_replaced(short_tmp) -> None:
    import socket

    sock = short_tmp / "csi.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()
    server = CsiServer(parse_endpoint(f"unix://{sock}"), IdentityService("rds-csi.io", "node"))
    server.start()
    try:
        with grpc.insecure_channel(f"unix://{sock}") as ch:
            csi_pb2_grpc.IdentityStub(ch).GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=5)
    finally:
        server.stop(0)


def test_graceful_stop_lets_inflight_finish_and_refuses_new(csi_server) -> None:
    entered = threading.Event()
    release = threading.Event()

    def slow() -> HealthResult:
        entered.set()
        release.wait(10)
        return HealthResult(True)

    server, channel = csi_server("controller", Readiness([FunctionCheck("slow", slow)]))
    stub = csi_pb2_grpc.IdentityStub(channel)
    result: dict = {}

    def call() -> None:
        result["probe"] = stub.Probe(csi_pb2.ProbeRequest(), timeout=20)

    t = threading.Thread(target=call)
    t.start()
    assert entered.wait(5)
    stopper = threading.Thread(target=server.stop, args=(15,))
    stopper.start()
    time.sleep(0.3)
    # A new RPC during shutdown is refused.
    fresh = grpc.insecure_channel(server.endpoint.grpc_target)
    with fresh, pytest.raises(grpc.RpcError) as err:
        csi_pb2_grpc.IdentityStub(fresh).GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=2)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    release.set()
    t.join(10)
    stopper.join(20)
    assert result["probe"].ready.value is True  # the in-flight RPC completed normally


def test_every_rpc_logged_once_with_status_and_metrics(csi_server, caplog) -> None:
    metrics = Metrics()
    _, channel = csi_server("node", metrics=metrics)
    caplog.set_level(logging.INFO, logger="rds_csi.rpc")
    stub = csi_pb2_grpc.IdentityStub(channel)
    stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=5)
    records = [r for r in caplog.records if r.name == "rds_csi.rpc"]
    assert len(records) == 1
    fields = records[0].fields
    assert fields["method"] == "GetPluginInfo"
    assert fields["code"] == "OK"
    assert fields["duration_ms"] >= 0
    value = metrics.registry.get_sample_value(
        "rds_csi_rpc_total", {"method": "GetPluginInfo", "code": "OK"})
    assert value == 1.0


def test_config_validation(capsys) -> None:
    cfg = parse_config(["--mode", "node", "--node-id", "n1", "--endpoint", "unix:///tmp/x.sock"])
    assert cfg.node_id == "n1" and cfg.socket_mode == 0o660
    for argv, fragment in [
        (["--mode", "node", "--endpoint", "unix:///tmp/x.sock", "--node-id", ""],
         "--node-id is required"),
        (["--mode", "controller", "--endpoint", "/tmp/x.sock"], "must start with unix://"),
        (["--mode", "controller", "--endpoint", "unix:///x", "--socket-mode", "0666"],
         "--socket-mode"),
        (["--mode", "controller", "--endpoint", "unix:///x", "--driver-name", "bad_name"],
         "driver name"),
        (["--mode", "sideways"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit) as exc:
            parse_config(argv)
        assert exc.value.code == 2
        assert fragment in capsys.readouterr().err


def test_env_fallbacks(monkeypatch) -> None:
    monkeypatch.setenv("CSI_ENDPOINT", "unix:///tmp/from-env.sock")
    monkeypatch.setenv("KUBE_NODE_NAME", "node-from-env")
    cfg = parse_config(["--mode", "node"])
    assert cfg.endpoint.address == "/tmp/from-env.sock"
    assert cfg.node_id == "node-from-env"


def test_controller_flags(tmp_path, capsys) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    base = ["--mode", "controller", "--endpoint", "unix:///tmp/c.sock"]
    cfg = parse_config([*base, "--rds-address", "127.0.0.1:2222", "--rds-password-file", str(pw),
                        "--rds-insecure-skip-host-key-check", "--capacity-reserve", "10Gi",
                        "--rds-name", "rds-a"])
    assert cfg.rds is not None
    assert (cfg.rds.ssh.host, cfg.rds.ssh.port) == ("127.0.0.1", 2222)
    assert cfg.rds.controller.capacity_reserve_bytes == 10 << 30
    assert cfg.rds.controller.defaults.nvme_address == "127.0.0.1"
    assert cfg.rds.controller.topology_key == "rds-csi.io/rds"
    assert cfg.rds.controller.rds_name == "rds-a"
    for extra, fragment in [
        ([], "--rds-address is required"),
        (["--rds-address", "127.0.0.1"], "--rds-password-file or --rds-key-file"),
        (["--rds-address", "127.0.0.1", "--rds-password-file", str(pw)], "pin the RDS host key"),
        (["--rds-address", "127.0.0.1", "--rds-password-file", str(tmp_path / "nope"),
          "--rds-insecure-skip-host-key-check"], "does not exist"),
        (["--rds-address", "bad host!", "--rds-password-file", str(pw),
          "--rds-insecure-skip-host-key-check"], "neither an IP address"),
        (["--rds-address", "127.0.0.1:99999", "--rds-password-file", str(pw),
          "--rds-insecure-skip-host-key-check"], "port must be 1-65535"),
        (["--rds-address", "127.0.0.1", "--rds-password-file", str(pw),
          "--rds-insecure-skip-host-key-check", "--volume-base-path", "../etc"], "volume path"),
        (["--rds-address", "127.0.0.1", "--rds-password-file", str(pw),
          "--rds-insecure-skip-host-key-check", "--capacity-reserve", "lots"], "whole number"),
    ]:
        with pytest.raises(SystemExit) as exc:
            parse_config(base + extra)
        assert exc.value.code == 2
        assert fragment in capsys.readouterr().err, fragment
