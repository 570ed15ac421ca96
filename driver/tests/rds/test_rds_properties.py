"""Property tests: wrapped output round-trips through the parser; the builder cannot be injected."""

from __future__ import annotations

import re

import ros_format as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rds_csi.errors import InvalidValue
from rds_csi.rds import commands as C
from rds_csi.rds.client import disk_from_item
from rds_csi.rds.parser import parse_print

LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
PATH_CHARS = LOWER + "ABCXYZ._-"
COMMENT_CHARS = LOWER + "ABZ_.,:/@+%()#-"


def _word(first: str, rest: str, max_size: int) -> st.SearchStrategy[str]:
    return st.builds(str.__add__, st.sampled_from(first), st.text(rest, max_size=max_size - 1))


SLOT = _word(LOWER, LOWER + "-", 32)
PATH = st.builds(
    lambda lead, parts: lead + "/".join(parts),
    st.sampled_from(["", "/"]),
    st.lists(_word(LOWER + "_", PATH_CHARS, 20), min_size=1, max_size=6),
)
NQN = st.builds(
    lambda y, m, dom, suffix: f"nqn.{y}-{m:02d}.{'.'.join(dom)}:{suffix}",
    st.integers(2000, 2099),
    st.integers(1, 12),
    st.lists(st.text(LOWER + "-", min_size=1, max_size=10), min_size=2, max_size=4),
    st.text(LOWER + ".:-", min_size=1, max_size=60),
)
COMMENT = st.lists(st.text(COMMENT_CHARS, min_size=1, max_size=20), min_size=1, max_size=6).map(
    " ".join
)

DISK = st.builds(
    F.DiskSpec,
    slot=SLOT,
    file_path=PATH,
    size_bytes=st.integers(0, 2**50),
    file_size_bytes=st.integers(1, 2**20).map(lambda n: n * 2**20),
    export=st.booleans(),
    port=st.integers(1, 65535),
    nqn=NQN,
    hosts=st.lists(NQN, max_size=3).map(tuple),
    comment=st.none() | COMMENT,
    disabled=st.booleans(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    disks=st.lists(DISK, min_size=0, max_size=4),
    width=st.integers(30, 200),
    style=st.sampled_from(["char", "keep", "drop"]),
    fixed_columns=st.booleans(),
)
def test_wrapped_detail_round_trips(
    disks: list[F.DiskSpec], width: int, style: str, fixed_columns: bool
) -> None:
    text = F.format_detail(disks, width, style, fixed_columns)
    items = parse_print(text)
    assert [i.index for i in items] == list(range(len(disks)))
    for spec, item in zip(disks, items, strict=True):
        d = disk_from_item(item)
        assert d.slot == spec.slot
        assert d.model == spec.file_path
        assert d.file_path == spec.file_path
        assert d.size_bytes == spec.size_bytes
        assert d.file_size_bytes == spec.file_size_bytes
        assert d.nvme_export == spec.export
        assert d.port == spec.port
        assert d.nqn == spec.nqn
        assert d.allow_host_names == spec.hosts
        assert d.comment == spec.comment
        assert d.disabled == spec.disabled
        assert d.flags == F.flags_of(spec)
        assert len(d.properties) == 25


# --- builder: arbitrary input either fails validation or yields exactly the whitelisted values --

# What a command line may contain: validated values need nothing else. No `;`, newline, `$`,
# backslash, `?`, `{`; brackets only in the `[find ...]` forms the builder itself writes.
_SAFE_LINE = re.compile(r'[A-Za-z0-9 _.,:/@+%()#="~^\[\]-]*')
_FIND = re.compile(r'\[find (slot|name)="([^"\\$\[\]]*)"\]')
_ARG = re.compile(r'([a-z-]+)=("[^"\\$\[\]]*"|[^ "\[\]]+|\[find slot="[a-z0-9-]*"\])')


def _assert_safe(cmd: str) -> None:
    assert "\n" not in cmd and "\r" not in cmd
    assert _SAFE_LINE.fullmatch(cmd), cmd
    # every `[` opens one of our find expressions; quotes come in pairs around plain values
    assert cmd.count("[") == len(_FIND.findall(cmd)) == cmd.count("]")
    assert cmd.count('"') % 2 == 0


ANY_TEXT = st.text(max_size=60) | st.sampled_from(
    [
        'a"; /system reboot; "',
        "a\nb",
        "$x",
        "[/system reboot]",
        "a\\",
        "pvc-x;",
        "x]",
        "..",
        "/a/../b",
        'nqn.2000-02.com.x:y"',
        "a b",
        "a=b",
        "",
        "-",
        "A",
    ]
)
ANY_INT = st.integers(-(2**62), 2**62) | st.sampled_from([0, 1, 1023, 1024, 65535, 65536])


@settings(max_examples=300, deadline=None)
@given(
    slot=ANY_TEXT,
    path=ANY_TEXT,
    size=ANY_INT,
    port=ANY_INT,
    nqn=ANY_TEXT,
    hosts=st.lists(ANY_TEXT, max_size=2),
    comment=ANY_TEXT,
    src=st.none() | ANY_TEXT,
)
def test_add_is_injection_free(
    slot: str,
    path: str,
    size: int,
    port: int,
    nqn: str,
    hosts: list[str],
    comment: str,
    src: str | None,
) -> None:
    export = C.NvmeExport(nqn=nqn, port=port, allow_host_names=tuple(hosts))
    try:
        cmd = C.add_file_disk(slot, path, size, export=export, comment=comment, copy_from_slot=src)
    except InvalidValue:
        return
    _assert_safe(cmd)
    assert cmd.startswith("/disk add ")
    args = dict(_ARG.findall(cmd[len("/disk add ") :]))
    assert " ".join(f"{k}={v}" for k, v in args.items()) == cmd[len("/disk add ") :]
    assert args["slot"] == f'"{slot}"'
    assert args["file-path"] == f'"{path}"'
    assert args["nvme-tcp-server-nqn"] == f'"{nqn}"'
    assert args["nvme-tcp-server-port"] == str(port)
    assert args.get("comment", '""') == f'"{comment}"'
    assert args.get("nvme-tcp-server-allow-host-name", '""') == '"' + ",".join(hosts) + '"'
    assert args.get("copy-from") == (None if src is None else f'[find slot="{src}"]')
    unit = args["file-size"][-1]
    factor = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit]
    assert int(args["file-size"][:-1]) * factor == size


