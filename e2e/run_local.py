"""`make run`: a guided demo of the driver on the embedded stack, then how to talk to it.

With root and the mount tools (installed with apt-get when missing): ``rds-sim stack`` runs
the simulated RDS, a simulated NVMe/TCP host and ``rds-csi --mode all``; the demo creates a
filesystem and a block volume, stages and publishes them, writes data, reboots the RDS for
longer than ctrl_loss_tmo and shows, with timestamps, the reconnect and the renumbered
devices being repaired, verifies the data, then leaves the stack running until Ctrl-C.
Otherwise (or with ``--simple``): ``rds-sim serve`` and ``rds-csi --mode controller`` only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _stack_available() -> bool:
    probe = subprocess.run([str(BIN / "rds-sim"), "stack", "--help"], capture_output=True)
    return probe.returncode == 0


def run_simple(work: Path) -> int:
    from rds_sim.fabric.stack import ensure_keys

    _, _, fingerprint = ensure_keys(work)  # client key, authorized_keys, host key
    sim = subprocess.Popen(
        [str(BIN / "rds-sim"), "serve", "--listen", "127.0.0.1:0", "--state-dir",
         str(work / "rds"), "--authorized-keys", str(work / "authorized_keys"),
         "--host-key", str(work / "host_key")],
        stdout=subprocess.PIPE, text=True)
    assert sim.stdout is not None
    line = sim.stdout.readline().strip()
    if not line.startswith("listening on "):
        print(f"rds-sim did not start: {line!r}", file=sys.stderr)
        sim.kill()
        return 1
    address = line.removeprefix("listening on ")
    sock = work / "csi.sock"
    endpoint = f"unix://{sock}"
    driver = subprocess.Popen(
        [str(BIN / "rds-csi"), "--mode", "controller", "--endpoint", endpoint,
         "--rds-address", address, "--rds-key-file", str(work / "id_rsa"),
         "--rds-host-key-fingerprint", fingerprint, "--nvme-address", "127.0.0.1"])
    deadline = time.monotonic() + 20
    while not sock.exists():
        if driver.poll() is not None or time.monotonic() > deadline:
            print("rds-csi did not come up", file=sys.stderr)
            driver.kill()
            sim.kill()
            return 1
        time.sleep(0.05)
    py = os.path.relpath(sys.executable, ROOT)
    ctl = f"{py} e2e/csictl.py --endpoint {endpoint}"
    key = work / "id_rsa"
    port = address.rsplit(":", 1)[1]
    print(f"""
The simulated RDS listens on {address} (state in {work / 'rds'});
rds-csi (controller) serves CSI on {endpoint}.

Try, from another terminal in {ROOT}:
  {ctl} probe
  {ctl} create my-volume --size 2Gi
  {ctl} list
  {ctl} snapshot <volume_id> my-snap
  {ctl} capacity
Look at the "device" the driver manages:
  ssh -p {port} -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \\
      admin@127.0.0.1 '/disk print detail'

