"""`rds-sim stack`: the simulated RDS (fabric backend), node hosts node-1..N and the driver as
processes, until SIGINT/SIGTERM; then everything is torn down (processes, mounts under the
workdir, loop devices). SIGHUP restarts the driver processes (a node plugin restart: what a
DaemonSet rollout does), leaving the fabric, its connections and the mounts as they are."""

from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import paramiko

from ..server import Simulator
from .blockdev import unmount_under
from .engine import FabricEngine

NODE_FLAGS = ("--sysfs-root", "--dev-root", "--state-dir")


def _driver_help(exe: str) -> str:
    try:
        return subprocess.run([exe, "--help"], capture_output=True, text=True,
                              timeout=60, check=False).stdout
    except OSError:
        return ""


def ensure_keys(work: Path) -> tuple[Path, Path, str]:
    """A client key (with `authorized_keys`) and a host key in `work`, made once; returns
    (client key file, host key file, host key SHA256 fingerprint) for pinning."""
    key_file, host_file = work / "id_rsa", work / "host_key"
    if not key_file.exists():
        key = paramiko.RSAKey.generate(2048)
        key.write_private_key_file(str(key_file))
        (work / "authorized_keys").write_text(f"{key.get_name()} {key.get_base64()}\n")
    if not host_file.exists():
        paramiko.RSAKey.generate(2048).write_private_key_file(str(host_file))
    host = paramiko.RSAKey.from_private_key_file(str(host_file))
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(host.asbytes()).digest()).decode()
    return key_file, host_file, fp.rstrip("=")


def _restart(name: str, proc: subprocess.Popen[bytes], argv: list[str]
             ) -> subprocess.Popen[bytes]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    new = subprocess.Popen(argv)
    print(f"{name}: restarted rds-csi (pid {new.pid})", flush=True)
    return new


def run_stack(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.csi_endpoint.startswith("unix://"):
        print("rds-sim: --csi-endpoint must be unix:///PATH", file=sys.stderr)
        return 2
    exe = shutil.which(args.rds_csi) or shutil.which(
        "rds-csi", path=str(Path(sys.executable).parent)) or args.rds_csi
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    key_file, host_file, fingerprint = ensure_keys(work)
    engine = FabricEngine(work / "fabric")
    sim = Simulator(work / "rds", authorized_keys=work / "authorized_keys", host_key=host_file,
                    export_backend=engine.backend)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    argvs: dict[str, list[str]] = {}
    try:
        port = sim.start()
        hosts = [engine.add_host(f"node-{k}") for k in range(1, args.nodes + 1)]
        help_text = _driver_help(exe)
        has_node = all(f in help_text for f in NODE_FLAGS)
        common = ["--rds-address", f"127.0.0.1:{port}", "--rds-key-file", str(key_file),
                  "--rds-host-key-fingerprint", fingerprint, "--nvme-address", "127.0.0.1",
                  *args.driver_arg]
        print(f"rds-sim ssh 127.0.0.1:{port} state {work / 'rds'}", flush=True)
        print(f"fabric {engine.workdir} (rds-sim fabric --fabric-dir {engine.workdir} ...)",
              flush=True)
        for k, h in enumerate(hosts, start=1):
            endpoint = args.csi_endpoint if k == 1 else f"unix://{h.root / 'csi.sock'}"
            node_args = ["--node-id", h.node_id, "--nvme-path", str(h.root / "bin/nvme"),
                         "--sysfs-root", str(h.root / "sys"), "--dev-root", str(h.root / "dev"),
                         "--state-dir", str(h.root / "state")]
            if "--host-nqn" in help_text:  # else the driver reads nvme-cli's default
                node_args += ["--host-nqn", h.hostnqn]
            if k == 1:
                mode = "all" if has_node else "controller"
                argv = [exe, "--mode", mode, "--endpoint", endpoint, *common]
                if has_node:
                    argv += node_args
            elif has_node:
                mode = "node"
                argv = [exe, "--mode", "node", "--endpoint", endpoint, *common, *node_args]
            else:
                print(f"{h.node_id}: fabric root {h.root} (no driver: rds-csi has no node "
                      f"service flags {', '.join(NODE_FLAGS)} yet)", flush=True)
                continue
            (h.root / "state").mkdir(exist_ok=True)
            argvs[h.node_id] = argv
            procs.append((h.node_id, subprocess.Popen(argv)))
            print(f"{h.node_id}: rds-csi --mode {mode} on {endpoint} (fabric root {h.root})",
                  flush=True)
        done = threading.Event()
        restart = threading.Event()
        wake = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            done.set()
            wake.set()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            restart.set()
            wake.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_hup)
        print("ready", flush=True)
        while not done.is_set():
            wake.wait(0.5)
            wake.clear()
            if done.is_set():
                break
            if restart.is_set():
                restart.clear()
                procs[:] = [(name, _restart(name, p, argvs[name])) for name, p in procs]
                print("ready", flush=True)
                continue
            for name, p in procs:
                if p.poll() is not None:
                    print(f"rds-sim: rds-csi for {name} exited with {p.returncode}",
                          file=sys.stderr, flush=True)
                    done.set()
        return 0 if all(p.poll() is None for _, p in procs) else 1
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        unmount_under(work)
        engine.close()
        sim.stop()
        sock = args.csi_endpoint.removeprefix("unix://")
        if os.path.exists(sock):
            os.unlink(sock)
