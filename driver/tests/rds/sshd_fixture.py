"""A small in-process SSH server on 127.0.0.1 for transport tests.

Each exec request is answered by `handler(command) -> Reply`: canned output and exit status sent the
way OpenSSH does (data, EOF, exit-status, close), optionally after a delay, or the whole connection
dropped mid-command, or no answer at all. The server can also refuse connections (accept and close)
and drop every connection at once (an RDS reboot). It rejects `keepalive@openssh.com` like RouterOS
and records what it saw: login names, commands, global requests, peak concurrent exec sessions.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import paramiko

PASSWORD = "s3cret-Pa55word"


class Sleeps(list[float]):
    """An injectable `sleep` that records instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@dataclass(frozen=True)
class Reply:
    output: str = ""
    exit_status: int = 0
    delay: float = 0.0  # seconds before answering
    drop: bool = False  # send the output, then kill the whole connection (no exit status)
    hang: bool = False  # never answer; ends when the client closes the channel


@dataclass
class Seen:
    logins: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    global_requests: list[str] = field(default_factory=list)
    connections: int = 0
    active: int = 0
    peak_active: int = 0
    closed_by_client: int = 0  # hung commands whose channel the client closed


class SshServer:
    def __init__(
        self,
        host_key: paramiko.PKey,
        *,
        user: str = "admin",
        password: str | None = None,
        authorized_key: paramiko.PKey | None = None,
        handler: Callable[[str], Reply] | None = None,
    ) -> None:
        self.host_key = host_key
        self.user = user
        self.password = password
        self.authorized_key = authorized_key
        self.handler: Callable[[str], Reply] = handler or (lambda cmd: Reply(f"ran {cmd}\r\n"))
        self.refuse = False  # accept connections and close them at once
        self.refuse_sessions = False  # refuse channel opens (too many sessions)
        self.seen = Seen()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._transports: list[paramiko.Transport] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    # --- control -----------------------------------------------------------------------

    def drop_all(self) -> None:
        """Kill every connection, like an RDS reboot."""
        with self._lock:
            transports, self._transports = self._transports, []
        for t in transports:
            t.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        self.drop_all()

    def known_hosts_line(self, key: paramiko.PKey | None = None) -> str:
        key = key or self.host_key
        return f"[127.0.0.1]:{self.port} {key.get_name()} {key.get_base64()}\n"

    # --- serving -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.refuse:
                conn.close()
                continue
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            _announce_channel_success(t)
            with self._lock:
                self._transports.append(t)
                self.seen.connections += 1
            try:
                t.start_server(server=_Interface(self))
            except (paramiko.SSHException, EOFError, OSError):
                t.close()

    def _serve(self, chan: paramiko.Channel, command: str) -> None:
        _wait_exec_accepted(chan)
        reply = self.handler(command)
        with self._lock:
            self.seen.commands.append(command)
            self.seen.active += 1
            self.seen.peak_active = max(self.seen.peak_active, self.seen.active)
        try:
            if reply.hang:
                while not chan.closed and not self._stop.is_set():
                    self._stop.wait(0.01)
                with self._lock:
                    self.seen.closed_by_client += 1
                return
            if reply.delay:
                self._stop.wait(reply.delay)
            chan.sendall(reply.output.encode())
            if reply.drop:
                transport = chan.get_transport()
                if transport is not None:
                    transport.close()
                return
            chan.shutdown_write()
            chan.send_exit_status(reply.exit_status)
            chan.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            with self._lock:
                self.seen.active -= 1


# paramiko replies to the exec request only after check_channel_exec_request returns, from the
# transport thread; a command answered before that reply looks like a closed channel to the client.
# Real servers reply first, so serving threads wait for the reply to be sent.
_CHANNEL_SUCCESS = 99
_accepted: dict[tuple[int, int], threading.Event] = {}
_accepted_lock = threading.Lock()


def _accepted_event(transport: paramiko.Transport, remote_chanid: int) -> threading.Event:
    with _accepted_lock:
        return _accepted.setdefault((id(transport), remote_chanid), threading.Event())


def _announce_channel_success(t: paramiko.Transport) -> None:
    send = t._send_user_message

    def send_and_announce(data: paramiko.Message) -> None:
        send(data)
        raw = data.asbytes()
        if raw[:1] == bytes([_CHANNEL_SUCCESS]):
            _accepted_event(t, int.from_bytes(raw[1:5], "big")).set()

    t._send_user_message = send_and_announce  # type: ignore[method-assign]


def _wait_exec_accepted(chan: paramiko.Channel) -> None:
    transport = chan.get_transport()
    if transport is not None:
        _accepted_event(transport, chan.remote_chanid).wait(timeout=5)


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: SshServer) -> None:
        self.s = server

    def _user_ok(self, username: str) -> bool:
        with self.s._lock:
            self.s.seen.logins.append(username)
        return username.split("+", 1)[0] == self.s.user

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_auth_password(self, username: str, password: str) -> int:
        if self._user_ok(username) and self.s.password is not None and password == self.s.password:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ak = self.s.authorized_key
        if self._user_ok(username) and ak is not None and key.asbytes() == ak.asbytes():
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session" and not self.s.refuse_sessions:
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode() if isinstance(command, bytes) else str(command)
        threading.Thread(target=self.s._serve, args=(channel, text), daemon=True).start()
        return True

    def check_global_request(self, kind: str, msg: paramiko.Message) -> bool:
        with self.s._lock:
            self.s.seen.global_requests.append(kind)
        return False
