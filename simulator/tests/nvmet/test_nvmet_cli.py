"""`rds-sim serve --export-backend nvmet` flags (real configfs: see the kernel tier)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rds_sim.cli import build_parser, main


def test_nvmet_flags_parse() -> None:
    args = build_parser().parse_args([
        "serve", "--state-dir", "/tmp/x", "--export-backend", "nvmet",
        "--nvmet-configfs", "/tmp/cfg", "--nvmet-address", "192.168.77.1", "--nvmet-port", "4420",
    ])
    assert args.nvmet_configfs == Path("/tmp/cfg")
    assert args.nvmet_address == "192.168.77.1" and args.nvmet_port == 4420


def test_nvmet_defaults() -> None:
    args = build_parser().parse_args(["serve", "--state-dir", "/tmp/x"])
    assert args.nvmet_configfs == Path("/sys/kernel/config/nvmet")
    assert args.nvmet_address == "0.0.0.0" and args.nvmet_port is None


def test_serve_without_nvmet_configfs_says_what_to_do(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    status = main(["serve", "--state-dir", str(tmp_path / "state"), "--password-file", str(pw),
                   "--export-backend", "nvmet", "--nvmet-configfs", str(tmp_path / "none")])
    assert status == 2
    assert "modprobe nvmet" in capsys.readouterr().err
