"""`make bench`: run every benchmark and print its figures.

Benchmarks measure; they do not gate. Each one prints its own table and whether it met
its target; this runner only fails when a benchmark could not run at all.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

BENCHES = [
    ("simulator: SSH command round-trip (rds-sim bench)", [str(BIN / "rds-sim"), "bench"]),
    ("controller: CreateVolume/DeleteVolume over gRPC",
     [sys.executable, str(ROOT / "e2e" / "bench_controller.py")]),
    ("node: stage/publish latency, recovery of 50 volumes after a long outage (rds-sim stack)",
     [sys.executable, str(ROOT / "e2e" / "bench_node.py")]),
]


def main() -> int:
    crashed = []
    for title, cmd in BENCHES:
        print(f"\n=== {title}", flush=True)
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT)
        took = time.monotonic() - start
        # rds-sim bench exits 1 when its target is missed; it has printed why.
        if proc.returncode not in (0, 1):
            crashed.append(title)
        print(f"--- {title}: exit {proc.returncode} after {took:.0f}s", flush=True)
    if crashed:
        print("benchmarks that could not run: " + ", ".join(crashed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
