"""Prometheus metrics of the driver process.

One registry per process (not the global default) so tests can create
several servers without duplicate-metric errors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server


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

    def serve(self, address: str) -> None:
        """Expose /metrics on HOST:PORT in a background thread."""
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
