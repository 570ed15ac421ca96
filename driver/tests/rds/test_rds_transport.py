"""SshTransport against a real (in-process) SSH server on 127.0.0.1."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
from sshd_fixture import PASSWORD, Reply, Sleeps, SshServer

from rds_csi.errors import (
    AuthenticationFailed,
    CommandTimeout,
    ConnectionLost,
    HostKeyRejected,
    RdsUnavailable,
)
from rds_csi.rds.transport import SshConfig, SshTransport, sha256_fingerprint

Make = Callable[..., SshTransport]


def test_runs_commands_with_output_and_exit_status(server: SshServer, make_transport: Make) -> None:
    server.handler = lambda cmd: (
        Reply("no such item\r\n", exit_status=1)
        if "remove" in cmd
        else Reply("  name: rds\r\n\r\n")
    )
    t = make_transport()
    out = t.run("/system identity print", timeout=5)
    assert (out.stdout, out.exit_status) == ("  name: rds\r\n\r\n", 0)
    assert t.run('/disk remove [find slot="x"]', timeout=5).exit_status == 1
    assert server.seen.commands == ["/system identity print", '/disk remove [find slot="x"]']
    assert server.seen.connections == 1  # one long-lived connection, a channel per command


def test_login_name_carries_console_flags(server: SshServer, make_transport: Make) -> None:
    make_transport().run("x", timeout=5)
    make_transport(username="admin+ct").run("x", timeout=5)
    make_transport(console_flags="").run("x", timeout=5)
    assert server.seen.logins == ["admin+cet1024w", "admin+ct", "admin"]


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_key_auth(
    server: SshServer, make_transport: Make, key_files: dict[str, Path], kind: str
) -> None:
    server.authorized_key = paramiko.PKey.from_path(key_files[kind])
    t = make_transport(password_file=None, private_key_file=key_files[kind])
    assert t.run("x", timeout=5).exit_status == 0


def test_key_refused_falls_back_to_password(
    server: SshServer, make_transport: Make, key_files: dict[str, Path]
) -> None:
    t = make_transport(private_key_file=key_files["ed25519"])  # not authorized; password is
    assert t.run("x", timeout=5).exit_status == 0


def test_bad_credentials_fail_fast_without_leaking(
    server: SshServer,
    make_transport: Make,
    tmp_path: Path,
    key_files: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-" + PASSWORD)
    sleeps = Sleeps()
    t = make_transport(password_file=wrong, sleep=sleeps)
    with pytest.raises(AuthenticationFailed) as info:
        t.run("x", timeout=5)
    assert sleeps == []  # not retried
    t2 = make_transport(password_file=None, private_key_file=key_files["rsa"])
    with pytest.raises(AuthenticationFailed):
        t2.run("x", timeout=5)
    garbage = tmp_path / "garbage"
    garbage.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nzzzz\n")
    encrypted = tmp_path / "encrypted"
    paramiko.RSAKey.generate(1024).write_private_key_file(str(encrypted), password="kp")
    for bad in (tmp_path / "nope", garbage, encrypted):
        t3 = make_transport(password_file=None, private_key_file=bad)
        with pytest.raises(AuthenticationFailed, match="cannot load private key"):
            t3.run("x", timeout=5)
    key_text = key_files["rsa"].read_text()
    for secret in (PASSWORD, "not-the-", key_text.splitlines()[1]):
        assert secret not in str(info.value)
        assert secret not in caplog.text


def test_password_file_trailing_newline_is_stripped_only(
    server: SshServer, make_transport: Make, tmp_path: Path
) -> None:
    server.password = " pw with spaces "
    p = tmp_path / "pw"
    p.write_text(" pw with spaces \r\n")
    assert make_transport(password_file=p).run("x", timeout=5).exit_status == 0


def test_known_hosts_pinning(
    server: SshServer, make_transport: Make, tmp_path: Path, other_host_key: paramiko.PKey
) -> None:
    assert make_transport().run("x", timeout=5).exit_status == 0
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(server.known_hosts_line(other_host_key))
    with pytest.raises(HostKeyRejected, match="does not match"):
        make_transport(known_hosts_file=wrong).run("x", timeout=5)
    other_host = tmp_path / "other_host"
    other_host.write_text(f"[127.0.0.1]:1 ssh-rsa {server.host_key.get_base64()}\n")
    with pytest.raises(HostKeyRejected, match="no entry"):
        make_transport(known_hosts_file=other_host).run("x", timeout=5)
    assert server.seen.commands == ["x"]  # nothing sent to an unverified host


def test_fingerprint_pinning(
    server: SshServer, make_transport: Make, other_host_key: paramiko.PKey
) -> None:
    good = sha256_fingerprint(server.host_key)
    assert good == server.host_key.fingerprint  # same format as `ssh-keygen -l`
    t = make_transport(known_hosts_file=None, host_key_fingerprint=good)
    assert t.run("x", timeout=5).exit_status == 0
    bad = make_transport(
        known_hosts_file=None, host_key_fingerprint=sha256_fingerprint(other_host_key)
    )
    with pytest.raises(HostKeyRejected):
        bad.run("x", timeout=5)


def test_insecure_mode_is_explicit_and_warns(
    server: SshServer, make_transport: Make, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="pin"):
        make_transport(known_hosts_file=None)
    caplog.set_level(logging.WARNING)
    t = make_transport(known_hosts_file=None, insecure_skip_host_key_check=True)
    assert "DISABLED" in caplog.text
    assert t.run("x", timeout=5).exit_status == 0


def test_reconnects_after_the_connection_dropped(server: SshServer, make_transport: Make) -> None:
    t = make_transport()
    t.run("a", timeout=5)
    server.drop_all()  # RDS reboot between two commands
    time.sleep(0.05)
    assert t.run("b", timeout=5).stdout == "ran b\r\n"
    server.drop_all()
    assert t.run("c", timeout=5).stdout == "ran c\r\n"  # even if the drop is not noticed yet
    assert server.seen.connections == 3
    assert server.seen.commands == ["a", "b", "c"]
    assert server.seen.global_requests == []  # liveness by session, never keepalive@openssh


def test_connection_lost_mid_command(server: SshServer, make_transport: Make) -> None:
    server.handler = lambda cmd: Reply("partial", drop=True) if cmd == "add" else Reply("ok")
    t = make_transport()
    with pytest.raises(ConnectionLost) as info:
        t.run("add", timeout=5)
    assert not isinstance(info.value, CommandTimeout)
    assert not isinstance(info.value, RdsUnavailable)
    assert t.run("print", timeout=5).stdout == "ok"  # look before acting: reconnects
    assert server.seen.connections == 2


def test_timeout_closes_the_channel_and_keeps_the_connection(
    server: SshServer, make_transport: Make
) -> None:
    server.handler = lambda cmd: Reply(hang=True) if cmd == "slow" else Reply("ok")
    t = make_transport()
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match="timed out"):
        t.run("slow", timeout=0.3)
    assert 0.25 < time.monotonic() - start < 2
    assert t.run("fast", timeout=5).stdout == "ok"
    deadline = time.monotonic() + 2
    while server.seen.closed_by_client == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.seen.closed_by_client == 1
    assert server.seen.connections == 1


def test_slow_but_in_time(server: SshServer, make_transport: Make) -> None:
    server.handler = lambda cmd: Reply("done\r\n", delay=0.2)
    assert make_transport().run("add", timeout=5).stdout == "done\r\n"


def test_refused_session_keeps_the_connection(server: SshServer, make_transport: Make) -> None:
    t = make_transport()
    t.run("a", timeout=5)
    server.refuse_sessions = True
    with pytest.raises(RdsUnavailable, match="session refused"):
        t.run("b", timeout=5)
    server.refuse_sessions = False
    assert t.run("c", timeout=5).stdout == "ran c\r\n"
    assert server.seen.connections == 1
    assert server.seen.commands == ["a", "c"]


def test_refused_connections_back_off_with_jitter(server: SshServer, make_transport: Make) -> None:
    server.refuse = True
    sleeps = Sleeps()
    rands = iter([0.0, 0.999])
    t = make_transport(
        sleep=sleeps,
        rand=lambda: next(rands),
        connect_attempts=3,
        backoff_initial=1.0,
        backoff_max=1.5,
    )
    with pytest.raises(RdsUnavailable) as info:
        t.run("x", timeout=5)
    assert not isinstance(info.value, AuthenticationFailed)
    assert sleeps[0] == pytest.approx(0.5)  # d=1.0, jitter in [d/2, d)
    assert sleeps[1] == pytest.approx(0.75 + 0.999 * 0.75)  # d=min(2.0, 1.5)
    assert len(sleeps) == 2
    server.refuse = False
    assert t.run("x", timeout=5).exit_status == 0


def test_nothing_listening_is_unavailable(make_transport: Make, server: SshServer) -> None:
    port = server.port
    server.stop()
    t = make_transport(port=port, connect_attempts=1)
    with pytest.raises(RdsUnavailable, match="cannot connect"):
        t.run("x", timeout=5)


@pytest.mark.parametrize("limit", [1, 2, 4])
def test_bounded_concurrency(server: SshServer, make_transport: Make, limit: int) -> None:
    server.handler = lambda cmd: Reply(cmd, delay=0.05)
    t = make_transport(max_sessions=limit)
    t.run("warm-up", timeout=5)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(t.run(f"c{i}", timeout=10).stdout))
        for i in range(6)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(results) == sorted(f"c{i}" for i in range(6))
    assert server.seen.peak_active == limit
    assert server.seen.connections == 1


def test_config_validation() -> None:
    base = {"host": "h", "username": "u", "insecure_skip_host_key_check": True}
    with pytest.raises(ValueError, match="password file or a private key"):
        SshConfig(**base).validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="SHA256"):
        SshConfig(
            host="h", username="u", password_file=Path("p"), host_key_fingerprint="MD5:aa"
        ).validate()
    with pytest.raises(ValueError, match=">= 1"):
        SshConfig(**base, password_file=Path("p"), max_sessions=0).validate()  # type: ignore[arg-type]
