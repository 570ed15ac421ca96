import logging

import grpc
import pytest

from rds_csi.csi import csi_pb2, csi_pb2_grpc
from rds_csi.rpc import REDACTED, csi_method, redact
from rds_csi.status import invalid_argument

SECRET = "hunter2-very-secret"


def test_redact_top_level_and_keeps_original() -> None:
    req = csi_pb2.CreateVolumeRequest(name="pvc-1", secrets={"password": SECRET},
                                      parameters={"fsType": "ext4"})
    clean = redact(req)
    assert SECRET not in str(clean)
    assert dict(clean.secrets) == {"_": REDACTED}
    assert dict(clean.parameters) == {"fsType": "ext4"}
    assert req.secrets["password"] == SECRET  # the request itself is untouched


def test_redact_every_secret_field_in_the_proto() -> None:
    """Every message with a csi_secret field gets it removed."""
    found = 0
    for msg_desc in csi_pb2.DESCRIPTOR.message_types_by_name.values():
        for field in msg_desc.fields:
            if not field.GetOptions().Extensions[csi_pb2.csi_secret]:
                continue
            found += 1
            cls = getattr(csi_pb2, msg_desc.name)
            msg = cls()
            target = getattr(msg, field.name)
            if hasattr(target, "keys"):
                target["k"] = SECRET
            else:
                setattr(msg, field.name, SECRET)
            assert SECRET not in str(redact(msg)), f"{msg_desc.name}.{field.name} leaked"
    assert found >= 10


class _FailingController(csi_pb2_grpc.ControllerServicer):
    @csi_method
    def CreateVolume(self, request, context):
        raise invalid_argument(f"volume {request.name} rejected")


def test_interceptor_never_logs_secrets(short_tmp, caplog) -> None:
    from rds_csi.endpoint import parse_endpoint
    from rds_csi.identity import IdentityService
    from rds_csi.server import CsiServer

    sock = short_tmp / "s.sock"
    identity = IdentityService("rds-csi.io", "controller")
    server = CsiServer(parse_endpoint(f"unix://{sock}"), identity)
    csi_pb2_grpc.add_ControllerServicer_to_server(_FailingController(), server.grpc_server)
    server.start()
    caplog.set_level(logging.DEBUG)
    try:
        with grpc.insecure_channel(f"unix://{sock}") as ch:
            stub = csi_pb2_grpc.ControllerStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.CreateVolume(csi_pb2.CreateVolumeRequest(
                    name="pvc-9", secrets={"password": SECRET}), timeout=5)
    finally:
        server.stop(0)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "volume pvc-9 rejected"
    text = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "pvc-9" in text  # the debug request line was logged...
    assert SECRET not in text  # ...without the secret
    rpc_lines = [r for r in caplog.records if r.name == "rds_csi.rpc" and r.getMessage() == "rpc"]
    assert len(rpc_lines) == 1
    assert rpc_lines[0].fields["code"] == "INVALID_ARGUMENT"
    assert rpc_lines[0].fields["error"] == "volume pvc-9 rejected"
