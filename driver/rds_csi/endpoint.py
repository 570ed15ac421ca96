"""CSI endpoint addresses: ``unix:///path/csi.sock`` or ``tcp://host:port``.

Kubernetes sidecars talk to the driver over a unix socket in a shared
emptyDir; tcp is for local experiments. The socket file is created with
restrictive permissions because anyone who can connect can attach and format
volumes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path


class EndpointError(ValueError):
    """The endpoint string cannot be used."""


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # "unix" or "tcp"
    address: str  # socket path for unix, host:port for tcp

    @property
    def grpc_target(self) -> str:
        """The address in the form grpc's add_insecure_port and channels expect."""
        if self.scheme == "unix":
            return f"unix://{self.address}"
        return self.address

    @property
    def socket_path(self) -> Path | None:
        return Path(self.address) if self.scheme == "unix" else None


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``unix:///abs/path`` (also ``unix:/abs/path``) or ``tcp://host:port``."""
    text = text.strip()
    if text.startswith("unix://"):
        path = text[len("unix://") :]
    elif text.startswith("unix:"):
        path = text[len("unix:") :]
    elif text.startswith("tcp://"):
        hostport = text[len("tcp://") :]
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise EndpointError(f"tcp endpoint must be tcp://HOST:PORT, got {text!r}")
        return Endpoint("tcp", hostport)
    else:
        raise EndpointError(
            f"endpoint must start with unix:// or tcp://, got {text!r}"
        )
    if not path.startswith("/"):
        raise EndpointError(f"unix endpoint needs an absolute path, got {text!r}")
    if len(path.encode()) > 107:
        raise EndpointError(f"unix socket path is longer than 107 bytes: {path!r}")
    return Endpoint("unix", os.path.normpath(path))


def remove_stale_socket(path: Path) -> None:
    """Remove a socket left by a previous run; refuse to delete anything else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise EndpointError(f"{path} exists and is not a socket; refusing to remove it")
    path.unlink()
