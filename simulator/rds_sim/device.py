"""The simulated RDS: its state, the RouterOS CLI engine, and the hooks the SSH layer uses.

This module is the interface the SSH server and fault injection code against; the RouterOS
parsing, printing and menus live in `rds_sim.routeros`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from .exports import Export, ExportBackend, NoneBackend
from .routeros.behaviour import Behaviour
from .routeros.errors import CommandError, ParseError
from .routeros.format import CRLF
from .routeros.menus import build_root
from .routeros.model import Disk
from .routeros.parser import ParsedCommand, parse
from .routeros.runtime import ExecContext, Runtime, Traffic


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
    """A simulated RDS. Thread-safe: many SSH sessions may call `execute` at once.

    State changes happen under one lock and are persisted after every command, so a
    DropConnection raised by a hook leaves exactly the already-run commands applied. Hooks run
    outside the lock, so a slow injected fault never blocks other sessions.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        identity: str = "rds",
        slot_name_max: int = 32,
        pool_size: int = 7_681_574_174_720,
        export_backend: ExportBackend | None = None,
        parse_error_exit_status: int = 0,
        behaviour: Behaviour | None = None,
    ) -> None:
        base = behaviour or Behaviour()
        self.behaviour = replace(
            base, slot_name_max=slot_name_max, parse_error_exit_status=parse_error_exit_status
        )
        self.backend: ExportBackend = export_backend or NoneBackend()
        state_dir.mkdir(parents=True, exist_ok=True)
        self._rt = Runtime(state_dir, self.behaviour, self.backend, identity, pool_size)
        self._rt.on_reboot = self._reboot
        self._root = build_root()
        # called by `/system reboot`; the SSH layer may replace it to simulate the outage
        self.on_reboot: Callable[[], None] | None = None
        with self._rt.lock:
            self.backend.device_up(self._rt.exports())

    # --- the CLI ---------------------------------------------------------------------------

    def execute(
        self, line: str, *, width: int = 80, hook: CommandHook | None = None
    ) -> CommandResult:
        """Run a command line: parse it all, then run commands until the first runtime error."""
        try:
            parsed = parse(line, self._root, self.behaviour.abbreviations)
        except ParseError as err:
            return CommandResult(str(err) + CRLF, self.behaviour.parse_error_exit_status, [])
        ctx = ExecContext(width=width)
        infos = [_info(p) for p in parsed]
        out: list[str] = []
        status = 0
        for cmd, info in zip(parsed, infos, strict=True):
            try:
                if hook is not None:
                    hook.before_command(info)
                out.append(cmd.spec.handler(self._rt, cmd, ctx))
            except (CommandError, InjectedError) as err:
                out.append(str(err) + CRLF)
                status = 1
            except _Rebooted:
                raise DropConnection("device is rebooting") from None
            if hook is not None:
                try:
                    hook.after_command(info, status)
                except InjectedError as err:
                    out.append(str(err) + CRLF)
                    status = 1
            if status:
                break
        return CommandResult("".join(out), status, infos)

    # --- power -----------------------------------------------------------------------------

    def power_off(self) -> None:
        """Reboot begins: every export goes away."""
        with self._rt.lock:
            self.backend.device_down()

    def power_on(self) -> None:
        """Reboot ends: the same disks, exported again."""
        with self._rt.lock:
            self._rt.boot_time = time.time()
            self.backend.device_up(self._rt.exports())

    def _reboot(self) -> None:
        if self.on_reboot is not None:
            self.on_reboot()
        else:
            self.power_off()
            self.power_on()
        raise _Rebooted

    # --- for tests and export backends -----------------------------------------------------

    def disks(self) -> list[Disk]:
        """A snapshot (copies) of every disk, the pool included."""
        with self._rt.lock:
            return [replace(d) for d in self._rt.state.disks]

    def exports(self) -> list[Export]:
        with self._rt.lock:
            return self._rt.exports()

    def disk_file_path(self, slot: str) -> Path:
        """Host path of a file disk's backing file; KeyError if there is no such file disk."""
        with self._rt.lock:
            d = self._rt.state.disk(slot)
            if d is None or not d.is_file:
                raise KeyError(slot)
            return self._rt.storage.host_path(d.file_path)

    @property
    def identity(self) -> str:
        with self._rt.lock:
            return self._rt.state.identity

    def set_traffic(
        self,
        slot: str,
        read_ops: int = 0,
        write_ops: int = 0,
        read_bps: int = 0,
        write_bps: int = 0,
    ) -> None:
        """What `/disk monitor-traffic <slot> once` reports (a backend may feed real numbers)."""
        with self._rt.lock:
            self._rt.traffic[slot] = Traffic(read_ops, write_ops, read_bps, write_bps)


class _Rebooted(Exception):
    """`/system reboot` ran: the session ends with the connection."""


def _info(cmd: ParsedCommand) -> CommandInfo:
    args = {name: v.text for name, v in cmd.values.items()}
    args.update({flag: "" for flag in cmd.flags})
    if cmd.where is not None and cmd.where_text:
        args["where"] = cmd.where_text
    return CommandInfo(cmd.menu.path, cmd.spec.name, args, cmd.text)
