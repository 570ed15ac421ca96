"""`rds-sim stack` as a process, for tests, the node benchmark and the demo.

    with StackProcess.start(workdir, nodes=2, driver_args=["--monitor-interval=0.5"]) as s:
        s.ctl.CreateVolume(...); s.node("node-2").NodeStageVolume(...)
        s.reboot(6)                      # the simulated RDS goes down for 6 s
        s.restart_drivers()              # SIGHUP: every rds-csi process restarts
    # stopped: processes gone, mounts under the workdir unmounted, loop devices detached

Only the real gRPC sockets, the simulator's control socket, the fabric's control socket and
the node's `nvme` wrapper are used: what a CO, an operator and a kernel would see.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from rds_csi.csi import csi_pb2_grpc

RDS_SIM = Path(sys.executable).parent / "rds-sim"


class StackError(RuntimeError):
    pass


class StackProcess:
    def __init__(self, work: Path, proc: subprocess.Popen[str], nodes: int,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.work = work  # the stack's --workdir
        self.proc = proc
        self.nodes = nodes
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._on_line = on_line
        self._reader = threading.Thread(target=self._read, name="stack-output", daemon=True)
        self._reader.start()
        self.sock = work.parent / "csi.sock"
        self.channels: dict[str, grpc.Channel] = {}

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(cls, base: Path, *, nodes: int = 1, driver_args: list[str] | None = None,
              timeout: float = 90.0, on_line: Callable[[str], None] | None = None
              ) -> StackProcess:
        """Start `rds-sim stack` with its workdir at ``base/w`` and node-1's socket at
        ``base/csi.sock`` (keep ``base`` short: unix socket paths are limited to 107 bytes)."""
        if not RDS_SIM.exists():
            raise StackError(f"{RDS_SIM} is missing")
        base.mkdir(parents=True, exist_ok=True)
        argv = [str(RDS_SIM), "stack", "--csi-endpoint", f"unix://{base / 'csi.sock'}",
                "--workdir", str(base / "w"), "--nodes", str(nodes)]
        argv += [f"--driver-arg={a}" for a in (driver_args or [])]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        s = cls(base / "w", proc, nodes, on_line)
        try:
            s.wait_line(lambda ln: ln == "ready", timeout)
            for k in range(1, nodes + 1):
                name = f"node-{k}"
                ch = grpc.insecure_channel(f"unix://{s.socket(name)}")
                s.channels[name] = ch
                grpc.channel_ready_future(ch).result(timeout=timeout)
        except BaseException:
            s.stop()
            raise
        return s

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self._on_line is not None:
                self._on_line(line)
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, match: Callable[[str], bool], timeout: float, *,
                  after: int = 0) -> int:
        """Index of the first output line (from ``after``) that ``match``es."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(self.lines)):
                    if match(self.lines[i].strip()):
                        return i
                after = len(self.lines)
                left = deadline - time.monotonic()
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise StackError("rds-sim stack exited:\n" + "".join(self.lines[-60:]))
                if left <= 0:
                    raise StackError("timed out waiting for rds-sim stack:\n"
                                     + "".join(self.lines[-60:]))
                self._cond.wait(min(left, 0.5))

    def stop(self, timeout: float = 60.0) -> int:
        for ch in self.channels.values():
            ch.close()
        self.channels.clear()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(10)
        return self.proc.returncode

    def __enter__(self) -> StackProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ endpoints

    def root(self, node: str) -> Path:
        """The node's simulated host root: sys/, dev/, bin/nvme, state/."""
        return self.work / "fabric" / node

    def socket(self, node: str) -> Path:
        return self.sock if node == "node-1" else self.root(node) / "csi.sock"

    @property
    def ctl(self) -> csi_pb2_grpc.ControllerStub:
        return csi_pb2_grpc.ControllerStub(self.channels["node-1"])

    @property
    def identity(self) -> csi_pb2_grpc.IdentityStub:
        return csi_pb2_grpc.IdentityStub(self.channels["node-1"])

    def node(self, name: str = "node-1") -> csi_pb2_grpc.NodeStub:
        return csi_pb2_grpc.NodeStub(self.channels[name])

    # ------------------------------------------------------------------ faults

    def control(self, req: dict[str, Any]) -> dict[str, Any]:
        """The simulator's control socket (what `rds-sim fault --state-dir` talks to)."""
        from rds_sim.control import request

        return request(self.work / "rds", req)

    def reboot(self, seconds: float) -> None:
        reply = self.control({"op": "reboot", "seconds": seconds})
        if not reply.get("ok"):
            raise StackError(f"reboot refused: {reply}")

    def rebooting(self) -> bool:
        return bool(self.control({"op": "status"}).get("rebooting"))

    def fabric(self, req: dict[str, Any]) -> dict[str, Any]:
        from rds_sim.fabric.engine import CONTROL_SOCKET, request

        return request(self.work / "fabric" / CONTROL_SOCKET, req)

    def restart_drivers(self, timeout: float = 60.0) -> None:
        """SIGHUP: the stack restarts every rds-csi process; returns once they serve again."""
        mark = len(self.lines)
        self.proc.send_signal(signal.SIGHUP)
        self.wait_line(lambda ln: ln == "ready", timeout, after=mark)
        for ch in self.channels.values():
            grpc.channel_ready_future(ch).result(timeout=timeout)

    def nvme(self, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The node's `nvme` command (nvme-cli 2.3 over the simulated host)."""
        return subprocess.run([str(self.root(node) / "bin" / "nvme"), *args],
                              capture_output=True, text=True, timeout=60, check=False)

    # ------------------------------------------------------------------ the node's sysfs

    def namespaces(self, node: str, nqn: str) -> list[str]:
        """Names of the namespace block devices (nvme<S>n<N>) of ``nqn`` in the node's sysfs."""
        base = self.root(node) / "sys" / "class" / "nvme-subsystem"
        out = []
        for subsys in sorted(base.glob("nvme-subsys*")):
            try:
                if (subsys / "subsysnqn").read_text().strip() != nqn:
                    continue
            except OSError:
                continue
            out += sorted(p.name for p in subsys.iterdir()
                          if p.is_dir() and p.name.startswith("nvme") and "n" in p.name[4:]
                          and (p / "dev").exists())
        return out

    def controllers(self, node: str, nqn: str) -> dict[str, str]:
        """name -> state of the node's controllers for ``nqn``."""
        base = self.root(node) / "sys" / "class" / "nvme"
        out = {}
        for ctrl in sorted(base.glob("nvme*")):
            try:
                if (ctrl / "subsysnqn").read_text().strip() == nqn:
                    out[ctrl.name] = (ctrl / "state").read_text().strip()
            except OSError:
                continue
        return out

    def status(self) -> dict[str, Any]:
        return self.fabric({"op": "status"})


def leftovers(base: Path) -> dict[str, list[str]]:
    """What a stopped stack under ``base`` left behind: processes, mounts, loop devices."""
    prefix = str(base.resolve())
    procs = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if prefix in cmd:
            procs.append(f"{pid}: {cmd[:160]}")
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            parts = line.split(" ")
            if len(parts) > 4 and parts[4].startswith(prefix):
                mounts.append(parts[4])
    loops = []
    for back in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            text = back.read_text().strip()
        except OSError:
            continue
        if text.startswith(prefix):
            loops.append(f"{back.parent.parent.name}: {text}")
    return {"processes": procs, "mounts": mounts, "loop devices": loops}


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
