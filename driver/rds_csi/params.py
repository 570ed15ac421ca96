"""StorageClass parameters: parsed, validated, and turned into volume context.

Every value that later reaches a RouterOS command or an ``nvme connect``
command line is checked here against a strict shape, so a typo in a
StorageClass fails CreateVolume with INVALID_ARGUMENT instead of producing a
volume nobody can attach.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from rds_csi.ids import IdError, validate_base_path

FS_TYPES = ("ext4", "xfs")
# Keys the external-provisioner adds with --extra-create-metadata; informational only.
_K8S_PREFIX = "csi.storage.k8s.io/"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class ParameterError(ValueError):
    """A StorageClass parameter with a bad name or value (INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class VolumeParams:
    fs_type: str = "ext4"
    volume_path: str = ""  # empty: the driver's --volume-base-path
    nvme_address: str = ""  # empty: the controller's default NVMe/TCP address
    nvme_port: int = 4420
    ctrl_loss_tmo: int = -1  # -1: the kernel reconnects forever (no data loss on long outages)
    reconnect_delay: int = 5
    keep_alive_tmo: int = 5
    migration_timeout_seconds: int = 300


def validate_address(value: str, what: str = "nvmeAddress") -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if len(value) <= 63 and _HOSTNAME.match(value):
        return value.lower()
    raise ParameterError(f"{what} {value!r} is neither an IP address nor a host name "
                         "of at most 63 characters")


def _int(key: str, value: str, low: int, high: int, *, allow: tuple[int, ...] = ()) -> int:
    try:
        number = int(value.strip(), 10)
    except ValueError:
        raise ParameterError(f"parameter {key} must be an integer, got {value!r}") from None
    if number in allow:
        return number
    if not low <= number <= high:
        extra = f" (or {', '.join(map(str, allow))})" if allow else ""
        raise ParameterError(f"parameter {key} must be between {low} and {high}{extra}, "
                             f"got {number}")
    return number


def parse_parameters(raw: dict[str, str], defaults: VolumeParams | None = None) -> VolumeParams:
    """Parse CreateVolume parameters; unknown keys are an error (typos must not pass)."""
    params = defaults or VolumeParams()
    for key, value in raw.items():
        if key.startswith(_K8S_PREFIX):
            if key.lower() == _K8S_PREFIX + "fstype":
                key = "fsType"
            else:
                continue
        if key == "fsType":
            if value.lower() not in FS_TYPES:
                raise ParameterError(f"parameter fsType must be one of {', '.join(FS_TYPES)}, "
                                     f"got {value!r}")
            params = replace(params, fs_type=value.lower())
        elif key == "volumePath":
            try:
                params = replace(params, volume_path=validate_base_path(value))
            except IdError as exc:
                raise ParameterError(f"parameter {exc}") from None
        elif key == "nvmeAddress":
            params = replace(params, nvme_address=validate_address(value))
        elif key == "nvmePort":
            params = replace(params, nvme_port=_int(key, value, 1, 65535))
        elif key == "ctrlLossTmo":
            params = replace(params, ctrl_loss_tmo=_int(key, value, 1, 31_536_000, allow=(-1,)))
        elif key == "reconnectDelay":
            params = replace(params, reconnect_delay=_int(key, value, 1, 3600))
        elif key == "keepAliveTmo":
            params = replace(params, keep_alive_tmo=_int(key, value, 1, 3600))
        elif key == "migrationTimeoutSeconds":
            params = replace(params, migration_timeout_seconds=_int(key, value, 30, 86_400))
        else:
            raise ParameterError(
                f"unknown parameter {key!r}; supported: fsType, volumePath, nvmeAddress, "
                "nvmePort, ctrlLossTmo, reconnectDelay, keepAliveTmo, migrationTimeoutSeconds"
            )
    return params
