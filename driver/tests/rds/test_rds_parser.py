"""Parser tables from the hand-written ROUTEROS.md samples."""

from __future__ import annotations

import pytest
import ros_samples as S

from rds_csi import errors
from rds_csi.errors import RdsParseError
from rds_csi.rds.client import disk_from_item, file_from_item, pool_from_item
from rds_csi.rds.parser import (
    check_errors,
    parse_as_value,
    parse_bool,
    parse_int,
    parse_key_values,
    parse_percent,
    parse_print,
    parse_properties,
    parse_size,
)


def test_samples_are_wrapped_as_claimed() -> None:
    for text, width in (
        (S.W80_FOLDED, 80),
        (S.W80_ONE_DISK_KEEP_SPACES, 80),
        (S.W40_SNAPSHOT_DROPPED_SPACES, 40),
        (S.W80_THREE_ITEMS, 80),
    ):
        lines = [ln for ln in text.split("\r\n") if not ln.startswith("Flags:")]
        assert max(len(ln) for ln in lines) <= width
    folded = S.W80_FOLDED.split("\r\n")[1:-3]
    assert all(len(ln) == 80 for ln in folded)


def test_one_disk_keep_spaces_with_comment() -> None:
    [item] = parse_print(S.W80_ONE_DISK_KEEP_SPACES)
    assert item.index == 0
    assert item.flags == {"B", "t"}
    assert item.comment == "k8s pvc default/data-0"
    d = disk_from_item(item)
    assert d.slot == "pvc-5f0c1e2a"
    assert d.type == "file"
    assert d.model == "/storage-pool/k8s/pvc-5f0c1e2a.img"
    assert d.file_path == "/storage-pool/k8s/pvc-5f0c1e2a.img"
    assert d.size_bytes == 10 * 2**30
    assert d.file_size_bytes == 10 * 2**30
    assert d.nvme_export is True
    assert d.port == 4420
    assert d.nqn == "nqn.2000-02.com.mikrotik:pvc-5f0c1e2a"
    assert d.allow_host_names == ()
    assert d.comment == "k8s pvc default/data-0"
    assert d.disabled is False
    assert d.properties["fs"] == "-"
    assert d.properties["slot-default"] == ""
    assert d.properties["file-offset"] == "0"
    assert len(d.properties) == 25


def test_folded_at_80_rejoins_splits_inside_keys_quoted_and_unquoted_values() -> None:
    [item] = parse_print(S.W80_FOLDED)
    p = item.props
    assert p["parent"] == ""
    assert p["model"] == "/storage-pool/kubernetes/volumes/pvc-0123456789abcdef0123456789ab.img"
    assert p["mount-read-only"] == "no"
    assert p["nvme-tcp-server-port"] == "4421"
    assert p["nfs-sharing"] == "no"
    assert p["file-path"] == "/storage-pool/kubernetes/volumes/pvc-0123456789abcdef0123456789ab.img"
    d = disk_from_item(item)
    assert d.size_bytes == 2**40
    assert d.file_size_bytes == 2**40
    assert d.nqn == "nqn.2000-02.com.mikrotik:pvc-0123456789abcdef0123456789ab"
    assert d.allow_host_names == (
        "nqn.2014-08.org.nvmexpress:uuid:4c4c4544-0042-3610-8052-b4c04f4b4e32",
        "nqn.2014-08.org.nvmexpress:uuid:5d5d5544-0042-3610-8052-b4c04f4b4e33",
    )
    assert d.port == 4421
    assert "nvme-tcp-" not in p and "tcp-server-port" not in p


def test_narrow_40_with_dropped_separators() -> None:
    [item] = parse_print(S.W40_SNAPSHOT_DROPPED_SPACES)
    assert item.flags == {"X"}
    d = disk_from_item(item)
    assert d.slot == "snap-a1"
    assert d.disabled is True
    assert d.nvme_export is False
    assert d.model == "/storage-pool/snapshots/snap-a1.img"
    assert d.size_bytes == 2**30
    assert d.properties["mount-filesystem"] == "yes"
    assert d.properties["nvme-tcp-server-allow-host-name"] == ""
    assert d.file_path == "storage-pool/snapshots/snap-a1.img"
    assert d.file_size_bytes == 2**30
    assert d.properties["file-offset"] == "0"


