"""`make run`: the driver against the embedded simulator, and how to talk to it.

Starts ``rds-sim serve`` (the RDS stand-in, on 127.0.0.1) and ``rds-csi`` in controller mode
talking to it over SSH with a pinned host key, then prints the commands that exercise it.
When ``rds-sim stack`` is available (simulator + NVMe fabric + node plugins) it is used
instead. Ctrl-C stops everything gracefully.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import paramiko

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _stack_available() -> bool:
    probe = subprocess.run([str(BIN / "rds-sim"), "stack", "--help"], capture_output=True)
    return probe.returncode == 0


def _keys(work: Path) -> str:
    """Client key + authorized_keys + host key; returns the host key's SHA256 fingerprint."""
    if not (work / "id_rsa").exists():
        key = paramiko.RSAKey.generate(2048)
        key.write_private_key_file(str(work / "id_rsa"))
        (work / "authorized_keys").write_text(f"{key.get_name()} {key.get_base64()}\n")
    if not (work / "host_key").exists():
        paramiko.RSAKey.generate(2048).write_private_key_file(str(work / "host_key"))
    host = paramiko.RSAKey.from_private_key_file(str(work / "host_key"))
    return "SHA256:" + base64.b64encode(hashlib.sha256(host.asbytes()).digest()).decode().rstrip(
        "=")


def run_simple(work: Path) -> int:
    fingerprint = _keys(work)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default=".work")
    parser.add_argument("--simple", action="store_true",
                        help="controller + simulator only, even if rds-sim stack exists")
    args = parser.parse_args()
    work = (ROOT / args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not args.simple and _stack_available():
        endpoint = f"unix://{work / 'csi.sock'}"
        return subprocess.call([str(BIN / "rds-sim"), "stack", "--csi-endpoint", endpoint,
                                "--workdir", str(work / "stack")])
    return run_simple(work)


if __name__ == "__main__":
    sys.exit(main())
