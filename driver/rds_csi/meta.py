"""Metadata kept in the RouterOS disk comment.

The device reports neither creation time, nor requested size, nor the source
of a copy, nor which CSI name a slot belongs to; the driver needs all of them
to answer ListSnapshots, idempotent CreateVolume and hash-collision checks
after a restart, so they live in the disk's ``comment``:

    rds-csi/1 k:vol sz:<bytes> t:<unix ns> h:<base64url sha256(name)> [src:<slot>] [fs:ext4 ...]

Only ``[A-Za-z0-9 _.:/-]`` is used (no ``=`` or quotes, which the command
builder refuses in comments) and the whole comment stays under 255
characters whatever the CSI name is, because the name is stored as a digest and
sizes, addresses and parameters are bounded (the NVMe/TCP port is not stored: the disk
itself shows it).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from rds_csi.params import VolumeParams

MAGIC = "rds-csi/1"
_PARAM_KEYS = {
    "fs": "fs_type",
    "addr": "nvme_address",
    "clt": "ctrl_loss_tmo",
    "rd": "reconnect_delay",
    "ka": "keep_alive_tmo",
    "mt": "migration_timeout_seconds",
}
_STR_PARAMS = ("fs_type", "nvme_address")


class MetaError(ValueError):
    """A comment that is not ours or is damaged."""


def name_digest(name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class Meta:
    kind: str  # "vol" or "snap"
    name_hash: str  # name_digest(CSI name)
    size: int  # bytes the driver created (after rounding)
    created_ns: int
    source: str = ""  # slot of the snapshot or volume it was copied from
    params: dict[str, str] = field(default_factory=dict)

    def encode(self) -> str:
        parts = [MAGIC, f"k:{self.kind}", f"sz:{self.size}", f"t:{self.created_ns}",
                 f"h:{self.name_hash}"]
        if self.source:
            parts.append(f"src:{self.source}")
        parts.extend(f"{k}:{v}" for k, v in sorted(self.params.items()))
        return " ".join(parts)

    @classmethod
    def decode(cls, comment: str) -> Meta:
        tokens = comment.split()
        if not tokens or tokens[0] != MAGIC:
            raise MetaError("not an rds-csi comment")
        values: dict[str, str] = {}
        for token in tokens[1:]:
            key, sep, value = token.partition(":")
            if not sep:
                raise MetaError(f"bad token {token!r}")
            values[key] = value
        try:
            kind, name_hash = values.pop("k"), values.pop("h")
            size, created = int(values.pop("sz")), int(values.pop("t"))
        except (KeyError, ValueError) as exc:
            raise MetaError(f"incomplete rds-csi comment: {exc}") from None
        if kind not in ("vol", "snap"):
            raise MetaError(f"unknown kind {kind!r}")
        source = values.pop("src", "")
        return cls(kind, name_hash, size, created, source, values)

    def is_for(self, name: str) -> bool:
        return self.name_hash == name_digest(name)

    def volume_params(self, defaults: VolumeParams) -> VolumeParams:
        """The parameters recorded at creation, over ``defaults`` for absent ones."""
        recorded: dict[str, Any] = {
            attr: self.params[key] if attr in _STR_PARAMS else int(self.params[key])
            for key, attr in _PARAM_KEYS.items() if key in self.params
        }
        return replace(defaults, **recorded)


def params_to_meta(params: VolumeParams) -> dict[str, str]:
    """What to record so the volume context can be rebuilt identically later."""
    return {key: str(getattr(params, attr)) for key, attr in _PARAM_KEYS.items()
            if getattr(params, attr) != ""}
