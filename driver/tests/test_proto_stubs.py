"""The committed stubs must be exactly what `make proto` would generate."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "driver" / "rds_csi" / "csi"


def _generator():
    spec = importlib.util.spec_from_file_location("csi_generate", ROOT / "proto" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["csi_generate"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_proto(tmp_path) -> None:
    gen = _generator()
    gen.generate(tmp_path)
    stale = [
        name for name in gen.GENERATED
        if (tmp_path / name).read_text() != (STUBS / name).read_text()
    ]
    assert not stale, (
        f"committed stubs {stale} differ from proto/csi.proto; run `make proto` and commit"
    )


def test_stale_detection_notices_a_change(tmp_path) -> None:
    """Guard the guard: a proto edit must change the generated output."""
    gen = _generator()
    original = gen.PROTO_DIR
    edited = tmp_path / "proto"
    edited.mkdir()
    text = (original / "csi.proto").read_text()
    (edited / "csi.proto").write_text(
        text.replace("message ProbeRequest {", "message ProbeRequest {\n  string extra = 99;", 1)
    )
    gen.PROTO_DIR = edited
    try:
        out = tmp_path / "out"
        gen.generate(out)
    finally:
        gen.PROTO_DIR = original
    assert (out / "csi_pb2.py").read_text() != (STUBS / "csi_pb2.py").read_text()
