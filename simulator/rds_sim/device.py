"""The simulated RDS: its state, the RouterOS CLI engine, and the hooks the SSH layer uses.

This module is the interface the SSH server and fault injection code against; the RouterOS
parsing, printing and menus live in `rds_sim.routeros`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .exports import ExportBackend


@dataclass
class CommandInfo:
    """One parsed command of a command line, as fault rules see it."""

    path: str  # menu path, e.g. "/disk" or "/system/identity"
    verb: str  # e.g. "add", "print", "remove", "set", "monitor-traffic"
    args: dict[str, str] = field(default_factory=dict)  # key=value args after unquoting
    text: str = ""  # the command's source text


class CommandHook(Protocol):
    def before_command(self, cmd: CommandInfo) -> None: ...  # may sleep, raise Injected/Drop

    def after_command(self, cmd: CommandInfo, exit_status: int) -> None: ...  # may raise Drop


class InjectedError(Exception):
    """A fault's RouterOS error text (e.g. "failure: not enough space"): printed, exit 1."""


class DropConnection(Exception):
    """The SSH layer closes the connection without an exit status."""


@dataclass
class CommandResult:
    output: str  # exactly what goes to the channel, lines terminated by "\r\n"
    exit_status: int
    commands: list[CommandInfo]


class Device:
    def __init__(
        self,
        state_dir: Path,
        *,
        identity: str = "rds",
        slot_name_max: int = 32,
        pool_size: int = 7_681_574_174_720,
        export_backend: ExportBackend | None = None,
        parse_error_exit_status: int = 0,
    ) -> None:
        raise NotImplementedError("engine lands in the next commits")

    def execute(
        self, line: str, *, width: int = 80, hook: CommandHook | None = None
    ) -> CommandResult:
        raise NotImplementedError

    def power_off(self) -> None:
        raise NotImplementedError

    def power_on(self) -> None:
        raise NotImplementedError

    def disk_file_path(self, slot: str) -> Path:
        raise NotImplementedError
