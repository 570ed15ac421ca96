"""The rds-csi executable as an operator runs it."""

import json
import os
import signal
import stat
import subprocess
import time

import grpc

from rds_csi.csi import csi_pb2, csi_pb2_grpc


def _start(rds_csi_bin, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(rds_csi_bin), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "socket never appeared"
        time.sleep(0.05)


def test_node_mode_serves_identity_and_stops_on_sigterm(rds_csi_bin, short_tmp) -> None:
    sock = short_tmp / "csi.sock"
    proc = _start(rds_csi_bin, "--mode", "node", "--node-id", "n1",
                  "--endpoint", f"unix://{sock}", "--log-format", "json")
    try:
        _wait_for(sock, proc)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660
        with grpc.insecure_channel(f"unix://{sock}") as ch:
            stub = csi_pb2_grpc.IdentityStub(ch)
            info = stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=5)
            caps = stub.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest(), timeout=5)
            probe = stub.Probe(csi_pb2.ProbeRequest(), timeout=5)
        assert info.name == "rds-csi.io"
        assert info.manifest["node-id"] == "n1"
        kinds = {c.WhichOneof("type") for c in caps.capabilities}
        assert kinds == {"service", "volume_expansion"}
        assert probe.HasField("ready")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not sock.exists()
    lines = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    rpcs = [entry for entry in lines if entry["msg"] == "rpc"]
    assert [r["method"] for r in rpcs] == ["GetPluginInfo", "GetPluginCapabilities", "Probe"]
    assert all(r["code"] == "OK" and "duration_ms" in r for r in rpcs)
    assert any(entry["msg"] == "stopped" for entry in lines)


def test_tcp_endpoint_and_sigint(rds_csi_bin) -> None:
    proc = _start(rds_csi_bin, "--mode", "node", "--node-id", "n1",
                  "--endpoint", "tcp://127.0.0.1:0")
    try:
        deadline = time.monotonic() + 15
        port = None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "serving" in line:
                port = True
        assert port, "driver did not report serving"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bad_flags_exit_2_with_message(rds_csi_bin) -> None:
    proc = subprocess.run([str(rds_csi_bin), "--mode", "node", "--endpoint", "unix:///tmp/x"],
                          capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items()
                               if k not in ("CSI_NODE_ID", "KUBE_NODE_NAME")})
    assert proc.returncode == 2
    assert "--node-id is required in node mode" in proc.stderr


def test_refuses_to_replace_a_regular_file(rds_csi_bin, short_tmp) -> None:
    target = short_tmp / "important"
    target.write_text("data")
    proc = subprocess.run([str(rds_csi_bin), "--mode", "node", "--node-id", "n1",
                           "--endpoint", f"unix://{target}"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "not a socket" in proc.stderr
    assert target.read_text() == "data"
