"""The SSH face of the simulator: a paramiko server that speaks like RouterOS on an exec channel.

What it reproduces (ROUTEROS.md, Transport): exec channel only, one command line per exec, no PTY
and no shell; password and public-key auth; the `user+flags` console suffix stripped before auth
(`NNNw` sets the output width); `\\r\\n` replies on stdout; the exit status; keepalive global
requests answered with failure. It knows nothing about disks: a handler turns a command line into a
reply, and may ask for the connection to be dropped without an exit status.

One thread per connection (bounded); exec sessions on one connection run one at a time, in order.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import ipaddress
import logging
import os
import queue
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    MSG_CHANNEL_REQUEST,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)

log = logging.getLogger(__name__)

# paramiko logs every vanished client as an ERROR with a traceback; the simulator sends the
# wire-level chatter of its own transports here, silenced unless someone asks for it.
WIRE_LOGGER = "rds_sim.ssh.wire"
logging.getLogger(WIRE_LOGGER).setLevel(logging.CRITICAL)

DEFAULT_WIDTH = 80
_WIDTH_FLAG = re.compile(r"(\d+)w")


@dataclass(frozen=True)
class Session:
    """Who sent a command line, and how they want it formatted."""

    peer: str
    user: str
    flags: str
    width: int


@dataclass(frozen=True)
class Reply:
    """Output for the client; `exit_status=None` drops the connection with no exit status."""

    output: str
    exit_status: int | None


Handler = Callable[[Session, str], Reply]


def split_username(raw: str) -> tuple[str, str, int]:
    """`admin+cet120w` -> (`admin`, `cet120w`, 120). Width defaults to 80."""
    user, _, flags = raw.partition("+")
    m = _WIDTH_FLAG.search(flags)
    width = int(m.group(1)) if m and int(m.group(1)) > 0 else DEFAULT_WIDTH
    return user, flags, width


def load_authorized_keys(path: Path) -> list[tuple[str, bytes]]:
    """An OpenSSH authorized_keys file as (key type, key blob) pairs; options are unsupported."""
    keys: list[tuple[str, bytes]] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) < 2:
            raise ValueError(f"{path}:{lineno}: expected '<type> <base64> [comment]'")
        try:
            keys.append((words[0], base64.b64decode(words[1], validate=True)))
        except binascii.Error as e:
            raise ValueError(f"{path}:{lineno}: bad base64 key data") from e
    return keys


def key_entry(key: paramiko.PKey) -> tuple[str, bytes]:
    """A public key as an authorized_keys entry (type, blob)."""
    return key.get_name(), key.asbytes()


def load_or_create_host_key(path: Path) -> paramiko.PKey:
    """Load a host key (RSA, Ed25519, ECDSA); create an RSA one if the file is missing.

    Persisting it keeps the fingerprint stable across restarts, like a real device.
    """
    if path.exists():
        errors = []
        for cls in (paramiko.RSAKey, paramiko.Ed25519Key, paramiko.ECDSAKey):
            try:
                return cls.from_private_key_file(str(path))
            except (paramiko.SSHException, ValueError) as e:
                errors.append(f"{cls.__name__}: {e}")
        raise ValueError(f"cannot load host key {path}: {'; '.join(errors)}")
    key = paramiko.RSAKey.generate(2048)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        key.write_private_key(f)
    os.replace(tmp, path)
    return key


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Credentials:
    """The one RouterOS user the simulator knows."""

    user: str = "admin"
    password: str | None = None
    authorized_keys: list[tuple[str, bytes]] = field(default_factory=list)

    def password_ok(self, user: str, password: str) -> bool:
        if self.password is None or user != self.user:
            return False
        return hmac.compare_digest(password.encode(), self.password.encode())

    def key_ok(self, user: str, key: paramiko.PKey) -> bool:
        return user == self.user and key_entry(key) in self.authorized_keys

    def methods(self) -> str:
        kinds = (["publickey"] if self.authorized_keys else []) + (
            ["password"] if self.password is not None else []
        )
        return ",".join(kinds) or "publickey"


class _Connection(paramiko.ServerInterface):
    """Per-connection auth and channel policy; exec requests queue up for the connection thread."""

    def __init__(self, creds: Credentials, peer: str) -> None:
        self.creds = creds
        self.peer = peer
        self.session: Session | None = None
        self.requests: queue.Queue[tuple[paramiko.Channel, str]] = queue.Queue()
        self._pending: dict[int, str] = {}
        self._exec_seen: set[int] = set()
        self._lock = threading.Lock()

    def _authed(self, raw_user: str) -> int:
        user, flags, width = split_username(raw_user)
        self.session = Session(self.peer, user, flags, width)
        return AUTH_SUCCESSFUL

    def get_allowed_auths(self, username: str) -> str:
        return self.creds.methods()

    def check_auth_password(self, username: str, password: str) -> int:
        if self.creds.password_ok(split_username(username)[0], password):
            return self._authed(username)
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if self.creds.key_ok(split_username(username)[0], key):
            return self._authed(username)
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_global_request(self, kind: str, msg: paramiko.Message) -> bool:
        return False  # keepalive@openssh.com and friends: not supported, like the device

    def check_channel_pty_request(self, *args: object) -> bool:
        return False

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        return False

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        return False

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        with self._lock:
            if channel.get_id() in self._exec_seen:
                return False  # one command line per exec channel
            self._exec_seen.add(channel.get_id())
            self._pending[channel.get_id()] = command.decode("utf-8", errors="replace")
        return True

    def release(self, channel: paramiko.Channel) -> None:
        """Called once the exec reply is on the wire, so our output can never overtake it."""
        with self._lock:
            command = self._pending.pop(channel.get_id(), None)
        if command is not None:
            self.requests.put((channel, command))


def _handle_channel_request(chan: paramiko.Channel, m: paramiko.Message) -> None:
    paramiko.Channel._handle_request(chan, m)  # type: ignore[attr-defined]
    server = chan.transport.server_object if chan.transport is not None else None
    if isinstance(server, _Connection):
        server.release(chan)


class _Transport(paramiko.Transport):
    """paramiko replies to an exec request only after check_channel_exec_request returns; this
    hook hands the command to our thread after that reply is sent (otherwise a fast command's
    close could reach the client before the exec success)."""

    _channel_handler_table = {
        **paramiko.Transport._channel_handler_table,  # type: ignore[attr-defined]
        MSG_CHANNEL_REQUEST: _handle_channel_request,
    }


class SSHServer:
    """Listens, authenticates, and feeds exec command lines to a handler."""

    def __init__(
        self,
        handler: Handler,
        *,
        host_key: paramiko.PKey,
        credentials: Credentials,
        host: str = "127.0.0.1",
        port: int = 0,
        allow_non_loopback: bool = False,
        max_connections: int = 64,
    ) -> None:
        if not allow_non_loopback and not is_loopback(host):
            raise ValueError(
                f"refusing to listen on non-loopback address {host!r} "
                "(use --allow-non-loopback to override)"
            )
        self.handler = handler
        self.host_key = host_key
        self.credentials = credentials
        self.host = host
        self.port = port
        self._slots = threading.BoundedSemaphore(max_connections)
        self._sock: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._refusing = threading.Event()
        self._lock = threading.Lock()
        self._transports: set[paramiko.Transport] = set()
        self._threads: set[threading.Thread] = set()

    def start(self) -> int:
        """Bind and start accepting; returns the bound port (useful with port 0)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.settimeout(0.2)  # lets the accept loop notice stop()
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"ssh-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self.port

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self.drop_all()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout)

    def set_refusing(self, refusing: bool) -> None:
        """While refusing, accepted sockets are closed at once (a rebooting device)."""
        if refusing:
            self._refusing.set()
        else:
            self._refusing.clear()

    def drop_all(self) -> None:
        """Close every live connection abruptly, without exit statuses."""
        with self._lock:
            transports = list(self._transports)
        for t in transports:
            t.close()

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._transports)

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                log.warning("accept failed", exc_info=True)
                continue
            if self._refusing.is_set() or self._stopping.is_set():
                _close_quietly(conn)
                continue
            if not self._slots.acquire(blocking=False):
                log.warning("too many connections, refusing %s:%s", addr[0], addr[1])
                _close_quietly(conn)
                continue
            peer = f"{addr[0]}:{addr[1]}"
            t = threading.Thread(
                target=self._serve, args=(conn, peer), name=f"ssh-{peer}", daemon=True
            )
            with self._lock:
                self._threads.add(t)
            t.start()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        try:
            self._serve_ssh(conn, peer)
        except (paramiko.SSHException, OSError, EOFError) as e:  # peer gone before the handshake
            log.debug("%s: connection failed: %s", peer, e)
            _close_quietly(conn)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
            self._slots.release()

    def _serve_ssh(self, conn: socket.socket, peer: str) -> None:
        conn.settimeout(None)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else ~40 ms per reply
        transport = _Transport(conn)
        transport.set_log_channel(WIRE_LOGGER)
        transport.add_server_key(self.host_key)
        iface = _Connection(self.credentials, peer)
        with self._lock:
            self._transports.add(transport)
        try:
            if self._refusing.is_set() or self._stopping.is_set():
                return
            try:
                transport.start_server(server=iface)
            except (paramiko.SSHException, OSError, EOFError) as e:
                log.debug("%s: handshake failed: %s", peer, e)
                return
            while transport.is_active() and not self._stopping.is_set():
                try:
                    item = iface.requests.get(timeout=0.1)
                except queue.Empty:
                    continue
                self._run(transport, iface, *item)
        finally:
            transport.close()
            with self._lock:
                self._transports.discard(transport)

    def _run(
        self, transport: paramiko.Transport, iface: _Connection, chan: paramiko.Channel, line: str
    ) -> None:
        session = iface.session or Session(iface.peer, "?", "", DEFAULT_WIDTH)
        reply = self.handler(session, line)
        if reply.exit_status is None:
            log.debug("%s: dropping connection after %r", iface.peer, line)
            transport.close()
            return
        try:
            if reply.output:
                chan.sendall(reply.output.encode("utf-8"))
            # Order matters to clients: exit status, then EOF, then close.
            chan.send_exit_status(reply.exit_status)
            chan.shutdown_write()
            chan.close()
        except (OSError, EOFError, paramiko.SSHException) as e:
            log.debug("%s: client went away before the reply to %r: %s", iface.peer, line, e)


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def iter_keys(keys: Iterable[paramiko.PKey]) -> list[tuple[str, bytes]]:
    """Public keys given as paramiko objects, as authorized_keys entries."""
    return [key_entry(k) for k in keys]
