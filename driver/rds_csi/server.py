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

from rds_csi.capacity import GiB, parse_quantity
from rds_csi.controller import ControllerConfig, ControllerService, ControllerServicer
from rds_csi.csi import csi_pb2_grpc
from rds_csi.endpoint import Endpoint, EndpointError, parse_endpoint, remove_stale_socket
from rds_csi.health import ExecutableCheck, FunctionCheck, HealthResult, Readiness
from rds_csi.identity import (
    DEFAULT_DRIVER_NAME,
    MODES,
    IdentityService,
    IdentityServicer,
    driver_version,
    validate_driver_name,
)
from rds_csi.ids import NQN_PREFIX_DEFAULT, IdError, Naming
from rds_csi.locks import OperationLocks
from rds_csi.logs import LEVELS, setup_logging
from rds_csi.metrics import Metrics
from rds_csi.monitor import ResilienceMonitor
from rds_csi.mount import Mounter
from rds_csi.node import NodeConfig, NodeService, NodeServicer
from rds_csi.nodestate import StateStore
from rds_csi.nvme import NvmeCli, NvmeSysfs, SysfsNvmeHost
from rds_csi.orphans import MODES as ORPHAN_MODES
from rds_csi.orphans import KubernetesVolumes, OrphanReconciler, ReconcilerLoop
from rds_csi.params import ParameterError, VolumeParams, validate_address
from rds_csi.rds import CircuitBreaker, RdsClient, SshConfig, SshTransport
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
    rds: RdsConfig | None = None
    node: NodeSettings | None = None


@dataclass
class NodeSettings:
    """Where the node plugin finds the host's NVMe and block state, and its limits."""

    sysfs_root: str = "/sys"
    dev_root: str = "/dev"
    state_dir: str = "/var/lib/rds-csi"
    max_volumes_per_node: int = 0
    rds_name: str = "rds"
    nqn_prefix: str = NQN_PREFIX_DEFAULT
    host_nqn: str = ""
    attach_timeout: float = 30.0
    monitor_interval: float = 2.0
    monitor_workers: int = 8


