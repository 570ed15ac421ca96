"""The NVMe host state a node plugin sees, read from a sysfs and a /dev tree (stdlib only).

    python3 -S nvme_snapshot.py [ROOT]     -> JSON on stdout (ROOT "/" is the running kernel)
    from nvme_snapshot import snapshot     -> the same dict, e.g. over a simulated fabric root

Used by the kernel tier to compare the real kernel with the simulated fabric: controllers
(state, subsystem NQN, path devices), subsystems (NQN, controllers, namespace heads), head block
devices (major:minor, size) and the nvme nodes in /dev.
"""

import json
import os
import re
import sys

CTRL = re.compile(r"^nvme\d+$")
HEAD = re.compile(r"^nvme\d+n\d+$")
PATH = re.compile(r"^nvme\d+c\d+n\d+$")
SUBSYS = re.compile(r"^nvme-subsys\d+$")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _ls(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def snapshot(root: str = "/") -> dict:
    sys_ = os.path.join(root, "sys")
    dev = os.path.join(root, "dev")
    ctrls = {}
    for name in _ls(os.path.join(sys_, "class", "nvme")):
        base = os.path.join(sys_, "class", "nvme", name)
        if not CTRL.match(name) or _read(os.path.join(base, "subsysnqn")) is None:
            continue
        ctrls[name] = {
            "state": _read(os.path.join(base, "state")),
            "nqn": _read(os.path.join(base, "subsysnqn")),
            "paths": [e for e in _ls(base) if PATH.match(e)],
        }
    subsystems = {}
    for name in _ls(os.path.join(sys_, "class", "nvme-subsystem")):
        base = os.path.join(sys_, "class", "nvme-subsystem", name)
        if not SUBSYS.match(name):
            continue
        entries = _ls(base)
        subsystems[name] = {
            "nqn": _read(os.path.join(base, "subsysnqn")),
            "controllers": [e for e in entries if CTRL.match(e)],
            "heads": [e for e in entries if HEAD.match(e)],
        }
    heads = {}
    for name in _ls(os.path.join(sys_, "block")):
        if HEAD.match(name):
            base = os.path.join(sys_, "block", name)
            heads[name] = {"dev": _read(os.path.join(base, "dev")),
                           "size": _read(os.path.join(base, "size"))}
    nodes = [e for e in _ls(dev) if CTRL.match(e) or HEAD.match(e)]
    return {"controllers": ctrls, "subsystems": subsystems, "heads": heads, "dev": nodes}


if __name__ == "__main__":
    print(json.dumps(snapshot(sys.argv[1] if len(sys.argv) > 1 else "/"), sort_keys=True))
