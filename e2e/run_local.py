"""`make run`: start rds-csi locally and show how to talk to it.

Until the embedded simulator stack exists this starts the driver alone, in
``all`` mode on a unix socket under the work directory, and prints the
commands that query it. Ctrl-C stops it (gracefully, like SIGTERM in a pod).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default=".work")
    args = parser.parse_args()
    work = (ROOT / args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sock = work / "csi.sock"
    endpoint = f"unix://{sock}"
    rds_csi = Path(sys.executable).parent / "rds-csi"
    cmd = [str(rds_csi), "--mode", "all", "--node-id", "local-node", "--endpoint", endpoint]
    print("starting:", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 15
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            print("rds-csi did not come up", file=sys.stderr)
            proc.kill()
            return 1
        time.sleep(0.05)
    py = os.path.relpath(sys.executable, ROOT)
    print(f"""
rds-csi is serving CSI on {endpoint}

Talk to it from another terminal (in {ROOT}):
  {py} e2e/csictl.py --endpoint {endpoint} info
  {py} e2e/csictl.py --endpoint {endpoint} caps
  {py} e2e/csictl.py --endpoint {endpoint} probe

Press Ctrl-C to stop.
""", flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
