"""The two kinds of RouterOS errors: parse errors (nothing runs) and runtime errors (exit 1)."""

from __future__ import annotations


class ParseError(Exception):
    """Found before anything runs; RouterOS 7 prints it and still exits 0."""

    def __init__(self, kind: str, line: int, column: int) -> None:
        self.kind = kind  # e.g. "syntax error", "bad command name foo"
        self.line = line
        self.column = column
        super().__init__(f"{kind} (line {line} column {column})")


class CommandError(Exception):
    """A runtime error of one command (`failure: ...`, `no such item`, ...): printed, exit 1."""
