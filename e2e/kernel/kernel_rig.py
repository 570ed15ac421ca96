"""Building blocks for kernel-tier scenarios: an RDS guest running rds-sim with the nvmet backend,
node guests with the nvme-tcp host, and helpers that resolve devices by NQN through sysfs.

Everything here works on any object with the guest API of `vm.MicroVM` (run/check/spawn/
wait_for), so the same scenarios run on `vm.LocalGuest` on a host whose kernel has the modules.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vm import REPO

RDS_ADDR = "192.168.77.1"
NVME_PORT = 4420
SSH_PORT = 2222
PASSWORD = "kernel-tier-pass"
VENV_BIN = REPO / ".venv" / "bin"
NQN_PREFIX = "nqn.2000-02.com.mikrotik:"


class Guest(Protocol):
    name: str

    def run(self, cmd: str, timeout: float = 60.0, *,
            input: str | None = None) -> tuple[int, str]: ...

    def check(self, cmd: str, timeout: float = 60.0, *, input: str | None = None) -> str: ...

    def spawn(self, cmd: str, log: str | None = None) -> int: ...

    def wait_for(self, cmd: str, timeout: float = 30.0, interval: float = 0.5) -> str: ...


@dataclass
class Pair:
    """The RDS guest and one node guest, and how to cut the cable between them."""

    rds: Guest
    node: Guest
    rds_addr: str
    pull: Callable[[bool], None]  # pull(True) cuts the link, pull(False) restores it


def load_target(g: Guest) -> None:
    """nvmet + nvmet-tcp loaded and configfs mounted."""
    g.check("modprobe nvmet && modprobe nvmet-tcp && "
            "(mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config) && "
            "test -d /sys/kernel/config/nvmet/subsystems")


def load_host(g: Guest) -> None:
    g.check("modprobe nvme-tcp && modprobe nvme-fabrics && test -e /dev/nvme-fabrics")


def connect(g: Guest, nqn: str, addr: str = RDS_ADDR, port: int = NVME_PORT, *,
            ctrl_loss_tmo: int = 10, reconnect_delay: int = 1, hostnqn: str | None = None) -> str:
    """`nvme connect`; returns the controller name (nvmeX), found by subsysnqn in sysfs."""
    host = f" --hostnqn={shlex.quote(hostnqn)}" if hostnqn else ""
    g.check(f"nvme connect -t tcp -a {addr} -s {port} -n {shlex.quote(nqn)}"
            f" --ctrl-loss-tmo={ctrl_loss_tmo} --reconnect-delay={reconnect_delay}{host}",
            timeout=60)
    ctrl = controller(g, nqn)
    assert ctrl, f"connected to {nqn} but no controller in sysfs"
    return ctrl


def disconnect(g: Guest, nqn: str) -> None:
    g.check(f"nvme disconnect -n {shlex.quote(nqn)}", timeout=60)


def controller(g: Guest, nqn: str) -> str | None:
    """The nvmeX controller of a subsystem (never cached: numbers change on reconnects)."""
    out = g.check("for c in /sys/class/nvme/nvme*; do [ -e $c/subsysnqn ] || continue; "
                  f"[ \"$(cat $c/subsysnqn)\" = {shlex.quote(nqn)} ] && basename $c; done; true")
    names = out.split()
    return names[0] if names else None


def ctrl_state(g: Guest, ctrl: str) -> str:
    status, out = g.run(f"cat /sys/class/nvme/{ctrl}/state")
    return out.strip() if status == 0 else "gone"


def block_device(g: Guest, nqn: str, timeout: float = 30.0) -> str:
    """/dev/nvmeXnY of namespace 1 of a subsystem, resolved through sysfs (waits for it)."""
    out = g.wait_for(
        "for b in /sys/block/nvme*n*; do [ -e $b ] || continue; "
        "case ${b##*/} in nvme*c*) continue;; esac; "  # a multipath path device, not the head
        "n=$(cat $b/device/subsysnqn 2>/dev/null || cat $b/device/device/subsysnqn 2>/dev/null); "
        f"[ \"$n\" = {shlex.quote(nqn)} ] || continue; "
        # the node appears before the namespace scan ends: wait for a sized block device
        "d=/dev/${b##*/}; [ -b $d ] && [ \"$(cat $b/size)\" != 0 ] && echo $d && exit 0; "
        "done; exit 1",
        timeout=timeout)
    return out.split()[0]


def write_pattern(g: Guest, dev: str, name: str, mib: int, offset_mib: int = 0) -> str:
    """Write `mib` MiB of random data at `offset_mib` (O_DIRECT); returns its sha256.
    The data stays in the guest as /tmp/<name>.bin for `verify`."""
    g.check(f"head -c {mib}M /dev/urandom > /tmp/{name}.bin && "
            f"dd if=/tmp/{name}.bin of={dev} bs=1M seek={offset_mib} oflag=direct conv=fsync "
            "status=none", timeout=120)
    return g.check(f"sha256sum < /tmp/{name}.bin").split()[0]


def read_sha(g: Guest, path: str, mib: int, offset_mib: int = 0, direct: bool = True) -> str:
    flag = "iflag=direct " if direct else ""
    return g.check(f"dd if={path} bs=1M skip={offset_mib} count={mib} {flag}status=none "
                   "| sha256sum", timeout=120).split()[0]


def verify(g: Guest, dev: str, name: str, mib: int, offset_mib: int = 0) -> None:
    """Read the range back and compare byte for byte with what write_pattern wrote."""
    g.check(f"dd if={dev} bs=1M skip={offset_mib} count={mib} iflag=direct status=none "
            f"| cmp - /tmp/{name}.bin", timeout=120)


def watch_state(g: Guest, ctrl: str, seconds: float, interval: float = 0.2) -> list[str]:
    """Controller states seen over `seconds` (consecutive duplicates collapsed)."""
    seen: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = ctrl_state(g, ctrl)
        if not seen or seen[-1] != s:
            seen.append(s)
        time.sleep(interval)
    return seen


def wait_state(g: Guest, ctrl: str, want: str, timeout: float) -> list[str]:
    """Poll until the controller is in state `want`; returns the states seen on the way."""
    seen: list[str] = []
    end = time.monotonic() + timeout
    while True:
        s = ctrl_state(g, ctrl)
        if not seen or seen[-1] != s:
            seen.append(s)
        if s == want:
            return seen
        if time.monotonic() > end:
            raise AssertionError(f"{g.name}: {ctrl} not {want} after {timeout:.0f} s: {seen}")
        time.sleep(0.2)


@dataclass
class RdsSim:
    """rds-sim serve running in a guest with the nvmet backend, and a way to talk to it."""

    guest: Guest
    state_dir: str = "/srv/rds-sim"  # tmpfs (see guest/init.sh)
    listen: str = f"127.0.0.1:{SSH_PORT}"
    address: str = RDS_ADDR
    log: str = "/tmp/rds-sim.log"
    pid: int | None = None

    def start(self, timeout: float = 90.0) -> RdsSim:
        g = self.guest
        load_target(g)
        g.check(f"mkdir -p {self.state_dir} && printf %s {PASSWORD} > /tmp/rds-sim.pw")
        g.run(f"rm -f {self.log}")
        self.pid = g.spawn(f"exec {VENV_BIN}/rds-sim serve --state-dir {self.state_dir}"
                           f" --listen {self.listen} --password-file /tmp/rds-sim.pw"
                           f" --export-backend nvmet --nvmet-address {self.address}",
                           log=self.log)
        g.wait_for(f"grep -q '^listening on' {self.log}", timeout=timeout, interval=1.0)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the simulator (it tears its exports down) and wait until it is gone."""
        if self.pid is None:
            self.guest.run("pkill -TERM -f '[r]ds-sim serve'; sleep 1")
            return
        self.guest.run(f"kill -TERM {self.pid}")
        self.guest.wait_for(f"! kill -0 {self.pid} 2>/dev/null", timeout=timeout, interval=0.3)
        self.pid = None

    def cli(self, line: str, timeout: float = 60.0) -> tuple[int, str]:
        """Run one RouterOS command line over SSH (from inside the guest)."""
        host, port = self.listen.rsplit(":", 1)
        return self.guest.run(
            f"{VENV_BIN}/python {REPO}/e2e/kernel/guest/rds_cmd.py {host} {port} admin "
            f"/tmp/rds-sim.pw", timeout=timeout, input=line)

    def fault(self, *args: str) -> str:
        return self.guest.check(f"{VENV_BIN}/rds-sim fault --state-dir {self.state_dir} "
                                + " ".join(shlex.quote(a) for a in args))

    def add_disk(self, slot: str, size: str = "64M", port: int = NVME_PORT) -> str:
        """`/disk add` a file disk exported over NVMe/TCP; returns its NQN."""
        nqn = NQN_PREFIX + slot
        status, out = self.cli(
            f"/disk add type=file file-path=storage-pool/k8s/{slot}.img file-size={size} "
            f"slot={slot} nvme-tcp-export=yes nvme-tcp-server-port={port} "
            f"nvme-tcp-server-nqn={nqn}")
        assert status == 0, out
        return nqn