@dataclass
class RdsConfig:
    """How the controller reaches the RDS and names things on it."""

    ssh: SshConfig
    controller: ControllerConfig
    command_timeout: float = 30.0
    orphan_mode: str = "off"
    orphan_grace: float = 3600.0
    orphan_interval: float = 600.0


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
    node = p.add_argument_group("node plugin")
    node.add_argument("--sysfs-root", default=_env("RDS_CSI_SYSFS_ROOT", default="/sys"),
                      help="sysfs the node reads NVMe state from (default /sys)")
    node.add_argument("--dev-root", default=_env("RDS_CSI_DEV_ROOT", default="/dev"),
                      help="directory of the block device nodes (default /dev)")
    node.add_argument("--state-dir", default=_env("RDS_CSI_STATE_DIR",
                                                  default="/var/lib/rds-csi"),
                      help="where the node records staged/published volumes "
                           "(default /var/lib/rds-csi)")
    node.add_argument("--max-volumes-per-node", type=int,
                      default=int(_env("RDS_CSI_MAX_VOLUMES_PER_NODE", default="0")),
                      help="volumes this node may hold, reported in NodeGetInfo "
                           "(default 0: no limit)")
    node.add_argument("--host-nqn", default=_env("RDS_CSI_HOST_NQN"),
                      help="host NQN for nvme connect -q (default: nvme-cli's "
                           "/etc/nvme/hostnqn)")
    node.add_argument("--attach-timeout", type=float, default=30.0,
                      help="seconds to wait for a volume's namespace after nvme connect "
                           "(default 30)")
    node.add_argument("--monitor-interval", type=float, default=2.0,
                      help="seconds between two passes of the reconnect monitor while every "
                           "volume is healthy (default 2; 0.25 while one is not)")
    node.add_argument("--monitor-workers", type=int, default=8,
                      help="volumes the monitor checks/reconnects in parallel (default 8)")
    rds = p.add_argument_group("RDS connection (controller)")
    rds.add_argument("--rds-address", default=_env("RDS_ADDRESS"),
                     help="HOST[:PORT] of the RDS SSH service (env RDS_ADDRESS; port 22)")
    rds.add_argument("--rds-user", default=_env("RDS_USER", default="admin"),
                     help="SSH user (env RDS_USER; default admin)")
    rds.add_argument("--rds-password-file", default=_env("RDS_PASSWORD_FILE"),
                     help="file holding the SSH password (a Secret mount; env RDS_PASSWORD_FILE)")
    rds.add_argument("--rds-key-file", default=_env("RDS_KEY_FILE"),
                     help="file holding the SSH private key (env RDS_KEY_FILE)")
    rds.add_argument("--rds-known-hosts", default=_env("RDS_KNOWN_HOSTS"),
                     help="known_hosts file pinning the RDS host key (env RDS_KNOWN_HOSTS)")
    rds.add_argument("--rds-host-key-fingerprint", default=_env("RDS_HOST_KEY_FINGERPRINT"),
                     help="pinned host key as SHA256:<base64> (env RDS_HOST_KEY_FINGERPRINT)")
    rds.add_argument("--rds-insecure-skip-host-key-check", action="store_true",
                     default=_env("RDS_INSECURE_SKIP_HOST_KEY_CHECK") == "true",
                     help="do not verify the RDS host key (insecure; for labs only)")
    rds.add_argument("--rds-max-sessions", type=int, default=4,
                     help="concurrent SSH sessions to the RDS (default 4)")
    rds.add_argument("--rds-command-timeout", type=float, default=30.0,
                     help="seconds a RouterOS command may take (default 30)")
    rds.add_argument("--rds-pool", default=_env("RDS_POOL", default="storage-pool"),
                     help="slot or mount point of the storage pool disk (default storage-pool)")
    rds.add_argument("--rds-name", default=_env("RDS_NAME", default="rds"),
                     help="this RDS's name in the topology segment <driver-name>/rds "
                          "(controller and node)")
    rds.add_argument("--volume-base-path", default=_env("RDS_VOLUME_BASE_PATH",
                                                       default="storage-pool/k8s"),
                     help="directory on the RDS for volume files (default storage-pool/k8s)")
    rds.add_argument("--nqn-prefix", default=_env("RDS_NQN_PREFIX", default=NQN_PREFIX_DEFAULT),
                     help=f"NQN prefix of exported volumes (default {NQN_PREFIX_DEFAULT})")
    rds.add_argument("--nvme-address", default=_env("RDS_NVME_ADDRESS"),
                     help="address nodes connect to for NVMe/TCP (default: the RDS host)")
    rds.add_argument("--nvme-port", type=int, default=4420,
                     help="default NVMe/TCP port of new volumes (default 4420)")
    rds.add_argument("--capacity-reserve", default="0",
                     help="pool space GetCapacity keeps back, e.g. 100Gi (default 0)")
    rds.add_argument("--default-volume-size", default="1Gi",
                     help="size of volumes created without a capacity range (default 1Gi)")
    rds.add_argument("--orphan-reconcile", choices=ORPHAN_MODES,
                     default=_env("RDS_ORPHAN_RECONCILE", default="off"),
                     help="report (or delete) disks/files of this driver that no PersistentVolume "
                          "or VolumeSnapshotContent references (default off)")
    rds.add_argument("--orphan-grace", type=float, default=3600.0,
                     help="seconds something must stay orphaned before it is deleted "
                          "(default 3600)")
    rds.add_argument("--orphan-interval", type=float, default=600.0,
                     help="seconds between orphan scans (default 600)")
    p.add_argument("--version", action="version", version=f"rds-csi {driver_version()}")
    return p


