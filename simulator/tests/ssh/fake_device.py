"""A tiny stand-in for rds_sim.device.Device, so the SSH layer is tested on its own.

It understands just enough RouterOS for transport and fault tests: `/disk add slot=...`,
`/disk print [detail] [where slot=X]`, `/disk remove [find slot=X]` or `remove X`; a bad command
name is a parse error (exit 0), a missing item a runtime error (exit 1). It calls the hook around
every command like the real engine, records the widths it was asked for, and persists its disks.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from rds_sim.device import CommandHook, CommandInfo, CommandResult, InjectedError

_CMD = re.compile(r"^\s*(/[\w/-]+?)(?:/|\s+)([\w-]+)\s*(.*)$")


class FakeDevice:
    def __init__(self, state_dir: Path) -> None:
        self.file = Path(state_dir) / "fake-disks.json"
        self.disks: dict[str, dict[str, str]] = (
            json.loads(self.file.read_text()) if self.file.exists() else {}
        )
        self.widths: list[int] = []
        self.power: list[str] = []
        self.powered = True
        self.raise_on: str | None = None  # a command text that makes execute raise (a bug)
        self._lock = threading.Lock()

    def power_off(self) -> None:
        self.power.append("off")
        self.powered = False

    def power_on(self) -> None:
        self.power.append("on")
        self.powered = True

    def execute(
        self, line: str, *, width: int = 80, hook: CommandHook | None = None
    ) -> CommandResult:
        self.widths.append(width)
        if self.raise_on is not None and self.raise_on in line:
            raise RuntimeError("boom")
        out: list[str] = []
        done: list[CommandInfo] = []
        status = 0
        for text in re.split(r"[;\n]", line):
            if not text.strip():
                continue
            m = _CMD.match(text)
            if not m:
                out.append(f"bad command name {text.strip()} (line 1 column 1)")
                break
            args = dict(a.split("=", 1) for a in m.group(3).split() if "=" in a)
            cmd = CommandInfo(m.group(1).rstrip("/"), m.group(2), args, text.strip())
            if hook is not None:
                try:
                    hook.before_command(cmd)
                except InjectedError as e:
                    out.append(str(e))
                    status = 1
                    hook.after_command(cmd, status)
                    break
            done.append(cmd)
            msg, status = self._run(cmd, m.group(3))
            out.extend(msg)
            if hook is not None:
                hook.after_command(cmd, status)
            if status:
                break
        return CommandResult("".join(s + "\r\n" for s in out), status, done)

    def _run(self, cmd: CommandInfo, rest: str) -> tuple[list[str], int]:
        with self._lock:
            if (cmd.path, cmd.verb) == ("/disk", "add"):
                slot = cmd.args.get("slot", "")
                if slot in self.disks:
                    return ["failure: already have such entry"], 1
                self.disks[slot] = dict(cmd.args)
                self._save()
                return [], 0
            if (cmd.path, cmd.verb) == ("/disk", "print"):
                m = re.search(r"where slot=(\S+)", rest)
                rows = [s for s in self.disks if m is None or s == m.group(1)]
                return [f"{i:2d}    slot=\"{s}\" file-size={self.disks[s].get('file-size')}"
                        for i, s in enumerate(rows)], 0
            if (cmd.path, cmd.verb) == ("/disk", "remove"):
                m = re.search(r"\[find slot=(\S+)\]", rest)
                slot = m.group(1) if m else rest.strip()
                if slot not in self.disks:
                    return ([], 0) if m else (["no such item"], 1)
                del self.disks[slot]
                self._save()
                return [], 0
            return [f"bad command name {cmd.verb} (line 1 column 7)"], 0

    def _save(self) -> None:
        self.file.write_text(json.dumps(self.disks))
