"""Fixtures for the RDS client layer tests: keys, an in-process SSH server, transports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sshd_fixture import PASSWORD, Sleeps, SshServer

from rds_csi.rds.transport import SshConfig, SshTransport


@pytest.fixture(scope="session")
def host_key() -> paramiko.PKey:
    return paramiko.RSAKey.generate(2048)  # RDS devices show ssh-rsa host keys


@pytest.fixture(scope="session")
def other_host_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


@pytest.fixture(scope="session")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Client keys as operators mount them: ed25519 (OpenSSH format), rsa and ecdsa (PEM)."""
    d = tmp_path_factory.mktemp("keys")
    ed = d / "id_ed25519"
    ed.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    rsa = d / "id_rsa"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(rsa))
    ec = d / "id_ecdsa"
    paramiko.ECDSAKey.generate().write_private_key_file(str(ec))
    return {"ed25519": ed, "rsa": rsa, "ecdsa": ec}


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    p = tmp_path / "password"
    p.write_text(PASSWORD + "\n")  # Secret mounts often end with a newline
    return p


@pytest.fixture
def server(host_key: paramiko.PKey) -> Iterator[SshServer]:
    s = SshServer(host_key, password=PASSWORD)
    yield s
    s.stop()


@pytest.fixture
def known_hosts(tmp_path: Path, server: SshServer) -> Path:
    p = tmp_path / "known_hosts"
    p.write_text(server.known_hosts_line())
    return p


@pytest.fixture
def make_transport(
    server: SshServer, password_file: Path, known_hosts: Path
) -> Iterator[Callable[..., SshTransport]]:
    """Build SshTransports to `server` (password auth, known_hosts pinning unless overridden);
    sleeps are recorded instead of slept."""
    made: list[SshTransport] = []

    def make(**overrides: Any) -> SshTransport:
        sleep = overrides.pop("sleep", Sleeps())
        rand = overrides.pop("rand", lambda: 0.5)
        fields: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": server.port,
            "username": "admin",
            "password_file": password_file,
            "known_hosts_file": known_hosts,
            "connect_timeout": 2.0,
        }
        fields.update(overrides)
        t = SshTransport(SshConfig(**fields), sleep=sleep, rand=rand)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()
