"""Do the simulated fabric and the kernel agree? The same reconnect and renumbering sequences run
on a real nvme-tcp host (a node VM, nvmet in the RDS VM) and on `rds_sim.fabric` (FabricEngine on
a fake clock, in this process); each records the sysfs state after every step (controllers and
their states, subsystems, namespace heads, /dev nodes) and the controller states seen while it
waited. Names and numbers are compared as they are; NQNs become labels (A, B) and major:minor
numbers become D0, D1, ... in order of first appearance (the real major is dynamic).

Steps: ("connect", label, ctrl_loss_tmo, reconnect_delay), ("unlink", label) (the target takes
the subsystem off its port: nvmet unlink / FabricBackend.export_removed), ("link", label),
("hold", label) (a process opens the head: what a mount or a VM does), ("release", label),
("wait", label, state) (state "gone": until the controller is deleted), ("sleep", seconds),
("disconnect", label).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from kernel_rig import VENV_BIN, Guest
from vm import REPO

sys.path.insert(0, str(Path(__file__).resolve().parent / "guest"))
from nvme_snapshot import snapshot

PORT = 4430
NQNS = {"A": "nqn.2014-08.io.rds-csi.agree:a", "B": "nqn.2014-08.io.rds-csi.agree:b"}
SIZE = 64 << 20
SNAPSHOT = REPO / "e2e" / "kernel" / "guest" / "nvme_snapshot.py"
CONFIGFS = "/sys/kernel/config/nvmet"
# Transient states the kernel passes through in milliseconds (error recovery sets resetting,
# then connecting; delete sets deleting, then the controller goes): a poll may or may not see
# them, so traces are compared without them.
TRANSIENT = {"resetting", "deleting", "deleting (no IO)", "new"}

Step = tuple[Any, ...]
SEQUENCES: dict[str, list[Step]] = {
    # shorter than ctrl_loss_tmo: the same controller comes back, same numbers
    "reconnect": [("connect", "A", 10, 1), ("unlink", "A"), ("wait", "A", "connecting"),
                  ("sleep", 3), ("link", "A"), ("wait", "A", "live"), ("disconnect", "A")],
    # ctrl_loss_tmo expires, nothing holds the namespace: the numbers are reused
    "ctrl-loss": [("connect", "A", 3, 1), ("unlink", "A"), ("wait", "A", "gone"),
                  ("link", "A"), ("connect", "A", 3, 1), ("disconnect", "A")],
    # ... while a process holds the head open: the new connection gets new numbers
    "ctrl-loss-held": [("connect", "A", 3, 1), ("hold", "A"), ("unlink", "A"),
                       ("wait", "A", "gone"), ("link", "A"), ("connect", "A", 3, 1),
                       ("release", "A"), ("disconnect", "A")],
    # another subsystem connects during the outage and takes the freed numbers
    "taken": [("connect", "A", 3, 1), ("unlink", "A"), ("wait", "A", "gone"),
              ("connect", "B", 3, 1), ("link", "A"), ("connect", "A", 3, 1),
              ("disconnect", "A"), ("disconnect", "B")],
}


class Recorder:
    """Runs steps, keeping a checkpoint snapshot after each and the states seen in waits."""

    def __init__(self) -> None:
        self.checkpoints: list[dict[str, Any]] = []
        self.trace: list[str] = []

    # implemented by the two runners
    def snap(self) -> dict[str, Any]: raise NotImplementedError
    def connect(self, label: str, tmo: int, delay: int) -> None: raise NotImplementedError
    def unlink(self, label: str) -> None: raise NotImplementedError
    def link(self, label: str) -> None: raise NotImplementedError
    def hold(self, head: str) -> None: raise NotImplementedError
    def release(self) -> None: raise NotImplementedError
    def disconnect(self, label: str) -> None: raise NotImplementedError
    def pass_time(self, seconds: float) -> None: raise NotImplementedError

    def _observe(self, snap: dict[str, Any]) -> None:
        for name, c in sorted(snap["controllers"].items()):
            entry = f"{label_of(c['nqn'])}:{name}={c['state']}"
            if c["state"] not in TRANSIENT and (not self.trace or self.trace[-1] != entry):
                self.trace.append(entry)

    def wait(self, label: str, state: str, timeout: float = 40.0) -> None:
        waited = 0.0
        while True:
            snap = self.snap()
            self._observe(snap)
            states = [c["state"] for c in snap["controllers"].values()
                      if c["nqn"] == NQNS[label]]
            if (state == "gone" and not states) or state in states:
                if state == "gone":
                    self.trace.append(f"{label}:gone")
                return
            if waited > timeout:
                raise AssertionError(f"{type(self).__name__}: {label} not {state} after "
                                     f"{timeout:.0f} s: {snap}")
            self.pass_time(0.25)
            waited += 0.25

    def run(self, steps: list[Step]) -> Recorder:
        for step in steps:
            op, args = step[0], step[1:]
            if op == "connect":
                self.connect(*args)
            elif op == "unlink":
                self.unlink(*args)
            elif op == "link":
                self.link(*args)
            elif op == "hold":
                self.hold(head_of(self.snap(), args[0]))
            elif op == "release":
                self.release()
            elif op == "wait":
                self.wait(*args)
            elif op == "sleep":
                end = args[0]
                while end > 0:
                    self._observe(self.snap())
                    self.pass_time(0.25)
                    end -= 0.25
            elif op == "disconnect":
                self.disconnect(*args)
            else:
                raise ValueError(op)
            # right after "link" the state depends on how much time the step itself took
            # (the kernel may have reconnected already): the next "wait" is what compares
            self.checkpoints.append({"step": " ".join(map(str, step)), "timed": op == "link",
                                     **self.snap()})
        return self


def label_of(nqn: str | None) -> str:
    return next((k for k, v in NQNS.items() if v == nqn), str(nqn))


def head_of(snap: dict[str, Any], label: str) -> str:
    for s in snap["subsystems"].values():
        if s["nqn"] == NQNS[label] and s["heads"]:
            return str(s["heads"][-1])
    raise AssertionError(f"{label} has no namespace head: {snap}")


def normalize(checkpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    devnos: dict[str, str] = {}
    out = []
    for cp in checkpoints:
        cp = json.loads(json.dumps(cp))
        for c in cp["controllers"].values():
            c["nqn"] = label_of(c["nqn"])
        for s in cp["subsystems"].values():
            s["nqn"] = label_of(s["nqn"])
        for h in cp["heads"].values():
            h["dev"] = devnos.setdefault(h["dev"], f"D{len(devnos)}")
        out.append(cp)
    return out


# --- the kernel: a node VM and nvmet in the RDS VM ------------------------------------------

TARGET_SETUP = """
import sys
from rds_sim.nvmet import Nvmet, PortAddr
nv = Nvmet()
addr, port = sys.argv[1], int(sys.argv[2])
nv.create_port(port, PortAddr(addr, port, "tcp", "ipv4"))
for nqn, path in zip(sys.argv[3::2], sys.argv[4::2]):
    nv.create_subsystem(nqn)
    nv.add_namespace(nqn, 1, path)
    nv.link(port, nqn)
