"""Local control socket: drive faults of a running simulator from another process.

A unix stream socket `<state-dir>/control.sock`, one JSON object per line each way:
request `{"op": "reboot", "seconds": 5}`, reply `{"ok": true, ...}` or
`{"ok": false, "error": "..."}`.
Ops: status, clear, latency, drop, fail, pool_full, reboot, log. Only the local user can reach it
(the socket is created mode 0600), so it needs no authentication.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import Simulator

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
_MAX_UNIX_PATH = 107


class ControlError(Exception):
    """The simulator refused or could not run a control request."""


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


def handle(sim: Simulator, req: dict[str, Any]) -> dict[str, Any]:
    """Run one control request against a simulator; raises ValueError/KeyError on bad input."""
    op = req.get("op")
    faults = sim.faults
    if op == "status":
        return sim.status()
    if op == "clear":
        faults.clear()
    elif op == "latency":
        if "profile" in req:
            faults.use_profile(str(req["profile"]))
        else:
            faults.add_latency(
                str(req["kind"]),
                float(req["seconds"]),
                per_gib=float(req.get("per_gib", 0.0)),
                size_arg=str(req.get("size_arg", "file-size")),
            )
    elif op == "drop":
        faults.drop(str(req["kind"]), nth=_nth(req.get("nth", 1)), when=req.get("when", "before"))
    elif op == "fail":
        faults.fail(str(req["kind"]), str(req["message"]), nth=_nth(req.get("nth")))
    elif op == "pool_full":
        faults.set_pool_full(bool(req.get("on", True)))
    elif op == "reboot":
        sim.reboot(float(req["seconds"]))
    elif op == "log":
        last = int(req.get("last", 20))
        return {"entries": [asdict(e) for e in sim.command_log()[-last:]] if last > 0 else []}
    else:
        raise ValueError(f"unknown op {op!r}")
    return {"faults": faults.status()}


def _nth(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


class _Handler(socketserver.StreamRequestHandler):
    server: _UnixServer

    def handle(self) -> None:
        for raw in self.rfile:
            try:
                req = json.loads(raw)
                if not isinstance(req, dict):
                    raise ValueError("request must be a JSON object")
                reply = {"ok": True, **handle(self.server.sim, req)}
            except (ValueError, KeyError, TypeError, RuntimeError) as e:
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            except Exception as e:  # keep serving whatever happens
                log.exception("control request failed")
                reply = {"ok": False, "error": f"internal error: {e}"}
            self.wfile.write((json.dumps(reply) + "\n").encode())
            self.wfile.flush()


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, sim: Simulator) -> None:
        self.sim = sim
        super().__init__(path, _Handler)


class ControlServer:
    """Serves the control socket for one simulator in a background thread."""

    def __init__(self, state_dir: Path, sim: Simulator) -> None:
        self.path = socket_path(state_dir)
        self.sim = sim
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if len(str(self.path)) > _MAX_UNIX_PATH:
            raise ValueError(f"state dir path too long for a unix socket: {self.path}")
        self.path.unlink(missing_ok=True)  # stale socket from a previous run
        old_umask = os.umask(0o177)
        try:
            self._server = _UnixServer(str(self.path), self.sim)
        finally:
            os.umask(old_umask)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name="control", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.path.unlink(missing_ok=True)


def request(state_dir: Path, req: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to a running simulator; returns the reply or raises ControlError."""
    path = socket_path(state_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError as e:
            raise ControlError(f"no simulator listening on {path}: {e.strerror or e}") from e
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise ControlError("control socket closed without a reply")
            buf += chunk
    reply: dict[str, Any] = json.loads(buf)
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "unknown error")))
    return reply
