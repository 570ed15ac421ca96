"""The node's `nvme` command: forwards argv to the fabric engine over `<node-root>/nvme.sock`.

Kept free of heavy imports: it runs once per nvme invocation.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any


def request(
    path: str | os.PathLike[str], req: dict[str, Any], timeout: float | None = None
) -> dict[str, Any]:
    """One JSON line to the unix socket at `path`, one JSON line back (the fabric's protocol)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(os.fspath(path))
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply: dict[str, Any] = json.loads(buf)
    return reply


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "--node-root":
        print("usage: rds-sim nvme --node-root DIR <nvme arguments>", file=sys.stderr)
        return 1
    root, rest = args[1], args[2:]
    path = os.path.join(root, "nvme.sock")
    try:
        reply = request(path, {"argv": rest})
    except (OSError, ValueError) as e:
        print(f"rds-sim nvme: no simulated fabric at {path}: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(reply.get("stdout", ""))
    sys.stdout.flush()
    sys.stderr.write(reply.get("stderr", reply.get("error", "")))
    sys.stderr.flush()
    return int(reply.get("rc", 1))


if __name__ == "__main__":
    sys.exit(main())
