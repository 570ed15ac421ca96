"""The control socket and `rds-sim fault`: steering a running simulator from outside."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from rds_sim import cli
from rds_sim.control import ControlError, request, socket_path
from rds_sim.server import Simulator

Connect = Callable[..., Any]


def test_socket_is_private(sim: Simulator) -> None:
    assert socket_path(sim.state_dir).stat().st_mode & 0o777 == 0o600


def test_status(sim: Simulator) -> None:
    reply = request(sim.state_dir, {"op": "status"})
    assert reply["ok"] is True
    assert reply["port"] == sim.port and reply["rebooting"] is False
    assert reply["faults"]["latency"] == []


def test_rules_over_the_socket(sim: Simulator, connect: Connect) -> None:
    d = sim.state_dir
    request(d, {"op": "latency", "kind": "/disk print", "seconds": 0.2})
    request(d, {"op": "fail", "kind": "/disk remove", "message": "failure: nope", "nth": 1})
    request(d, {"op": "drop", "kind": "/disk add", "nth": 2, "when": "after"})
    reply = request(d, {"op": "pool_full", "on": False})
    faults = reply["faults"]
    assert faults["latency"][0]["seconds"] == 0.2
    assert faults["fails"][0]["message"] == "failure: nope"
    assert faults["drops"][0]["when"] == "after"

    c = connect(sim.port)
    start = time.monotonic()
    assert c.run("/disk print")[1] == 0
    assert time.monotonic() - start >= 0.2
    assert c.run("/disk remove [find slot=a]") == ("failure: nope\r\n", 1)

    request(d, {"op": "clear"})
    assert request(d, {"op": "status"})["faults"]["fails"] == []


def test_profile_and_pool_full(sim: Simulator, connect: Connect) -> None:
    request(sim.state_dir, {"op": "latency", "profile": "realistic"})
    assert len(sim.faults.status()["latency"]) >= 4
    request(sim.state_dir, {"op": "latency", "profile": "none"})
    request(sim.state_dir, {"op": "pool_full"})
    assert connect(sim.port).run("/disk add slot=x")[0] == "failure: not enough space\r\n"


def test_reboot_over_the_socket(sim: Simulator, probe: Callable[[int], bool]) -> None:
    request(sim.state_dir, {"op": "reboot", "seconds": 1})
    assert request(sim.state_dir, {"op": "status"})["rebooting"] is True
    assert probe(sim.port)
    with pytest.raises(ControlError, match="already rebooting"):
        request(sim.state_dir, {"op": "reboot", "seconds": 1})
    time.sleep(1.3)
    assert not probe(sim.port)


def test_log_over_the_socket(sim: Simulator, connect: Connect) -> None:
    c = connect(sim.port)
    for i in range(3):
        c.run(f"/disk add slot=l{i}")
    entries = request(sim.state_dir, {"op": "log", "last": 2})["entries"]
    assert [e["command"] for e in entries] == ["/disk add slot=l1", "/disk add slot=l2"]


@pytest.mark.parametrize(
    "req",
    [{"op": "frobnicate"}, {"op": "latency"}, {"op": "drop", "kind": "/disk add", "nth": 0},
     {"op": "reboot", "seconds": "soon"}, {"op": "latency", "profile": "glacial"}],
)
def test_bad_requests_are_errors_not_crashes(sim: Simulator, req: dict[str, Any]) -> None:
    with pytest.raises(ControlError):
        request(sim.state_dir, req)
    assert request(sim.state_dir, {"op": "status"})["ok"]


def test_garbage_line(sim: Simulator) -> None:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(socket_path(sim.state_dir)))
        s.sendall(b"not json\n[1]\n")
        f = s.makefile()
        replies = f.readline(), f.readline()
    assert all(json.loads(r)["ok"] is False for r in replies)


def test_no_simulator(tmp_path: Any) -> None:
    with pytest.raises(ControlError, match="no simulator"):
        request(tmp_path, {"op": "status"})


# --- rds-sim fault (in-process) ---


def fault(sim: Simulator, *args: str) -> int:
    return cli.main(["fault", "--state-dir", str(sim.state_dir), *args])


def test_cli_fault_commands(sim: Simulator, connect: Connect,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert fault(sim, "latency", "/disk add", "0.4", "--per-gib", "0.01") == 0
    assert fault(sim, "latency", "--profile", "realistic") == 0
    assert fault(sim, "drop", "/disk add", "--nth", "3", "--when", "after") == 0
    assert fault(sim, "fail", "/disk set", "failure: busy", "--nth", "every") == 0
    assert fault(sim, "pool-full") == 0
    capsys.readouterr()
    assert fault(sim, "status") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["faults"]["pool_full"] is True
    assert status["faults"]["drops"][0]["nth"] == 3
    assert status["faults"]["fails"][0]["nth"] is None
    assert fault(sim, "pool-full", "--off") == 0
    assert fault(sim, "clear") == 0
    connect(sim.port).run("/disk print")
    capsys.readouterr()
    assert fault(sim, "log", "--last", "1") == 0
    assert json.loads(capsys.readouterr().out)["command"] == "/disk print"


def test_cli_fault_reboot(sim: Simulator) -> None:
    assert fault(sim, "reboot", "--seconds", "0.5") == 0
    assert sim.rebooting


def test_cli_fault_errors(sim: Simulator, tmp_path: Any,
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert fault(sim, "latency", "/disk add") == 2
    assert cli.main(["fault", "--state-dir", str(tmp_path / "none"), "status"]) == 1
    assert "no simulator" in capsys.readouterr().err
