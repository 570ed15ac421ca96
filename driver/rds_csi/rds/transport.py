"""SSH transport to one RDS: a long-lived paramiko connection, one exec channel per command.

RouterOS copes badly with many concurrent sessions, so a semaphore bounds them. The connection is
re-established lazily when it is found dead; liveness is probed by opening a session because
RouterOS rejects `keepalive@openssh.com`.

Error contract (see rds_csi.errors):
- `RdsUnavailable` (and its `AuthenticationFailed`, `HostKeyRejected`): the command was not sent.
- `ConnectionLost` (and `CommandTimeout`): the command was sent; it may or may not have run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko

from rds_csi.errors import (
    AuthenticationFailed,
    CommandTimeout,
    ConnectionLost,
    HostKeyRejected,
    RdsUnavailable,
)

log = logging.getLogger(__name__)

# Console flags appended to the login name: c = no colours, e = dumb terminal, t = no terminal
# capability detection, 1024w = 1024 columns so `print detail` rarely wraps. The device may ignore
# them, so the parser still handles wrapped output.
DEFAULT_CONSOLE_FLAGS = "cet1024w"


@dataclass(frozen=True)
class CommandOutput:
    """What one command printed (stdout and stderr combined) and its exit status."""

    stdout: str
    exit_status: int


class Transport(Protocol):
    """Runs one RouterOS command line and returns its output. The client's only boundary."""

    def run(self, command: str, *, timeout: float) -> CommandOutput: ...


@dataclass(frozen=True)
class SshConfig:
    """How to reach and authenticate to one RDS.

    Secrets are given as file paths (Kubernetes Secret mounts) and re-read on every connect, so a
    rotated Secret is picked up on the next reconnect. Host keys are pinned by default: give
    `known_hosts_file` or `host_key_fingerprint` (`SHA256:<base64>`), or set
    `insecure_skip_host_key_check` explicitly.
    """

    host: str
    username: str
    port: int = 22
    password_file: Path | None = None
    private_key_file: Path | None = None
    known_hosts_file: Path | None = None
    host_key_fingerprint: str | None = None
    insecure_skip_host_key_check: bool = False
    console_flags: str = DEFAULT_CONSOLE_FLAGS
    connect_timeout: float = 10.0
    max_sessions: int = 4
    connect_attempts: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 10.0

    def login_name(self) -> str:
        """The name sent on the wire: `user+flags` unless the user already carries flags."""
        if "+" in self.username or not self.console_flags:
            return self.username
        return f"{self.username}+{self.console_flags}"

    def validate(self) -> None:
        if not self.host or not self.username:
            raise ValueError("ssh config: host and username are required")
        if self.password_file is None and self.private_key_file is None:
            raise ValueError("ssh config: a password file or a private key file is required")
        pinned = self.known_hosts_file is not None or self.host_key_fingerprint is not None
        if not pinned and not self.insecure_skip_host_key_check:
            raise ValueError(
                "ssh config: pin the RDS host key (known_hosts file or SHA256 fingerprint) "
                "or set insecure_skip_host_key_check"
            )
        if self.host_key_fingerprint is not None and not self.host_key_fingerprint.startswith(
            "SHA256:"
        ):
            raise ValueError("ssh config: host key fingerprint must look like SHA256:<base64>")
        if self.max_sessions < 1 or self.connect_attempts < 1:
            raise ValueError("ssh config: max_sessions and connect_attempts must be >= 1")


def sha256_fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style `SHA256:<base64 without padding>` of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _read_secret(path: Path) -> str:
    """Read a Secret mount; only the trailing newline is dropped (editors and kubectl add one)."""
    return path.read_text(encoding="utf-8").rstrip("\r\n")


