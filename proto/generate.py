"""Generate the Python stubs for proto/csi.proto into rds_csi.csi.

Run as ``python proto/generate.py [--out DIR]`` (``make proto`` does this).
The stubs are committed; a test regenerates them into a temporary directory
and fails when the committed files differ, so the proto and the code cannot
drift apart. Output depends on the grpcio-tools version, which is pinned in
pyproject.toml for that reason.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = ROOT / "driver" / "rds_csi" / "csi"
GENERATED = ("csi_pb2.py", "csi_pb2.pyi", "csi_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """Write the generated files into ``out`` and return their paths."""
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable, "-m", "grpc_tools.protoc",
                f"-I{PROTO_DIR}", f"-I{well_known}",
                f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
                "csi.proto",
            ],
            check=True,
            cwd=PROTO_DIR,
        )
        written = []
        for name in GENERATED:
            text = (Path(tmp) / name).read_text()
            if name == "csi_pb2_grpc.py":
                # protoc emits a top-level import; inside a package it must be relative.
                text = re.sub(r"^import csi_pb2 as", "from . import csi_pb2 as", text, flags=re.M)
            target = out / name
            target.write_text(text)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for path in generate(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
