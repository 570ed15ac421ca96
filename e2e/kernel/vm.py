"""Micro-VMs with Debian's stock kernel under qemu TCG, for the kernel tier.

`e2e/kernel/setup.sh` prepares the kernel and the initramfs (once, cached outside the repo). A VM
shares the host's ``/`` read-only over 9p under a tmpfs overlay, so the guest has the host's
python3, the project's venv, the repo itself (same paths), nvme-cli, mkfs; nothing is copied.

    cable = Cable()                                    # a virtual Ethernet cable on 127.0.0.1
    with MicroVM("rds", netdevs=[cable.end(1)]) as rds, \
         MicroVM("node1", netdevs=[cable.end(2)]) as node:
        start_all([rds, node])                          # boot both at once
        rds.check("modprobe nvmet nvmet-tcp")
        status, out = node.run("nvme list", timeout=30)
        rds.spawn("rds-sim serve ...", log="/tmp/sim.log")   # a background process
        rds.set_link("n0", False)                       # pull the cable (qemu QMP set_link)

Commands reach the guest over a virtio serial port and a small agent (guest/agent.py). Every VM is
killed at the end: by the context manager, by ``atexit``, on SIGTERM/SIGHUP, and by the kernel if
the Python process dies (PR_SET_PDEATHSIG). Guest addresses (192.168.77.x by default) exist only on
the cables a test creates.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
GUEST_INIT = HERE / "guest" / "init.sh"
QEMU = "qemu-system-x86_64"


def kernel_cache() -> Path:
    return Path(os.environ.get("RDS_CSI_KERNEL_CACHE", "/var/cache/rds-csi-kernel"))


def host_has_nvme_modules() -> bool:
    """True when this host's own kernel can run nvmet and nvme-tcp (then no VM is needed)."""
    if all(Path("/sys/module", m).exists() for m in ("nvmet", "nvmet_tcp", "nvme_tcp")):
        return True
    if shutil.which("modprobe") is None:
        return False
    for m in ("nvmet", "nvmet-tcp", "nvme-tcp"):
        probe = subprocess.run(["modprobe", "-n", m], capture_output=True)
        if probe.returncode != 0:
            return False
    return True


