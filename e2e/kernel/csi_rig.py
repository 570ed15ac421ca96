"""The driver on the kernel testbed: rds-sim (nvmet backend) and `rds-csi --mode controller` in the
RDS VM, `rds-csi --mode node` in each node VM against the real /sys, /dev, nvme-cli and mounts.

CSI is driven like a CO does it: gRPC over each plugin's unix socket, issued inside the VM that
runs the plugin (guest/csi_relay.py keeps grpc imported; each call costs a `python3 -S`).

    with Cluster(nodes=2) as c:
        vol = c.create("pvc-a", 64 << 20, params={"ctrlLossTmo": "5"})
        n1 = c.nodes[0]
        n1.stage(vol, cap())
        n1.publish(vol, cap())
        n1.write_file(n1.target(vol), "a", 4)
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from kernel_rig import (
    NQN_PREFIX,
    VENV_BIN,
    Guest,
    RdsSim,
    Testbed,
    controller,
    load_host,
)
from vm import REPO

RELAY = REPO / "e2e" / "kernel" / "guest" / "csi_relay.py"
RELAY_SOCK = "/run/csi-relay.sock"
NODE_SOCK = "unix:///run/csi/node.sock"
CONTROLLER_SOCK = "unix:///run/csi/controller.sock"
KUBELET = "/tmp/kubelet"
CONFIGFS = "/sys/kernel/config/nvmet"


class CsiCallError(AssertionError):
    def __init__(self, method: str, code: str, details: str) -> None:
        super().__init__(f"{method}: {code}: {details}")
        self.code = code
        self.details = details


def start_relay(g: Guest) -> None:
    g.spawn(f"exec {VENV_BIN}/python {RELAY} serve {RELAY_SOCK}", log="/tmp/csi-relay.log")
    g.wait_for(f"test -S {RELAY_SOCK}", timeout=60, interval=0.5)


class Csi:
    """CSI calls to one plugin endpoint, issued inside the guest that runs it."""

    def __init__(self, guest: Guest, endpoint: str) -> None:
        self.guest = guest
        self.endpoint = endpoint

    def try_call(self, service: str, method: str, request: dict[str, Any] | None = None,
                 timeout: float = 90.0) -> dict[str, Any]:
        req = {"endpoint": self.endpoint, "service": service, "method": method,
               "request": request or {}, "timeout": timeout}
        status, out = self.guest.run(f"python3 -S {RELAY} call {RELAY_SOCK}",
                                     timeout=timeout + 20, input=json.dumps(req))
        try:
            reply: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise AssertionError(f"{self.guest.name}: {method}: relay said ({status}): "
                                 f"{out}") from None
        return reply

    def call(self, service: str, method: str, request: dict[str, Any] | None = None,
             timeout: float = 90.0) -> dict[str, Any]:
        reply = self.try_call(service, method, request, timeout)
        if not reply["ok"]:
            raise CsiCallError(method, reply["code"], reply["details"])
        return dict(reply["reply"])


def cap(block: bool = False, fs: str = "ext4", mode: str = "SINGLE_NODE_WRITER") -> dict[str, Any]:
    access = {"mode": mode}
    if block:
        return {"block": {}, "access_mode": access}
    return {"mount": {"fs_type": fs}, "access_mode": access}


@dataclass
class Volume:
    name: str
    volume_id: str
    context: dict[str, str]
    capacity: int

    @property
    def nqn(self) -> str:
        return self.context["nqn"]


@dataclass
class NodePlugin:
    guest: Guest
    node_id: str
    host_nqn: str = ""
    state_dir: str = "/tmp/rds-csi"
    log: str = "/tmp/rds-csi-node.log"
    csi: Csi = field(init=False)

    def __post_init__(self) -> None:
        self.csi = Csi(self.guest, NODE_SOCK)

    def start(self, wait: bool = True) -> NodePlugin:
        g = self.guest
        load_host(g)
        self.host_nqn = g.check("cat /etc/nvme/hostnqn").strip()
        g.check(f"mkdir -p /run/csi {self.state_dir} {KUBELET}")
        g.spawn(f"exec {VENV_BIN}/rds-csi --mode node --endpoint {NODE_SOCK}"
                f" --node-id {self.node_id} --state-dir {self.state_dir}"
                f" --host-nqn {self.host_nqn} --monitor-interval 1 --attach-timeout 30",
                log=self.log)
        if wait:
            self.wait_serving()
        return self

    def wait_serving(self) -> None:
        self.guest.wait_for(f"grep -q serving {self.log}", timeout=90, interval=1.0)

    # --- paths, as kubelet lays them out (on the guest's tmpfs) ---

    def staging(self, vol: Volume) -> str:
        return f"{KUBELET}/plugins/rds-csi.io/{vol.name}/globalmount"

    def target(self, vol: Volume, pod: str = "pod1") -> str:
        return f"{KUBELET}/pods/{pod}/volumes/{vol.name}/mount"

    def block_target(self, vol: Volume, pod: str = "pod1") -> str:
        return f"{KUBELET}/pods/{pod}/volumeDevices/{vol.name}"

    # --- Node RPCs ---

    def stage(self, vol: Volume, capability: dict[str, Any]) -> None:
        self.csi.call("Node", "NodeStageVolume", {
            "volume_id": vol.volume_id, "staging_target_path": self.staging(vol),
            "volume_capability": capability, "volume_context": vol.context})

    def try_stage(self, vol: Volume, capability: dict[str, Any]) -> dict[str, Any]:
        return self.csi.try_call("Node", "NodeStageVolume", {
            "volume_id": vol.volume_id, "staging_target_path": self.staging(vol),
            "volume_capability": capability, "volume_context": vol.context})

    def publish(self, vol: Volume, capability: dict[str, Any], target: str | None = None) -> str:
        block = "block" in capability
        target = target or (self.block_target(vol) if block else self.target(vol))
        self.csi.call("Node", "NodePublishVolume", {
            "volume_id": vol.volume_id, "staging_target_path": self.staging(vol),
            "target_path": target, "volume_capability": capability,
            "volume_context": vol.context})
        return target

    def unpublish(self, vol: Volume, target: str) -> None:
        self.csi.call("Node", "NodeUnpublishVolume",
                      {"volume_id": vol.volume_id, "target_path": target})

    def unstage(self, vol: Volume) -> None:
        self.csi.call("Node", "NodeUnstageVolume",
                      {"volume_id": vol.volume_id, "staging_target_path": self.staging(vol)})

    def expand(self, vol: Volume, path: str, size: int,
               capability: dict[str, Any] | None = None) -> int:
        """NodeExpandVolume, as kubelet calls it (volume_path = the publish target)."""
        req: dict[str, Any] = {"volume_id": vol.volume_id, "volume_path": path,
                               "staging_target_path": self.staging(vol),
                               "capacity_range": {"required_bytes": str(size)}}
        if capability is not None:
            req["volume_capability"] = capability
        return int(self.csi.call("Node", "NodeExpandVolume", req).get("capacity_bytes", 0))

    def fs_size(self, path: str) -> tuple[int, int]:
        """(total, available) bytes of the filesystem at `path` (statfs in the guest)."""
        bsize, blocks, avail = self.guest.check(f"stat -f -c '%S %b %a' {path}").split()
        return int(blocks) * int(bsize), int(avail) * int(bsize)

    def condition(self, vol: Volume, path: str) -> tuple[bool, str]:
        r = self.csi.call("Node", "NodeGetVolumeStats",
                          {"volume_id": vol.volume_id, "volume_path": path}, timeout=30)
        cond = r.get("volume_condition", {})
        return bool(cond.get("abnormal", False)), str(cond.get("message", ""))

    def wait_condition(self, vol: Volume, path: str, abnormal: bool,
                       timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        seen = ""
        while True:
            ab, msg = self.condition(vol, path)
            if ab == abnormal:
                return msg
            seen = msg
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.node_id}: {vol.name} at {path} still "
                                     f"abnormal={not abnormal} after {timeout:.0f} s: {seen}")
            time.sleep(0.5)

    # --- the guest ---

    def controller(self, vol: Volume) -> str | None:
        return controller(self.guest, vol.nqn)

    def devno(self, path: str) -> str:
        """major:minor of a block node, or of the filesystem mounted at a path."""
        return self.guest.check(f"if [ -b {path} ]; then stat -c '%t %T' {path} | "
                                "(read a b; echo $((0x$a)):$((0x$b))); "
                                f"else mountpoint -d {path}; fi").strip()

    def write_file(self, path: str, name: str, mib: int) -> None:
        """A file of random bytes written and fsynced; the reference copy is /tmp/<name>.bin."""
        self.guest.check(f"head -c {mib}M /dev/urandom > /tmp/{name}.bin && "
                         f"dd if=/tmp/{name}.bin of={path} bs=1M conv=fsync status=none",
                         timeout=120)

    def check_file(self, path: str, name: str) -> None:
        """Byte for byte against the reference copy, from the device (page cache dropped)."""
        self.guest.check(f"sync; echo 3 > /proc/sys/vm/drop_caches; cmp {path} /tmp/{name}.bin",
                         timeout=120)

    def mounts(self) -> list[str]:
        return [ln for ln in self.guest.check("cat /proc/self/mountinfo").splitlines()
                if KUBELET in ln]

    def log_text(self) -> str:
        return self.guest.run(f"cat {self.log}")[1]


class Cluster:
    """The testbed with the driver running on it (see the module docstring)."""

    __test__ = False

    def __init__(self, nodes: int = 2, *, mem: str = "512M") -> None:
        self.tb = Testbed(nodes=nodes, mem=mem)
        self.sim: RdsSim | None = None
        self.controller = Csi(self.tb.rds, CONTROLLER_SOCK)
        self.nodes = [NodePlugin(g, g.name) for g in self.tb.nodes]
        self.controller_log = "/tmp/rds-csi-controller.log"

    @property
    def rds(self) -> Guest:
        return self.tb.rds

    def start(self) -> Cluster:
        self.tb.start()
        # everything imports for seconds under TCG: start it all, then wait for it all
        for g in (self.tb.rds, *self.tb.nodes):
            g.spawn(f"exec {VENV_BIN}/python {RELAY} serve {RELAY_SOCK}",
                    log="/tmp/csi-relay.log")
        for n in self.nodes:
            n.start(wait=False)
        self.sim = self.tb.rds_sim()
        self.start_controller(wait=False)
        for g in (self.tb.rds, *self.tb.nodes):
            g.wait_for(f"test -S {RELAY_SOCK}", timeout=60, interval=0.5)
        for n in self.nodes:
            n.wait_serving()
        self.tb.rds.wait_for(f"grep -q serving {self.controller_log}", timeout=90, interval=1.0)
        return self

    def start_controller(self, wait: bool = True) -> None:
        g = self.tb.rds
        g.check("mkdir -p /run/csi")
        g.spawn(f"exec {VENV_BIN}/rds-csi --mode controller --endpoint {CONTROLLER_SOCK}"
                " --rds-address 127.0.0.1:2222 --rds-password-file /tmp/rds-sim.pw"
                " --rds-insecure-skip-host-key-check --nvme-address 192.168.77.1"
                " --default-volume-size 64Mi", log=self.controller_log)
        if wait:
            g.wait_for(f"grep -q serving {self.controller_log}", timeout=90, interval=1.0)

    def stop(self) -> None:
        self.tb.stop()

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- Controller RPCs ---

    def create(self, name: str, size: int = 64 << 20, *, block: bool = False,
               params: dict[str, str] | None = None, mode: str = "SINGLE_NODE_WRITER"
               ) -> Volume:
        r = self.controller.call("Controller", "CreateVolume", {
            "name": name, "capacity_range": {"required_bytes": str(size)},
            "volume_capabilities": [cap(block=block, mode=mode)],
            "parameters": params or {}})
        v = r["volume"]
        return Volume(name, v["volume_id"], dict(v.get("volume_context", {})),
                      int(v.get("capacity_bytes", 0)))

    def expand(self, vol: Volume, size: int, capability: dict[str, Any] | None = None
               ) -> dict[str, Any]:
        """ControllerExpandVolume; the reply (capacity_bytes, node_expansion_required)."""
        req: dict[str, Any] = {"volume_id": vol.volume_id,
                               "capacity_range": {"required_bytes": str(size)}}
        if capability is not None:
            req["volume_capability"] = capability
        return self.controller.call("Controller", "ControllerExpandVolume", req)

    def delete(self, vol: Volume) -> None:
        self.controller.call("Controller", "DeleteVolume", {"volume_id": vol.volume_id})

    # --- the simulated RDS ---

    def slot(self, vol: Volume) -> str:
        return vol.nqn[len(NQN_PREFIX):]

    def rds_cli(self, line: str) -> str:
        assert self.sim is not None
        status, out = self.sim.cli(line)
        assert status == 0, f"{line}: {out}"
        return out

    def configfs_subsystems(self) -> list[str]:
        return self.tb.rds.check(f"ls {CONFIGFS}/subsystems").split()


def ls(g: Guest, path: str) -> list[str]:
    return g.check(f"ls {shlex.quote(path)} 2>/dev/null; true").split()
