"""Printers: wrapping, mid-token splits, headers, sizes, key: value blocks."""

from __future__ import annotations

import pytest

from rds_sim.device import Device
from rds_sim.routeros.values import group_digits, human_size, parse_size

from .conftest import Run, add

HEADER_80 = [
    "Flags: X - DISABLED; B - BLOCK-DEVICE; M - MOUNTED; t - NVME-TCP-EXPORT;",
    "i - ISCSI-EXPORT; n - NFS-SHARING; s - SMB-SHARING; r - RAID-MEMBER",
]


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (512, "512"),
        (53_687_091_200, "53 687 091 200"),
        (7_681_574_174_720, "7 681 574 174 720"),
    ],
)
def test_group_digits(n: int, text: str) -> None:
    assert group_digits(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (50 << 30, "50.0GiB"),
        (1 << 30, "1024.0MiB"),
        (10 << 30, "10.0GiB"),
        (1536 << 20, "1.5GiB"),
        (1 << 40, "1024.0GiB"),
        (512, "512B"),
        (4096, "4.0KiB"),
    ],
)
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("1G", 1 << 30),
        ("10g", 10 << 30),
        ("512K", 512 << 10),
        ("1T", 1 << 40),
        ("1024M", 1 << 30),
        ("123", 123),
        ("1.5G", 1536 << 20),
        ("abc", None),
        ("1X", None),
        ("", None),
    ],
)
def test_parse_size(text: str, n: int | None) -> None:
    assert parse_size(text) == n


def test_empty_detail_prints_flags_header(run: Run) -> None:
    out = run("/disk print detail where slot=nothing").output
    assert out == "".join(line + "\r\n" for line in HEADER_80)


def test_empty_table_prints_headers(run: Run) -> None:
    out = run("/disk print where slot=nothing").output.split("\r\n")
    assert out[:2] == HEADER_80
    assert out[2] == "Columns: SLOT, TYPE, MODEL, SIZE"
    assert out[3].startswith("#")


def test_every_line_ends_with_crlf(run: Run) -> None:
    add(run, "pvc-1")
    for line in (
        "/disk print",
        "/disk print detail",
        "/file print detail",
        "/system resource print",
    ):
        out = run(line).output
        assert out.endswith("\r\n")
        assert "\n" not in out.replace("\r\n", "")


LONG = "storage-pool/k8s/" + "very-long-directory-name-" * 4 + "pvc-0123456789abcdef.img"


@pytest.mark.parametrize("width", [80, 60, 40])
def test_detail_wraps_within_width_and_splits_long_tokens(run: Run, width: int) -> None:
    run(f"/disk add type=file file-path={LONG} file-size=1G slot=long")
    out = run("/disk print detail where slot=long", width=width).output
    lines = out.split("\r\n")
    body = [ln for ln in lines if ln.startswith(" ")]
    assert all(len(ln) <= width for ln in lines)
    assert body[0].startswith(" 0 B ")
    assert all(ln.startswith(" " * 5) for ln in body[1:] if ln)
    # a line ending in a non-space was split mid-token: re-join without a space
    joined = ""
    for ln in body:
        joined += ln[5:]
    assert f"file-path={LONG} " in joined
    assert f'model="{LONG}" ' in joined
    split = [ln for ln in body if ln and not ln.endswith(" ")]
    assert split, "the long token must have been split"
    assert all(len(ln) == width for ln in split)


def test_detail_exact_layout_at_80(run: Run) -> None:
    run(
        "/disk add type=file file-path=/storage-pool/test.img file-size=50G slot=pvc-x"
        ' nvme-tcp-export=yes comment="test volume"'
    )
    out = run("/disk print detail where slot=pvc-x").output
    assert out.split("\r\n") == [
        *HEADER_80,
        " 0 Bt ;;; test volume",
        '      type=file slot="pvc-x" slot-default="" parent="" fs=- ',
        '      model="/storage-pool/test.img" size=53 687 091 200 mount-filesystem=yes ',
        "      mount-read-only=no compress=no sector-size=512 raid-master=none ",
        '      nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="pvc-x" ',
        '      nvme-tcp-server-allow-host-name="" iscsi-export=no nfs-sharing=no ',
        "      smb-sharing=no media-sharing=no media-interface=none swap=no ",
        "      file-path=/storage-pool/test.img file-size=50.0GiB file-offset=0 ",
        "",
        "",
    ]