def test_three_items_pool_and_two_disks() -> None:
    items = parse_print(S.W80_THREE_ITEMS)
    assert [i.index for i in items] == [0, 1, 10]
    pool = pool_from_item(items[0])
    assert items[0].comment == "system pool"
    assert items[0].flags == {"B", "M"}
    assert pool.slot == "storage-pool"
    assert pool.mount_point == "storage-pool"
    assert pool.size_bytes == 7_681_574_174_720
    assert pool.free_bytes == 7_301_927_047_168
    assert pool.use_percent == 5
    assert items[0].props["model"] == "RAID5 4x NVMe"
    a, b = (disk_from_item(i) for i in items[1:])
    assert (a.slot, a.size_bytes, a.file_size_bytes, a.comment) == (
        "pvc-a",
        5 * 2**30,
        5 * 2**30,
        None,
    )
    assert (b.slot, b.size_bytes, b.file_size_bytes) == ("pvc-b", 2**29, 2**29)
    assert b.file_path == "storage-pool/k8s/pvc-b.img"


@pytest.mark.parametrize("text", [S.EMPTY_DETAIL, "", "\r\n", S.FLAGS + "\r\n\r\n"])
def test_empty_result_with_or_without_header(text: str) -> None:
    assert parse_print(text) == []


def test_terse_lines_with_escapes() -> None:
    a, b = parse_print(S.TERSE_TWO)
    assert a.props["model"] == 'a "quoted" \\ path x'
    assert a.props["comment"] == "café"
    assert disk_from_item(a).comment == "café"
    assert parse_size(a.props["size"]) == 2**20
    d = disk_from_item(b)
    assert d.disabled is True and d.nvme_export is False and d.size_bytes == 2048


def test_as_value_one_item_per_line_and_on_one_line() -> None:
    a, b = parse_as_value(S.AS_VALUE_TWO_LINES)
    assert disk_from_item(a).size_bytes == 53_687_091_200
    assert disk_from_item(a).nvme_export is True
    assert disk_from_item(b).nvme_export is False
    assert b.props["comment"] == "x;y"
    items = parse_as_value(S.AS_VALUE_ONE_LINE)
    assert [i.props["slot"] for i in items] == ["pvc-a", "pvc-b"]
    assert parse_as_value("") == []


def test_file_detail_type_with_space() -> None:
    d, f = (file_from_item(i) for i in parse_print(S.FILE_DETAIL))
    assert (d.name, d.type, d.size_bytes) == ("storage-pool/k8s", "directory", None)
    assert d.last_modified == "2025-11-11 14:30:00"
    assert f.name == "storage-pool/k8s/pvc-x.img"
    assert f.type == ".img file"
    assert f.size_bytes == 10 * 2**30
    assert f.last_modified == "2025-11-11 14:32:41"


def test_key_values() -> None:
    kv = parse_key_values(S.SYSTEM_RESOURCE)
    assert kv["version"] == "7.24 (stable)"
    assert kv["build-time"] == "2025-10-01 08:12:44"
    assert kv["board-name"] == "RDS2216"
    assert kv["cpu-load"] == "3%"
    assert parse_key_values(S.SYSTEM_IDENTITY) == {"name": "rds-lab-1"}
    mt = parse_key_values(S.MONITOR_TRAFFIC)
    assert mt["write-rate"] == "12.8Mbps"
    assert mt["read-ops-per-second"] == "120"
    assert parse_key_values("  name: a\r\n    continued\r\n") == {"name": "a continued"}
    with pytest.raises(RdsParseError):
        parse_key_values("no colon here\r\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50.0GiB", 50 * 2**30),
        ("1024.0MiB", 2**30),
        ("1.5KiB", 1536),
        ("2.0TiB", 2 * 2**40),
        ("0.5GiB", 2**29),
        ("512B", 512),
        ("53 687 091 200", 53_687_091_200),
        ("4420", 4420),
        ("53 687091 200", 53_687_091_200),  # groups shifted by re-joining
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "GiB", "1,5GiB", "10GB", "-1", "1.0 XiB"])
def test_bad_sizes(bad: str) -> None:
    with pytest.raises(RdsParseError):
        parse_size(bad)


