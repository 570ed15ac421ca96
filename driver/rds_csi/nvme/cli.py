"""Run the ``nvme`` CLI (nvme-cli 2.x) for connect, disconnect and namespace rescan.

Only validated values reach the command line (an argv list, never a shell).
nvme-cli 2.x on ``connect`` of an already-connected subsystem prints
``already connected`` on stderr and exits non-zero; callers look at sysfs rather
than trusting the exit status alone.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("rds_csi.nvme.cli")

_NQN = re.compile(r"^nqn\.[\x21-\x7e]{1,219}$")
_ADDR = re.compile(r"^[A-Za-z0-9.:\-\[\]%]{1,255}$")

Runner = Callable[[Sequence[str], float], subprocess.CompletedProcess[str]]


def run_command(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=False)


class NvmeCliError(Exception):
    def __init__(self, message: str, *, returncode: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr

    @property
    def already_connected(self) -> bool:
        text = self.stderr.lower()
        return "already connected" in text or "operation already in progress" in text


@dataclass(frozen=True)
class ConnectOptions:
    """Reconnect behaviour of one connection (from the volume context)."""

    ctrl_loss_tmo: int = -1  # -1: the kernel reconnects forever (production default)
    reconnect_delay: int = 5
    keep_alive_tmo: int = 5
    host_nqn: str = ""  # empty: nvme-cli's default (/etc/nvme/hostnqn)

    def __post_init__(self) -> None:
        if self.ctrl_loss_tmo != -1 and not 0 <= self.ctrl_loss_tmo <= 31_536_000:
            raise ValueError(f"ctrl_loss_tmo must be -1 or 0..31536000, got {self.ctrl_loss_tmo}")
        if not 1 <= self.reconnect_delay <= 3600:
            raise ValueError(f"reconnect_delay must be 1..3600, got {self.reconnect_delay}")
        if not 1 <= self.keep_alive_tmo <= 3600:
            raise ValueError(f"keep_alive_tmo must be 1..3600, got {self.keep_alive_tmo}")
        if self.host_nqn and not _NQN.match(self.host_nqn):
            raise ValueError(f"host NQN {self.host_nqn!r} is not an NQN")


def validate_nqn(nqn: str) -> str:
    if not _NQN.match(nqn):
        raise ValueError(f"{nqn!r} is not an NVMe qualified name")
    return nqn


def connect_hint(stderr: str, host_nqn: str = "") -> str:
    """What a failed ``nvme connect`` most likely means, from nvme-cli's stderr.

    Measured on Linux 6.1 / nvme-cli 2.3: a target that answers but rejects the fabrics
    Connect (host NQN not in the subsystem's allowed hosts, or no such subsystem on that
    port) makes the write to /dev/nvme-fabrics fail with EIO, printed as
    ``Failed to write to /dev/nvme-fabrics: Input/output error`` and ``could not add new
    controller: failed to write to nvme-fabrics device``; nothing listening gives
    ECONNREFUSED (``Connection refused``).
    """
    text = stderr.lower()
    if "input/output error" in text:
        host = f"host NQN {host_nqn}" if host_nqn else "this host's NQN (/etc/nvme/hostnqn)"
        return (f"; the target rejected the connect: {host} is not allowed on the subsystem "
                "(target fencing: nvme-tcp-server-allow-host-name) or the subsystem is not "
                "exported on that port")
    if "connection refused" in text:
        return "; connection refused: nothing listens there (RDS down or rebooting, or no " \
               "volume exported on that port)"
    return ""


class NvmeCli:
    """The configured ``nvme`` binary."""

    def __init__(self, path: str = "/usr/sbin/nvme", *, timeout: float = 30.0,
                 runner: Runner = run_command) -> None:
        self.path = path
        self.timeout = timeout
        self._run = runner

    def _call(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        argv = [self.path, *args]
        try:
            result = self._run(argv, self.timeout)
        except FileNotFoundError as exc:
            raise NvmeCliError(f"{self.path} not found") from exc
        except subprocess.TimeoutExpired as exc:
            raise NvmeCliError(f"nvme {args[0]} timed out after {self.timeout}s") from exc
        except OSError as exc:
            raise NvmeCliError(f"cannot run {self.path}: {exc}") from exc
        log.debug("nvme command", extra={"fields": {
            "argv": " ".join(argv), "rc": result.returncode,
            "stderr": result.stderr.strip()[:500]}})
        return result

    def connect_argv(self, nqn: str, address: str, port: int, opts: ConnectOptions) -> list[str]:
        validate_nqn(nqn)
        if not _ADDR.match(address):
            raise ValueError(f"NVMe/TCP address {address!r} is not valid")
        if not 0 < port < 65536:
            raise ValueError(f"NVMe/TCP port {port} is out of range")
        args = ["connect", "-t", "tcp", "-a", address, "-s", str(port), "-n", nqn]
        if opts.host_nqn:
            args += ["-q", opts.host_nqn]
        args += ["-l", str(opts.ctrl_loss_tmo), "-c", str(opts.reconnect_delay),
                 "-k", str(opts.keep_alive_tmo)]
        return args

    def connect(self, nqn: str, address: str, port: int, opts: ConnectOptions) -> None:
        result = self._call(self.connect_argv(nqn, address, port, opts))
        if result.returncode != 0:
            stderr = (result.stderr or result.stdout).strip()
            raise NvmeCliError(f"nvme connect {nqn} at {address}:{port} failed "
                               f"(exit {result.returncode}): {stderr}"
                               f"{connect_hint(stderr, opts.host_nqn)}",
                               returncode=result.returncode, stderr=stderr)

    def disconnect(self, nqn: str) -> None:
        """``nvme disconnect -n NQN``: every controller of the subsystem (0 is fine)."""
        result = self._call(["disconnect", "-n", validate_nqn(nqn)])
        if result.returncode != 0:
            stderr = (result.stderr or result.stdout).strip()
            raise NvmeCliError(f"nvme disconnect {nqn} failed (exit {result.returncode}): "
                               f"{stderr}", returncode=result.returncode, stderr=stderr)

    def ns_rescan(self, controller_dev: str) -> None:
        """``nvme ns-rescan /dev/nvme<C>``: re-read namespace sizes after a resize."""
        result = self._call(["ns-rescan", controller_dev])
        if result.returncode != 0:
            stderr = (result.stderr or result.stdout).strip()
            raise NvmeCliError(f"nvme ns-rescan {controller_dev} failed "
                               f"(exit {result.returncode}): {stderr}",
                               returncode=result.returncode, stderr=stderr)