def test_terse_is_never_wrapped(run: Run) -> None:
    run(f"/disk add type=file file-path={LONG} file-size=1G slot=long")
    lines = run("/disk print terse where slot=long", width=40).output.split("\r\n")
    assert len(lines) == 2 and lines[1] == ""
    assert lines[0].startswith(' 0 B type=file slot="long"')
    assert "size=1 073 741 824" in lines[0]


def test_as_value(run: Run) -> None:
    add(run, "pvc-1", "10G")
    out = run("/disk print as-value where slot=pvc-1").output
    assert out.count("\r\n") == 1
    fields = dict(f.split("=", 1) for f in out.strip().split(";"))
    assert fields[".id"].startswith("*")
    assert fields["size"] == str(10 << 30)
    assert fields["file-size"] == str(10 << 30)
    assert fields["nvme-tcp-export"] == "true"
    assert fields["slot"] == "pvc-1"


def test_count_only(run: Run) -> None:
    add(run, "a")
    add(run, "b")
    assert run("/disk print count-only").output == "3\r\n"
    assert run("/disk print count-only where type=file").output == "2\r\n"
    assert run("/disk print count-only where slot=zzz").output == "0\r\n"


def test_table_right_aligns_sizes_and_puts_comment_above(run: Run) -> None:
    add(run, "pvc-1", "10G")
    run('/disk set pvc-1 comment="my vol"')
    lines = run("/disk print").output.split("\r\n")
    assert lines[3] == "#    SLOT          TYPE  MODEL                                  SIZE"
    assert lines[4] == "0 BM storage-pool  raid  RAID6                       107 374 182 400"
    assert lines[5] == ";;; my vol"
    assert lines[6] == "1 Bt pvc-1         file  storage-pool/k8s/pvc-1.img   10 737 418 240"


def test_system_resource_keys_right_aligned(run: Run) -> None:
    lines = run("/system resource print").output.split("\r\n")
    assert lines[-1] == "" and lines[-2] == ""
    colons = {ln.index(":") for ln in lines if ln}
    assert len(colons) == 1
    assert "         board-name: RDS2216" in lines
    assert any(ln.strip().startswith("uptime: ") for ln in lines)
    assert lines[0].startswith("  ") or lines[0].lstrip().startswith("uptime")
    longest = max(lines, key=lambda ln: len(ln.split(":")[0].strip()))
    assert longest.startswith("  architecture-name: ")


def test_identity_print_and_set(run: Run, device: Device) -> None:
    assert run("/system identity print").output == "  name: rds\r\n\r\n"
    run('/system identity set name="RDS one"')
    assert run("/system identity print").output == "  name: RDS one\r\n\r\n"
    assert device.identity == "RDS one"


def test_monitor_traffic(run: Run, device: Device) -> None:
    add(run, "pvc-1")
    device.set_traffic("pvc-1", read_ops=5, write_ops=7, read_bps=0, write_bps=12_800_000)
    out = run("/disk monitor-traffic pvc-1 once").output
    assert out == (
        "   read-ops-per-second: 5\r\n"
        "  write-ops-per-second: 7\r\n"
        "             read-rate: 0bps\r\n"
        "            write-rate: 12.8Mbps\r\n"
        "\r\n"
    )


def test_file_print_detail(run: Run) -> None:
    add(run, "pvc-x", "10G")
    lines = run('/file print detail where name~"pvc-x"').output.split("\r\n")
    assert lines[0] == " 0   name=storage-pool/k8s/pvc-x.img "
    assert lines[1].startswith("     type=.img file size=10.0GiB last-modified=")
    assert lines[2] == ""


def test_file_directories_appear(run: Run) -> None:
    add(run, "pvc-x")
    out = run("/file print as-value where type=directory").output
    names = [dict(f.split("=", 1) for f in ln.split(";"))["name"] for ln in out.split("\r\n") if ln]
    assert names == ["storage-pool", "storage-pool/k8s"]