Press Ctrl-C to stop.
""", flush=True)
    try:
        driver.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (driver, sim):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


# ---------------------------------------------------------------------- the guided demo

NEEDED = {"mkfs.ext4": "e2fsprogs", "blkid": "util-linux", "losetup": "mount",
          "mount": "mount"}
DEMO_PARAMS = {"ctrlLossTmo": "2", "reconnectDelay": "1"}
OUTAGE = 6.0


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(title: str) -> None:
    _say(f"\n\033[1m== {title}\033[0m")


class _Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> str:
        return f"[{time.monotonic() - self.t0:6.1f}s]"


def _demo_prerequisites() -> str | None:
    """None when the demo can run; else why not (then the controller-only mode runs)."""
    if os.geteuid() != 0:
        return "the node demo needs root (loop devices, mounts)"
    missing = sorted({pkg for tool, pkg in NEEDED.items() if shutil.which(tool) is None})
    if missing:
        if shutil.which("apt-get") is None:
            return f"missing packages {', '.join(missing)} and no apt-get to install them"
        _say(f"Installing {', '.join(missing)} (apt-get) for the node demo ...")
        ok = subprocess.run(["apt-get", "install", "-y", "-qq", *missing],
                            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                            stdout=subprocess.DEVNULL).returncode == 0
        if not ok:
            subprocess.run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
            ok = subprocess.run(["apt-get", "install", "-y", "-qq", *missing],
                                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                                stdout=subprocess.DEVNULL).returncode == 0
        if not ok:
            return f"apt-get install {' '.join(missing)} failed"
    return None


def run_demo(work: Path) -> int:
    sys.path.insert(0, str(ROOT / "e2e"))
    import grpc
    from simstack.stackproc import StackError, StackProcess

    from rds_csi.csi import csi_pb2

    Mode = csi_pb2.VolumeCapability.AccessMode
    now = _Clock()
    if (work / "w").exists():  # a previous run that was killed hard: start clean
        from rds_sim.fabric.blockdev import unmount_under

        unmount_under(work)
        shutil.rmtree(work / "w", ignore_errors=True)
    log_path = work / "stack.log"
    log = open(log_path, "w")  # noqa: SIM115

    _step("Starting the embedded stack (rds-sim stack)")
    _say("  the simulated RDS (RouterOS over SSH + NVMe/TCP exports), a simulated Linux NVMe/TCP")
    _say("  host for node-1, and rds-csi --mode all serving CSI on a unix socket")
    try:
        s = StackProcess.start(work, nodes=1, on_line=log.write)
    except StackError as e:
        _say(f"rds-sim stack did not start: {e}")
        return 1
    sock = f"unix:{os.path.relpath(s.sock, ROOT)}"  # relative to the repository (gRPC syntax)
    node, ctl = s.node(), s.ctl
    held: list[int] = []
    vols: dict[str, tuple[csi_pb2.Volume, csi_pb2.VolumeCapability]] = {}
    paths: dict[str, tuple[Path, Path]] = {}
    try:
        _say(f"{now()} ready: CSI endpoint {sock}")
        _say(f"{now()} driver and simulator logs go to {log_path}")

        _step("Creating two volumes (CreateVolume, StorageClass ctrlLossTmo=2 reconnectDelay=1)")
        access = csi_pb2.VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER)
        fs_cap = csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(fs_type="ext4"), access_mode=access)
        blk_cap = csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                           access_mode=access)
        for label, cap, size in (("filesystem", fs_cap, 128 << 20), ("block", blk_cap, 64 << 20)):
            v = ctl.CreateVolume(csi_pb2.CreateVolumeRequest(
                name=f"demo-{label}", capacity_range=csi_pb2.CapacityRange(required_bytes=size),
                volume_capabilities=[cap], parameters=DEMO_PARAMS), timeout=60).volume
            vols[label] = (v, cap)
            _say(f"{now()} {label:<10} volume {v.volume_id}  {size >> 20} MiB  "
                 f"nqn {v.volume_context['nqn']}")

        _step("Staging and publishing them on node-1 (what kubelet does for a pod)")
        for label, (v, cap) in vols.items():
            staging = s.work / "demo" / "staging" / label
            target = s.work / "demo" / "pod" / label
            staging.mkdir(parents=True, exist_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
                volume_id=v.volume_id, staging_target_path=str(staging),
                volume_capability=cap, volume_context=v.volume_context), timeout=60)
            node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
                volume_id=v.volume_id, staging_target_path=str(staging),
                target_path=str(target), volume_capability=cap), timeout=60)
            paths[label] = (staging, target)
            _say(f"{now()} {label:<10} staged at {staging.relative_to(ROOT)}, published at "
                 f"{target.relative_to(ROOT)}")

        def devices() -> dict[str, str]:
            out = {}
            for label, (v, _) in vols.items():
                names = s.namespaces("node-1", v.volume_context["nqn"])
                ctrls = s.controllers("node-1", v.volume_context["nqn"])
                states = ", ".join(f"{c} {st}" for c, st in ctrls.items()) or "no controller"
                out[label] = f"{'/'.join(names) or '-'} ({states})"
            return out

        for label, dev in devices().items():
            _say(f"{now()} {label:<10} device on node-1: {dev}")

        _step("Writing data through the published paths")
        fs_file = paths["filesystem"][1] / "hello.bin"
        fs_data = os.urandom(4 << 20)
        with open(fs_file, "wb") as f:
            f.write(fs_data)
            f.flush()
            os.fsync(f.fileno())
        blk_node = str(paths["block"][1])
        blk_data = os.urandom(1 << 20)
        fd = os.open(blk_node, os.O_RDWR)
        os.pwrite(fd, blk_data, 8 << 20)
        os.fsync(fd)
        held.append(fd)  # like a VM keeping its disk open through the outage
        digest = hashlib.sha256
        _say(f"{now()} filesystem: 4 MiB file, sha256 {digest(fs_data).hexdigest()[:16]}...")
        _say(f"{now()} block:      1 MiB at offset 8 MiB, sha256 "
             f"{digest(blk_data).hexdigest()[:16]}...")
        _say(f"{now()} the block device stays open from now on, like a VM's disk")

        def conditions() -> dict[str, str]:
            out = {}
            for label, (v, _) in vols.items():
                try:
                    r = node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
                        volume_id=v.volume_id, volume_path=str(paths[label][1])), timeout=30)
                except grpc.RpcError as e:
                    out[label] = f"error {e.code().name}"
                    continue
                c = r.volume_condition
                msg = c.message.replace(v.volume_context["nqn"], label + " volume")
                msg = msg if len(msg) <= 72 else msg[:71] + "…"
                out[label] = f"ABNORMAL: {msg}" if c.abnormal else "normal"
            return out

        before = devices()
        _step(f"Rebooting the RDS for {OUTAGE:g} s: longer than ctrl_loss_tmo (2 s)")
        _say("  the kernel retries every second, gives up after 2 s and deletes the controllers;")
        _say("  the driver's monitor reconnects when the RDS is back; the mounted or open old")
        _say("  device keeps its number, so the volume comes back under a NEW name and the")
        _say("  driver moves the staging mount, the pod's bind mount and block node onto it")
        s.reboot(OUTAGE)
        _say(f"{now()} RDS rebooting")
        last: dict[str, str] = {}
        rds_up = False
        deadline = time.monotonic() + OUTAGE + 60
        normal_since = None
        while time.monotonic() < deadline:
            state = {"RDS": "up" if not s.rebooting() else "down"}
            if state["RDS"] == "up" and not rds_up:
                rds_up = True
                _say(f"{now()} RDS is back")
            for label, dev in devices().items():
                state[f"{label} device"] = dev
            for label, cond in conditions().items():
                state[f"{label} condition"] = cond
            for key, value in state.items():
                if key != "RDS" and last.get(key) != value:
                    _say(f"{now()} {key:<21} {value}")
            last = state
            if rds_up and all(v == "normal" for k, v in state.items() if "condition" in k):
                normal_since = normal_since or time.monotonic()
                if time.monotonic() - normal_since > 1.0:
                    break
            else:
                normal_since = None
            time.sleep(0.2)
        after = devices()

        _step("After the outage")
        for label in vols:
            _say(f"  {label:<10} before: {before[label]}")
            _say(f"  {label:<10} after:  {after[label]}")
        ok_fs = fs_file.read_bytes() == fs_data
        fd2 = os.open(blk_node, os.O_RDONLY)
        try:
            ok_blk = os.pread(fd2, 1 << 20, 8 << 20) == blk_data
        finally:
            os.close(fd2)
        _say(f"  filesystem data read back through {paths['filesystem'][1].relative_to(ROOT)}: "
             f"{'identical' if ok_fs else 'DIFFERENT'}")
        _say(f"  block data read back through {Path(blk_node).relative_to(ROOT)}: "
             f"{'identical' if ok_blk else 'DIFFERENT'}")
        _say("  no NodeStageVolume/NodePublishVolume was called: the pod never restarted")
        for fd in held:
            os.close(fd)
        held.clear()

        py = os.path.relpath(sys.executable, ROOT)
        ctl_cmd = f"{py} e2e/csictl.py --endpoint {sock}"
        fs_id, blk_id = vols["filesystem"][0].volume_id, vols["block"][0].volume_id
        rel = {k: (a.relative_to(ROOT), b.relative_to(ROOT)) for k, (a, b) in paths.items()}
        _step("The stack keeps running. Try, from another terminal in " + str(ROOT) + ":")
        _say(f"""  {ctl_cmd} list
  {ctl_cmd} stats {fs_id} $PWD/{rel['filesystem'][1]}
  {ctl_cmd} stats {blk_id} $PWD/{rel['block'][1]}
  {ctl_cmd} create my-vol --size 256Mi --param reconnectDelay=1
  {ctl_cmd} stage <volume_id> $PWD/{s.work.relative_to(ROOT)}/demo/staging/my-vol
  {ctl_cmd} publish <volume_id> $PWD/{s.work.relative_to(ROOT)}/demo/staging/my-vol \
      $PWD/{s.work.relative_to(ROOT)}/demo/pod/my-vol
