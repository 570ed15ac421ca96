"""`rds-sim serve` as a process: the listening line, a command, faults from outside, SIGTERM."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rds_sim import cli

Connect = Callable[..., Any]
RDS_SIM = [sys.executable, "-m", "rds_sim.cli"]


def start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    pw = tmp_path / "password"
    pw.write_text("s3cret-pass\n")  # the trailing newline is not part of the password
    proc = subprocess.Popen(
        [*RDS_SIM, "serve", "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"),
         "--password-file", str(pw), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
    assert m, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
    return proc, int(m.group(1))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], int]]]:
    procs: list[subprocess.Popen[str]] = []

    def run(*extra: str) -> tuple[subprocess.Popen[str], int]:
        proc, port = start(tmp_path, *extra)
        procs.append(proc)
        return proc, port

    yield run
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_serve_end_to_end(served: Callable[..., Any], connect: Connect, tmp_path: Path) -> None:
    proc, port = served("--latency-profile", "none", "--slot-name-max", "40")
    c = connect(port, user="admin+ct")
    assert c.run("/system identity print") == ("  name: rds\r\n\r\n", 0)
    fault = subprocess.run(
        [*RDS_SIM, "fault", "--state-dir", str(tmp_path / "state"), "pool-full"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert fault.returncode == 0, fault.stderr
    out, status = c.run("/disk add type=file file-path=storage-pool/a.img file-size=1G slot=a")
    assert (out, status) == ("failure: not enough space\r\n", 1)
    # Rude clients: a bare TCP connect, and one that vanishes while its command sleeps.
    socket.create_connection(("127.0.0.1", port)).close()
    subprocess.run([*RDS_SIM, "fault", "--state-dir", str(tmp_path / "state"), "latency",
                    "/disk print", "0.5"], check=True, capture_output=True, timeout=30)
    rude = connect(port)
    rude.transport.open_session().exec_command("/disk print")
    rude.close()
    time.sleep(0.7)
    assert c.run("/system identity print")[1] == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert proc.stderr is not None and proc.stderr.read() == ""
    assert not (tmp_path / "state" / "control.sock").exists()


def test_serve_sigint(served: Callable[..., Any]) -> None:
    proc, _ = served()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--export-backend", "fabric"], "--export-backend fabric needs --fabric-dir"),
    (["--export-backend", "nvmet", "--nvmet-configfs", "/nonexistent/nvmet"],
     "is not an nvmet configfs root"),
])
def test_export_backend_prerequisites(tmp_path: Path, args: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x")
    code = cli.main(["serve", "--state-dir", str(tmp_path), "--password-file", str(pw), *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_non_loopback_needs_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x")
    code = cli.main(["serve", "--listen", "0.0.0.0:0", "--state-dir", str(tmp_path),
                     "--password-file", str(pw)])
    assert code == 2 and "non-loopback" in capsys.readouterr().err


def test_serve_needs_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--state-dir", str(tmp_path)]) == 2
    assert "--password-file" in capsys.readouterr().err


def test_listen_parsing() -> None:
    assert cli.parse_listen("127.0.0.1:2222") == ("127.0.0.1", 2222)
    assert cli.parse_listen("[::1]:0") == ("::1", 0)
    with pytest.raises(Exception, match="HOST:PORT"):
        cli.parse_listen("2222")


def test_console_script_declared() -> None:
    script = Path(sys.executable).with_name("rds-sim")
    if not script.exists():
        pytest.skip("rds-sim console script not installed in this environment")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0 and "serve" in done.stdout
