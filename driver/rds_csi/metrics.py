"""Prometheus metrics of the driver process.

One registry per process (not the global default) so tests can create
several servers without duplicate-metric errors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpc_total = Counter(
            "rds_csi_rpc_total",
            "CSI RPCs handled, by method and gRPC status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "rds_csi_rpc_duration_seconds",
            "CSI RPC latency, by method",
            ["method"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        # Node service and resilience monitor.
        self.node_actions = Counter(
            "rds_csi_node_actions_total",
            "Host actions of the node service (attach, detach, format, mount, bind, mknod, "
            "unmount, resize), by result",
            ["action", "result"],
            registry=self.registry,
        )
        self.monitor_actions = Counter(
            "rds_csi_monitor_actions_total",
            "What the resilience monitor saw or did (reconnecting, live_again, reconnect, "
            "remount, rebind, repoint, refused, orphan_cleaned, ...), by result",
            ["action", "result"],
            registry=self.registry,
        )
        self.volume_abnormal = Gauge(
            "rds_csi_volume_abnormal",
            "1 while a staged volume's condition is abnormal (per volume id)",
            ["volume_id"],
            registry=self.registry,
        )
        self.volumes_staged = Gauge(
            "rds_csi_volumes_staged",
            "Volumes staged on this node (as recorded in the state directory)",
            registry=self.registry,
        )

    def serve(self, address: str) -> None:
        """Expose /metrics on HOST:PORT in a background thread."""
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
