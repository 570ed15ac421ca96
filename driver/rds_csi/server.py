"""The ``rds-csi`` process: flags, gRPC wiring, socket lifecycle, shutdown.

Everything here is plumbing; the CSI logic lives in the service modules.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import grpc

from rds_csi.csi import csi_pb2_grpc
from rds_csi.endpoint import Endpoint, EndpointError, parse_endpoint, remove_stale_socket
from rds_csi.health import ExecutableCheck, Readiness
from rds_csi.identity import (
    DEFAULT_DRIVER_NAME,
    MODES,
    IdentityService,
    IdentityServicer,
    driver_version,
    validate_driver_name,
)
from rds_csi.logs import LEVELS, setup_logging
from rds_csi.metrics import Metrics
from rds_csi.rpc import RpcLogInterceptor

log = logging.getLogger("rds_csi.server")

DEFAULT_ENDPOINT = "unix:///csi/csi.sock"


@dataclass
class Config:
    endpoint: Endpoint
    mode: str
    node_id: str
    driver_name: str
    log_format: str = "text"
    log_level: str = "info"
    socket_mode: int = 0o660
    max_workers: int = 16
    shutdown_grace: float = 30.0
    metrics_address: str = ""
    nvme_path: str = "/usr/sbin/nvme"


def _env(*names: str, default: str = "") -> str:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rds-csi",
        description="Kubernetes CSI driver for MikroTik ROSE Data Server over NVMe/TCP.",
    )
    p.add_argument("--endpoint", default=_env("CSI_ENDPOINT", default=DEFAULT_ENDPOINT),
                   help="unix:///path/csi.sock or tcp://host:port (env CSI_ENDPOINT)")
    p.add_argument("--mode", choices=MODES, default=_env("RDS_CSI_MODE", default="all"),
                   help="which CSI services to serve besides Identity (env RDS_CSI_MODE)")
    p.add_argument("--node-id", default=_env("CSI_NODE_ID", "KUBE_NODE_NAME"),
                   help="this node's id, required in node and all modes "
                        "(env CSI_NODE_ID or KUBE_NODE_NAME)")
    p.add_argument("--driver-name", default=_env("RDS_CSI_DRIVER_NAME",
                                                 default=DEFAULT_DRIVER_NAME),
                   help=f"CSI driver name (default {DEFAULT_DRIVER_NAME})")
    p.add_argument("--log-format", choices=("text", "json"),
                   default=_env("RDS_CSI_LOG_FORMAT", default="text"))
    p.add_argument("--log-level", choices=LEVELS,
                   default=_env("RDS_CSI_LOG_LEVEL", default="info"))
    p.add_argument("--socket-mode", default="0660",
                   help="permissions of the unix socket, octal 0600 or 0660 (default 0660)")
    p.add_argument("--max-workers", type=int, default=16,
                   help="gRPC worker threads; further RPCs queue (default 16)")
    p.add_argument("--shutdown-grace", type=float, default=30.0,
                   help="seconds in-flight RPCs may take to finish on SIGTERM (default 30)")
    p.add_argument("--metrics-address", default=_env("RDS_CSI_METRICS_ADDRESS"),
                   help="HOST:PORT to serve Prometheus /metrics on (default: off)")
    p.add_argument("--nvme-path", default=_env("RDS_CSI_NVME_PATH", default="/usr/sbin/nvme"),
                   help="the nvme CLI the node service uses (default /usr/sbin/nvme)")
    p.add_argument("--version", action="version", version=f"rds-csi {driver_version()}")
    return p


def parse_config(argv: Sequence[str] | None = None) -> Config:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        endpoint = parse_endpoint(args.endpoint)
    except EndpointError as exc:
        parser.error(str(exc))
    try:
        validate_driver_name(args.driver_name)
    except ValueError as exc:
        parser.error(str(exc))
    if args.mode in ("node", "all") and not args.node_id:
        parser.error(f"--node-id is required in {args.mode} mode")
    if args.socket_mode not in ("0600", "0660", "600", "660"):
        parser.error("--socket-mode must be 0600 or 0660")
    if args.max_workers < 1:
        parser.error("--max-workers must be at least 1")
    if args.shutdown_grace < 0:
        parser.error("--shutdown-grace must not be negative")
    return Config(
        endpoint=endpoint,
        mode=args.mode,
        node_id=args.node_id,
        driver_name=args.driver_name,
        log_format=args.log_format,
        log_level=args.log_level,
        socket_mode=int(args.socket_mode, 8),
        max_workers=args.max_workers,
        shutdown_grace=args.shutdown_grace,
        metrics_address=args.metrics_address,
        nvme_path=args.nvme_path,
    )


class CsiServer:
    """A gRPC server on a CSI endpoint with the services of one driver mode."""

    def __init__(
        self,
        endpoint: Endpoint,
        identity: IdentityService,
        *,
        socket_mode: int = 0o660,
        max_workers: int = 16,
        metrics: Metrics | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.identity = identity
        self._socket_mode = socket_mode
        self._metrics = metrics or Metrics()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="csi-rpc"),
            interceptors=[RpcLogInterceptor(self._metrics)],
            options=[("grpc.so_reuseport", 0)],
        )
        csi_pb2_grpc.add_IdentityServicer_to_server(IdentityServicer(identity), self._server)
        self.port = 0

    @property
    def grpc_server(self) -> grpc.Server:
        """For the controller and node services to register themselves."""
        return self._server

    def start(self) -> None:
        path = self.endpoint.socket_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_socket(path)
            # Create the socket with no world access from the first moment, then
            # set the exact mode: no window in which others could connect.
            old_umask = os.umask(0o777 & ~self._socket_mode)
            try:
                self.port = self._server.add_insecure_port(self.endpoint.grpc_target)
                self._server.start()
            finally:
                os.umask(old_umask)
            os.chmod(path, self._socket_mode)
        else:
            self.port = self._server.add_insecure_port(self.endpoint.grpc_target)
            if self.port == 0:
                raise EndpointError(f"cannot listen on {self.endpoint.address}")
            self._server.start()

    def stop(self, grace: float) -> None:
        """Refuse new RPCs now; let in-flight ones finish within ``grace`` seconds."""
        self._server.stop(grace).wait()
        path = self.endpoint.socket_path
        if path is not None:
            Path(path).unlink(missing_ok=True)


def build_server(config: Config, metrics: Metrics | None = None) -> CsiServer:
    readiness = Readiness()
    if config.mode in ("node", "all"):
        readiness.add(ExecutableCheck("nvme-cli", config.nvme_path))
    identity = IdentityService(
        driver_name=config.driver_name,
        mode=config.mode,
        readiness=readiness,
        manifest={"node-id": config.node_id} if config.node_id else {},
    )
    return CsiServer(
        config.endpoint,
        identity,
        socket_mode=config.socket_mode,
        max_workers=config.max_workers,
        metrics=metrics,
    )


def run(config: Config) -> int:
    metrics = Metrics()
    server = build_server(config, metrics)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received, shutting down",
                 extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if config.metrics_address:
        metrics.serve(config.metrics_address)
    try:
        server.start()
    except (EndpointError, RuntimeError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    log.info(
        "serving",
        extra={"fields": {"endpoint": config.endpoint.grpc_target, "port": server.port,
                          "mode": config.mode,
                          "driver": config.driver_name, "version": driver_version(),
                          "node_id": config.node_id}},
    )
    stop.wait()
    server.stop(config.shutdown_grace)
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    setup_logging(config.log_format, config.log_level)
    sys.exit(run(config))


if __name__ == "__main__":
    main()
