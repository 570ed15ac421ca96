"""Node benchmark on the embedded stack (`rds-sim stack`): stage/publish latency and the time
to recover every volume after an outage longer than ctrl_loss_tmo.

As in a cluster: the simulated RDS, one simulated NVMe/TCP host and the rds-csi process
(mode all, default monitor settings) run as processes; this script is the CO, on the
driver's unix socket.

1. CreateVolume 50 raw block volumes and 20 ext4 volumes, then NodeStageVolume +
   NodePublishVolume each, one after the other (as kubelet does for one pod): p50/p99 per RPC,
   block and ext4 separately.
2. The ext4 volumes are unpublished and unstaged; with the 50 block volumes attached the RDS
   goes down for longer than ctrl_loss_tmo (the kernel deletes the controllers), then comes
   back. Measured: from the moment the RDS answers again until NodeGetVolumeStats reports
   every volume normal (all 50 polled in turn). Target: under reconnect_delay + 2 s.

    bench_node.py [--block 50] [--ext4 20] [--outage 6] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simstack.stackproc import StackProcess, leftovers

from rds_csi.csi import csi_pb2
from rds_sim.bench import percentile

MODE = csi_pb2.VolumeCapability.AccessMode
MiB = 1 << 20
CTRL_LOSS_TMO = 2
RECONNECT_DELAY = 1
PARAMS = {"ctrlLossTmo": str(CTRL_LOSS_TMO), "reconnectDelay": str(RECONNECT_DELAY)}


def pct(values: list[float], p: float) -> float:
    return percentile(sorted(values), p)


def cap(block: bool) -> csi_pb2.VolumeCapability:
    access = MODE(mode=MODE.SINGLE_NODE_WRITER)
    if block:
        return csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                        access_mode=access)
    return csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(fs_type="ext4"),
                                    access_mode=access)


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args, timeout=120)  # type: ignore[operator]
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, object]:
    base = Path(tempfile.mkdtemp(prefix="bn-", dir="/tmp"))
    log = open(args.log, "w") if args.log else None  # noqa: SIM115

    def on_line(line: str) -> None:
        if log is not None:
            log.write(f"{time.monotonic():.3f} {line}")

    s = StackProcess.start(base, nodes=1, driver_args=list(args.driver_arg), on_line=on_line)
    out: dict[str, object] = {"volumes": {"block": args.block, "ext4": args.ext4},
                              "ctrl_loss_tmo": CTRL_LOSS_TMO,
                              "reconnect_delay": RECONNECT_DELAY}
    try:
        node, ctl = s.node(), s.ctl
        kube = s.work / "kubelet"
        vols: dict[str, list[tuple[csi_pb2.Volume, str, str]]] = {"block": [], "ext4": []}
        lat: dict[str, list[float]] = {}
        for kind, count, size in (("block", args.block, 16 * MiB),
                                  ("ext4", args.ext4, 32 * MiB)):
            c = cap(kind == "block")
            for i in range(count):
                v = ctl.CreateVolume(csi_pb2.CreateVolumeRequest(
                    name=f"bench-{kind}-{i}", capacity_range=csi_pb2.CapacityRange(
                        required_bytes=size), volume_capabilities=[c], parameters=PARAMS),
                    timeout=120).volume
                staging = kube / "staging" / v.volume_id
                target = kube / "pods" / f"{kind}-{i}" / "vol"
                staging.mkdir(parents=True)
                target.parent.mkdir(parents=True)
                lat.setdefault(f"NodeStageVolume {kind}", []).append(timed(
                    node.NodeStageVolume, csi_pb2.NodeStageVolumeRequest(
                        volume_id=v.volume_id, staging_target_path=str(staging),
                        volume_capability=c, volume_context=v.volume_context)))
                lat.setdefault(f"NodePublishVolume {kind}", []).append(timed(
                    node.NodePublishVolume, csi_pb2.NodePublishVolumeRequest(
                        volume_id=v.volume_id, staging_target_path=str(staging),
                        target_path=str(target), volume_capability=c)))
                vols[kind].append((v, str(staging), str(target)))
        out["rpc_seconds"] = {k: {"n": len(v), "p50": pct(v, 50), "p99": pct(v, 99),
                                  "max": max(v)} for k, v in lat.items()}
        for v, staging, target in vols["ext4"]:
            node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
                volume_id=v.volume_id, target_path=target), timeout=120)
            node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
                volume_id=v.volume_id, staging_target_path=staging), timeout=120)
        out["recovery"] = outage(s, vols["block"], args.outage)
    finally:
        rc = s.stop()
        if log is not None:
            log.close()
        left = leftovers(base)
        shutil.rmtree(base, ignore_errors=True)
    out["stack_exit"] = rc
    out["leftovers"] = {k: v for k, v in left.items() if v}
    return out


def outage(s: StackProcess, vols: list[tuple[csi_pb2.Volume, str, str]],
           seconds: float) -> dict[str, object]:
    node = s.node()

    def normal(v: csi_pb2.Volume, target: str) -> bool:
        try:
            r = node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
                volume_id=v.volume_id, volume_path=target), timeout=30)
        except grpc.RpcError:
            return False
        return not r.volume_condition.abnormal

    bad = [v.volume_id for v, _, t in vols if not normal(v, t)]
    if bad:
        raise RuntimeError(f"volumes abnormal before the outage: {bad}")
    back = threading.Event()
    t_back: list[float] = []

    def watch_rds() -> None:
        # The RDS is back when its control socket says it is no longer rebooting.
        while s.rebooting():
            time.sleep(0.01)
        t_back.append(time.monotonic())
        back.set()

    s.reboot(seconds)
    t_down = time.monotonic()
    print(f"{t_down:.3f} RDS down for {seconds:g}s", flush=True)
    threading.Thread(target=watch_rds, daemon=True).start()
    # During the outage: wait for the kernel to give up (controllers deleted).
    nqns = [v.volume_context["nqn"] for v, _, _ in vols]
    deleted_at = None
    while not back.is_set():
        if deleted_at is None and not any(s.controllers("node-1", n) for n in nqns):
            deleted_at = time.monotonic() - t_down
        time.sleep(0.1)
    print(f"{t_back[0]:.3f} RDS back", flush=True)
    pending = {v.volume_id: (v, t) for v, _, t in vols}
    recovered: dict[str, float] = {}
    deadline = t_back[0] + 120
    while pending and time.monotonic() < deadline:
        for vid, (v, t) in list(pending.items()):
            if normal(v, t):
                recovered[vid] = time.monotonic() - t_back[0]
                del pending[vid]
    times = sorted(recovered.values())
    target = RECONNECT_DELAY + 2.0
    worst = times[-1] if times and not pending else None
    return {
        "outage_seconds": seconds,
        "controllers_deleted_after": round(deleted_at, 2) if deleted_at is not None else None,
        "volumes": len(vols),
        "recovered": len(recovered),
        "first_normal": round(times[0], 3) if times else None,
        "p50_normal": round(pct(times, 50), 3) if times else None,
        "all_normal": round(worst, 3) if worst is not None else None,
        "target": target,
        "met": worst is not None and worst < target,
        "never_recovered": sorted(pending),
    }


def print_table(r: dict[str, object]) -> None:
    print(f"\nstage/publish, one after another "
          f"({r['volumes']['block']} block, {r['volumes']['ext4']} ext4 volumes):")  # type: ignore[index]
    print(f"  {'RPC':<26} {'n':>3} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, v in r["rpc_seconds"].items():  # type: ignore[attr-defined]
        print(f"  {name:<26} {v['n']:>3} {v['p50'] * 1000:>8.1f} {v['p99'] * 1000:>8.1f} "
              f"{v['max'] * 1000:>8.1f}")
    rec = r["recovery"]
    assert isinstance(rec, dict)
    print(f"\noutage of {rec['outage_seconds']:g}s with {rec['volumes']} block volumes attached "
          f"(ctrlLossTmo={r['ctrl_loss_tmo']}, reconnectDelay={r['reconnect_delay']}):")
    print(f"  controllers deleted by the kernel  {rec['controllers_deleted_after']} s after "
          "the RDS went down")
    print(f"  after the RDS answered again:      first volume normal {rec['first_normal']} s, "
          f"half {rec['p50_normal']} s, all {rec['recovered']} normal {rec['all_normal']} s")
    verdict = "met" if rec["met"] else "MISSED"
    print(f"  target: every volume normal within reconnect_delay + 2 s = {rec['target']:g} s: "
          f"{verdict}")
    if rec["never_recovered"]:
        print(f"  never recovered: {rec['never_recovered']}")
    if r["leftovers"]:
        print(f"  LEFTOVERS after teardown: {r['leftovers']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--block", type=int, default=50)
    parser.add_argument("--ext4", type=int, default=20)
    parser.add_argument("--outage", type=float, default=CTRL_LOSS_TMO + 4.0,
                        help="seconds the RDS stays down (default ctrl_loss_tmo + 4)")
    parser.add_argument("--driver-arg", action="append", default=[],
                        help="extra rds-csi flag, e.g. --driver-arg=--monitor-interval=1")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--log", help="write the stack's output (driver logs) to this file, "
                        "each line prefixed with the monotonic clock")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not shutil.which("losetup"):
        print("bench_node: needs root, e2fsprogs and util-linux (loop devices, mounts); "
              "skipped", flush=True)
        return 0
    r = run(args)
    print_table(r)
    if args.json:
        print(json.dumps(r, indent=2))
    rec = r["recovery"]
    assert isinstance(rec, dict)
    return 0 if rec["met"] and not r["leftovers"] and r["stack_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
