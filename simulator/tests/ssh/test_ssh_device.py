"""The whole simulator (real Device) over SSH: what a driver sees, through every fault."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rds_sim.exports import NoneBackend
from rds_sim.server import Simulator

Connect = Callable[..., Any]


def add(slot: str, size: str = "1G") -> str:
    return (f"/disk add type=file file-path=storage-pool/k8s/{slot}.img file-size={size} "
            f"slot={slot} nvme-tcp-export=yes nvme-tcp-server-port=4420 "
            f"nvme-tcp-server-nqn=nqn.2000-02.com.mikrotik:{slot}")


def count(c: Any, slot: str) -> int:
    out, status = c.run(f"/disk print count-only where slot={slot}")
    assert status == 0, out
    return int(out.strip())


@pytest.fixture
def backend() -> NoneBackend:
    return NoneBackend()


@pytest.fixture
def rsim(make_sim: Callable[..., Simulator], backend: NoneBackend) -> Simulator:
    """A started simulator on the real device model."""
    return make_sim(export_backend=backend)


def test_create_print_remove(rsim: Simulator, connect: Connect) -> None:
    c = connect(rsim.port, user="admin+ct")
    assert c.run(add("pvc-a", "10G")) == ("", 0)
    out, status = c.run("/disk print detail where slot=pvc-a")
    assert status == 0
    assert 'slot="pvc-a"' in out and "file-size=10.0GiB" in out
    assert out.endswith("\r\n") and "\n" not in out.replace("\r\n", "")
    assert c.run("/disk remove [find slot=pvc-a]") == ("", 0)
    assert count(c, "pvc-a") == 0


def test_exit_status_runtime_vs_parse_error(rsim: Simulator, connect: Connect) -> None:
    c = connect(rsim.port)
    assert c.run("/disk remove nosuch") == ("no such item\r\n", 1)
    out, status = c.run("/disk frobnicate")
    assert status == 0 and out.startswith("bad command name")
    c.run(add("dup"))
    assert c.run(add("dup"))[1] == 1


def test_concurrent_clients(rsim: Simulator, connect: Connect) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            c = connect(rsim.port)
            for j in range(3):
                assert c.run(add(f"pvc-{n}-{j}")) == ("", 0)
                out, status = c.run(f"/disk print detail where slot=pvc-{n}-{j}")
                assert status == 0 and f'slot="pvc-{n}-{j}"' in out
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert connect(rsim.port).run("/disk print count-only where slot~\"^pvc-\"")[0] == "60\r\n"


def test_large_output_arrives_intact(rsim: Simulator, connect: Connect) -> None:
    for i in range(150):
        assert rsim.device.execute(add(f"pvc-big-{i:03d}")).exit_status == 0
    expected = rsim.device.execute("/disk print detail").output
    assert len(expected) > 80_000  # many SSH packets (32 KiB at most each)
    assert connect(rsim.port).run("/disk print detail") == (expected, 0)


def test_parse_error_exit_status_switch(make_sim: Callable[..., Simulator],
                                        connect: Connect) -> None:
    sim = make_sim(parse_error_exit_status=1)
    assert connect(sim.port).run("/disk frobnicate")[1] == 1


def test_width_flag_changes_wrapping(rsim: Simulator, connect: Connect) -> None:
    connect(rsim.port).run(add("pvc-wide"))
    narrow, _ = connect(rsim.port, user="admin+ct").run("/disk print detail where slot=pvc-wide")
    wide, _ = connect(rsim.port, user="admin+cet120w").run(
        "/disk print detail where slot=pvc-wide")
    longest = lambda out: max(len(line) for line in out.split("\r\n"))  # noqa: E731
    assert longest(narrow) <= 80 < longest(wide) <= 120


@pytest.mark.parametrize(("when", "created"), [("before", False), ("after", True)])
def test_drop_around_nth_add(rsim: Simulator, connect: Connect, when: str, created: bool) -> None:
    rsim.faults.drop("/disk add", nth=2, when=when)  # type: ignore[arg-type]
    c = connect(rsim.port)
    assert c.run(add("pvc-1")) == ("", 0)
    assert c.run(add("pvc-2")) == ("", -1)
    assert count(connect(rsim.port), "pvc-2") == int(created)


def test_drop_after_first_of_two_commands_on_one_line(rsim: Simulator, connect: Connect) -> None:
    rsim.faults.drop("/disk add", nth=1, when="after")
    assert connect(rsim.port).run(f"{add('pvc-x')}; {add('pvc-y')}")[1] == -1
    c = connect(rsim.port)
    assert (count(c, "pvc-x"), count(c, "pvc-y")) == (1, 0)


def test_injected_error_and_pool_full(rsim: Simulator, connect: Connect) -> None:
    c = connect(rsim.port)
    rsim.faults.fail("/disk set", "failure: device busy", nth=1)
    c.run(add("pvc-s"))
    assert c.run("/disk set [find slot=pvc-s] comment=x") == ("failure: device busy\r\n", 1)
    assert c.run("/disk set [find slot=pvc-s] comment=x") == ("", 0)
    rsim.faults.set_pool_full()
    assert c.run(add("pvc-full")) == ("failure: not enough space\r\n", 1)
    assert count(c, "pvc-full") == 0


def test_latency_on_real_add(rsim: Simulator, connect: Connect) -> None:
    rsim.faults.add_latency("/disk add", 0.2, per_gib=0.02)
    start = time.monotonic()
    assert connect(rsim.port).run(add("pvc-slow", "10G")) == ("", 0)
    assert 0.4 <= time.monotonic() - start < 1.2


def test_reboot_keeps_disks_and_drops_exports(
    rsim: Simulator, connect: Connect, backend: NoneBackend, probe: Callable[[int], bool]
) -> None:
    connect(rsim.port).run(add("pvc-r"))
    assert "pvc-r" in backend.exports
    started = time.monotonic()
    rsim.reboot(1.0)
    assert backend.up is False and backend.exports == {}
    assert probe(rsim.port)
    while probe(rsim.port):
        assert time.monotonic() - started < 4
        time.sleep(0.05)
    assert time.monotonic() - started >= 0.95
    assert backend.up is True and "pvc-r" in backend.exports
    assert count(connect(rsim.port), "pvc-r") == 1


def test_system_reboot_command(make_sim: Callable[..., Simulator], connect: Connect,
                               probe: Callable[[int], bool]) -> None:
    sim = make_sim(reboot_seconds=0.5)
    c = connect(sim.port)
    assert c.run("/system reboot") == ("", -1)
    assert sim.rebooting and probe(sim.port)
    time.sleep(0.8)
    assert connect(sim.port).run("/system identity print")[1] == 0


def test_disks_persist_across_restart(make_sim: Callable[..., Simulator], connect: Connect,
                                      tmp_path: Path) -> None:
    state = tmp_path / "persist"
    sim = make_sim(state)
    connect(sim.port).run(add("pvc-p", "5G"))
    sim.stop()
    sim = make_sim(state)
    out, _ = connect(sim.port).run("/disk print detail where slot=pvc-p")
    assert "file-size=5.0GiB" in out
    assert len((state / "command-log.jsonl").read_text().splitlines()) == 2


# --- the OpenSSH client ---

SSH = shutil.which("ssh")


@pytest.mark.skipif(SSH is None, reason="OpenSSH client (ssh) not installed")
@pytest.mark.parametrize("user", ["admin", "admin+ct", "admin+cet120w"])
def test_openssh_client(rsim: Simulator, ed25519_key: Any, user: str) -> None:
    assert SSH is not None

    def ssh(line: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [SSH, "-F", "/dev/null", "-p", str(rsim.port), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
             "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-i", str(ed25519_key.path),
             f"{user}@127.0.0.1", line],
            capture_output=True, timeout=30, check=False,
        )

    assert ssh(add("pvc-o")).returncode == 0
    done = ssh("/disk print detail where slot=pvc-o")
    assert done.returncode == 0, done.stderr
    assert b'slot="pvc-o"' in done.stdout and done.stdout.endswith(b"\r\n")
    assert ssh("/disk remove nosuch").returncode == 1
    assert ssh("/disk frobnicate").returncode == 0
    rsim.faults.drop("/disk print", nth=1)
    assert ssh("/disk print").returncode == 255  # connection closed without exit status


@pytest.mark.skipif(SSH is None, reason="OpenSSH client (ssh) not installed")
def test_openssh_password_rejected_and_shell_refused(rsim: Simulator, ed25519_key: Any) -> None:
    assert SSH is not None
    base = [SSH, "-F", "/dev/null", "-p", str(rsim.port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
    denied = subprocess.run([*base, "-o", "PubkeyAuthentication=no", "admin@127.0.0.1",
                             "/disk print"], capture_output=True, timeout=30, check=False)
    assert denied.returncode == 255
    shell = subprocess.run([*base, "-i", str(ed25519_key.path), "-T", "admin@127.0.0.1"],
                           capture_output=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
    assert shell.returncode != 0