"""

TARGET_TEARDOWN = """
import sys
from rds_sim.nvmet import Nvmet
nv = Nvmet()
for nqn in sys.argv[2:]:
    nv.delete_subsystem(nqn)
if int(sys.argv[1]) in nv.ports():
    nv.delete_port(int(sys.argv[1]))
"""


class KernelRunner(Recorder):
    def __init__(self, rds: Guest, node: Guest, rds_addr: str) -> None:
        super().__init__()
        self.rds, self.node, self.addr = rds, node, rds_addr
        self.holder: int | None = None

    def setup(self) -> KernelRunner:
        args = []
        for label, nqn in NQNS.items():
            path = f"/srv/agree-{label.lower()}.img"
            self.rds.check(f"rm -f {path}; truncate -s {SIZE} {path}")
            args += [nqn, path]
        self.rds.check(f"{VENV_BIN}/python - {self.addr} {PORT} {' '.join(args)}",
                       input=TARGET_SETUP)
        return self

    def teardown(self) -> None:
        self.release()
        for nqn in NQNS.values():
            self.node.run(f"nvme disconnect -n {nqn}")
        self.rds.check(f"{VENV_BIN}/python - {PORT} {' '.join(NQNS.values())}",
                       input=TARGET_TEARDOWN)

    def snap(self) -> dict[str, Any]:
        snap: dict[str, Any] = json.loads(self.node.check(f"python3 -S {SNAPSHOT} /"))
        return snap

    def connect(self, label: str, tmo: int, delay: int) -> None:
        nqn = NQNS[label]
        self.node.check(f"nvme connect -t tcp -a {self.addr} -s {PORT} -n {nqn} "
                        f"-l {tmo} -c {delay}", timeout=60)
        # the namespace scan is asynchronous: wait for the head (the fabric's is synchronous)
        deadline = time.monotonic() + 30
        while True:
            snap = self.snap()
            live = [n for n, c in snap["controllers"].items()
                    if c["nqn"] == nqn and c["state"] == "live" and c["paths"]]
            if live and any(s["nqn"] == nqn and s["heads"]
                            for s in snap["subsystems"].values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{label}: no live namespace after connect: {snap}")
            time.sleep(0.2)

    def unlink(self, label: str) -> None:
        self.rds.check(f"rm {CONFIGFS}/ports/{PORT}/subsystems/{NQNS[label]}")

    def link(self, label: str) -> None:
        nqn = NQNS[label]
        self.rds.check(f"ln -s {CONFIGFS}/subsystems/{nqn} {CONFIGFS}/ports/{PORT}/subsystems/"
                       f"{nqn}")

    def hold(self, head: str) -> None:
        self.holder = self.node.spawn(f"exec sleep 100000 < /dev/{shlex.quote(head)}")

    def release(self) -> None:
        if self.holder is not None:
            self.node.run(f"kill {self.holder}")
            self.node.wait_for(f"! kill -0 {self.holder} 2>/dev/null", timeout=10, interval=0.2)
            self.holder = None

    def disconnect(self, label: str) -> None:
        self.node.check(f"nvme disconnect -n {NQNS[label]}", timeout=60)

    def pass_time(self, seconds: float) -> None:
        time.sleep(seconds)


# --- the simulated fabric, in this process on a fake clock ----------------------------------

class FabricRunner(Recorder):
    def __init__(self, workdir: Path) -> None:
        from rds_sim.exports import Export
        from rds_sim.fabric.clock import FakeClock
        from rds_sim.fabric.engine import FabricEngine

        super().__init__()
        self.workdir = workdir
        self.engine = FabricEngine(workdir / "fabric", clock=FakeClock(), control_socket=False)
        self.host = self.engine.add_host("node1", serve=False)
        self.exports = {}
        for label, nqn in NQNS.items():
            path = workdir / f"agree-{label.lower()}.img"
            with path.open("wb") as f:
                f.truncate(SIZE)
            self.exports[label] = Export(f"agree-{label.lower()}", nqn, PORT, path, SIZE, [])
            self.engine.backend.export_added(self.exports[label])
        self.fd: int | None = None

    def teardown(self) -> None:
        from rds_sim.fabric.blockdev import unmount_under

        self.release()
        unmount_under(self.workdir)
        self.engine.close()

    def _nvme(self, *argv: str) -> None:
        from rds_sim.fabric.nvmecli import run

        rc, out, err = run(self.host, list(argv))
        assert rc == 0, (argv, out, err)

    def snap(self) -> dict[str, Any]:
        return snapshot(str(self.host.root))  # type: ignore[no-any-return]

    def connect(self, label: str, tmo: int, delay: int) -> None:
        self._nvme("connect", "-t", "tcp", "-a", "127.0.0.1", "-s", str(PORT), "-n",
                   NQNS[label], "-l", str(tmo), "-c", str(delay))

    def unlink(self, label: str) -> None:
        self.engine.backend.export_removed(self.exports[label])

    def link(self, label: str) -> None:
        self.engine.backend.export_added(self.exports[label])

    def hold(self, head: str) -> None:
        self.fd = os.open(self.host.root / "dev" / head, os.O_RDONLY)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self.engine.advance(0)  # let the fabric notice the last close

    def disconnect(self, label: str) -> None:
        self._nvme("disconnect", "-n", NQNS[label])

    def pass_time(self, seconds: float) -> None:
        self.engine.advance(seconds)


def differences(kernel: Recorder, fabric: Recorder) -> list[str]:
    """Human-readable differences between two runs of the same sequence (empty: they agree)."""
    out = []
    k, f = normalize(kernel.checkpoints), normalize(fabric.checkpoints)
    for a, b in zip(k, f, strict=True):
        if a["timed"]:
            continue
        for key in ("controllers", "subsystems", "heads", "dev"):
            if a[key] != b[key]:
                out.append(f"after {a['step']!r}: {key}: kernel {a[key]} fabric {b[key]}")
    if kernel.trace != fabric.trace:
        out.append(f"states while waiting: kernel {kernel.trace} fabric {fabric.trace}")
    return out
