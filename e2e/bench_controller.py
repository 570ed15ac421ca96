"""Controller benchmark: CreateVolume + DeleteVolume throughput and latency over gRPC.

Three processes, as in a cluster: ``rds-sim serve`` (the RDS), ``rds-csi --mode controller``
(the driver, SSH to the simulator) and this script (the CO: 16 concurrent callers over the
driver's unix socket). Two runs:

- no injected latency: how fast the driver itself is (target >= 50 CreateVolume/s);
- the simulator's ``realistic`` latency profile (0.4 s per ``/disk add`` ...): how close the
  driver gets to the device-bound limit. That limit is measured, not assumed: the same
  mutating commands a create+delete needs (``/disk add``, ``/disk remove``, ``/file remove``)
  sent straight over as many SSH sessions as the driver may open, with nothing else.
  Target: driver >= 90% of it.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import paramiko

from rds_csi.csi import csi_pb2, csi_pb2_grpc
from rds_sim.bench import percentile
from rds_sim.fabric.stack import ensure_keys

BIN = Path(sys.executable).parent
MODE = csi_pb2.VolumeCapability.AccessMode


def pct(values: list[float], p: float) -> float:
    return percentile(sorted(values), p)


class Stack:
    """rds-sim + rds-csi processes in a temporary directory."""

    def __init__(self, work: Path, profile: str, sessions: int) -> None:
        self.work = work
        _, _, self.fingerprint = ensure_keys(work)
        self.sim = subprocess.Popen(
            [str(BIN / "rds-sim"), "serve", "--listen", "127.0.0.1:0",
             "--state-dir", str(work / "rds"), "--authorized-keys", str(work / "authorized_keys"),
             "--host-key", str(work / "host_key"), "--latency-profile", profile,
             "--max-connections", "256"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.sim.stdout is not None
        line = self.sim.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"rds-sim did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        self.sock = work / "csi.sock"
        self.driver = subprocess.Popen(
            [str(BIN / "rds-csi"), "--mode", "controller", "--endpoint", f"unix://{self.sock}",
             "--rds-address", f"127.0.0.1:{self.port}", "--rds-key-file", str(work / "id_rsa"),
             "--rds-host-key-fingerprint", self.fingerprint, "--nvme-address", "127.0.0.1",
             "--rds-max-sessions", str(sessions), "--max-workers", "32", "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=open(work / "driver.log", "w"))  # noqa: SIM115
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            if self.driver.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("rds-csi did not start: " + (work / "driver.log").read_text())
            time.sleep(0.05)

    def ssh(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect("127.0.0.1", port=self.port, username="admin",
                       key_filename=str(self.work / "id_rsa"), look_for_keys=False,
                       allow_agent=False)
        transport = client.get_transport()
        assert transport is not None
        transport.sock.setsockopt(6, 1, 1)  # TCP_NODELAY
        return client

    def stop(self) -> None:
        for proc in (self.driver, self.sim):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _timed(calls: int, workers: int, fn) -> tuple[float, list[float]]:
    """Run fn(i) for i in range(calls) on `workers` threads; (wall seconds, per-call ms)."""
    times: list[float] = []
    lock = threading.Lock()

    def timed(i: int) -> None:
        t0 = time.perf_counter()
        fn(i)
        with lock:
            times.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(timed, i) for i in range(calls)]:
            f.result()
    return time.perf_counter() - start, times


def run_driver(stack: Stack, volumes: int, callers: int) -> dict[str, float]:
    """All CreateVolume calls, then all DeleteVolume calls, `callers` at a time."""
    channel = grpc.insecure_channel(f"unix://{stack.sock}")
    ctl = csi_pb2_grpc.ControllerStub(channel)
    cap = csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                   access_mode=csi_pb2.VolumeCapability.AccessMode(
                                       mode=MODE.SINGLE_NODE_WRITER))
    ids: dict[int, str] = {}

    def create(i: int) -> None:
        ids[i] = ctl.CreateVolume(csi_pb2.CreateVolumeRequest(
            name=f"bench-{i}", capacity_range=csi_pb2.CapacityRange(required_bytes=1 << 30),
            volume_capabilities=[cap]), timeout=120).volume.volume_id

    def delete(i: int) -> None:
        ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=ids[i]), timeout=120)

    create_wall, create_ms = _timed(volumes, callers, create)
    delete_wall, delete_ms = _timed(volumes, callers, delete)
    channel.close()
    return {
        "create_per_s": volumes / create_wall, "delete_per_s": volumes / delete_wall,
        "pairs_per_s": volumes / (create_wall + delete_wall),
        "create_p50_ms": pct(create_ms, 50), "create_p99_ms": pct(create_ms, 99),
        "delete_p50_ms": pct(delete_ms, 50), "delete_p99_ms": pct(delete_ms, 99),
        "create_mean_ms": statistics.fmean(create_ms),
    }


def run_device_bound(stack: Stack, volumes: int, sessions: int) -> dict[str, float]:
    """The same mutating commands straight over `sessions` SSH sessions: the ceiling."""
    client = stack.ssh()
    transport = client.get_transport()
    assert transport is not None

    def cmd(line: str) -> None:
        chan = transport.open_session()
        chan.exec_command(line)
        while chan.recv(65536):
            pass
        chan.recv_exit_status()
        chan.close()

    def add(i: int) -> None:
        slot = f"raw-{i}"
        cmd(f'/disk add type=file file-path="storage-pool/raw/{slot}.img" file-size=1G '
            f'slot="{slot}" nvme-tcp-export=yes nvme-tcp-server-port=4420 '
            f'nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:{slot}"')

    def remove(i: int) -> None:
        cmd(f'/disk remove [find slot="raw-{i}"]')
        cmd(f'/file remove [find name="storage-pool/raw/raw-{i}.img"]')

    add_wall, _ = _timed(volumes, sessions, add)
    remove_wall, _ = _timed(volumes, sessions, remove)
    client.close()
    return {"create_per_s": volumes / add_wall, "delete_per_s": volumes / remove_wall,
            "pairs_per_s": volumes / (add_wall + remove_wall)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=200)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--sessions", type=int, default=4, help="driver --rds-max-sessions")
    parser.add_argument("--realistic-volumes", type=int, default=60,
                        help="volumes in the realistic-latency run (each takes ~0.6 s of device)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ctl-") as tmp:
        stack = Stack(Path(tmp), "none", args.sessions)
        try:
            results["no_latency"] = dict(run_driver(stack, args.volumes, args.callers))
        finally:
            stack.stop()
    with tempfile.TemporaryDirectory(prefix="bench-ctl-") as tmp:
        stack = Stack(Path(tmp), "realistic", args.sessions)
        try:
            results["realistic"] = dict(run_driver(stack, args.realistic_volumes, args.callers))
            results["device_bound"] = dict(run_device_bound(stack, args.realistic_volumes,
                                                            args.sessions))
        finally:
            stack.stop()

    nl, rl, bound = results["no_latency"], results["realistic"], results["device_bound"]
    print(f"\ncontroller benchmark: {args.callers} concurrent CO callers over gRPC, "
          f"--rds-max-sessions {args.sessions}, 1 GiB volumes")
    print(f"{'run':<19}{'vols':>5}{'create/s':>10}{'delete/s':>10}{'create p50':>12}"
          f"{'create p99':>12}{'delete p50':>12}{'delete p99':>12}")
    for label, r, n in (("no latency", nl, args.volumes),
                        ("realistic latency", rl, args.realistic_volumes)):
        print(f"{label:<19}{n:>5}{r['create_per_s']:>10.1f}{r['delete_per_s']:>10.1f}"
              f"{r['create_p50_ms']:>10.1f}ms{r['create_p99_ms']:>10.1f}ms"
              f"{r['delete_p50_ms']:>10.1f}ms{r['delete_p99_ms']:>10.1f}ms")
    print(f"{'device-bound':<19}{args.realistic_volumes:>5}{bound['create_per_s']:>10.1f}"
          f"{bound['delete_per_s']:>10.1f}   (raw /disk add; /disk remove + /file remove, "
          f"{args.sessions} sessions)")
    for what in ("create", "delete", "pairs"):
        frac = rl[f"{what}_per_s"] / bound[f"{what}_per_s"]  # type: ignore[operator]
        results["realistic"][f"{what}_fraction_of_device_bound"] = frac
    print("driver / device-bound with realistic latency: "
          + ", ".join(f"{w} {100 * results['realistic'][f'{w}_fraction_of_device_bound']:.0f}%"
                      for w in ("create", "delete", "pairs"))
          + " (target >= 90%)")
    verdict = "met" if nl["create_per_s"] >= 50 else "NOT met"  # type: ignore[operator]
    print(f"no-latency CreateVolume rate {nl['create_per_s']:.1f}/s, target >= 50/s: {verdict}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
