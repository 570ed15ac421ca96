"""Property test: whatever disks are created, `print detail` (any width) and `print terse`
re-parse to the same properties. The re-parser here is written from ROUTEROS.md alone."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rds_sim.device import Device

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
NEXT_KEY = re.compile(r" (?=[a-z][a-z0-9.-]*=)")


@dataclass
class Spec:
    slot: str
    comment: str
    size: int
    port: int
    nqn: str
    hosts: str
    export: bool
    disabled: bool


def q(text: str) -> str:
    """Quote for the RouterOS command line."""
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{out}"'


specs = st.builds(
    Spec,
    slot=st.text(PRINTABLE, min_size=1, max_size=32),
    comment=st.text(PRINTABLE, max_size=40),
    size=st.integers(min_value=1, max_value=1 << 40),
    port=st.integers(min_value=1, max_value=65535),
    nqn=st.text(PRINTABLE, min_size=1, max_size=60),
    hosts=st.lists(st.from_regex(r"nqn\.[a-z0-9.:-]{1,20}", fullmatch=True), max_size=3).map(
        ",".join
    ),
    export=st.booleans(),
    disabled=st.booleans(),
)


def unquote(value: str) -> str:
    assert value.startswith('"') and value.endswith('"'), value
    out, i = [], 1
    while i < len(value) - 1:
        if value[i] == "\\":
            nxt = value[i + 1]
            if nxt in '"\\':
                out.append(nxt)
                i += 2
            elif nxt in "ntr":
                out.append({"n": "\n", "t": "\t", "r": "\r"}[nxt])
                i += 2
            else:
                out.append(chr(int(value[i + 1 : i + 3], 16)))
                i += 3
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def tokens(body: str) -> dict[str, str]:
    """`k=v k="q \\" v" size=1 073` -> dict; quoted values may hold spaces and `=`."""
    props: dict[str, str] = {}
    i = 0
    body = body.rstrip(" ")
    while i < len(body):
        eq = body.index("=", i)
        key = body[i:eq]
        j = eq + 1
        if body[j : j + 1] == '"':
            k = j + 1
            while body[k] != '"':
                k += 2 if body[k] == "\\" else 1
            value, i = body[j : k + 1], k + 2
            props[key] = unquote(value)
        else:
            m = NEXT_KEY.search(body, j)
            end = m.start() if m else len(body)
            props[key], i = body[j:end], end + 1
    return props


def parse_detail(out: str) -> list[tuple[str, str, dict[str, str]]]:
    """-> [(flags, comment, props)]; lines ending in a non-space continue mid-token."""
    items: list[tuple[str, str, dict[str, str]]] = []
    lines = out.split("\r\n")
    n = 0
    while n < len(lines) and not re.match(r"^ *\d+ ", lines[n]):
        n += 1
    while n < len(lines) and lines[n]:
        m = re.match(r"^( *\d+ )(\S*) *", lines[n])
        assert m
        col = m.end()
        flags = m.group(2) if not lines[n][m.start(2) :].startswith(";;;") else ""
        if flags:
            col = m.end()
        rest = lines[n][col:]
        comment = ""
        body = ""
        if rest.startswith(";;; "):
            comment = rest[4:]
            n += 1
            col = len(lines[n]) - len(lines[n].lstrip(" "))
        else:
            body = rest
            n += 1
            # continuation lines are indented to the content column
        while n < len(lines) and lines[n]:
            body += lines[n][col:]
            n += 1
        items.append((flags, comment, tokens(body)))
        n += 1  # blank line after each item
    return items


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(specs, min_size=1, max_size=3), st.integers(min_value=30, max_value=200))
def test_print_detail_round_trips(disks: list[Spec], width: int) -> None:
    slots = {d.slot for d in disks}
    nqns = {d.nqn for d in disks}
    if len(slots) < len(disks) or len(nqns) < len(disks) or "storage-pool" in nqns | slots:
        return
    with tempfile.TemporaryDirectory() as tmp:
        dev = Device(Path(tmp))
        for n, d in enumerate(disks):
            line = (
                f"/disk add type=file file-path=storage-pool/k8s/v{n}.img file-size={d.size}"
                f" slot={q(d.slot)} nvme-tcp-server-port={d.port} nvme-tcp-server-nqn={q(d.nqn)}"
                f" nvme-tcp-server-allow-host-name={q(d.hosts)} comment={q(d.comment)}"
                f" nvme-tcp-export={'yes' if d.export else 'no'}"
                f" disabled={'yes' if d.disabled else 'no'}"
            )
            r = dev.execute(line)
            assert r.exit_status == 0, (line, r.output)
        out = dev.execute("/disk print detail where type=file", width=width).output
        # comment lines are not wrapped (README); everything else fits the width
        assert all(len(ln) <= width for ln in out.split("\r\n") if ";;; " not in ln), out
        parsed = parse_detail(out)
        assert len(parsed) == len(disks), out
        terse = dev.execute("/disk print terse where type=file").output.split("\r\n")
        for (flags, comment, props), d, terse_line in zip(parsed, disks, terse, strict=False):
            assert props["slot"] == d.slot
            assert comment == d.comment
            assert int(props["size"].replace(" ", "")) == d.size
            assert props["nvme-tcp-server-port"] == str(d.port)
            assert props["nvme-tcp-server-nqn"] == d.nqn
            assert props["nvme-tcp-server-allow-host-name"] == d.hosts
            assert props["nvme-tcp-export"] == ("yes" if d.export else "no")
            assert ("X" in flags) == d.disabled
            assert ("t" in flags) == d.export
            assert props["file-path"] == props["model"]
            m = re.match(r"^ *\d+ \S+ +(.*)$", terse_line)
            assert m, terse_line
            tprops = tokens(m.group(1))
            assert tprops.get("comment", "") == d.comment
            assert {k: v for k, v in tprops.items() if k != "comment"} == props
