"""Parser for RouterOS CLI output as described in ROUTEROS.md.

Written from the spec only (never from the simulator) so a misreading on either side shows up.

`print detail` output is wrapped at the console width and the device may ignore our width flag, so
wrapped lines are re-joined. For each line break we decide whether the break was a separator
between words or a split inside a word:
1. whitespace on either side of the break is kept as is (the device kept the separator);
2. otherwise a line shorter than the output's widest line was broken at a space the device
   dropped: put one space back;
3. otherwise the line is full, which means a forced split inside a token: join directly, unless
   the next line starts with `key=` and the line did not end inside a key (a separator dropped at
   exactly the full width; known keys settle `file` + `size=` against `nvme-` + `tcp-...=`).
Tokens are then read as `key=value` where a quoted value runs to its closing quote and an unquoted
value runs up to the next ` key=`, so unquoted values with spaces (`size=53 687 091 200`,
`type=.img file`) survive.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from rds_csi.errors import (
    AlreadyExists,
    NoSuchItem,
    NotEnoughSpace,
    RdsCommandError,
    RdsParseError,
    RdsSyntaxError,
)


@dataclass(frozen=True)
class Item:
    """One printed item: index, flag letters, `;;;` comment and its properties (raw strings)."""

    index: int | None
    flags: frozenset[str] = frozenset()
    comment: str | None = None
    props: Mapping[str, str] = field(default_factory=dict)


# --- errors -------------------------------------------------------------------------------

_SYNTAX_ERRORS = (
    "syntax error",
    "expected end of command",
    "expected command name",
    "bad command name",
    "input does not match any value of",
    "invalid value for argument",
    "invalid value of",
    "ambiguous value of",
    "missing value",
    "value of ",  # "value of <arg> out of range ..."
)
_ERROR_PREFIXES = ("failure:", "no such item", *_SYNTAX_ERRORS)


def _error_for(line: str, command: str, exit_status: int) -> RdsCommandError:
    low = line.lower()
    cls: type[RdsCommandError] = RdsCommandError
    if "already have" in low or "already exists" in low:
        cls = AlreadyExists
    elif "not enough space" in low or "no space" in low or "not enough disk space" in low:
        cls = NotEnoughSpace
    elif "no such item" in low:
        cls = NoSuchItem
    elif low.startswith(_SYNTAX_ERRORS):
        cls = RdsSyntaxError
    return cls(line, command=command, exit_status=exit_status)


def check_errors(stdout: str, exit_status: int, command: str = "") -> None:
    """Raise the typed error the device reported, whatever the exit status.

    Parse errors exit 0 on 7.x and runtime errors exit 1; both print to stdout. With exit 0 only
    messages starting in column 0 count, so a comment quoting an error message cannot trigger it.
    """
    lines = _lines(stdout)
    for line in lines:
        if line.lower().startswith(_ERROR_PREFIXES):
            raise _error_for(line.strip(), command, exit_status)
    if exit_status != 0:
        for line in lines:
            if line.strip().lower().startswith(_ERROR_PREFIXES):
                raise _error_for(line.strip(), command, exit_status)
        first = next((ln.strip() for ln in lines if ln.strip()), f"exit status {exit_status}")
        raise RdsCommandError(first, command=command, exit_status=exit_status)


# --- values -------------------------------------------------------------------------------

_GROUPED_INT = re.compile(r"\d+(?: +\d+)*")  # loose: re-joined wrapping may shift the groups
_HUMAN_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?(B|KiB|MiB|GiB|TiB|PiB|EiB)")
_UNIT = {"B": 0, "KiB": 1, "MiB": 2, "GiB": 3, "TiB": 4, "PiB": 5, "EiB": 6}


def parse_int(value: str) -> int:
    """An integer, possibly grouped by spaces (`53 687 091 200`)."""
    v = value.strip()
    if not _GROUPED_INT.fullmatch(v):
        raise RdsParseError(f"not an integer: {value!r}")
    return int(v.replace(" ", ""))


def parse_size(value: str) -> int:
    """Bytes from raw digits (grouped or not) or a binary human size (`50.0GiB`).

    Human sizes carry one decimal, so they are approximate; `size` (raw bytes) is exact.
    """
    v = value.strip()
    if _GROUPED_INT.fullmatch(v):
        return int(v.replace(" ", ""))
    m = _HUMAN_SIZE.fullmatch(v)
    if not m:
        raise RdsParseError(f"not a size: {value!r}")
    try:
        n = Decimal(m[1]) * (1024 ** _UNIT[m[2]])
    except InvalidOperation as e:  # pragma: no cover - the regex only admits decimals
        raise RdsParseError(f"not a size: {value!r}") from e
    return int(n.to_integral_value(rounding=ROUND_HALF_UP))


def parse_bool(value: str) -> bool:
    """`yes`/`no` in print output, `true`/`false` in as-value."""
    v = value.strip().lower()
    if v in ("yes", "true"):
        return True
    if v in ("no", "false"):
        return False
    raise RdsParseError(f"not a boolean: {value!r}")


def parse_percent(value: str) -> int:
    v = value.strip()
    if not re.fullmatch(r"\d+%", v):
        raise RdsParseError(f"not a percentage: {value!r}")
    return int(v[:-1])


# --- quoted strings and key=value tokens --------------------------------------------------

_KEY = re.compile(r"([A-Za-z.][A-Za-z0-9.-]*)=")
_UNQUOTED_END = re.compile(r"\s+(?=[A-Za-z.][A-Za-z0-9.-]*=)")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "_": " "}
_HEX2 = re.compile(r"[0-9A-F]{2}")


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a `"..."` string starting at `pos`; returns (value, position after the quote).

    `\\XX` escapes are bytes (RouterOS escapes non-ASCII bytes); runs of them decode as UTF-8.
    """
    out: list[str] = []
    raw = bytearray()
    i = pos + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and _HEX2.fullmatch(text, i + 1, i + 3):
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
            continue
        if raw:
            out.append(raw.decode("utf-8", errors="replace"))
            raw.clear()
        if c == '"':
            return "".join(out), i + 1
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    raise RdsParseError(f"unterminated quoted string: {text[pos : pos + 60]!r}")


