"""Value conversions: RouterOS input syntax to Python, and Python to RouterOS print syntax."""

from __future__ import annotations

import re

from .errors import CommandError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]?)(?:i?B)?$", re.IGNORECASE)
_TRUE = {"yes", "true"}
_FALSE = {"no", "false"}


def parse_size(text: str) -> int | None:
    """`10G`, `1024M`, `512k`, `1.5G`, `1073741824`: K M G T are binary units. None if invalid."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        return None
    number, unit = m.groups()
    mult = _UNITS[unit.upper()]
    return int(float(number) * mult) if "." in number else int(number) * mult


def parse_bool(text: str) -> bool | None:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    return None


def size_arg(name: str, text: str) -> int:
    value = parse_size(text)
    if value is None:
        raise CommandError(f"invalid value for argument {name}")
    return value


def bool_arg(name: str, text: str) -> bool:
    value = parse_bool(text)
    if value is None:
        raise CommandError(f"input does not match any value of {name}")
    return value


def int_arg(name: str, text: str, lo: int, hi: int) -> int:
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise CommandError(f"invalid value for argument {name}")
    return int(text)


def group_digits(n: int) -> str:
    """53687091200 -> `53 687 091 200`, as RouterOS prints byte counts."""
    return f"{n:,}".replace(",", " ")


def human_size(n: int) -> str:
    """One decimal, binary units, switching unit only above 1024 of it: 1 GiB is `1024.0MiB`."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    value = float(n)
    unit = 0
    while unit < len(units) - 1 and value > 1024:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{n}B"
    return f"{value:.1f}{units[unit]}"


def quote(text: str) -> str:
    """Quote a string the way print shows string properties: `"a\\"b"`."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\{ord(c):02X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def duration(seconds: int) -> str:
    """RouterOS uptime style: `1w2d3h4m5s`."""
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    parts.append(f"{seconds}s")
    return "".join(parts)
