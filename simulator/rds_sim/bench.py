"""`rds-sim bench`: how long one command takes over SSH, the way the driver will send it.

One persistent SSH connection, one exec channel per command, `/disk print detail where slot=...`
against a pool of N disks. The disks are created straight through Device.execute (fast); the
server runs in this process on 127.0.0.1, the client is paramiko. Target: p50 < 5 ms.
"""

from __future__ import annotations

import random
import secrets
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import paramiko

from .server import Simulator

P50_TARGET_MS = 5.0


def run_command(transport: paramiko.Transport, line: str) -> tuple[str, int]:
    """One exec channel: send the line, read stdout to EOF, return (output, exit status)."""
    chan = transport.open_session()
    try:
        chan.exec_command(line)
        chunks = []
        while True:
            data = chan.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode(), chan.recv_exit_status()
    finally:
        chan.close()


def percentile(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    k = max(0, min(len(sorted_ms) - 1, round(p / 100 * len(sorted_ms) + 0.5) - 1))
    return sorted_ms[k]


def summarize(times_ms: list[float]) -> dict[str, float]:
    times = sorted(times_ms)
    return {
        "p50": percentile(times, 50),
        "p90": percentile(times, 90),
        "p99": percentile(times, 99),
        "max": times[-1],
        "mean": statistics.fmean(times),
    }


def connect(port: int, password: str) -> paramiko.SSHClient:
    """A client the way the driver should make one: TCP_NODELAY, or each exec waits ~40 ms
    for a delayed ACK."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # our own simulator
    client.connect("127.0.0.1", port, username="admin", password=password, sock=sock,
                   look_for_keys=False, allow_agent=False)
    return client


def measure(state_dir: Path, disks: int, commands: int) -> dict[str, Any]:
    """Build the pool, run the commands, return timing figures in milliseconds."""
    password = secrets.token_urlsafe(12)
    sim = Simulator(state_dir, password=password, control_socket=False)
    t0 = time.perf_counter()
    for i in range(disks):
        res = sim.device.execute(
            f"/disk add type=file file-path=storage-pool/bench/pvc-{i:05d}.img file-size=1G"
            f" slot=pvc-{i:05d} nvme-tcp-export=yes"
        )
        if res.exit_status != 0:
            raise RuntimeError(f"creating disk {i} failed: {res.output!r}")
    setup_s = time.perf_counter() - t0
    rng = random.Random(1)
    lines = [f"/disk print detail where slot=pvc-{rng.randrange(disks):05d}"
             for _ in range(commands)]
    figures: dict[str, Any] = {"setup_s": setup_s}

    device_ms = []
    for line in lines:
        start = time.perf_counter()
        sim.device.execute(line)
        device_ms.append((time.perf_counter() - start) * 1000)
    figures["device.execute only"] = summarize(device_ms)

    port = sim.start()
    try:
        client = connect(port, password)
        transport = client.get_transport()
        assert transport is not None
        for _ in range(20):  # warm-up
            run_command(transport, lines[0])
        floor_ms = []
        for _ in range(min(commands, 200)):
            start = time.perf_counter()
            run_command(transport, "/system identity print")
            floor_ms.append((time.perf_counter() - start) * 1000)
        figures["ssh: /system identity print"] = summarize(floor_ms)
        ssh_ms = []
        for line in lines:
            start = time.perf_counter()
            out, status = run_command(transport, line)
            ssh_ms.append((time.perf_counter() - start) * 1000)
            if status != 0 or line.rsplit("=", 1)[1] not in out:
                raise RuntimeError(f"unexpected reply to {line!r}: {status} {out!r}")
        figures[MAIN] = summarize(ssh_ms)
        client.close()
    finally:
        sim.stop()
    return figures


MAIN = "ssh: /disk print detail where slot="


def run(disks: int = 1000, commands: int = 1000, state_dir: Path | None = None) -> int:
    """Print the figures as a table; exit 1 if p50 misses the target."""
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        figures = measure(state_dir, disks, commands)
    else:
        with tempfile.TemporaryDirectory(prefix="rds-sim-bench-") as tmp:
            figures = measure(Path(tmp), disks, commands)
    print(f"rds-sim bench: {commands} commands, one SSH connection on 127.0.0.1 (one exec "
          f"channel each), {disks} disks (created in {figures['setup_s']:.1f} s)")
    metrics = ("p50", "p90", "p99", "max", "mean")
    print(f"{'ms':<38}" + "".join(f"{m:>9}" for m in metrics))
    for name in (MAIN, "ssh: /system identity print", "device.execute only"):
        print(f"{name:<38}" + "".join(f"{figures[name][m]:>9.2f}" for m in metrics))
    p50 = figures[MAIN]["p50"]
    ok = p50 < P50_TARGET_MS
    print(f"target p50 < {P50_TARGET_MS:.0f} ms for '{MAIN}...': {'met' if ok else 'MISSED'}")
    return 0 if ok else 1
