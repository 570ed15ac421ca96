"""/system: resource, identity, reboot."""

from __future__ import annotations

import time

from ..errors import CommandError
from ..format import key_values
from ..parser import ParsedCommand
from ..runtime import ExecContext, Runtime
from ..schema import Arg, CommandSpec, Menu
from ..values import duration, human_size

_MEMORY = 32 << 30
_HDD = 128 << 20


def resource_print(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
    b = rt.behaviour
    with rt.lock:
        disks = len(rt.state.disks)
    return key_values(
        [
            ("uptime", duration(int(time.time() - rt.boot_time))),
            ("version", b.version),
            ("build-time", "2025-11-04 10:21:09"),
            ("factory-software", "7.16"),
            ("free-memory", human_size(_MEMORY - (2 << 30) - disks * (4 << 20))),
            ("total-memory", human_size(_MEMORY)),
            ("cpu", "ARM64"),
            ("cpu-count", "16"),
            ("cpu-frequency", "2000MHz"),
            ("cpu-load", "1%"),
            ("free-hdd-space", human_size(_HDD // 2)),
            ("total-hdd-space", human_size(_HDD)),
            ("architecture-name", "arm64"),
            ("board-name", b.board_name),
            ("platform", "MikroTik"),
        ]
    )


def identity_print(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
    with rt.lock:
        return key_values([("name", rt.state.identity)])


def identity_set(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
    name = cmd.value("name")
    if name is None:
        raise CommandError("missing value(s) of argument(s) name")
    if not name:
        raise CommandError("invalid value for argument name")
    with rt.lock:
        rt.state.identity = name
        rt.persist()
    return ""


def reboot(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
    rt.on_reboot()
    return ""


def build(root: Menu) -> None:
    system = root.add(Menu("system", ""))
    resource = system.add(Menu("resource", ""))
    resource.commands["print"] = CommandSpec("print", resource_print)
    identity = system.add(Menu("identity", ""))
    identity.commands["print"] = CommandSpec("print", identity_print)
    identity.commands["set"] = CommandSpec("set", identity_set, [Arg("name")])
    system.commands["reboot"] = CommandSpec("reboot", reboot)
