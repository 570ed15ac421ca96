"""Run every test tier this machine allows and say which ran and which were skipped.

``make test`` calls this. Each tier is a pytest run over its own directories;
a tier whose prerequisites are missing is skipped with the reason printed, and
the summary ends with one line ``N passed, N failed, N skipped`` over all
tiers. Exit status is non-zero when any test failed or errored.

Select tiers with ``--tier NAME`` (repeatable) or the TIERS environment
variable (comma separated).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _has_tests(paths: list[str]) -> bool:
    for p in paths:
        for f in (ROOT / p).rglob("test_*.py"):
            if ".venv" not in f.parts:
                return True
    return False


def _docker_available() -> str | None:
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if probe.returncode != 0:
        return "no Docker engine is running (docker info failed)"
    return None


def _kind_available() -> str | None:
    reason = _docker_available()
    if reason:
        return reason
    if shutil.which("kind") is None:
        return "kind is not installed"
    return None


def _kernel_vms_available() -> str | None:
    """The kernel tier needs qemu (TCG: no KVM) and the cached Debian kernel + initramfs;
    e2e/kernel/setup.sh installs them (apt, once) when this machine allows it."""
    if os.environ.get("RDS_CSI_KERNEL_MODE") == "local":
        return None  # this host's own kernel has nvmet and nvme-tcp
    setup = ROOT / "e2e" / "kernel" / "setup.sh"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        cache = Path(os.environ.get("RDS_CSI_KERNEL_CACHE", "/var/cache/rds-csi-kernel"))
        if shutil.which("qemu-system-x86_64") and (cache / "ready").exists():
            return None
        return "qemu or the kernel cache is missing and setup.sh needs root and apt-get"
    print("=== kernel tier: e2e/kernel/setup.sh", flush=True)
    proc = subprocess.run(["sh", str(setup)])
    if proc.returncode != 0:
        return f"e2e/kernel/setup.sh failed (exit {proc.returncode})"
    return None


# Host tools the unit and sim-stack tiers use for real (mkfs/mount on loop devices, the real
# nvme-cli checked against the simulated sysfs). Installed when missing and allowed.
HOST_TOOLS = {"mkfs.xfs": "xfsprogs", "xfs_growfs": "xfsprogs", "nvme": "nvme-cli",
              "mkfs.ext4": "e2fsprogs", "blkid": "util-linux", "losetup": "util-linux"}


def ensure_host_tools() -> None:
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"=== host tools missing ({', '.join(missing)}) and cannot be installed here "
              "(needs root and apt-get): tests that need them will say they skipped", flush=True)
        return
    print(f"=== installing host tools: {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                   env=env, check=False)


@dataclass
class Tier:
    name: str
    description: str
    paths: list[str]
    requires: Callable[[], str | None] = lambda: None
    env: dict[str, str] = field(default_factory=dict)


TIERS = [
    Tier("unit", "parsers, ID rules, state machines, simulator engine and SSH",
         ["driver/tests", "simulator/tests"]),
    Tier("sim-stack", "driver <-> simulator over real SSH and gRPC", ["e2e/simstack"]),
    Tier("kernel", "real nvmet target and nvme-tcp host in qemu micro-VMs", ["e2e/kernel"],
         requires=_kernel_vms_available),
    Tier("containers", "driver and simulator images under testcontainers",
         ["e2e/containers"], requires=_docker_available),
    Tier("kind", "Helm chart in a kind cluster with the CSI sidecars", ["kind/tests"],
         requires=_kind_available),
    Tier("load", "locust smoke run of the load scenarios", ["loadtest/tests"]),
]


@dataclass
class Outcome:
    tier: Tier
    status: str  # "ran", "skipped"
    reason: str = ""
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0


def _count(junit: Path) -> tuple[int, int, int]:
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = failed = skipped = 0
    for s in suites:
        total += int(s.get("tests", 0))
        failed += int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped += int(s.get("skipped", 0))
    return total - failed - skipped, failed, skipped


def run_tier(tier: Tier, python: str, extra: list[str]) -> Outcome:
    if not _has_tests(tier.paths):
        return Outcome(tier, "skipped", "no tests in this tier yet")
    reason = tier.requires()
    if reason:
        return Outcome(tier, "skipped", reason)
    print(f"\n=== tier {tier.name}: {tier.description}", flush=True)
    existing = [p for p in tier.paths if (ROOT / p).exists()]
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        start = time.monotonic()
        proc = subprocess.run(
            [python, "-m", "pytest", "-q", f"--junitxml={junit}", *existing, *extra],
            cwd=ROOT,
            env={**os.environ, **tier.env},
        )
        seconds = time.monotonic() - start
        if proc.returncode == 5:
            return Outcome(tier, "skipped", "pytest collected no tests", seconds=seconds)
        if not junit.exists():
            return Outcome(tier, "ran", f"pytest exited {proc.returncode} without a report",
                           failed=1, seconds=seconds)
        passed, failed, skipped = _count(junit)
        if proc.returncode not in (0, 1) and failed == 0:
            failed = 1  # interrupted or internal error: never report green
        return Outcome(tier, "ran", "", passed, failed, skipped, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tier", action="append", choices=[t.name for t in TIERS])
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest")
    args = parser.parse_args()
    wanted = args.tier or [t for t in os.environ.get("TIERS", "").split(",") if t]
    if not wanted or {"unit", "sim-stack"} & set(wanted):
        ensure_host_tools()
    outcomes = []
    for tier in TIERS:
        if wanted and tier.name not in wanted:
            outcomes.append(Outcome(tier, "skipped", "not selected"))
            continue
        outcomes.append(run_tier(tier, sys.executable, args.pytest_args))

    print("\n=== test tiers")
    for o in outcomes:
        if o.status == "ran":
            verdict = "FAILED" if o.failed else "ok"
            print(f"  {o.tier.name:<11} {verdict:<7} {o.passed} passed, {o.failed} failed, "
                  f"{o.skipped} skipped in {o.seconds:.1f}s")
        else:
            print(f"  {o.tier.name:<11} SKIPPED {o.reason}")
    passed = sum(o.passed for o in outcomes)
    failed = sum(o.failed for o in outcomes)
    skipped = sum(o.skipped for o in outcomes)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    if passed + failed == 0:
        print("no test ran", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
