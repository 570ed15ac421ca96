"""Printers: `print` in table, detail, terse, as-value and count-only forms, and `key: value`
blocks. Everything here is generated from Items; nothing knows about disks or files.
"""

from __future__ import annotations

from collections.abc import Sequence

from .behaviour import Behaviour
from .schema import Item, Prop
from .values import group_digits, human_size, quote

CRLF = "\r\n"


def lines_out(lines: Sequence[str]) -> str:
    return "".join(line + CRLF for line in lines)


def show(p: Prop, mode: str) -> str:
    """A value as `print` shows it; mode is "detail", "table" or "value" (as-value)."""
    v = p.value
    if isinstance(v, bool):
        if mode == "value":
            return "true" if v else "false"
        return "yes" if v else "no"
    if mode == "value":
        return str(v)
    if p.kind == "bytes" and isinstance(v, int):
        return group_digits(v)
    if p.kind == "human" and isinstance(v, int):
        return human_size(v)
    if p.kind == "percent":
        return f"{v}%"
    if p.kind == "str" and mode == "detail":
        return quote(str(v))
    return str(v)


def flags_header(flags: list[tuple[str, str]], width: int, b: Behaviour) -> list[str]:
    if not flags:
        return []
    parts = [f"{letter} - {name}" for letter, name in flags]
    if not b.wrap_flags_header:
        return ["Flags: " + "; ".join(parts)]
    lines: list[str] = []
    cur = "Flags: " + parts[0]
    for part in parts[1:]:
        if len(cur) + 2 + len(part) + 1 <= width:  # room for the ';' if it wraps after
            cur += "; " + part
        else:
            lines.append(cur + ";")
            cur = part
    return [*lines, cur]


def _flag_width(items: Sequence[tuple[int, Item]]) -> int:
    return max([1, *(len(it.flags) for _, it in items)])


def wrap_tokens(
    first: str, indent: int, groups: list[list[str]], width: int, b: Behaviour
) -> list[str]:
    """Greedy wrap of `key=value` tokens; each group starts a new line; too-long tokens split.

    Every token is followed by a space, so a line ending in a non-space character is one whose
    last token continues on the next line (the way the device leaves trailing spaces).
    """
    lines: list[str] = []
    pad = " " * indent
    cur = first
    fresh = True  # nothing on `cur` yet but the prefix
    for gi, group in enumerate(groups):
        if gi > 0 and not fresh:
            lines.append(cur)
            cur, fresh = pad, True
        for tok in group:
            if len(cur) + len(tok) + 1 <= width:
                cur, fresh = cur + tok + " ", False
                continue
            if not fresh:
                lines.append(cur)
                cur, fresh = pad, True
            if len(cur) + len(tok) + 1 <= width or not b.split_long_tokens:
                cur, fresh = cur + tok + " ", False
                continue
            while len(cur) + len(tok) + 1 > width and len(tok) > 1:
                room = max(1, min(width - len(cur), len(tok) - 1))
                lines.append(cur + tok[:room])
                cur, tok = pad, tok[room:]
            cur, fresh = cur + tok + " ", False
    lines.append(cur)
    if not b.trailing_space:
        lines = [line.rstrip(" ") for line in lines]
    return lines


def detail(
    items: Sequence[tuple[int, Item]], flags: list[tuple[str, str]], width: int, b: Behaviour
) -> str:
    lines = flags_header(flags, width, b)
    fw = _flag_width(items)
    for index, item in items:
        prefix = f"{index:>2} {item.flags:<{fw}} "
        groups = [[f"{p.key}={show(p, 'detail')}" for p in g] for g in item.props]
        if item.comment:
            lines.append(prefix + ";;; " + item.comment)
            first = " " * len(prefix)
        else:
            first = prefix
        lines.extend(wrap_tokens(first, len(prefix), groups, width, b))
        lines.append("")
    return lines_out(lines)


def terse(items: Sequence[tuple[int, Item]]) -> str:
    fw = _flag_width(items)
    lines = []
    for index, item in items:
        tokens = [f"comment={quote(item.comment)}"] if item.comment else []
        tokens += [f"{p.key}={show(p, 'detail')}" for g in item.props for p in g]
        lines.append(f"{index:>2} {item.flags:<{fw}} " + " ".join(tokens))
    return lines_out(lines)


def as_value(items: Sequence[tuple[int, Item]]) -> str:
    lines = []
    for _, item in items:
        fields = [f".id=*{item.id:X}"]
        fields += [f"{p.key}={show(p, 'value')}" for g in [*item.props, item.hidden] for p in g]
        lines.append(";".join(fields))
    return lines_out(lines)


def table(
    items: Sequence[tuple[int, Item]],
    flags: list[tuple[str, str]],
    columns: list[str],
    width: int,
    b: Behaviour,
) -> str:
    lines = flags_header(flags, width, b)
    lines.append("Columns: " + ", ".join(c.upper() for c in columns))
    iw = max([1, *(len(str(i)) for i, _ in items)])
    fw = _flag_width(items) if flags else 0
    cells: list[list[str]] = []
    right = [False] * len(columns)
    for _, item in items:
        row = []
        for n, key in enumerate(columns):
            p = item.prop(key)
            row.append("" if p is None else show(p, "table"))
            if p is not None and p.kind in ("bytes", "human", "int", "percent"):
                right[n] = True
        cells.append(row)
    widths = [max([len(c), *(len(r[n]) for r in cells)]) for n, c in enumerate(columns)]

    def render(values: list[str]) -> str:
        out = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return "  ".join(out).rstrip()

    lines.append(f"{'#':<{iw}} {'':<{fw}} " + render([c.upper() for c in columns]))
    for (index, item), row in zip(items, cells, strict=True):
        if item.comment:
            lines.append(";;; " + item.comment)
        lines.append(f"{index:>{iw}} {item.flags:<{fw}} " + render(row))
    return lines_out(lines)


def key_values(pairs: list[tuple[str, str]]) -> str:
    """`key: value` lines with keys right-aligned to the longest key, then a blank line."""
    w = max(len(k) for k, _ in pairs) + 2
    return lines_out([f"{k:>{w}}: {v}" for k, v in pairs] + [""])
