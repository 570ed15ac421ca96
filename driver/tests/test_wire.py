"""Wire compatibility of the Identity messages with the CSI spec's field numbers.

The expected bytes are written by hand from the spec (field number << 3 | wire
type), independently of our proto file.
"""

from google.protobuf import wrappers_pb2

from rds_csi.csi import csi_pb2


def test_plugin_info_field_numbers() -> None:
    msg = csi_pb2.GetPluginInfoResponse(name="a", vendor_version="b")
    # name = 1 (0x0a), vendor_version = 2 (0x12)
    assert msg.SerializeToString() == b"\x0a\x01a\x12\x01b"


def test_plugin_capability_service_and_expansion() -> None:
    svc = csi_pb2.PluginCapability.Service
    exp = csi_pb2.PluginCapability.VolumeExpansion
    resp = csi_pb2.GetPluginCapabilitiesResponse(capabilities=[
        csi_pb2.PluginCapability(service=svc(type=svc.CONTROLLER_SERVICE)),
        csi_pb2.PluginCapability(volume_expansion=exp(type=exp.ONLINE)),
    ])
    # capabilities = 1; PluginCapability.service = 1, volume_expansion = 2; type = 1
    # CONTROLLER_SERVICE = 1, ONLINE = 1
    assert resp.SerializeToString() == (
        b"\x0a\x04" b"\x0a\x02\x08\x01"
        b"\x0a\x04" b"\x12\x02\x08\x01"
    )
    assert svc.VOLUME_ACCESSIBILITY_CONSTRAINTS == 2
    assert exp.OFFLINE == 2


def test_probe_ready_is_bool_value() -> None:
    msg = csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))
    assert msg.SerializeToString() == b"\x0a\x02\x08\x01"


def test_package_and_services() -> None:
    names = set(csi_pb2.DESCRIPTOR.services_by_name)
    assert {"Identity", "Controller", "Node", "GroupController", "SnapshotMetadata"} <= names
    assert csi_pb2.DESCRIPTOR.package == "csi.v1"


def test_secret_option_number() -> None:
    assert csi_pb2.csi_secret.number == 1059
    field = csi_pb2.CreateVolumeRequest.DESCRIPTOR.fields_by_name["secrets"]
    assert field.number == 5
    assert field.GetOptions().Extensions[csi_pb2.csi_secret] is True