def _in_quote(text: str) -> bool:
    """Whether `text` ends inside an open quoted string."""
    inside = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if inside and c == "\\":
            i += 2
            continue
        if c == '"':
            inside = not inside
        i += 1
    return inside


def parse_properties(text: str) -> dict[str, str]:
    """`key=value key="quoted value" ...` (one logical line) into a dict of raw strings."""
    props: dict[str, str] = {}
    pos = 0
    n = len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            return props
        m = _KEY.match(text, pos)
        if not m:
            raise RdsParseError(f"expected key=value at {text[pos : pos + 40]!r}")
        key, pos = m[1], m.end()
        if pos < n and text[pos] == '"':
            value, pos = _read_quoted(text, pos)
        else:
            end_m = _UNQUOTED_END.search(text, pos)
            end = end_m.start() if end_m else n
            value = " ".join(text[pos:end].split())
            pos = end
        props[key] = value


# --- print / print detail / print terse ---------------------------------------------------

_ITEM_START = re.compile(r" {0,2}(\d+)(?= |$)")
_FLAG_TOKEN = re.compile(r" +([A-Za-z*]+)(?= |$)")
_LEGEND = re.compile(r"(?:^|[\s;,:])([A-Za-z*]) - [A-Za-z]")


def _lines(text: str) -> list[str]:
    return [ln.rstrip("\r") for ln in text.replace("\r\n", "\n").split("\n")]


