"""The node's NVMe/TCP host layer: sysfs resolver, nvme CLI runner, attach/detach boundary.

Device names (``nvme0``, ``nvme0n1``) are never stable: every lookup goes through
sysfs by subsystem NQN, nothing caches a ``/dev`` path.
"""

from rds_csi.nvme.cli import ConnectOptions, NvmeCli, NvmeCliError
from rds_csi.nvme.host import AttachError, NvmeHost, SysfsNvmeHost
from rds_csi.nvme.sysfs import Controller, Namespace, NvmeSysfs, Subsystem

__all__ = [
    "AttachError",
    "ConnectOptions",
    "Controller",
    "Namespace",
    "NvmeCli",
    "NvmeCliError",
    "NvmeHost",
    "NvmeSysfs",
    "Subsystem",
    "SysfsNvmeHost",
]
