"""Volume and snapshot identities on the RDS.

A CSI name (any Unicode string up to 128 bytes) maps deterministically to a
RouterOS slot of at most 32 characters: ``<prefix><sha256(name) hex>``
truncated to fit. The same name always gives the same slot, which is what
makes CreateVolume idempotent across controller restarts; the full CSI name
is kept in the disk comment so a hash collision is detected, never silently
shared. The volume id *is* the slot, so every later RPC finds the disk with
one lookup; ids that do not have the exact shape are rejected before anything
reaches the RDS.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

SLOT_MAX = 32
NQN_PREFIX_DEFAULT = "nqn.2000-02.com.mikrotik"

# CSI spec: names may be any Unicode except these control characters; 128 bytes max.
_BANNED = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]")
_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,11}$")
_NQN_PREFIX = re.compile(r"^nqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*[a-z0-9]$")
_PATH_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_MAX_BYTES = 128


class IdError(ValueError):
    """A name, id or configuration value that cannot be used."""


def validate_csi_name(name: str, what: str = "name") -> str:
    if not name:
        raise IdError(f"{what} is required")
    if len(name.encode("utf-8")) > NAME_MAX_BYTES:
        raise IdError(f"{what} is longer than {NAME_MAX_BYTES} bytes")
    bad = _BANNED.search(name)
    if bad:
        raise IdError(f"{what} contains the control character U+{ord(bad.group()):04X}")
    return name


def validate_base_path(path: str) -> str:
    """A RouterOS file directory such as ``storage-pool/k8s`` (no leading slash)."""
    parts = path.strip("/").split("/")
    if not path.strip("/") or len(parts) > 8 or not all(_PATH_PART.match(p) for p in parts):
        raise IdError(
            f"volume path {path!r} must be 1-8 '/'-separated parts of [A-Za-z0-9._-] "
            "that start with a letter or digit"
        )
    if any(p in (".", "..") or p.startswith(".") for p in parts):
        raise IdError(f"volume path {path!r} must not contain '.' or '..' parts")
    return "/".join(parts)


@dataclass(frozen=True)
class Naming:
    """How this driver names its slots, files and NQNs on one RDS."""

    volume_prefix: str = "pvc-"
    snapshot_prefix: str = "snap-"
    nqn_prefix: str = NQN_PREFIX_DEFAULT
    base_path: str = "storage-pool/k8s"

    def __post_init__(self) -> None:
        for label, prefix in (("volume", self.volume_prefix), ("snapshot", self.snapshot_prefix)):
            if not _PREFIX.match(prefix):
                raise IdError(f"{label} slot prefix {prefix!r} must match {_PREFIX.pattern}")
        if self.volume_prefix.startswith(self.snapshot_prefix) or self.snapshot_prefix.startswith(
            self.volume_prefix
        ):
            raise IdError("volume and snapshot slot prefixes must not be prefixes of each other")
        if not _NQN_PREFIX.match(self.nqn_prefix):
            raise IdError(f"NQN prefix {self.nqn_prefix!r} must look like nqn.YYYY-MM.domain")
        validate_base_path(self.base_path)

    def _slot(self, prefix: str, name: str) -> str:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
        return prefix + digest[: SLOT_MAX - len(prefix)]

    def volume_slot(self, name: str) -> str:
        return self._slot(self.volume_prefix, validate_csi_name(name))

    def snapshot_slot(self, name: str) -> str:
        return self._slot(self.snapshot_prefix, validate_csi_name(name))

    def _is(self, prefix: str, slot: str) -> bool:
        digits = SLOT_MAX - len(prefix)
        return (
            len(slot) == SLOT_MAX
            and slot.startswith(prefix)
            and re.fullmatch(f"[0-9a-f]{{{digits}}}", slot[len(prefix):]) is not None
        )

    def is_volume_id(self, volume_id: str) -> bool:
        return self._is(self.volume_prefix, volume_id)

    def is_snapshot_id(self, snapshot_id: str) -> bool:
        return self._is(self.snapshot_prefix, snapshot_id)

    def nqn(self, slot: str) -> str:
        return f"{self.nqn_prefix}:{slot}"

    def file_path(self, slot: str, base_path: str | None = None) -> str:
        """RouterOS file name of a slot's backing file (no leading slash)."""
        base = validate_base_path(base_path) if base_path else self.base_path
        return f"{base}/{slot}.img"

    def snapshot_file_path(self, slot: str) -> str:
        return f"{self.base_path}/snapshots/{slot}.img"