def _rds_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> RdsConfig:
    if not args.rds_address:
        parser.error(f"--rds-address is required in {args.mode} mode")
    host, sep, port_text = args.rds_address.rpartition(":")
    if not sep or "]" in port_text:
        host, port_text = args.rds_address, "22"
    host = host.strip("[]")
    try:
        host = validate_address(host, "--rds-address")
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError
    except (ParameterError, ValueError) as exc:
        parser.error(str(exc) if isinstance(exc, ParameterError) else
                     f"--rds-address port must be 1-65535, got {port_text!r}")
    if not args.rds_password_file and not args.rds_key_file:
        parser.error("--rds-password-file or --rds-key-file is required in controller mode")
    for flag in ("rds_password_file", "rds_key_file", "rds_known_hosts"):
        path = getattr(args, flag)
        if path and not Path(path).is_file():
            parser.error(f"--{flag.replace('_', '-')} {path} does not exist")
    if not (args.rds_known_hosts or args.rds_host_key_fingerprint
            or args.rds_insecure_skip_host_key_check):
        parser.error("pin the RDS host key with --rds-known-hosts or --rds-host-key-fingerprint "
                     "(or pass --rds-insecure-skip-host-key-check for a lab)")
    if args.rds_max_sessions < 1:
        parser.error("--rds-max-sessions must be at least 1")
    try:
        naming = Naming(nqn_prefix=args.nqn_prefix, base_path=args.volume_base_path)
        nvme_address = validate_address(args.nvme_address or host, "--nvme-address")
        reserve = parse_quantity(args.capacity_reserve)
        default_size = parse_quantity(args.default_volume_size)
    except (IdError, ParameterError, ValueError) as exc:
        parser.error(str(exc))
    if not 0 < args.nvme_port < 65536:
        parser.error("--nvme-port must be 1-65535")
    if default_size < 1 << 20:
        parser.error("--default-volume-size must be at least 1Mi")
    ssh = SshConfig(
        host=host,
        port=port,
        username=args.rds_user,
        password_file=Path(args.rds_password_file) if args.rds_password_file else None,
        private_key_file=Path(args.rds_key_file) if args.rds_key_file else None,
        known_hosts_file=Path(args.rds_known_hosts) if args.rds_known_hosts else None,
        host_key_fingerprint=args.rds_host_key_fingerprint or None,
        insecure_skip_host_key_check=args.rds_insecure_skip_host_key_check,
        max_sessions=args.rds_max_sessions,
    )
    controller = ControllerConfig(
        naming=naming,
        defaults=VolumeParams(nvme_address=nvme_address, nvme_port=args.nvme_port),
        pool=args.rds_pool,
        capacity_reserve_bytes=reserve,
        default_volume_bytes=default_size or GiB,
        topology_key=f"{args.driver_name}/rds",
        rds_name=args.rds_name,
    )
    if args.orphan_grace < 0 or args.orphan_interval < 1:
        parser.error("--orphan-grace must be >= 0 and --orphan-interval >= 1")
    return RdsConfig(ssh=ssh, controller=controller, command_timeout=args.rds_command_timeout,
                     orphan_mode=args.orphan_reconcile, orphan_grace=args.orphan_grace,
                     orphan_interval=args.orphan_interval)


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
    rds = _rds_config(parser, args) if args.mode in ("controller", "all") else None
    node = _node_settings(parser, args) if args.mode in ("node", "all") else None
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
        rds=rds,
        node=node,
    )


