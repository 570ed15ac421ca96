"""gRPC plumbing shared by the CSI services.

- :func:`csi_method` turns :class:`CsiError` (and surprises) into gRPC
  statuses, so servicers stay one-liners that call plain Python objects.
- :class:`RpcLogInterceptor` logs every RPC exactly once with method, volume
  id, duration and status, and feeds the metrics. Request bodies are only
  logged at debug level and only after :func:`redact` has removed every field
  the spec marks ``csi_secret``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import grpc
from google.protobuf.message import Message
from google.protobuf.text_format import MessageToString

from rds_csi.csi import csi_pb2
from rds_csi.metrics import Metrics
from rds_csi.status import CsiError

log = logging.getLogger("rds_csi.rpc")

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Handler = Callable[[Any, _Req, grpc.ServicerContext], _Resp]

REDACTED = "***redacted***"
_ID_FIELDS = ("volume_id", "source_volume_id", "snapshot_id")


if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
    _MethodHandler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor
    _MethodHandler = grpc.RpcMethodHandler


def status_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status already set on ``context`` (grpc-stubs lacks ``code()``)."""
    code = cast(Any, context).code()
    return code if isinstance(code, grpc.StatusCode) else None


def status_details(context: grpc.ServicerContext) -> str:
    details = cast(Any, context).details()
    if isinstance(details, bytes):
        return details.decode("utf-8", "replace")
    return details or ""


def abort(context: grpc.ServicerContext, err: CsiError) -> NoReturn:
    context.abort(err.code, err.message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def csi_method(fn: Handler[_Req, _Resp]) -> Handler[_Req, _Resp]:
    """Decorate a servicer method: CsiError -> its status, anything else -> INTERNAL."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: _Req, context: grpc.ServicerContext) -> _Resp:
        try:
            return fn(self, request, context)
        except CsiError as err:
            abort(context, err)
        except Exception as exc:
            if status_code(context) not in (None, grpc.StatusCode.OK):
                raise  # context.abort() already chose the status
            log.exception("unexpected error in %s", fn.__name__)
            abort(context, CsiError(grpc.StatusCode.INTERNAL, f"internal error: {exc}"))

    return wrapper


def _is_secret(field: Any) -> bool:
    return bool(field.GetOptions().Extensions[csi_pb2.csi_secret])


def redact(message: Message) -> Message:
    """A copy of ``message`` with every csi_secret field (at any depth) replaced."""
    copy = type(message)()
    copy.CopyFrom(message)
    _redact_in_place(copy)
    return copy


def _redact_in_place(message: Message) -> None:
    for field, value in message.ListFields():
        if _is_secret(field):
            message.ClearField(field.name)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                getattr(message, field.name)["_"] = REDACTED
            elif field.type == field.TYPE_STRING:
                setattr(message, field.name, REDACTED)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            if field.is_repeated:
                for item in value:
                    _redact_in_place(item)
            else:
                _redact_in_place(value)


def _object_id(request: Any) -> str:
    for name in _ID_FIELDS:
        value = getattr(request, name, "")
        if value:
            return str(value)
    return ""


class RpcLogInterceptor(_Interceptor):
    """Logs and measures every unary RPC once."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _MethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _MethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def logged(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.monotonic()
            if log.isEnabledFor(logging.DEBUG) and isinstance(request, Message):
                log.debug(
                    "rpc request",
                    extra={"fields": {
                        "method": method,
                        "request": MessageToString(redact(request), as_one_line=True),
                    }},
                )
            failed = True
            try:
                response = inner(request, context)
                failed = False
                return response
            finally:
                code = status_code(context)
                if code is None:
                    code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
                elapsed = time.monotonic() - start
                fields: dict[str, Any] = {
                    "method": method,
                    "volume_id": _object_id(request),
                    **({"name": request.name} if getattr(request, "name", "") else {}),
                    "duration_ms": round(elapsed * 1000, 1),
                    "code": code.name,
                }
                details = status_details(context)
                if code != grpc.StatusCode.OK and details:
                    fields["error"] = details
                level = logging.INFO if code == grpc.StatusCode.OK else logging.WARNING
                log.log(level, "rpc", extra={"fields": fields})
                if self._metrics is not None:
                    self._metrics.rpc_total.labels(method, code.name).inc()
                    self._metrics.rpc_seconds.labels(method).observe(elapsed)

        return grpc.unary_unary_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
