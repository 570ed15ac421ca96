"""A small test-side formatter of `/disk print detail` output, written from ROUTEROS.md.

It wraps like a device might, in three styles: `char` folds at exactly the width (breaks anywhere,
even inside keys), `keep` word-wraps and keeps the separator at the end of the line, `drop`
word-wraps and drops it. In the word styles spaces inside values (`size=1 073 741 824`) are break
opportunities too, and a token longer than the line is split at the width.
"""

from __future__ import annotations

from dataclasses import dataclass

FLAG_LETTERS = "XBMt"
HEADER = "Flags: X - DISABLED; B - BLOCK-DEVICE; M - MOUNTED; t - NVME-TCP-EXPORT"


@dataclass(frozen=True)
class DiskSpec:
    slot: str
    file_path: str
    size_bytes: int
    file_size_bytes: int  # a multiple of 1 MiB so its human form is exact
    export: bool
    port: int
    nqn: str
    hosts: tuple[str, ...]
    comment: str | None
    disabled: bool


def grouped(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def human(n: int) -> str:
    """One decimal, binary units, exact for whole multiples (`50.0GiB`, `1536.0MiB`)."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n % factor == 0:
            return f"{n // factor}.0{unit}"
    return f"{n}B"


def q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def properties(d: DiskSpec) -> str:
    tokens = [
        "type=file",
        f"slot={q(d.slot)}",
        'slot-default=""',
        'parent=""',
        "fs=-",
        f"model={q(d.file_path)}",
        f"size={grouped(d.size_bytes)}",
        "mount-filesystem=yes",
        "mount-read-only=no",
        "compress=no",
        "sector-size=512",
        "raid-master=none",
        f"nvme-tcp-export={'yes' if d.export else 'no'}",
        f"nvme-tcp-server-port={d.port}",
        f"nvme-tcp-server-nqn={q(d.nqn)}",
        f"nvme-tcp-server-allow-host-name={q(','.join(d.hosts))}",
        "iscsi-export=no",
        "nfs-sharing=no",
        "smb-sharing=no",
        "media-sharing=no",
        "media-interface=none",
        "swap=no",
        f"file-path={d.file_path}",
        f"file-size={human(d.file_size_bytes)}",
        "file-offset=0",
    ]
    return " ".join(tokens)


def wrap_chars(prefix: str, content: str, width: int, indent: int) -> list[str]:
    line = prefix + content
    lines, rest = [line[:width]], line[width:]
    while rest:
        lines.append(" " * indent + rest[: width - indent])
        rest = rest[width - indent :]
    return lines


def wrap_words(prefix: str, content: str, width: int, indent: int, keep: bool) -> list[str]:
    lines: list[str] = []
    cur, empty = prefix, True
    for word in content.split(" "):
        sep = "" if empty else " "
        if len(cur) + len(sep) + len(word) <= width:
            cur, empty = cur + sep + word, False
            continue
        if not empty and indent + len(word) <= width:
            lines.append(cur + (" " if keep else ""))  # may stick out one column
            cur = " " * indent + word
            continue
        piece = sep + word
        while len(cur) + len(piece) > width:
            room = width - len(cur)
            lines.append(cur + piece[:room])
            cur, piece = " " * indent, piece[room:]
        cur, empty = cur + piece, False
    lines.append(cur)
    return lines


def flags_of(d: DiskSpec) -> set[str]:
    flags = {"B"}
    if d.export:
        flags.add("t")
    if d.disabled:
        flags.add("X")
    return flags


def item_prefix(index: int, flags: set[str], fixed_columns: bool) -> str:
    if fixed_columns:
        cols = "".join(c if c in flags else " " for c in FLAG_LETTERS)
        return f"{index:>2} {cols} "
    letters = " ".join(c for c in FLAG_LETTERS if c in flags)
    return f"{index:>2} {letters} " if letters else f"{index:>2}   "


def format_detail(disks: list[DiskSpec], width: int, style: str, fixed_columns: bool) -> str:
    out = [HEADER]
    for index, d in enumerate(disks):
        prefix = item_prefix(index, flags_of(d), fixed_columns)
        indent = len(prefix)
        if d.comment is not None:
            out.append(prefix + ";;; " + d.comment)  # comments are not wrapped
            prefix = " " * indent
        content = properties(d)
        if style == "char":
            out += wrap_chars(prefix, content, width, indent)
        else:
            out += wrap_words(prefix, content, width, indent, keep=style == "keep")
        out.append("")
    return "".join(line + "\r\n" for line in out)