def _leading_spaces(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


# Keys ROUTEROS.md documents for /disk and /file: used only to tell a key split across lines
# (`nvme-tcp-` + `server-port=`) from two tokens whose separator was dropped (`...824` + `mount-`).
# fmt: off
KNOWN_KEYS = frozenset((
    "type", "slot", "slot-default", "parent", "fs", "model", "size", "mount-filesystem",
    "mount-read-only", "compress", "sector-size", "raid-master", "nvme-tcp-export",
    "nvme-tcp-server-port", "nvme-tcp-server-nqn", "nvme-tcp-server-allow-host-name",
    "iscsi-export", "nfs-sharing", "smb-sharing", "media-sharing", "media-interface", "swap",
    "file-path", "file-size", "file-offset", "comment", "disabled", "mount-point", "free", "use",
    "name", "last-modified",
))
# fmt: on
_KEYISH = re.compile(r"[A-Za-z.][A-Za-z0-9.-]*")


def _separator_dropped(text: str, cur: str) -> bool:
    """At a full-width break outside quotes: does `cur` start a new token rather than continue
    the last one?"""
    key_m = _KEY.match(cur)
    if key_m is None:
        return False  # the remainder of a split value (`ol/k8s/x.img`, `3 741 824`)
    frag = text.rsplit(None, 1)[-1]
    if frag.endswith('"') or "=" in frag or not _KEYISH.fullmatch(frag):
        return True  # `text` ends with a whole token, or with a value that cannot be a key
    if frag + key_m[1] in KNOWN_KEYS:
        return False  # a key split in two
    return key_m[1] in KNOWN_KEYS


def _join(parts: list[tuple[str, int]], width: int) -> str:
    """Re-join wrapped continuation parts; each part is (text without indent, full line length)."""
    if not parts:
        return ""
    text = parts[0][0]
    for (cur, _), (_, prev_len) in zip(parts[1:], parts, strict=False):
        if not text or not cur or text[-1].isspace() or cur[0].isspace():
            text += cur
        elif prev_len < width:
            text += " " + cur  # broken before the full width: the device dropped a space
        elif not _in_quote(text) and _separator_dropped(text, cur):
            text += " " + cur
        else:
            text += cur  # a forced split inside a token
    return text


@dataclass
class _RawItem:
    index: int
    flags: set[str]
    content_col: int | None
    lines: list[str]  # first line content (may be "") then continuation lines as printed


def _is_flags(token: str, legend: set[str]) -> bool:
    """A bare letter run after the index is flags; a multi-letter run must match the header's
    legend so a first line split inside its first key (`typ|e=file`) is not read as flags."""
    return len(token) == 1 or not legend or set(token) <= legend


def parse_print(text: str) -> list[Item]:
    """Items of `print detail` or `print terse` output; the Flags header and blank lines are
    skipped, an output with only the header gives no items."""
    raw: list[_RawItem] = []
    legend: set[str] = set()
    for line in _lines(text):
        start = _ITEM_START.match(line)
        if start is None:
            if not raw:
                legend.update(_LEGEND.findall(line))  # header (possibly wrapped)
            elif line.strip():
                raw[-1].lines.append(line)
            continue
        pos = start.end()
        flags: set[str] = set()
        while (fm := _FLAG_TOKEN.match(line, pos)) and _is_flags(fm[1], legend):
            flags.update(fm[1])
            pos = fm.end()
        rest = line[pos:].lstrip(" ")
        col = len(line) - len(rest) if rest else None
        raw.append(_RawItem(int(start[1]), flags, col, [line]))
    parsed = [_split_comment(r) for r in raw]
    width = max((n for _, parts in parsed for _, n in parts), default=0)
    return [
        Item(r.index, frozenset(r.flags), comment, parse_properties(_join(parts, width)))
        for r, (comment, parts) in zip(raw, parsed, strict=True)
    ]


def _split_comment(r: _RawItem) -> tuple[str | None, list[tuple[str, int]]]:
    """Separate an item's `;;;` comment from its property lines; strip continuation indent.

    Line lengths are measured without trailing spaces: a kept separator may stick out past the
    width, and such a break is recognised by the space itself.
    """
    first = r.lines[0]
    indent = r.content_col
    if indent is None and len(r.lines) > 1:
        indent = _leading_spaces(r.lines[1])
    indent = indent or 0
    parts: list[tuple[str, int]] = []
    if r.content_col is not None:
        parts.append((first[r.content_col :], len(first.rstrip())))
    for line in r.lines[1:]:
        parts.append((line[min(indent, _leading_spaces(line)) :], len(line.rstrip())))
    comment: str | None = None
    if parts and parts[0][0].lstrip().startswith(";;;"):
        comment_parts = [(parts[0][0].lstrip()[3:].strip(), parts[0][1])]
        parts = parts[1:]
        while parts and not _KEY.match(parts[0][0].lstrip()):
            comment_parts.append((parts[0][0].strip(), parts[0][1]))
            parts = parts[1:]
        comment = " ".join(p for p, _ in comment_parts if p)
    return comment, parts


# --- as-value -----------------------------------------------------------------------------


def parse_as_value(text: str) -> list[Item]:
    """`print as-value`: `.id=*1;key=value;...`. Items are split by lines or by a repeated `.id`."""
    items: list[dict[str, str]] = []
    for line in _lines(text):
        current: dict[str, str] | None = None
        pos = 0
        n = len(line.rstrip())
        while pos < n:
            m = _KEY.match(line, pos)
            if not m:
                raise RdsParseError(f"expected key=value at {line[pos : pos + 40]!r}")
            key, pos = m[1], m.end()
            if pos < n and line[pos] == '"':
                value, pos = _read_quoted(line, pos)
            else:
                end = line.find(";", pos, n)
                end = n if end < 0 else end
                value, pos = line[pos:end], end
            if pos < n:
                if line[pos] != ";":
                    raise RdsParseError(f"expected ';' at {line[pos : pos + 40]!r}")
                pos += 1
            if current is None or (key == ".id" and ".id" in current):
                current = {}
                items.append(current)
            current[key] = value
    return [Item(None, frozenset(), p.get("comment"), p) for p in items]


# --- key: value -----------------------------------------------------------------------------

_KV_LINE = re.compile(r"\s*([A-Za-z][A-Za-z0-9-]*):(?:\s+(.*?))?\s*")


def parse_key_values(text: str) -> dict[str, str]:
    """`key: value` lines (system resource, identity, monitor-traffic); keys may be right-aligned.
    A line that is not `key: value` continues the previous value (wrapped output)."""
    result: dict[str, str] = {}
    last: str | None = None
    for line in _lines(text):
        if not line.strip():
            continue
        m = _KV_LINE.fullmatch(line)
        if m:
            last = m[1]
            result[last] = m[2] or ""
        elif last is not None:
            result[last] = f"{result[last]} {line.strip()}".strip()
        else:
            raise RdsParseError(f"expected 'key: value', got {line.strip()[:60]!r}")
    return result