def _node_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> NodeSettings:
    for flag in ("sysfs_root", "dev_root", "state_dir"):
        if not os.path.isabs(getattr(args, flag)):
            parser.error(f"--{flag.replace('_', '-')} must be an absolute path")
    if args.max_volumes_per_node < 0:
        parser.error("--max-volumes-per-node must not be negative")
    if args.attach_timeout <= 0 or args.monitor_interval <= 0 or args.monitor_workers <= 0:
        parser.error("--attach-timeout, --monitor-interval and --monitor-workers must be "
                     "positive")
    try:
        Naming(nqn_prefix=args.nqn_prefix)
    except IdError as exc:
        parser.error(str(exc))
    if args.host_nqn and not args.host_nqn.startswith("nqn."):
        parser.error("--host-nqn must be an NQN (nqn.YYYY-MM.domain:...)")
    return NodeSettings(
        sysfs_root=args.sysfs_root,
        dev_root=args.dev_root,
        state_dir=args.state_dir,
        max_volumes_per_node=args.max_volumes_per_node,
        rds_name=args.rds_name,
        nqn_prefix=args.nqn_prefix,
        host_nqn=args.host_nqn,
        attach_timeout=args.attach_timeout,
        monitor_interval=args.monitor_interval,
        monitor_workers=args.monitor_workers,
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
        self.controller: ControllerService | None = None
        self.node: NodeService | None = None
        self.monitor: ResilienceMonitor | None = None

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


def build_controller(rds: RdsConfig) -> ControllerService:
    transport = CircuitBreaker(SshTransport(rds.ssh), name=rds.ssh.host)
    client = RdsClient(transport, timeout=rds.command_timeout)
    return ControllerService(client, rds.controller)


def build_node(config: Config, settings: NodeSettings,
               metrics: Metrics) -> tuple[NodeService, ResilienceMonitor]:
    sysfs = NvmeSysfs(settings.sysfs_root, settings.dev_root)
    host = SysfsNvmeHost(sysfs, NvmeCli(config.nvme_path), nqn_prefix=settings.nqn_prefix,
                         attach_timeout=settings.attach_timeout)
    mounter = Mounter(sysfs_root=settings.sysfs_root)
    store = StateStore(settings.state_dir)
    locks = OperationLocks()
    node_config = NodeConfig(
        node_id=config.node_id,
        driver_name=config.driver_name,
        rds_name=settings.rds_name,
        max_volumes_per_node=settings.max_volumes_per_node,
        naming=Naming(nqn_prefix=settings.nqn_prefix),
        host_nqn=settings.host_nqn,
    )
    service = NodeService(node_config, host, mounter, store, locks=locks, metrics=metrics)
    monitor = ResilienceMonitor(store, host, mounter, locks=locks, metrics=metrics,
                                interval=settings.monitor_interval,
                                workers=settings.monitor_workers)
    return service, monitor


def build_server(config: Config, metrics: Metrics | None = None) -> CsiServer:
    metrics = metrics or Metrics()
    readiness = Readiness()
    controller = build_controller(config.rds) if config.rds is not None else None
    if controller is not None:
        def rds_health() -> HealthResult:
            ok, reason = controller.rds_reachable()
            return HealthResult(ok, reason)

        readiness.add(FunctionCheck("rds-ssh", rds_health))
    if config.mode in ("node", "all"):
        readiness.add(ExecutableCheck("nvme-cli", config.nvme_path))
    identity = IdentityService(
        driver_name=config.driver_name,
        mode=config.mode,
        readiness=readiness,
        manifest={"node-id": config.node_id} if config.node_id else {},
    )
    server = CsiServer(
        config.endpoint,
        identity,
        socket_mode=config.socket_mode,
        max_workers=config.max_workers,
        metrics=metrics,
    )
    if controller is not None:
        csi_pb2_grpc.add_ControllerServicer_to_server(
            ControllerServicer(controller), server.grpc_server)
        server.controller = controller
    if config.mode in ("node", "all"):
        node, monitor = build_node(config, config.node or NodeSettings(), metrics)
        csi_pb2_grpc.add_NodeServicer_to_server(NodeServicer(node), server.grpc_server)
        server.node = node
        server.monitor = monitor
    return server


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
    orphans: ReconcilerLoop | None = None
    if config.rds is not None and config.rds.orphan_mode != "off" and server.controller:
        try:
            cluster = KubernetesVolumes(config.driver_name)
        except Exception as exc:
            log.error("--orphan-reconcile needs the Kubernetes API: %s", exc)
            return 1
        orphans = ReconcilerLoop(OrphanReconciler(
            server.controller.rds, config.rds.controller.naming, cluster,
            grace_seconds=config.rds.orphan_grace,
            delete=config.rds.orphan_mode == "delete"), config.rds.orphan_interval)
        orphans.start()
    try:
        server.start()
    except (EndpointError, RuntimeError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    log.info(
        "serving",
        extra={"fields": {"endpoint": config.endpoint.grpc_target,
                          **({"port": server.port} if config.endpoint.scheme == "tcp" else {}),
                          "mode": config.mode,
                          "driver": config.driver_name, "version": driver_version(),
                          "node_id": config.node_id}},
    )
    if server.monitor is not None:
        server.monitor.start()
    stop.wait()
    if server.monitor is not None:
        server.monitor.stop()
    if orphans is not None:
        orphans.stop()
    server.stop(config.shutdown_grace)
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    setup_logging(config.log_format, config.log_level)
    sys.exit(run(config))


if __name__ == "__main__":
    main()
