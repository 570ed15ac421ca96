"""Shared fixtures for simulator tests: client keys, an in-process Simulator, an SSH client."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from rds_sim.server import Simulator

PASSWORD = "s3cret-pass"


@dataclass(frozen=True)
class KeyPair:
    path: Path  # private key, OpenSSH format, mode 0600
    key: paramiko.PKey
    public_line: str  # authorized_keys line


def _keypair(path: Path, kind: str) -> KeyPair:
    key: paramiko.PKey
    if kind == "ed25519":
        pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        path.write_bytes(pem)
        path.chmod(0o600)
        key = paramiko.Ed25519Key.from_private_key_file(str(path))
    else:
        key = paramiko.RSAKey.generate(2048)
        key.write_private_key_file(str(path))
        path.chmod(0o600)
    return KeyPair(path, key, f"{key.get_name()} {key.get_base64()} test-{kind}")


@pytest.fixture(scope="session")
def ed25519_key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return _keypair(tmp_path_factory.mktemp("keys") / "id_ed25519", "ed25519")


@pytest.fixture(scope="session")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return _keypair(tmp_path_factory.mktemp("keys") / "id_rsa", "rsa")


@pytest.fixture(scope="session")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> paramiko.PKey:
    """One RSA host key for the whole session: generating one per test is slow."""
    return paramiko.RSAKey.generate(2048)


@pytest.fixture
def make_sim(
    tmp_path: Path, ed25519_key: KeyPair, rsa_key: KeyPair, host_key: paramiko.PKey
) -> Iterator[Callable[..., Simulator]]:
    """Factory for started Simulators (password PASSWORD, both test keys); stopped at teardown."""
    sims: list[Simulator] = []

    def make(state_dir: Path | None = None, **kw: Any) -> Simulator:
        kw.setdefault("password", PASSWORD)
        kw.setdefault("authorized_keys", [ed25519_key.key, rsa_key.key])
        kw.setdefault("host_key", host_key)
        sim = Simulator(state_dir or tmp_path / "state", **kw)
        sims.append(sim)
        sim.start()
        return sim

    yield make
    for sim in sims:
        sim.stop()


class Client:
    """A paramiko client that runs one command per exec channel, like the driver."""

    def __init__(
        self,
        port: int,
        *,
        user: str = "admin",
        password: str | None = PASSWORD,
        key: paramiko.PKey | None = None,
        timeout: float = 10.0,
    ) -> None:
        # TCP_NODELAY as a driver should set it: without it every exec costs a delayed ACK (~40 ms).
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ssh = paramiko.SSHClient()
        self.ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        self.ssh.connect(
            "127.0.0.1", port, username=user, password=None if key else password, pkey=key,
            sock=sock,
            look_for_keys=False, allow_agent=False, timeout=timeout, banner_timeout=timeout,
            auth_timeout=timeout,
        )
        self.timeout = timeout

    @property
    def transport(self) -> paramiko.Transport:
        t = self.ssh.get_transport()
        assert t is not None
        return t

    def run(self, line: str) -> tuple[str, int]:
        """(stdout, exit status); exit status -1 means no status came (connection dropped)."""
        chan = self.transport.open_session(timeout=self.timeout)
        chan.settimeout(self.timeout)
        chan.exec_command(line)
        data = b""
        while chunk := chan.recv(65536):
            data += chunk
        status = chan.recv_exit_status()  # -1 once the transport is gone
        chan.close()
        return data.decode(), status

    def close(self) -> None:
        self.ssh.close()


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    """Factory for connected Clients; all closed at teardown."""
    clients: list[Client] = []

    def make(port: int, **kw: Any) -> Client:
        c = Client(port, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()

