"""Fault injection seen from an SSH client: latency, drops, injected errors, pool full, reboot."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import paramiko
import pytest
from fake_device import FakeDevice

from rds_sim.device import CommandInfo, DropConnection, InjectedError
from rds_sim.faults import FaultInjector, Kind, parse_size_gib
from rds_sim.server import Simulator

Connect = Callable[..., Any]


def timed(c: Any, line: str) -> tuple[float, tuple[str, int]]:
    start = time.monotonic()
    result = c.run(line)
    return time.monotonic() - start, result


def disk_exists(sim: Simulator, connect: Connect, slot: str) -> bool:
    out, status = connect(sim.port).run(f"/disk print where slot={slot}")
    assert status == 0
    return f'"{slot}"' in out


# --- the injector on its own ---


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("/disk add", Kind("/disk", "add")),
        ("disk add", Kind("/disk", "add")),
        ("/disk/add", Kind("/disk", "add")),
        ("/system/resource print", Kind("/system/resource", "print")),
        ("/disk", Kind("/disk", "*")),
        ("* *", Kind("*", "*")),
    ],
)
def test_kind_parse(text: str, kind: Kind) -> None:
    assert Kind.parse(text) == kind


def test_kind_matches() -> None:
    add = CommandInfo("/disk", "add", {}, "/disk add")
    assert Kind.parse("/disk add").matches(add)
    assert Kind.parse("/disk *").matches(add)
    assert Kind.parse("* add").matches(add)
    assert not Kind.parse("/disk remove").matches(add)
    assert not Kind.parse("/file add").matches(add)


@pytest.mark.parametrize(
    ("text", "gib"),
    [("1G", 1.0), ("512M", 0.5), ("2T", 2048.0), ("1073741824", 1.0), ("10GiB", 10.0),
     ("junk", 0.0)],
)
def test_parse_size_gib(text: str, gib: float) -> None:
    assert parse_size_gib(text) == gib


def test_nth_counts_only_matching_commands() -> None:
    f = FaultInjector()
    f.fail("/disk add", "failure: third", nth=3)
    add = CommandInfo("/disk", "add", {}, "add")
    other = CommandInfo("/disk", "print", {}, "print")
    f.before_command(add)
    f.before_command(other)
    f.before_command(add)
    with pytest.raises(InjectedError, match="third"):
        f.before_command(add)
    f.before_command(add)  # spent
    assert f.status()["fails"][0] == {"kind": "/disk add", "nth": 3, "message": "failure: third",
                                      "seen": 4, "fired": 1, "spent": True}


def test_drop_after_fires_in_after_command_only_for_that_command() -> None:
    f = FaultInjector()
    f.drop("/disk add", nth=1, when="after")
    first = CommandInfo("/disk", "add", {}, "a")
    second = CommandInfo("/disk", "add", {}, "b")
    f.before_command(first)
    f.before_command(second)
    f.after_command(second, 0)
    with pytest.raises(DropConnection):
        f.after_command(first, 0)
    f.after_command(first, 0)  # only once


def test_bad_rules_rejected() -> None:
    f = FaultInjector()
    with pytest.raises(ValueError):
        f.drop("/disk add", nth=0)
    with pytest.raises(ValueError):
        f.drop("/disk add", when="during")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        f.fail("/disk add", "  ")
    with pytest.raises(ValueError):
        f.use_profile("glacial")


# --- over SSH ---


def test_latency_per_command_kind(sim: Simulator, connect: Connect) -> None:
    c = connect(sim.port)
    sim.faults.add_latency("/disk print", 0.3)
    took, (_, status) = timed(c, "/disk print")
    assert status == 0 and 0.3 <= took < 1.0
    took, _ = timed(c, "/disk add slot=fast")
    assert took < 0.2


def test_latency_scaled_by_size(sim: Simulator, connect: Connect) -> None:
    c = connect(sim.port)
    sim.faults.add_latency("/disk add", 0.1, per_gib=0.05)
    took, _ = timed(c, "/disk add slot=big file-size=8G")
    assert 0.5 <= took < 1.2
    took, _ = timed(c, "/disk add slot=small file-size=1G")
    assert 0.15 <= took < 0.5


def test_realistic_profile(make_sim: Callable[..., Simulator], connect: Connect,
                           fake: FakeDevice) -> None:
    sim = make_sim(device=fake, latency_profile="realistic")
    c = connect(sim.port)
    took, _ = timed(c, "/disk add slot=r file-size=1G")
    assert 0.4 <= took < 1.0
    took, _ = timed(c, "/disk print")
    assert 0.02 <= took < 0.3


@pytest.mark.parametrize(("when", "created"), [("before", False), ("after", True)])
def test_drop_around_nth_add(
    sim: Simulator, connect: Connect, when: str, created: bool
) -> None:
    sim.faults.drop("/disk add", nth=2, when=when)  # type: ignore[arg-type]
    c = connect(sim.port)
    assert c.run("/disk add slot=d1") == ("", 0)
    assert c.run("/disk add slot=d2") == ("", -1)  # no exit status: connection gone
    assert not c.transport.is_active()
    assert disk_exists(sim, connect, "d2") is created  # "was it created?"
    entry = sim.command_log()[1]
    assert (entry.command, entry.result, entry.exit_status) == ("/disk add slot=d2", "dropped",
                                                                None)
    # One-shot: the third add goes through.
    assert connect(sim.port).run("/disk add slot=d3") == ("", 0)


def test_drop_every(sim: Simulator, connect: Connect) -> None:
    sim.faults.drop("/disk remove", nth=None)
    for _ in range(2):
        c = connect(sim.port)
        assert c.run("/disk remove [find slot=x]")[1] == -1
    sim.faults.clear()
    assert connect(sim.port).run("/disk remove [find slot=x]") == ("", 0)


def test_fail_nth_with_routeros_text(sim: Simulator, connect: Connect) -> None:
    sim.faults.fail("/disk add", "failure: device busy", nth=2)
    c = connect(sim.port)
    assert c.run("/disk add slot=f1") == ("", 0)
    assert c.run("/disk add slot=f2") == ("failure: device busy\r\n", 1)
    assert c.run("/disk add slot=f3") == ("", 0)
    assert not disk_exists(sim, connect, "f2")


def test_fail_every(sim: Simulator, connect: Connect) -> None:
    sim.faults.fail("/disk remove", "failure: busy")
    c = connect(sim.port)
    assert c.run("/disk remove [find slot=x]") == ("failure: busy\r\n", 1)
    assert c.run("/disk remove [find slot=x]") == ("failure: busy\r\n", 1)
    assert c.run("/disk print")[1] == 0


def test_pool_full(sim: Simulator, connect: Connect) -> None:
    sim.faults.set_pool_full()
    c = connect(sim.port)
    assert c.run("/disk add slot=p file-size=1G") == ("failure: not enough space\r\n", 1)
    assert not disk_exists(sim, connect, "p")
    sim.faults.set_pool_full(False)
    assert c.run("/disk add slot=p file-size=1G") == ("", 0)


def test_reboot_refuses_ssh_then_restores_same_disks(
    sim: Simulator, connect: Connect, fake: FakeDevice, probe: Callable[[int], bool]
) -> None:
    c = connect(sim.port)
    c.run("/disk add slot=keep")
    started = time.monotonic()
    sim.reboot(1.5)
    assert sim.rebooting and fake.power == ["off"]
    # existing connections are dropped (the client notices asynchronously: allow for load)
    while c.transport.is_active():
        assert time.monotonic() - started < 1.2, "existing connection not dropped"
        time.sleep(0.02)
    with pytest.raises((paramiko.SSHException, EOFError, OSError)):
        connect(sim.port, timeout=2)
    while probe(sim.port):
        assert time.monotonic() - started < 5, "SSH did not come back"
        time.sleep(0.05)
    down_for = time.monotonic() - started
    assert 1.4 <= down_for < 4.0  # down at least the stated time; the upper bound allows load
    assert fake.power == ["off", "on"] and not sim.rebooting
    assert disk_exists(sim, connect, "keep")


def test_reboot_with_wait_and_commands_during_reboot_are_dropped(
    sim: Simulator, connect: Connect
) -> None:
    sim.faults.add_latency("/disk add", 0.5)
    c = connect(sim.port)
    chan = c.transport.open_session()
    chan.exec_command("/disk add slot=inflight")
    time.sleep(0.1)
    sim.reboot(0.5, wait=True)
    assert chan.recv_exit_status() == -1
    assert connect(sim.port).run("/disk print")[1] == 0


def test_second_reboot_while_down_is_an_error(sim: Simulator) -> None:
    sim.reboot(0.5)
    with pytest.raises(RuntimeError):
        sim.reboot(0.5)


def test_stop_during_reboot_powers_on(make_sim: Callable[..., Simulator],
                                      fake: FakeDevice) -> None:
    sim = make_sim(device=fake)
    sim.reboot(30)
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 3
    assert fake.power == ["off", "on"]
