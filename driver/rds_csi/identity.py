"""CSI Identity service: who the plugin is, what it offers, whether it is ready."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import metadata

import grpc
from google.protobuf import wrappers_pb2

from rds_csi.csi import csi_pb2, csi_pb2_grpc
from rds_csi.health import Readiness
from rds_csi.rpc import csi_method

DEFAULT_DRIVER_NAME = "rds-csi.io"
MODES = ("controller", "node", "all")

# CSI spec: at most 63 characters, alphanumeric at both ends, [-.a-zA-Z0-9] between.
_DRIVER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$")


def validate_driver_name(name: str) -> str:
    if not _DRIVER_NAME.match(name):
        raise ValueError(
            f"driver name {name!r} must be 1-63 characters of [A-Za-z0-9.-], "
            "starting and ending with a letter or digit (CSI spec, domain name notation)"
        )
    return name


def driver_version() -> str:
    try:
        return metadata.version("rds-csi")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0.0.0+unknown"


@dataclass
class IdentityService:
    """Plain-Python Identity logic; the servicer below only translates to protobuf."""

    driver_name: str
    mode: str
    readiness: Readiness = field(default_factory=Readiness)
    manifest: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_driver_name(self.driver_name)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    def plugin_info(self) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(
            name=self.driver_name,
            vendor_version=driver_version(),
            manifest={"mode": self.mode, **self.manifest},
        )

    def plugin_capabilities(self) -> csi_pb2.GetPluginCapabilitiesResponse:
        service = csi_pb2.PluginCapability.Service
        caps = []
        if self.mode in ("controller", "all"):
            caps.append(csi_pb2.PluginCapability(
                service=service(type=service.CONTROLLER_SERVICE)))
        caps.append(csi_pb2.PluginCapability(
            service=service(type=service.VOLUME_ACCESSIBILITY_CONSTRAINTS)))
        expansion = csi_pb2.PluginCapability.VolumeExpansion
        caps.append(csi_pb2.PluginCapability(
            volume_expansion=expansion(type=expansion.ONLINE)))
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=caps)

    def probe(self) -> csi_pb2.ProbeResponse:
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=self.readiness.ready()))


class IdentityServicer(csi_pb2_grpc.IdentityServicer):
    def __init__(self, service: IdentityService) -> None:
        self._service = service

    @csi_method
    def GetPluginInfo(
        self, request: csi_pb2.GetPluginInfoRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetPluginInfoResponse:
        return self._service.plugin_info()

    @csi_method
    def GetPluginCapabilities(
        self, request: csi_pb2.GetPluginCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        return self._service.plugin_capabilities()

    @csi_method
    def Probe(
        self, request: csi_pb2.ProbeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ProbeResponse:
        return self._service.probe()
