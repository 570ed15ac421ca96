"""The fabric engine: the target (FabricBackend) and one simulated kernel host per node.

    engine = FabricEngine(workdir)                   # real clock, background state machines
    sim = Simulator(state, export_backend=engine.backend, ...)
    host = engine.add_host("node-1")                 # <workdir>/node-1/{sys,dev,bin/nvme,...}
    engine.block(port=4420); engine.unblock(port=4420)   # like an nft drop of the port
    engine.close()                                   # controllers, loop devices, sockets

With `clock=FakeClock()` nothing runs in the background: `engine.advance(seconds)` moves time
event by event (keep-alive expiry, reconnect attempts, ctrl_loss_tmo).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socketserver
import stat
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from ..exports import Export
from . import blockdev, client
from .clock import Clock, FakeClock, MonotonicClock
from .host import FabricHost
from .target import FabricBackend

log = logging.getLogger(__name__)

NVME_SOCKET = "nvme.sock"
CONTROL_SOCKET = "fabric.sock"
_MAX_UNIX_PATH = 107


def _free_char_major() -> int:
    """A character major no driver here uses (the real nvme major is dynamic too)."""
    used: set[int] = set()
    try:
        with open("/proc/devices", encoding="ascii") as f:
            section = ""
            for line in f:
                if line.strip().endswith("devices:"):
                    section = line.strip()
                    continue
                parts = line.split()
                if section.startswith("Character") and parts and parts[0].isdigit():
                    used.add(int(parts[0]))
    except OSError:
        pass
    for major in range(254, 233, -1):
        if major not in used:
            return major
    return 240


class _LineServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


def _serve(path: Path, handle: Any) -> _LineServer:
    if len(str(path)) > _MAX_UNIX_PATH:
        raise ValueError(f"socket path too long for a unix socket: {path}")
    path.unlink(missing_ok=True)

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for raw in self.rfile:
                try:
                    reply = handle(json.loads(raw))
                except Exception as e:  # a bad request must not kill the server
                    log.exception("fabric request failed")
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                self.wfile.write((json.dumps(reply) + "\n").encode())
                self.wfile.flush()

    old = os.umask(0o077)
    try:
        server = _LineServer(str(path), Handler)
    finally:
        os.umask(old)
    threading.Thread(target=server.serve_forever, name=f"fabric:{path.name}", daemon=True).start()
    return server


def request(path: Path, req: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    return client.request(path, req, timeout)


class FabricEngine:
    def __init__(
        self,
        workdir: Path | str,
        *,
        backend: FabricBackend | None = None,
        clock: Clock | None = None,
        address: str = "127.0.0.1",
        tick_interval: float = 0.05,
        control_socket: bool = True,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.backend = backend or FabricBackend(address)
        self.backend.listener = self._on_target
        self.backend.on_close = self.close
        self.source_address = "127.0.0.1"
        self.clock: Clock = clock or MonotonicClock()
        self.loops = blockdev.LoopPool()
        self.char_major = _free_char_major()
        self.hosts: dict[str, FabricHost] = {}
        self._servers: list[_LineServer] = []
        self._closed = threading.Event()
        self._ticker: threading.Thread | None = None
        if not isinstance(self.clock, FakeClock):
            self._ticker = threading.Thread(target=self._tick_loop, args=(tick_interval,),
                                            name="fabric-ticker", daemon=True)
            self._ticker.start()
        if control_socket:
            self._servers.append(_serve(self.workdir / CONTROL_SOCKET, self._control))

    # --- hosts --------------------------------------------------------------------------------

    def add_host(
        self,
        node_id: str,
        *,
        root: Path | str | None = None,
        hostnqn: str | None = None,
        hostid: str | None = None,
        serve: bool = True,
    ) -> FabricHost:
        """A node: its root holds sys/, dev/, etc/nvme/host{nqn,id}, bin/nvme and nvme.sock."""
        with self.lock:
            if node_id in self.hosts:
                raise ValueError(f"host {node_id} exists")
            r = Path(root) if root is not None else self.workdir / node_id
            r.mkdir(parents=True, exist_ok=True)
            hid = hostid or str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{node_id}.rds-sim"))
            nqn = hostnqn or f"nqn.2014-08.org.nvmexpress:uuid:{hid}"
            host = FabricHost(self, node_id, r, nqn, hid)
            self.hosts[node_id] = host
        if serve:
            from .nvmecli import run

            def handle(req: dict[str, Any]) -> dict[str, Any]:
                rc, out, err = run(host, [str(a) for a in req.get("argv", [])])
                return {"rc": rc, "stdout": out, "stderr": err}

            self._servers.append(_serve(r / NVME_SOCKET, handle))
            write_wrapper(r)
        return host

    def host(self, node_id: str) -> FabricHost:
        return self.hosts[node_id]

    # --- time ---------------------------------------------------------------------------------

    def tick(self) -> None:
        with self.lock:
            now = self.clock.now()
            for h in list(self.hosts.values()):
                h.poll_sysfs_writes()
                h.run_due(now)

    def advance(self, seconds: float) -> None:
        """FakeClock only: move time forward, running every event at its own time."""
        clock = self.clock
        if not isinstance(clock, FakeClock):
            raise TypeError("advance() needs a FakeClock")
        with self.lock:
            end = clock.now() + seconds
            while True:
                for h in self.hosts.values():
                    h.poll_sysfs_writes()
                    if h.has_zombies():
                        h.reap()  # the kernel releases a held disk on its last close
                dues = [d for h in self.hosts.values() if (d := h.due()) is not None]
                nxt = min(dues) if dues else None
                if nxt is None or nxt > end:
                    break
                clock.set(max(nxt, clock.now()))
                for h in list(self.hosts.values()):
                    h.run_due(clock.now())
            clock.set(end)

    def _tick_loop(self, interval: float) -> None:
        n = 0
        while not self._closed.wait(interval):
            try:
                self.tick()
                n += 1
                if n % max(1, int(1 / interval)) == 0:  # about once a second
                    with self.lock:
                        for h in self.hosts.values():
                            if h.has_zombies():
                                h.reap()
            except Exception:
                log.exception("fabric tick failed")

    # --- target events and faults -------------------------------------------------------------

    def _on_target(self, kind: str, export: Export | None) -> None:
        sizes: dict[str, int] = {}
        if kind == "changed" and export is not None:
            self.loops.refresh_capacity(export.path)
            sizes[str(Path(export.path).resolve())] = export.size
        with self.lock:
            for h in list(self.hosts.values()):
                h.target_changed(sizes)

    def block(self, *, node: str | None = None, port: int | None = None) -> None:
        """Drop packets between `node` (default every node) and `port` (default every port)."""
        self.backend.block(node, port)

    def unblock(self, *, node: str | None = None, port: int | None = None) -> None:
        self.backend.unblock(node, port)

    # --- status and control -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "up": self.backend.up,
                "exports": sorted(e.nqn for e in self.backend.exports.values()),
                "blocks": [{"node": b.node, "port": b.port} for b in self.backend.blocks],
                "hosts": {
                    nid: {
                        "root": str(h.root),
                        "hostnqn": h.hostnqn,
                        "controllers": [
                            {"name": c.name, "nqn": c.subsys.nqn, "state": c.state,
                             "namespace": c.head.name if c.head else None}
                            for c in h.controllers()
                        ],
                    }
                    for nid, h in self.hosts.items()
                },
            }

    def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "add_host":
            h = self.add_host(str(req["node"]), hostnqn=req.get("hostnqn"))
            return {"ok": True, "root": str(h.root), "hostnqn": h.hostnqn}
        if op == "block":
            self.block(node=req.get("node"), port=req.get("port"))
        elif op == "unblock":
            self.unblock(node=req.get("node"), port=req.get("port"))
        else:
            return {"ok": False, "error": f"unknown op {op!r}"}
        return {"ok": True}

    # --- teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Delete every controller, detach every loop device, remove the sockets."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._ticker is not None:
            self._ticker.join(5)
        for s in self._servers:
            s.shutdown()
            s.server_close()
            with contextlib.suppress(FileNotFoundError, AttributeError):
                Path(str(s.server_address)).unlink()
        with self.lock:
            for h in self.hosts.values():
                h.shutdown()
        self.loops.close()

    def __enter__(self) -> FabricEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_wrapper(root: Path) -> Path:
    """`<root>/bin/nvme`: the node's nvme command (point the driver's --nvme-path here)."""
    b = root / "bin"
    b.mkdir(parents=True, exist_ok=True)
    path = b / "nvme"
    src = Path(__file__).resolve().parents[2]  # the directory holding the rds_sim package
    path.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(src))}${{PYTHONPATH:+:$PYTHONPATH}} "
        f"exec {shlex.quote(sys.executable)} -m rds_sim.fabric.client "
        f"--node-root {shlex.quote(str(root))} \"$@\"\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
