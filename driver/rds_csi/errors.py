"""Error types shared across the driver.

Callers map them to gRPC codes: `RdsUnavailable` and `ConnectionLost` -> UNAVAILABLE,
`NotEnoughSpace` -> RESOURCE_EXHAUSTED, `InvalidValue` -> INVALID_ARGUMENT, the rest -> INTERNAL.
Messages never contain secrets (passwords, key material).
"""

from __future__ import annotations


class RdsError(Exception):
    """Base of everything the RDS client layer raises."""


class InvalidValue(RdsError, ValueError):
    """A value does not match the whitelist for the command field it was meant for."""


class RdsUnavailable(RdsError):
    """The RDS could not be reached; the command was NOT sent."""


class AuthenticationFailed(RdsUnavailable):
    """The RDS refused our credentials (not retried: retrying cannot help)."""


class HostKeyRejected(RdsUnavailable):
    """The RDS host key does not match the pinned key: possible man in the middle."""


class ConnectionLost(RdsError):
    """The connection died after the command was sent: it may or may not have run.

    Callers must look at the device state before acting again.
    """


class CommandTimeout(ConnectionLost):
    """The command did not finish in time; its channel was closed. Outcome unknown."""


class RdsParseError(RdsError):
    """The device answered with output we cannot make sense of."""


class RdsCommandError(RdsError):
    """The device reported an error for a command."""

    def __init__(self, message: str, *, command: str = "", exit_status: int | None = None) -> None:
        super().__init__(f"{message} (command: {command})" if command else message)
        self.message = message
        self.command = command
        self.exit_status = exit_status


class AlreadyExists(RdsCommandError):
    """`failure: already have such entry` (duplicate slot, file...)."""


class NotEnoughSpace(RdsCommandError):
    """`failure: not enough space` on the pool."""


class NoSuchItem(RdsCommandError):
    """`no such item`: the command named an item that does not exist."""


class RdsSyntaxError(RdsCommandError):
    """The device could not parse the command (a bug on our side, or a firmware difference)."""
