"""The SSH face: auth, usernames with console flags, exec-only sessions, replies, exit status."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
import pytest
from fake_device import FakeDevice

from rds_sim.server import Simulator
from rds_sim.ssh_server import load_authorized_keys, load_or_create_host_key, split_username

Connect = Callable[..., Any]


def test_password_auth_runs_a_command(sim: Simulator, connect: Connect) -> None:
    c = connect(sim.port)
    assert c.run("/disk add slot=a file-size=1G") == ("", 0)
    out, status = c.run("/disk print")
    assert status == 0
    assert 'slot="a"' in out


def test_wrong_password_rejected(sim: Simulator, connect: Connect) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        connect(sim.port, password="nope")


def test_unknown_user_rejected(sim: Simulator, connect: Connect) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        connect(sim.port, user="root")  # with the right password


@pytest.mark.parametrize("which", ["ed25519_key", "rsa_key"])
def test_public_key_auth(
    sim: Simulator, connect: Connect, which: str, request: pytest.FixtureRequest
) -> None:
    pair = request.getfixturevalue(which)
    c = connect(sim.port, key=pair.key)
    assert c.run("/disk print")[1] == 0


def test_unknown_key_rejected(make_sim: Callable[..., Simulator], connect: Connect,
                              ed25519_key: Any, fake: FakeDevice) -> None:
    sim = make_sim(device=fake, authorized_keys=[], password=None)
    with pytest.raises(paramiko.AuthenticationException):
        connect(sim.port, key=ed25519_key.key)


def test_authorized_keys_file(make_sim: Callable[..., Simulator], connect: Connect,
                              ed25519_key: Any, rsa_key: Any, fake: FakeDevice,
                              tmp_path: Path) -> None:
    ak = tmp_path / "authorized_keys"
    ak.write_text(f"# test keys\n{ed25519_key.public_line}\n\n{rsa_key.public_line}\n")
    assert len(load_authorized_keys(ak)) == 2
    sim = make_sim(device=fake, authorized_keys=ak, password=None)
    assert connect(sim.port, key=rsa_key.key).run("/disk print")[1] == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("admin", ("admin", "", 80)),
        ("admin+ct", ("admin", "ct", 80)),
        ("admin+cet120w", ("admin", "cet120w", 120)),
        ("admin+cet1024w", ("admin", "cet1024w", 1024)),
        ("admin+0w", ("admin", "0w", 80)),
    ],
)
def test_split_username(raw: str, expected: tuple[str, str, int]) -> None:
    assert split_username(raw) == expected


@pytest.mark.parametrize(("user", "width"), [("admin", 80), ("admin+ct", 80),
                                             ("admin+cet120w", 120)])
def test_username_flags_set_width(sim: Simulator, connect: Connect, fake: FakeDevice,
                                  user: str, width: int, ed25519_key: Any) -> None:
    connect(sim.port, user=user).run("/disk print")
    connect(sim.port, user=user, key=ed25519_key.key).run("/disk print")
    assert fake.widths == [width, width]
    assert sim.command_log()[-1].user == "admin"


def test_replies_end_lines_with_crlf(sim: Simulator, connect: Connect) -> None:
    c = connect(sim.port)
    c.run("/disk add slot=a; /disk add slot=b")
    out, _ = c.run("/disk print")
    assert out.endswith("\r\n")
    assert out.count("\r\n") == 2
    assert "\n" not in out.replace("\r\n", "")


def test_exit_status_runtime_vs_parse_error(sim: Simulator, connect: Connect) -> None:
    c = connect(sim.port)
    out, status = c.run("/disk remove nosuch")
    assert (out, status) == ("no such item\r\n", 1)
    out, status = c.run("/disk frobnicate")
    assert out.startswith("bad command name") and status == 0


def test_many_commands_on_one_connection(sim: Simulator, connect: Connect) -> None:
    c = connect(sim.port)
    for i in range(30):
        assert c.run(f"/disk add slot=s{i}") == ("", 0)
    assert c.run("/disk print")[0].count("\r\n") == 30


def test_pty_and_shell_refused(sim: Simulator, connect: Connect) -> None:
    c = connect(sim.port)
    chan = c.transport.open_session()
    with pytest.raises(paramiko.SSHException):
        chan.get_pty()
    chan = c.transport.open_session()
    with pytest.raises(paramiko.SSHException):
        chan.invoke_shell()
    assert c.run("/disk print")[1] == 0  # the connection is still usable


def test_keepalive_global_request_fails(sim: Simulator, connect: Connect) -> None:
    c = connect(sim.port)
    assert c.transport.global_request("keepalive@openssh.com", wait=True) is None
    assert c.run("/disk print")[1] == 0


def test_non_session_channel_refused(sim: Simulator, connect: Connect) -> None:
    c = connect(sim.port)
    with pytest.raises(paramiko.ChannelException):
        c.transport.open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 5555))


def test_concurrent_clients(sim: Simulator, connect: Connect) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            c = connect(sim.port)
            for j in range(5):
                assert c.run(f"/disk add slot=c{n}-{j}") == ("", 0)
                out, status = c.run(f"/disk print where slot=c{n}-{j}")
                assert status == 0 and f'"c{n}-{j}"' in out
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    out, _ = connect(sim.port).run("/disk print")
    assert out.count("\r\n") == 100
    assert len(sim.command_log()) == 201


def test_concurrent_sessions_on_one_connection(sim: Simulator, connect: Connect) -> None:
    c = connect(sim.port)
    results: list[tuple[str, int]] = []
    threads = [threading.Thread(target=lambda i=i: results.append(c.run(f"/disk add slot=x{i}")))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [("", 0)] * 8


def test_client_vanishing_mid_command(
    sim: Simulator, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    sim.faults.add_latency("/disk add", 0.5)
    caplog.set_level(logging.DEBUG)
    c = connect(sim.port)
    chan = c.transport.open_session()
    chan.exec_command("/disk add slot=ghost")
    time.sleep(0.1)
    c.close()  # gone while the command runs
    time.sleep(0.7)
    # The command still ran, the server logged no error and keeps serving.
    out, status = connect(sim.port).run("/disk print where slot=ghost")
    assert status == 0 and "ghost" in out
    entry = next(e for e in sim.command_log() if e.command == "/disk add slot=ghost")
    assert (entry.result, entry.exit_status) == ("ok", 0)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sim.ssh.connection_count == 1


def test_client_closing_channel_before_reply(sim: Simulator, connect: Connect) -> None:
    sim.faults.add_latency("/disk print", 0.3)
    c = connect(sim.port)
    chan = c.transport.open_session()
    chan.exec_command("/disk print")
    chan.close()
    time.sleep(0.5)
    sim.faults.clear()
    assert c.run("/disk print")[1] == 0


def test_half_open_tcp_clients_do_not_block(sim: Simulator, connect: Connect) -> None:
    import socket

    idle = [socket.create_connection(("127.0.0.1", sim.port)) for _ in range(5)]
    try:
        assert connect(sim.port).run("/disk print")[1] == 0
    finally:
        for s in idle:
            s.close()


def test_connection_limit(make_sim: Callable[..., Simulator], connect: Connect,
                          fake: FakeDevice) -> None:
    sim = make_sim(device=fake, max_connections=2)
    a, b = connect(sim.port), connect(sim.port)
    with pytest.raises((paramiko.SSHException, EOFError, OSError)):
        connect(sim.port, timeout=3)
    a.close()
    deadline = time.monotonic() + 3
    while sim.ssh.connection_count > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert connect(sim.port).run("/disk print")[1] == 0
    assert b.run("/disk print")[1] == 0


def test_device_bug_reported_not_fatal(sim: Simulator, connect: Connect, fake: FakeDevice,
                                       caplog: pytest.LogCaptureFixture) -> None:
    fake.raise_on = "explode"
    c = connect(sim.port)
    out, status = c.run("/disk print explode")
    assert status == 1 and "internal error" in out
    assert c.run("/disk print")[1] == 0
    assert sim.command_log()[-2].result == "error"
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_command_log_records_peer_status_duration(sim: Simulator, connect: Connect) -> None:
    c = connect(sim.port)
    c.run("/disk remove nosuch")
    (entry,) = sim.command_log()
    local_port = c.transport.sock.getsockname()[1]
    assert entry.peer == f"127.0.0.1:{local_port}"
    assert (entry.command, entry.exit_status, entry.result) == ("/disk remove nosuch", 1, "ok")
    assert entry.duration_ms >= 0
    lines = (sim.state_dir / "command-log.jsonl").read_text().splitlines()
    assert '"command":"/disk remove nosuch"' in lines[-1]


def test_host_key_created_once_and_persisted(tmp_path: Path) -> None:
    path = tmp_path / "hk"
    k1 = load_or_create_host_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    k2 = load_or_create_host_key(path)
    assert k1.get_name() == "ssh-rsa" and k1.asbytes() == k2.asbytes()


def test_simulator_host_key_stable_across_restart(
    make_sim: Callable[..., Simulator], tmp_path: Path, connect: Connect
) -> None:
    state = tmp_path / "hk-state"
    sim = make_sim(state, host_key=None, device=FakeDevice(state))
    k1 = connect(sim.port).transport.get_remote_server_key()
    sim.stop()
    sim = make_sim(state, host_key=None, device=FakeDevice(state))
    k2 = connect(sim.port).transport.get_remote_server_key()
    assert k1.get_name() == "ssh-rsa" and k1.asbytes() == k2.asbytes()
    assert (state / "ssh_host_rsa_key").exists()


def test_ed25519_host_key_file(make_sim: Callable[..., Simulator], connect: Connect,
                               ed25519_key: Any, fake: FakeDevice) -> None:
    sim = make_sim(device=fake, host_key=ed25519_key.path)
    key = connect(sim.port).transport.get_remote_server_key()
    assert key.asbytes() == ed25519_key.key.asbytes()


def test_non_loopback_refused(tmp_path: Path, fake: FakeDevice) -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        Simulator(tmp_path / "s", host="0.0.0.0", password="x", device=fake)