class Testbed:
    """The RDS VM and `nodes` node VMs on one virtual LAN 192.168.77.0/24.

    Each node has its own cable to the RDS VM (qemu socket cables are point to point); the RDS VM
    bridges them (br0 = 192.168.77.1), node i is 192.168.77.(10+i). Cut node i off with
    `partition(i)` (its cable is pulled on both ends' view: set_link on the node's qemu).

        with Testbed(nodes=2) as tb:
            sim = tb.rds_sim()  # rds-sim serve --export-backend nvmet, in the RDS VM
            nqn = sim.add_disk("pvc-1")
            connect(tb.nodes[0], nqn)
    """

    __test__ = False  # not a pytest test class

    def __init__(self, nodes: int = 1, *, mem: str = "384M") -> None:
        from vm import Cable, MicroVM

        self.cables = [Cable(f"n{i}") for i in range(1, nodes + 1)]
        self.rds = MicroVM("rds", mem=mem, netdevs=[c.end() for c in self.cables])
        self.nodes = [MicroVM(f"node{i}", mem=mem, netdevs=[c.end(10 + i)])
                      for i, c in enumerate(self.cables, start=1)]
        self.rds_addr = RDS_ADDR

    def start(self) -> Testbed:
        from vm import start_all

        start_all([self.rds, *self.nodes])
        br = ["modprobe bridge", "ip link add br0 type bridge", "ip link set br0 up"]
        br += [f"ip link set {self.rds.iface(nd)} master br0" for nd in self.rds.netdevs]
        br += [f"ip addr add {self.rds_addr}/24 dev br0"]
        self.rds.check(" && ".join(br))
        return self

    def node_addr(self, i: int) -> str:
        return f"192.168.77.{10 + i}"

    def partition(self, i: int, cut: bool = True) -> None:
        """Pull (cut=True) or plug back the cable of node i (1-based)."""
        self.nodes[i - 1].set_link(self.cables[i - 1].id, not cut)

    def rds_sim(self) -> RdsSim:
        return RdsSim(self.rds, address=self.rds_addr).start()

    def stop(self) -> None:
        for vm in (self.rds, *self.nodes):
            vm.cleanup()

    def __enter__(self) -> Testbed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