@settings(max_examples=300, deadline=None)
@given(value=ANY_TEXT, flag=st.booleans(), size=ANY_INT)
def test_other_commands_are_injection_free(value: str, flag: bool, size: int) -> None:
    builders = [
        lambda: C.set_file_size(value, size),
        lambda: C.set_export(value, flag),
        lambda: C.set_comment("pvc-a", value),
        lambda: C.set_allowed_hosts("pvc-a", [value]),
        lambda: C.remove_disk(value),
        lambda: C.print_disk(value),
        lambda: C.print_disks(value),
        lambda: C.print_pool(value),
        lambda: C.print_file(value),
        lambda: C.remove_file(value),
        lambda: C.monitor_traffic(value),
    ]
    for build in builders:
        try:
            cmd = build()
        except InvalidValue:
            continue
        _assert_safe(cmd)
        stripped = value.removeprefix("/")
        assert (
            f'"{value}"' in cmd
            or f'"{stripped}"' in cmd
            or f'"^{value}"' in cmd
            or f" {value} " in cmd
            or value == ""
        )


@given(value=st.text(max_size=40))
def test_validators_accept_only_their_alphabet(value: str) -> None:
    for check, alphabet in (
        (C.check_slot, r"[a-z0-9-]*"),
        (C.check_nqn, r"[a-z0-9.:-]*"),
        (C.check_path, r"[A-Za-z0-9._/-]*"),
        (C.check_comment, r"[A-Za-z0-9_.,:/@+%()# -]*"),
    ):
        try:
            check(value)
        except InvalidValue:
            continue
        assert re.fullmatch(alphabet, value)
