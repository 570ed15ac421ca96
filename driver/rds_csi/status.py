"""CSI errors as gRPC statuses.

Service logic raises :class:`CsiError` with the exact status code the CSI spec
prescribes; the thin gRPC servicers turn it into an aborted RPC. Keeping the
code on the exception lets plain-Python tests assert on spec semantics without
a gRPC server.
"""

from __future__ import annotations

import grpc


class CsiError(Exception):
    """An RPC failure with the gRPC status code the CSI spec requires."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def invalid_argument(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.NOT_FOUND, message)


def already_exists(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.ALREADY_EXISTS, message)


def failed_precondition(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.FAILED_PRECONDITION, message)


def aborted(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.ABORTED, message)


def unavailable(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.UNAVAILABLE, message)


def out_of_range(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.OUT_OF_RANGE, message)


def resource_exhausted(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def internal(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.INTERNAL, message)


def unimplemented(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.UNIMPLEMENTED, message)