def unavailable_reason() -> str | None:
    """Why micro-VMs cannot run here (None when they can)."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (run e2e/kernel/setup.sh)"
    cache = kernel_cache()
    if not (cache / "ready").exists():
        return f"no kernel cache at {cache} (run e2e/kernel/setup.sh)"
    return None


class VMError(RuntimeError):
    """The VM died, did not boot, or the agent channel broke."""


class CommandFailed(RuntimeError):
    def __init__(self, vm: str, cmd: str, status: int, output: str) -> None:
        super().__init__(f"[{vm}] exit {status}: {cmd}\n{output}")
        self.status = status
        self.output = output


# --- cleanup of every VM this process started ------------------------------------------------

_LIVE: set[MicroVM] = set()
_LIVE_LOCK = threading.Lock()
_HANDLERS_INSTALLED = False


def kill_all() -> None:
    """Kill every VM this process started and has not stopped yet."""
    with _LIVE_LOCK:
        vms = list(_LIVE)
    for vm in vms:
        vm.kill()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    kill_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(kill_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)
    # SIGINT stays KeyboardInterrupt: context managers and atexit kill the VMs.


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# --- the network --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_listening(port: int) -> bool:
    """Is something LISTENing on 127.0.0.1:port (read from /proc: a probe connect would be
    accepted by qemu as the cable's other end)."""
    want = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(ln.split()[1] == want and ln.split()[3] == "0A" for ln in lines)


_MAC_COUNTER = itertools.count(1)


def _next_mac() -> str:
    hi, lo = divmod(next(_MAC_COUNTER) + (os.getpid() % 64) * 1024, 256)
    return f"52:54:00:77:{hi:02x}:{lo:02x}"


@dataclass(frozen=True)
class NetDev:
    """One end of a cable, as seen by one VM: a virtio-net NIC on a qemu socket netdev."""

    id: str  # qemu netdev id, also the name for set_link
    port: int  # 127.0.0.1 port of the cable
    listen: bool  # the first end listens, the second connects
    address: str | None  # "192.168.77.1/24" inside the guest, or None
    mac: str = field(default_factory=lambda: _next_mac())

    def qemu_args(self) -> list[str]:
        where = "listen" if self.listen else "connect"
        return [
            "-netdev", f"socket,id={self.id},{where}=127.0.0.1:{self.port}",
            "-device", f"virtio-net-pci,netdev={self.id},mac={self.mac},romfile=",
        ]


class Cable:
    """A point-to-point virtual Ethernet cable between two VMs (a qemu socket netdev).

    `end(n)` is the NIC of the n-th host on it, address `<subnet>.<n>/24`; the first end taken
    listens, so start that VM first (`start_all` does).
    """

    def __init__(self, netdev_id: str = "n0", subnet: str = "192.168.77") -> None:
        self.id = netdev_id
        self.subnet = subnet
        self.port = free_port()
        self._ends = 0

    def address(self, host: int) -> str:
        return f"{self.subnet}.{host}"

    def end(self, host: int | None = None) -> NetDev:
        if self._ends >= 2:
            raise ValueError("a cable has two ends")
        self._ends += 1
        addr = f"{self.address(host)}/24" if host is not None else None
        return NetDev(self.id, self.port, listen=self._ends == 1, address=addr)


# --- the VM -------------------------------------------------------------------------------------

class MicroVM:
    """One qemu TCG micro-VM running the guest agent."""

    def __init__(
        self,
        name: str,
        *,
        mem: str = "384M",
        netdevs: Sequence[NetDev] = (),
        workdir: Path | None = None,
        append: str = "",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.mem = mem
        self.netdevs = list(netdevs)
        self.append = append
        self.extra_args = list(extra_args)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"rdsvm-{name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console_log = self.workdir / "console.log"
        self.qmp_path = self.workdir / "qmp.sock"
        self.agent_path = self.workdir / "agent.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.boot_seconds: float | None = None
        self._started_at = 0.0
        self._agent: socket.socket | None = None
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<MicroVM {self.name}>"

    # --- lifecycle ---

    def command_line(self) -> list[str]:
        cache = kernel_cache()
        cmdline = (
            f"console=ttyS0 quiet panic=-1 rdsvm.init={GUEST_INIT} rdsvm.name={self.name} "
            f"{self.append}"
        ).strip()
        args = [
            QEMU, "-accel", "tcg", "-cpu", "max", "-m", self.mem, "-smp", "1",
            "-nographic", "-no-reboot", "-nodefaults", "-no-user-config",
            "-name", self.name,
            "-kernel", str(cache / "vmlinuz"),
            "-initrd", str(cache / "initramfs.cpio.gz"),
            "-append", cmdline,
            "-chardev", f"file,id=con0,path={self.console_log}",
            "-serial", "chardev:con0",
            "-monitor", "none",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-virtfs",
            "local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap",
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=agent0,path={self.agent_path},server=on,wait=off",
            "-device", "virtserialport,chardev=agent0,name=rdsvm.agent",
            "-device", "virtio-rng-pci",
        ]
        for nd in self.netdevs:
            args += nd.qemu_args()
        return args + self.extra_args

    def start(self) -> MicroVM:
        """Launch qemu and connect to the agent socket; returns at once (see wait_ready)."""
        reason = unavailable_reason()
        if reason:
            raise VMError(reason)
        _install_handlers()
        for nd in self.netdevs:
            if not nd.listen:
                self._wait_until(lambda p=nd.port: port_listening(p), 30,
                                 f"cable port {nd.port} is not listening")
        self._started_at = time.monotonic()
        with _LIVE_LOCK:
            _LIVE.add(self)
        self.proc = subprocess.Popen(
            self.command_line(),
            stdin=subprocess.DEVNULL,
            stdout=open(self.workdir / "qemu.out", "wb"),  # noqa: SIM115 - closed by qemu's exit
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self._wait_until(self.agent_path.exists, 30, "qemu did not create the agent socket")
        for nd in self.netdevs:
            if nd.listen:
                self._wait_until(lambda p=nd.port: port_listening(p), 30,
                                 f"cable port {nd.port} did not start listening")
        # the socket file appears at bind(), qemu listens a moment later: retry a refusal
        deadline = time.monotonic() + 30
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.agent_path))
                break
            except ConnectionRefusedError:
                sock.close()
                self._check_alive()
                if time.monotonic() > deadline:
                    raise VMError(f"{self.name}: the agent socket refuses connections") from None
                time.sleep(0.05)
        self._agent = sock
        self._reader = threading.Thread(target=self._read_loop, name=f"{self.name}-agent",
                                        daemon=True)
        self._reader.start()
        return self

    def wait_ready(self, timeout: float = 180.0) -> MicroVM:
        """Wait until the agent answers, then configure the NICs."""
        deadline = time.monotonic() + timeout
        while not self._ready.is_set():
            self._check_alive()
            if time.monotonic() > deadline:
                raise VMError(f"{self.name}: no agent after {timeout:.0f} s\n{self.console()}")
            rid = next(self._ids)
            fut: Future[dict[str, Any]] = Future()
            self._pending[rid] = fut
            self._send({"id": rid, "op": "ping"})
            with contextlib.suppress(Exception):
                fut.result(timeout=1.0)
                self._ready.set()
            self._pending.pop(rid, None)
        self.boot_seconds = time.monotonic() - self._started_at
        for nd in self.netdevs:
            dev = self.iface(nd)
            self.check(f"ip link set {dev} up")
            if nd.address:
                self.check(f"ip addr add {nd.address} dev {dev}")
        return self

    def iface(self, nd: NetDev | str) -> str:
        """The guest interface name of one of this VM's NICs (found by MAC, names are not fixed)."""
        if isinstance(nd, str):
            nd = next(n for n in self.netdevs if n.id == nd)
        out = self.check(f"grep -l -i {nd.mac} /sys/class/net/*/address")
        return out.strip().split("/")[-2]

    def stop(self, timeout: float = 5.0) -> None:
        """Power the VM off (qemu quit); kill it if it does not go."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.qmp("quit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """Kill qemu now (idempotent, safe from signal handlers and atexit)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._closed = True
        if self._agent is not None:
            with contextlib.suppress(OSError):
                self._agent.close()
        for fut in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(VMError(f"{self.name}: VM stopped"))
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def cleanup(self) -> None:
        """Stop the VM and remove its work dir if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> MicroVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def console(self, last: int = 60) -> str:
        """The last lines of the serial console."""
        try:
            lines = self.console_log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-last:])

    # --- commands in the guest ---

    def run(self, cmd: str, timeout: float = 60.0, *, input: str | None = None) -> tuple[int, str]:
        """Run `cmd` under /bin/sh in the guest; returns (exit status, stdout+stderr).
        Exit status 124 means the guest-side timeout fired."""
        reply = self._request({"op": "run", "cmd": cmd, "timeout": timeout, "input": input},
                              timeout + 15)
        return int(reply["status"]), str(reply["output"])

    def check(self, cmd: str, timeout: float = 60.0, *, input: str | None = None) -> str:
        """Like run, but raise CommandFailed on a non-zero exit status; returns the output."""
        status, out = self.run(cmd, timeout, input=input)
        if status != 0:
            raise CommandFailed(self.name, cmd, status, out)
        return out

    def spawn(self, cmd: str, log: str | None = None) -> int:
        """Start `cmd` in the background in the guest (own session); returns its guest pid.
        Its output goes to the guest file `log` (default: discarded)."""
        reply = self._request({"op": "spawn", "cmd": cmd, "log": log}, 30)
        return int(reply["pid"])

    def read_file(self, path: str) -> str:
        return self.check(f"cat {shlex.quote(path)}")

    def write_file(self, path: str, text: str) -> None:
        self.check(f"cat > {shlex.quote(path)}", input=text)

    def wait_for(self, cmd: str, timeout: float = 30.0, interval: float = 0.5) -> str:
        """Run `cmd` until it exits 0; returns its output. VMError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            status, out = self.run(cmd, timeout=max(5.0, interval * 4))
            if status == 0:
                return out
            if time.monotonic() > deadline:
                raise VMError(f"{self.name}: `{cmd}` still failing after {timeout:.0f} s "
                              f"(exit {status}):\n{out}")
            time.sleep(interval)

    # --- the qemu monitor ---

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run one QMP command on a fresh connection; returns its "return" value."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.qmp_path))
            f = s.makefile("rwb")
            json.loads(f.readline())  # greeting
            for msg in ({"execute": "qmp_capabilities"},
                        {"execute": command, **({"arguments": arguments} if arguments else {})}):
                f.write(json.dumps(msg).encode() + b"\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "event" in reply:
                        continue
                    if "error" in reply:
                        raise VMError(f"{self.name}: QMP {command}: {reply['error']}")
                    break
            return reply.get("return")

    def set_link(self, netdev_id: str, up: bool) -> None:
        """Plug (True) or pull (False) the cable of one NIC, as seen by this VM."""
        self.qmp("set_link", name=netdev_id, up=up)

    # --- internals ---

    def _request(self, msg: dict[str, Any], timeout: float) -> dict[str, Any]:
        if not self._ready.is_set():
            self.wait_ready()
        rid = next(self._ids)
        fut: Future[dict[str, Any]] = Future()
        self._pending[rid] = fut
        try:
            self._send({"id": rid, **msg})
            deadline = time.monotonic() + timeout
            while True:
                try:
                    reply = fut.result(timeout=1.0)
                    break
                except TimeoutError:
                    self._check_alive()
                    if time.monotonic() > deadline:
                        raise VMError(
                            f"{self.name}: no reply to {msg} in {timeout:.0f} s") from None
        finally:
            self._pending.pop(rid, None)
        if "error" in reply:
            raise VMError(f"{self.name}: agent: {reply['error']}")
        return reply

    def _send(self, msg: dict[str, Any]) -> None:
        if self._agent is None:
            raise VMError(f"{self.name}: not started")
        data = json.dumps(msg).encode() + b"\n"
        with self._send_lock:
            try:
                self._agent.sendall(data)
            except OSError as e:
                raise VMError(f"{self.name}: agent channel: {e}") from e

    def _read_loop(self) -> None:
        assert self._agent is not None
        buf = b""
        while not self._closed:
            try:
                chunk = self._agent.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue
                fut = self._pending.get(reply.get("id"))
                if fut is not None and not fut.done():
                    fut.set_result(reply)
        for fut in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(VMError(f"{self.name}: agent channel closed\n{self.console()}"))

    def _check_alive(self) -> None:
        if self.proc is None:
            raise VMError(f"{self.name}: not started")
        if self.proc.poll() is not None:
            out = (self.workdir / "qemu.out").read_text(errors="replace")
            raise VMError(f"{self.name}: qemu exited ({self.proc.returncode})\n{out}\n"
                          f"--- console ---\n{self.console()}")

    def _wait_until(self, cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc is not None:
                self._check_alive()
            if time.monotonic() > deadline:
                raise VMError(f"{self.name}: {what}")
            time.sleep(0.05)


def start_all(vms: Iterable[MicroVM], timeout: float = 180.0) -> None:
    """Start VMs in order (a cable's listening end before its connecting end), then wait until
    every one is ready. They boot concurrently."""
    vms = sorted(vms, key=lambda v: not any(n.listen for n in v.netdevs))
    for vm in vms:
        vm.start()
    for vm in vms:
        vm.wait_ready(timeout)


class LocalGuest:
    """The guest API (run/check/spawn/wait_for) on this host itself, for a host whose kernel has
    nvmet and nvme-tcp: the kernel scenarios then run without VMs (over loopback; cables and
    set_link do not exist there, a partition is an nft rule instead). Not exercised on hosts
    without the modules."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self._procs: list[subprocess.Popen[bytes]] = []

    def run(self, cmd: str, timeout: float = 60.0, *, input: str | None = None) -> tuple[int, str]:
        try:
            p = subprocess.run(["/bin/sh", "-c", cmd], input=input.encode() if input else None,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            return 124, (e.output or b"").decode(errors="replace")
        return p.returncode, p.stdout.decode(errors="replace")

    def check(self, cmd: str, timeout: float = 60.0, *, input: str | None = None) -> str:
        status, out = self.run(cmd, timeout, input=input)
        if status != 0:
            raise CommandFailed(self.name, cmd, status, out)
        return out

    def spawn(self, cmd: str, log: str | None = None) -> int:
        with open(log or os.devnull, "ab") as out:
            p = subprocess.Popen(["/bin/sh", "-c", cmd], stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs.append(p)
        return p.pid

    def wait_for(self, cmd: str, timeout: float = 30.0, interval: float = 0.5) -> str:
        deadline = time.monotonic() + timeout
        while True:
            status, out = self.run(cmd, timeout=max(5.0, interval * 4))
            if status == 0:
                return out
            if time.monotonic() > deadline:
                raise VMError(f"{self.name}: `{cmd}` still failing after {timeout:.0f} s")
            time.sleep(interval)

    def partition(self, port: int, on: bool) -> None:
        """Drop (on) or restore (off) NVMe/TCP traffic to `port` with an nft table."""
        if on:
            self.check("nft add table inet rdsvm && nft add chain inet rdsvm out "
                       "'{ type filter hook output priority 0; }' && "
                       f"nft add rule inet rdsvm out tcp dport {port} drop")
        else:
            self.run("nft delete table inet rdsvm")

    def stop(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