Faults:
  .venv/bin/rds-sim fault --state-dir {s.work.relative_to(ROOT)}/rds reboot --seconds 10
  .venv/bin/rds-sim fabric --fabric-dir {s.work.relative_to(ROOT)}/fabric status
  .venv/bin/rds-sim fabric --fabric-dir {s.work.relative_to(ROOT)}/fabric block --port 4420
The node's view: {s.root('node-1').relative_to(ROOT)}/bin/nvme list   (its sysfs: .../sys)
Logs: tail -f {log_path.relative_to(ROOT)}

Press Ctrl-C to stop and tear everything down.""")
        while s.proc.poll() is None:
            time.sleep(0.5)
        _say("rds-sim stack exited on its own; see " + str(log_path))
        return 1
    except KeyboardInterrupt:
        _say("\nStopping: driver, simulator, mounts and loop devices ...")
        return 0
    finally:
        for fd in held:
            os.close(fd)
        for label, (staging, target) in paths.items():  # what kubelet does when a pod goes
            v = vols[label][0]
            with contextlib.suppress(grpc.RpcError):
                node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
                    volume_id=v.volume_id, target_path=str(target)), timeout=30)
                node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
                    volume_id=v.volume_id, staging_target_path=str(staging)), timeout=30)
        s.stop()
        log.close()
        _say("Stopped.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default=".work")
    parser.add_argument("--simple", action="store_true",
                        help="controller + simulator only, even if rds-sim stack exists")
    args = parser.parse_args()
    work = (ROOT / args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not args.simple and _stack_available():
        reason = _demo_prerequisites()
        if reason is None:
            return run_demo(work)
        print(f"Node demo not possible here ({reason}); starting the controller only.\n",
              flush=True)
    return run_simple(work)


if __name__ == "__main__":
    sys.exit(main())
