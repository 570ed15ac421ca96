"""Fault injection for the simulator: the CommandHook that makes the device slow, flaky or full.

The device engine calls `before_command` / `after_command` around every single command it runs
(a line joined with `;` gives several calls). The injector decides, per command, whether to add
latency, drop the SSH connection (before or after the command took effect: the classic "was it
created?" case), or fail it with a RouterOS error text. Reboots are orchestrated by the Simulator
(server.py) because they involve the SSH listener; the injector only refuses commands while the
device is down.

Rules match on a command *kind*: a menu path and a verb, e.g. `/disk add`; either part may be `*`.
Counting ("the Nth matching command") starts when the rule is installed; every rule that matches a
command counts it, whatever another rule then does with it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from .device import CommandInfo, DropConnection, InjectedError

When = Literal["before", "after"]

POOL_FULL_MESSAGE = "failure: not enough space"

# Seconds per command kind; `disk add` also scales with the requested size.
REALISTIC_PROFILE: dict[str, tuple[float, float]] = {
    # kind: (base seconds, extra seconds per GiB of file-size)
    "/disk add": (0.4, 0.002),
    "/disk set": (0.1, 0.002),
    "/disk remove": (0.15, 0.0),
    "/disk print": (0.02, 0.0),
    "/file remove": (0.05, 0.0),
    "/file print": (0.02, 0.0),
}
PROFILES: dict[str, dict[str, tuple[float, float]]] = {"none": {}, "realistic": REALISTIC_PROFILE}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$")
_UNIT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size_gib(text: str) -> float:
    """A size argument (`10G`, `512M`, raw bytes) in GiB; units are binary. 0 if unparsable."""
    m = _SIZE_RE.match(text)
    if not m:
        return 0.0
    return float(m.group(1)) * _UNIT[m.group(2).lower()] / (1 << 30)


@dataclass(frozen=True)
class Kind:
    """A command kind: menu path and verb, `*` matching anything."""

    path: str
    verb: str

    @classmethod
    def parse(cls, text: str) -> Kind:
        """Accept `/disk add`, `disk add`, `/disk/add`, `/system/resource print`, `* *`."""
        words = text.replace("/", " ").split()
        if not words:
            raise ValueError("empty command kind")
        if len(words) == 1:
            return cls("*" if words[0] == "*" else "/" + words[0], "*")
        path = "*" if words[:-1] == ["*"] else "/" + "/".join(words[:-1])
        return cls(path, words[-1])

    def matches(self, cmd: CommandInfo) -> bool:
        path = "/" + cmd.path.strip("/").replace(" ", "/")
        return (self.path in ("*", path)) and (self.verb in ("*", cmd.verb))

    def __str__(self) -> str:
        return f"{self.path} {self.verb}"


@dataclass
class LatencyRule:
    kind: Kind
    seconds: float
    per_gib: float = 0.0
    size_arg: str = "file-size"

    def delay(self, cmd: CommandInfo) -> float:
        size = cmd.args.get(self.size_arg)
        extra = self.per_gib * parse_size_gib(size) if (self.per_gib and size) else 0.0
        return self.seconds + extra


@dataclass
class _CountingRule:
    kind: Kind
    nth: int | None  # None: every matching command
    seen: int = 0
    fired: int = 0

    def hit(self, cmd: CommandInfo) -> bool:
        """Count a matching command; True if this rule fires on it."""
        if not self.kind.matches(cmd):
            return False
        self.seen += 1
        fire = self.nth is None or self.seen == self.nth
        if fire:
            self.fired += 1
        return fire

    @property
    def spent(self) -> bool:
        return self.nth is not None and self.seen >= self.nth


@dataclass
class DropRule(_CountingRule):
    when: When = "before"


@dataclass
class FailRule(_CountingRule):
    message: str = "failure: injected error"


@dataclass
class FaultInjector:
    """Thread-safe CommandHook holding the active fault rules."""

    latency: dict[Kind, LatencyRule] = field(default_factory=dict)
    drops: list[DropRule] = field(default_factory=list)
    fails: list[FailRule] = field(default_factory=list)
    pool_full: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _down: threading.Event = field(default_factory=threading.Event, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _drop_after: list[CommandInfo] = field(default_factory=list, repr=False)

    # --- configuration (Python API; the control socket maps onto these) ---

    def add_latency(
        self, kind: str, seconds: float, *, per_gib: float = 0.0, size_arg: str = "file-size"
    ) -> None:
        """Add `seconds` (+ `per_gib` x size in GiB) to every command of this kind; replaces."""
        k = Kind.parse(kind)
        with self._lock:
            self.latency[k] = LatencyRule(k, seconds, per_gib, size_arg)

    def use_profile(self, name: str) -> None:
        """Install a named latency preset (`none` clears latency, `realistic`)."""
        if name not in PROFILES:
            raise ValueError(f"unknown latency profile {name!r}; known: {', '.join(PROFILES)}")
        with self._lock:
            self.latency.clear()
        for kind, (seconds, per_gib) in PROFILES[name].items():
            self.add_latency(kind, seconds, per_gib=per_gib)

    def drop(self, kind: str, *, nth: int | None = 1, when: When = "before") -> None:
        """Drop the SSH connection before/after running the Nth (None: every) matching command."""
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        _check_nth(nth)
        with self._lock:
            self.drops.append(DropRule(Kind.parse(kind), nth, when=when))

    def fail(self, kind: str, message: str, *, nth: int | None = None) -> None:
        """Fail the Nth (None: every) matching command with a RouterOS error text (exit 1)."""
        _check_nth(nth)
        if not message.strip():
            raise ValueError("empty error message")
        with self._lock:
            self.fails.append(FailRule(Kind.parse(kind), nth, message=message))

    def set_pool_full(self, full: bool = True) -> None:
        """While set, every `/disk add` fails with `failure: not enough space`."""
        with self._lock:
            self.pool_full = full

    def clear(self) -> None:
        """Remove every rule (latency, drops, failures, pool full). Does not end a reboot."""
        with self._lock:
            self.latency.clear()
            self.drops.clear()
            self.fails.clear()
            self.pool_full = False
            self._drop_after.clear()

    def set_down(self, down: bool) -> None:
        """While down (rebooting), every command drops the connection before it runs."""
        if down:
            self._down.set()
        else:
            self._down.clear()

    @property
    def down(self) -> bool:
        return self._down.is_set()

    def stop(self) -> None:
        """Cut short any latency sleep so the server can shut down promptly."""
        self._stopping.set()

    def status(self) -> dict[str, Any]:
        """A JSON-friendly summary of the active rules."""
        with self._lock:
            return {
                "down": self.down,
                "pool_full": self.pool_full,
                "latency": [
                    {"kind": str(r.kind), "seconds": r.seconds, "per_gib": r.per_gib,
                     "size_arg": r.size_arg}
                    for r in self.latency.values()
                ],
                "drops": [
                    {"kind": str(r.kind), "nth": r.nth, "when": r.when, "seen": r.seen,
                     "fired": r.fired, "spent": r.spent}
                    for r in self.drops
                ],
                "fails": [
                    {"kind": str(r.kind), "nth": r.nth, "message": r.message, "seen": r.seen,
                     "fired": r.fired, "spent": r.spent}
                    for r in self.fails
                ],
            }

    # --- CommandHook ---

    def before_command(self, cmd: CommandInfo) -> None:
        if self.down:
            raise DropConnection("device is rebooting")
        delay = 0.0
        drop = False
        failure: str | None = None
        with self._lock:
            for rule in self.latency.values():
                if rule.kind.matches(cmd):
                    delay = max(delay, rule.delay(cmd))
            for d in self.drops:
                if d.hit(cmd):
                    if d.when == "before":
                        drop = True
                    else:
                        self._drop_after.append(cmd)
            for f in self.fails:
                if f.hit(cmd) and failure is None:
                    failure = f.message
            if failure is None and self.pool_full and Kind("/disk", "add").matches(cmd):
                failure = POOL_FULL_MESSAGE
            if drop:
                self._drop_after = [c for c in self._drop_after if c is not cmd]
        if delay > 0:
            self._stopping.wait(delay)
            if self.down:  # rebooted while this command was "running"
                raise DropConnection("device rebooted during the command")
        if drop:
            raise DropConnection(f"injected drop before {cmd.text!r}")
        if failure is not None:
            raise InjectedError(failure)

    def after_command(self, cmd: CommandInfo, exit_status: int) -> None:
        with self._lock:
            armed = any(c is cmd for c in self._drop_after)
            self._drop_after = [c for c in self._drop_after if c is not cmd]
        if armed:
            raise DropConnection(f"injected drop after {cmd.text!r} (exit {exit_status})")


def _check_nth(nth: int | None) -> None:
    if nth is not None and nth < 1:
        raise ValueError("nth counts from 1")
