import grpc
import pytest

from rds_csi.csi import csi_pb2
from rds_csi.health import ExecutableCheck, FunctionCheck, HealthResult, Readiness
from rds_csi.identity import IdentityService, driver_version, validate_driver_name


def caps(mode: str) -> list[str]:
    resp = IdentityService("rds-csi.io", mode).plugin_capabilities()
    out = []
    for cap in resp.capabilities:
        kind = cap.WhichOneof("type")
        if kind == "service":
            out.append(csi_pb2.PluginCapability.Service.Type.Name(cap.service.type))
        else:
            out.append("EXPANSION_" + csi_pb2.PluginCapability.VolumeExpansion.Type.Name(
                cap.volume_expansion.type))
    return out


def test_capabilities_per_mode() -> None:
    both = ["VOLUME_ACCESSIBILITY_CONSTRAINTS", "EXPANSION_ONLINE"]
    assert caps("controller") == ["CONTROLLER_SERVICE", *both]
    assert caps("all") == ["CONTROLLER_SERVICE", *both]
    assert caps("node") == both


def test_plugin_info() -> None:
    info = IdentityService("rds-csi.io", "node", manifest={"node-id": "n1"}).plugin_info()
    assert info.name == "rds-csi.io"
    assert info.vendor_version == driver_version() != "0.0.0+unknown"
    assert dict(info.manifest) == {"mode": "node", "node-id": "n1"}


@pytest.mark.parametrize("name", ["rds-csi.io", "a", "x" * 63, "A1.b-2"])
def test_valid_driver_names(name: str) -> None:
    assert validate_driver_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "a_b", "x" * 64, "a b", "a/b", ".a"])
def test_invalid_driver_names(name: str) -> None:
    with pytest.raises(ValueError, match="driver name"):
        validate_driver_name(name)


def test_invalid_mode() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        IdentityService("rds-csi.io", "both")


def test_probe_follows_every_check(tmp_path) -> None:
    state = {"ok": True}
    tool = tmp_path / "nvme"
    readiness = Readiness([
        FunctionCheck("rds", lambda: HealthResult(state["ok"], "ssh refused")),
        ExecutableCheck("nvme-cli", str(tool)),
    ])
    svc = IdentityService("rds-csi.io", "all", readiness=readiness)
    assert svc.probe().ready.value is False  # nvme missing
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert svc.probe().ready.value is True
    state["ok"] = False
    assert svc.probe().ready.value is False
    state["ok"] = True
    assert svc.probe().HasField("ready") and svc.probe().ready.value is True


def test_a_crashing_check_means_not_ready() -> None:
    def boom() -> HealthResult:
        raise OSError("socket exploded")

    readiness = Readiness([FunctionCheck("x", boom)])
    svc = IdentityService("rds-csi.io", "controller", readiness=readiness)
    assert svc.probe().ready.value is False


def test_no_checks_means_ready() -> None:
    assert IdentityService("rds-csi.io", "controller").probe().ready.value is True


def test_status_code_of_unregistered_service_is_unimplemented(csi_server) -> None:
    from rds_csi.csi import csi_pb2_grpc

    _, channel = csi_server("node")
    with pytest.raises(grpc.RpcError) as err:
        csi_pb2_grpc.ControllerStub(channel).ControllerGetCapabilities(
            csi_pb2.ControllerGetCapabilitiesRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
