"""The Simulator: one device, its SSH face, its faults, its command log and its control socket.

Tests start it in-process (`port = Simulator(state_dir, password=...).start()`); `rds-sim serve`
wraps the same object. All state lives in the state dir, so a new Simulator on the same dir comes
back with the same disks and the same host key.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import paramiko

from .control import ControlServer
from .device import CommandHook, CommandResult, Device, DropConnection
from .exports import ExportBackend
from .faults import FaultInjector
from .ssh_server import (
    Credentials,
    Reply,
    Session,
    SSHServer,
    iter_keys,
    load_authorized_keys,
    load_or_create_host_key,
)

log = logging.getLogger(__name__)

COMMAND_LOG_FILE = "command-log.jsonl"
HOST_KEY_FILE = "ssh_host_rsa_key"
DEFAULT_POOL_SIZE = 7_681_574_174_720


class DeviceLike(Protocol):
    """What the simulator needs from the device model (rds_sim.device.Device)."""

    def execute(
        self, line: str, *, width: int = 80, hook: CommandHook | None = None
    ) -> CommandResult: ...

    def power_off(self) -> None: ...

    def power_on(self) -> None: ...


@dataclass(frozen=True)
class LogEntry:
    """One command line received over SSH and what became of it."""

    time: str  # ISO 8601, UTC, when the line arrived
    peer: str
    user: str
    command: str
    exit_status: int | None  # None when the connection was dropped
    result: str  # "ok", "dropped" or "error" (simulator bug)
    duration_ms: float


class CommandLog:
    """Bounded in-memory log, mirrored as JSON lines in the state dir."""

    def __init__(self, path: Path, maxlen: int = 10_000) -> None:
        self.path = path
        self._entries: collections.deque[LogEntry] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def append(self, entry: LogEntry) -> None:
        line = json.dumps(asdict(entry), separators=(",", ":")) + "\n"
        with self._lock:
            self._entries.append(entry)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)

    def entries(self) -> list[LogEntry]:
        with self._lock:
            return list(self._entries)


class Simulator:
    """A simulated RDS reachable over SSH on loopback."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        user: str = "admin",
        password: str | None = None,
        authorized_keys: Sequence[paramiko.PKey] | Path | None = None,
        host_key: Path | paramiko.PKey | None = None,
        identity: str = "rds",
        slot_name_max: int = 32,
        pool_size: int = DEFAULT_POOL_SIZE,
        export_backend: ExportBackend | None = None,
        parse_error_exit_status: int = 0,
        latency_profile: str = "none",
        allow_non_loopback: bool = False,
        max_connections: int = 64,
        control_socket: bool = True,
        reboot_seconds: float = 5.0,
        device: DeviceLike | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.device: DeviceLike = device or Device(
            self.state_dir,
            identity=identity,
            slot_name_max=slot_name_max,
            pool_size=pool_size,
            export_backend=export_backend,
            parse_error_exit_status=parse_error_exit_status,
        )
        self.faults = FaultInjector()
        self.faults.use_profile(latency_profile)
        self._log = CommandLog(self.state_dir / COMMAND_LOG_FILE)
        if isinstance(authorized_keys, Path):
            keys = load_authorized_keys(authorized_keys)
        else:
            keys = iter_keys(authorized_keys or [])
        if host_key is None or isinstance(host_key, Path):
            host_key = load_or_create_host_key(host_key or self.state_dir / HOST_KEY_FILE)
        self.ssh = SSHServer(
            self._handle,
            host_key=host_key,
            credentials=Credentials(user, password, keys),
            host=host,
            port=port,
            allow_non_loopback=allow_non_loopback,
            max_connections=max_connections,
        )
        if isinstance(self.device, Device):  # `/system reboot` takes the whole simulator down
            self.device.on_reboot = lambda: self.reboot(reboot_seconds)
        self.control = ControlServer(self.state_dir, self) if control_socket else None
        self._reboot_lock = threading.Lock()
        self._reboot_until = 0.0
        self._reboot_thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # --- lifecycle ---

    def start(self) -> int:
        """Start serving; returns the bound SSH port."""
        port = self.ssh.start()
        try:
            if self.control is not None:
                self.control.start()
        except BaseException:
            self.ssh.stop()
            raise
        return port

    def stop(self) -> None:
        """Stop serving. A reboot in progress is ended first (the device is powered back on)."""
        self._stopped.set()
        self.faults.stop()
        if self._reboot_thread is not None:
            self._reboot_thread.join(10)
        if self.control is not None:
            self.control.stop()
        self.ssh.stop()

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self.ssh.port

    @property
    def host(self) -> str:
        return self.ssh.host

    # --- command log ---

    def command_log(self) -> list[LogEntry]:
        """Every command line received so far (bounded, oldest first)."""
        return self._log.entries()

    # --- reboot ---

    @property
    def rebooting(self) -> bool:
        return self.faults.down

    def reboot_remaining(self) -> float:
        return max(0.0, self._reboot_until - time.monotonic()) if self.rebooting else 0.0

    def reboot(self, seconds: float, *, wait: bool = False) -> None:
        """Go down for `seconds`: drop every connection, refuse new ones, power the device off;
        then power it on and accept again. Returns at once unless `wait`."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._reboot_lock:  # guards the flag only: the device has its own lock
            if self.rebooting:
                raise RuntimeError("already rebooting")
            self.faults.set_down(True)
            self._reboot_until = time.monotonic() + seconds
        log.info("reboot: down for %.1f s", seconds)
        self.ssh.set_refusing(True)
        self.ssh.drop_all()
        self.device.power_off()
        self._reboot_thread = threading.Thread(
            target=self._finish_reboot, args=(seconds,), name="reboot", daemon=True
        )
        self._reboot_thread.start()
        if wait:
            self._reboot_thread.join()

    def _finish_reboot(self, seconds: float) -> None:
        self._stopped.wait(seconds)
        self.device.power_on()
        self.faults.set_down(False)
        self.ssh.set_refusing(False)
        log.info("reboot: back up")

    def status(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "rebooting": self.rebooting,
            "reboot_remaining": round(self.reboot_remaining(), 3),
            "connections": self.ssh.connection_count,
            "commands": len(self._log.entries()),
            "faults": self.faults.status(),
        }

    # --- SSH handler ---

    def _handle(self, session: Session, line: str) -> Reply:
        started = time.monotonic()
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        exit_status: int | None = None
        try:
            if self.faults.down:
                raise DropConnection("device is rebooting")
            result = self.device.execute(line, width=session.width, hook=self.faults)
            exit_status, outcome = result.exit_status, "ok"
            reply = Reply(result.output, result.exit_status)
        except DropConnection:
            outcome, reply = "dropped", Reply("", None)
        except Exception:
            log.exception("simulator error on %r", line)
            exit_status, outcome = 1, "error"
            reply = Reply("failure: simulator internal error\r\n", 1)
        self._log.append(
            LogEntry(
                time=stamp,
                peer=session.peer,
                user=session.user,
                command=line,
                exit_status=exit_status,
                result=outcome,
                duration_ms=round((time.monotonic() - started) * 1000, 3),
            )
        )
        return reply
