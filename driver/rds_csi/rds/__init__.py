"""RDS control plane: SSH transport, circuit breaker, command builder, output parser, typed client.

Typical wiring: `RdsClient(CircuitBreaker(SshTransport(SshConfig(...))))`.
"""

from rds_csi.rds.breaker import BreakerState, CircuitBreaker
from rds_csi.rds.client import Disk, FileEntry, Pool, RdsClient, SystemResource
from rds_csi.rds.commands import NvmeExport
from rds_csi.rds.transport import CommandOutput, SshConfig, SshTransport, Transport

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CommandOutput",
    "Disk",
    "FileEntry",
    "NvmeExport",
    "Pool",
    "RdsClient",
    "SshConfig",
    "SshTransport",
    "SystemResource",
    "Transport",
]