class SshTransport:
    """Transport over paramiko to one RDS. Thread-safe."""

    def __init__(
        self,
        config: SshConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        config.validate()
        if config.insecure_skip_host_key_check:
            log.warning(
                "host key check for RDS %s:%d is DISABLED (insecure)", config.host, config.port
            )
        self._cfg = config
        self._sleep = sleep
        self._rand = rand
        self._sessions = threading.BoundedSemaphore(config.max_sessions)
        self._lock = threading.Lock()  # guards _ssh; held while (re)connecting
        self._ssh: paramiko.Transport | None = None

    @property
    def target(self) -> str:
        return f"{self._cfg.host}:{self._cfg.port}"

    def run(self, command: str, *, timeout: float) -> CommandOutput:
        """`timeout` bounds opening the session and running the command; (re)connecting is
        bounded on its own by `connect_timeout`, `connect_attempts` and the backoff."""
        with self._sessions:
            ssh, chan = self._open_channel(timeout)
            try:
                return self._exec(ssh, chan, command, timeout)
            finally:
                chan.close()

    def close(self) -> None:
        with self._lock:
            self._drop_locked()

    # --- connection management -------------------------------------------------------------

    def _open_channel(self, timeout: float) -> tuple[paramiko.Transport, paramiko.Channel]:
        """Open a session, reconnecting once if the existing connection turns out dead.

        Nothing has been sent yet, so retrying here is always safe.
        """
        ssh = self._connection()
        try:
            return ssh, ssh.open_session(timeout=timeout)
        except paramiko.ChannelException as e:
            # The device answered and refused (too many sessions?): the connection is fine.
            raise RdsUnavailable(f"RDS {self.target}: SSH session refused: {e}") from e
        except (paramiko.SSHException, OSError, EOFError) as e:
            log.info("RDS %s: session open failed (%s); reconnecting", self.target, e)
            self._mark_dead(ssh)
        ssh = self._connection()
        try:
            return ssh, ssh.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._mark_dead(ssh)
            raise RdsUnavailable(f"RDS {self.target}: cannot open an SSH session: {e}") from e

    def _connection(self) -> paramiko.Transport:
        with self._lock:
            if self._ssh is not None and self._ssh.is_active():
                return self._ssh
            self._drop_locked()
            self._ssh = self._connect_with_backoff()
            return self._ssh

    def _mark_dead(self, ssh: paramiko.Transport) -> None:
        with self._lock:
            if self._ssh is ssh:
                self._drop_locked()
            else:
                ssh.close()

    def _drop_locked(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None

    def _connect_with_backoff(self) -> paramiko.Transport:
        attempt = 1
        while True:
            try:
                return self._connect_once()
            except (AuthenticationFailed, HostKeyRejected):
                raise
            except RdsUnavailable as e:
                if attempt >= self._cfg.connect_attempts:
                    raise
                delay = self._backoff(attempt)
                log.warning(
                    "RDS %s: connect attempt %d failed (%s); retrying in %.2fs",
                    self.target,
                    attempt,
                    e,
                    delay,
                )
                self._sleep(delay)
                attempt += 1

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter in [d/2, d): spreads reconnect storms."""
        d = min(self._cfg.backoff_max, self._cfg.backoff_initial * 2.0 ** (attempt - 1))
        return d / 2 + self._rand() * d / 2

    def _connect_once(self) -> paramiko.Transport:
        cfg = self._cfg
        known = self._known_keys()
        try:
            sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout)
        except OSError as e:
            raise RdsUnavailable(f"RDS {self.target}: cannot connect: {e}") from e
        # Small request/reply exchanges: without TCP_NODELAY every exec channel waits for a
        # delayed ACK (~40 ms) before its last packet leaves.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ssh = paramiko.Transport(sock)
        try:
            self._prefer_key_types(ssh, known)
            try:
                ssh.start_client(timeout=cfg.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as e:
                raise RdsUnavailable(f"RDS {self.target}: SSH handshake failed: {e}") from e
            self._check_host_key(ssh.get_remote_server_key(), known)
            self._authenticate(ssh)
        except BaseException:
            ssh.close()
            raise
        log.info("RDS %s: connected as %s", self.target, cfg.username)
        return ssh

    def _host_lookup_name(self) -> str:
        return self._cfg.host if self._cfg.port == 22 else f"[{self._cfg.host}]:{self._cfg.port}"

    def _known_keys(self) -> list[paramiko.PKey]:
        if self._cfg.known_hosts_file is None:
            return []
        try:
            hostkeys = paramiko.HostKeys(str(self._cfg.known_hosts_file))
        except (OSError, paramiko.SSHException) as e:
            raise HostKeyRejected(f"RDS {self.target}: cannot read known_hosts: {e}") from e
        entry = hostkeys.lookup(self._host_lookup_name())
        return [] if entry is None else [entry[t] for t in entry]

    @staticmethod
    def _prefer_key_types(ssh: paramiko.Transport, known: list[paramiko.PKey]) -> None:
        """Ask for the host key type we have pinned, so a device with several keys shows it."""
        types = [k.get_name() for k in known]
        if "ssh-rsa" in types:
            types += ["rsa-sha2-512", "rsa-sha2-256"]
        opts = ssh.get_security_options()
        wanted = [t for t in opts.key_types if t in types]
        if wanted:
            opts.key_types = wanted + [t for t in opts.key_types if t not in wanted]

    def _check_host_key(self, key: paramiko.PKey, known: list[paramiko.PKey]) -> None:
        cfg = self._cfg
        if cfg.host_key_fingerprint is not None:
            got = sha256_fingerprint(key)
            if hmac.compare_digest(got, cfg.host_key_fingerprint.rstrip("=")):
                return
            raise HostKeyRejected(
                f"RDS {self.target}: host key {got} does not match the pinned fingerprint"
            )
        if cfg.known_hosts_file is not None:
            if any(k.get_name() == key.get_name() and k.asbytes() == key.asbytes() for k in known):
                return
            what = "does not match" if known else "has no entry in"
            raise HostKeyRejected(
                f"RDS {self.target}: host key {sha256_fingerprint(key)} {what} "
                f"{cfg.known_hosts_file}"
            )
        # validate() guarantees insecure mode here; the warning was logged at construction.

    def _authenticate(self, ssh: paramiko.Transport) -> None:
        cfg = self._cfg
        login = cfg.login_name()
        try:
            if cfg.private_key_file is not None:
                try:
                    key = paramiko.PKey.from_path(cfg.private_key_file)
                except Exception as e:  # missing, unknown type, encrypted, garbage...
                    raise AuthenticationFailed(
                        f"RDS {self.target}: cannot load private key {cfg.private_key_file}: "
                        f"{type(e).__name__}"
                    ) from None
                try:
                    ssh.auth_publickey(login, key)
                    return
                except paramiko.AuthenticationException:
                    if cfg.password_file is None:
                        raise
            if cfg.password_file is not None:
                ssh.auth_password(login, _read_secret(cfg.password_file))
        except paramiko.AuthenticationException:
            raise AuthenticationFailed(
                f"RDS {self.target}: authentication failed for user {cfg.username}"
            ) from None
        except OSError as e:
            raise AuthenticationFailed(
                f"RDS {self.target}: cannot read credentials: {type(e).__name__}"
            ) from None
        except (paramiko.SSHException, EOFError) as e:
            raise RdsUnavailable(f"RDS {self.target}: connection lost during login: {e}") from e

    # --- one command ---------------------------------------------------------------------

    def _exec(
        self, ssh: paramiko.Transport, chan: paramiko.Channel, command: str, timeout: float
    ) -> CommandOutput:
        """Run one command; a watchdog closes the channel at the deadline, which unblocks
        every paramiko wait (exec request, reads, exit status) at once."""
        chan.set_combine_stderr(True)  # RouterOS prints errors on stdout anyway
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            chan.close()

        watchdog = threading.Timer(timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        chunks: list[bytes] = []
        try:
            chan.exec_command(command)
            while data := chan.recv(65536):
                chunks.append(data)
            # OpenSSH-style servers send exit-status after EOF: wait for it (or for the close).
            chan.status_event.wait()
        except (paramiko.SSHException, OSError, EOFError) as e:
            if not expired.is_set():
                self._check_alive(ssh)
                raise ConnectionLost(f"RDS {self.target}: connection lost: {e}: {command}") from e
        finally:
            watchdog.cancel()
        status = chan.exit_status
        if status >= 0:
            return CommandOutput(b"".join(chunks).decode("utf-8", errors="replace"), status)
        if expired.is_set():
            raise CommandTimeout(f"RDS {self.target}: command timed out: {command}")
        self._check_alive(ssh)
        raise ConnectionLost(f"RDS {self.target}: connection lost mid-command: {command}")

    def _check_alive(self, ssh: paramiko.Transport) -> None:
        if not ssh.is_active():
            self._mark_dead(ssh)