def test_small_value_parsers() -> None:
    assert parse_int("7 681 574 174 720") == 7_681_574_174_720
    assert parse_percent("5%") == 5
    assert [parse_bool(v) for v in ("yes", "no", "true", "false")] == [True, False, True, False]
    for bad, fn in (("5", parse_percent), ("maybe", parse_bool), ("x", parse_int)):
        with pytest.raises(RdsParseError):
            fn(bad)


def test_properties_tokenizer_edge_cases() -> None:
    assert parse_properties('a="x y" b=- c="" d=1 2 3 e=.img file') == {
        "a": "x y",
        "b": "-",
        "c": "",
        "d": "1 2 3",
        "e": ".img file",
    }
    assert parse_properties('a="\\"\\\\\\$\\n"') == {"a": '"\\$\n'}
    with pytest.raises(RdsParseError):
        parse_properties('a="unterminated')
    with pytest.raises(RdsParseError):
        parse_properties("stray a=1")


@pytest.mark.parametrize(("output", "status", "cls_name"), S.ERRORS)
def test_errors_on_either_exit_status(output: str, status: int, cls_name: str) -> None:
    cls = getattr(errors, cls_name)
    with pytest.raises(cls) as info:
        check_errors(output, status, '/disk add slot="x"')
    assert type(info.value) is cls
    assert info.value.exit_status == status
    assert info.value.command == '/disk add slot="x"'


def test_no_error_for_data_quoting_an_error_message() -> None:
    text = S.crlf(S.FLAGS, " 0   ;;; failure: no such item", '      slot="a"')
    check_errors(text, 0)
    check_errors("", 0)
    check_errors(S.W80_FOLDED, 0)
    [item] = parse_print(text)
    assert item.comment == "failure: no such item"


def test_error_after_output_of_an_earlier_command() -> None:
    with pytest.raises(errors.NoSuchItem):
        check_errors(S.SYSTEM_IDENTITY + "no such item\r\n", 1)


def test_full_width_break_after_an_unquoted_value_with_a_space() -> None:
    # `file` ends the widest line and the separator was dropped: `filesize` is no key, `size` is.
    text = S.crlf(
        " 1   name=storage-pool/k8s/pvc-x.img type=.img file",
        "     size=10.0GiB last-modified=2025-11-11 14:32:41",
    )
    [item] = parse_print(text)
    assert item.props["type"] == ".img file"
    assert parse_size(item.props["size"]) == 10 * 2**30


def test_properties_may_start_on_the_line_after_the_index() -> None:
    text = S.crlf(
        S.FLAGS,
        " 0 B t",
        "       ;;; on its own line",
        '       type=file slot="pvc-a"',
        "       size=1 024",
        "",
        " 1 X",
        '       type=file slot="pvc-b"',
    )
    a, b = parse_print(text)
    assert (a.flags, a.comment, dict(a.props)) == (
        {"B", "t"},
        "on its own line",
        {"type": "file", "slot": "pvc-a", "size": "1 024"},
    )
    assert (b.flags, b.comment, b.props["slot"]) == ({"X"}, None, "pvc-b")


def test_first_line_split_inside_the_first_key_is_not_read_as_flags() -> None:
    # folded at 10 columns: 3 characters per continuation line
    text = S.crlf(
        S.FLAGS, " 0 B t typ", "       e=f", "       ile", "        sl", "       ot=", '       "a"'
    )
    [item] = parse_print(text)
    assert item.flags == {"B", "t"}
    assert dict(item.props) == {"type": "file", "slot": "a"}


def test_kept_separator_sticking_out_past_the_width() -> None:
    # Wrapped at 30; the separator after a token that fills the line is kept as a 31st column.
    text = S.crlf(
        ' 0 B t type=file slot="pvc-ab" ',
        '       model="/storage-pool/k8',
        '       s/pvc-a.img" fs=-',
        "       size=1 024",
    )
    assert [len(line) for line in text.split("\r\n")[:4]] == [31, 30, 24, 17]
    [item] = parse_print(text)
    assert item.props["model"] == "/storage-pool/k8s/pvc-a.img"
    assert item.props["size"] == "1 024"
