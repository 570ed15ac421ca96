"""Volume size rules: what a CapacityRange turns into on the RDS.

RouterOS takes ``file-size`` with binary units; the driver always creates
whole MiB so the device's ``size`` (raw bytes) equals what was requested and
later comparisons are exact.
"""

from __future__ import annotations

import re

from rds_csi.status import invalid_argument, out_of_range

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40


def round_up(size: int, unit: int = MiB) -> int:
    return -(-size // unit) * unit


def choose_size(required: int, limit: int, *, default: int = GiB, minimum: int = MiB,
                maximum: int = 64 * TiB) -> int:
    """The byte size to create for a CapacityRange (0 means unset, per the spec)."""
    if required < 0 or limit < 0:
        raise invalid_argument("capacity_range values must not be negative")
    if limit and required > limit:
        raise invalid_argument(
            f"capacity_range required_bytes {required} exceeds limit_bytes {limit}")
    if required:
        size = max(round_up(required), minimum)
    elif limit:
        size = min(default, limit // MiB * MiB)
    else:
        size = default
    if limit and size > limit:
        raise out_of_range(
            f"cannot create a volume of at least {required} bytes within limit_bytes {limit}: "
            f"sizes are whole MiB, at least {minimum} bytes")
    if size < minimum:
        raise out_of_range(f"volumes are at least {minimum} bytes; limit_bytes {limit} is smaller")
    if size > maximum:
        raise out_of_range(f"volumes are at most {maximum} bytes; {size} requested")
    return size


def fits(size: int, required: int, limit: int) -> bool:
    """Whether an existing volume of ``size`` satisfies a CapacityRange."""
    return (not required or size >= required) and (not limit or size <= limit)


_QUANTITY = re.compile(r"^\s*(\d+)\s*(Ki|Mi|Gi|Ti|K|M|G|T)?i?B?\s*$")
_UNITS = {"": 1, "K": 1 << 10, "M": MiB, "G": GiB, "T": TiB}


def parse_quantity(text: str) -> int:
    """``10Gi``/``10G``/``512Mi``/``1048576`` -> bytes (binary units, like RouterOS)."""
    m = _QUANTITY.match(text)
    if not m:
        raise ValueError(f"size {text!r} must be a whole number with an optional unit "
                         "Ki, Mi, Gi or Ti")
    return int(m.group(1)) * _UNITS[(m.group(2) or "")[:1]]
