"""Hostile input: arbitrary names, parameters and sizes never put a second command on the RDS.

Every rejection is INVALID_ARGUMENT or OUT_OF_RANGE (or a legitimate CSI outcome for a
well-formed request); the simulator's command log proves that each command line the
driver sent held exactly one command of the kinds the driver uses.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rds_csi.controller import ControllerService
from rds_csi.csi import csi_pb2
from rds_csi.status import CsiError

from .conftest import SimEnv, create_req

ALLOWED = re.compile(
    r"^/(disk (add|set|remove|print)|file (print|remove)|system (identity|resource) print)\b")
EVIL = st.sampled_from([
    'x;/system reboot', 'x"; /system reset-configuration', "x\n/disk remove [find]",
    "$(reboot)", "[find]", "a\\\"b", "x\r\n/file remove [find]", "\u2028", "slot=evil",
    "'", "`id`", "x y", "",
])
TEXT = st.one_of(EVIL, st.text(max_size=140))
PARAM_KEYS = st.one_of(st.sampled_from([
    "fsType", "volumePath", "nvmeAddress", "nvmePort", "ctrlLossTmo", "reconnectDelay",
    "keepAliveTmo", "migrationTimeoutSeconds", "csi.storage.k8s.io/pvc/name"]), TEXT)
SIZES = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, 1 << 20, 1 << 30]))
ACCEPTED = {"INVALID_ARGUMENT", "OUT_OF_RANGE", "ALREADY_EXISTS", "NOT_FOUND",
            "RESOURCE_EXHAUSTED"}


def _unquoted_separators(command: str) -> int:
    count, quoted, escaped = 0, False, False
    for ch in command:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch in ";\n\r" and not quoted:
            count += 1
    return count


def _assert_log_clean(sim_env: SimEnv) -> None:
    for entry in sim_env.sim.command_log():
        assert ALLOWED.match(entry.command), entry.command
        assert _unquoted_separators(entry.command) == 0, entry.command
        assert entry.exit_status in (0, 1, None), entry
    assert sim_env.sim.device.identity == "rds"
    assert all(s.startswith(("pvc-", "snap-")) for s in sim_env.slots())


settings_ = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings_
@given(name=TEXT, params=st.dictionaries(PARAM_KEYS, TEXT, max_size=4), required=SIZES,
       limit=SIZES)
def test_create_volume_hostile(sim_env: SimEnv, controller: ControllerService, name: str,
                               params: dict[str, str], required: int, limit: int) -> None:
    req = create_req(name, parameters=params,
                     capacity_range=csi_pb2.CapacityRange(required_bytes=required,
                                                          limit_bytes=limit))
    try:
        vol = controller.create_volume(req).volume
    except CsiError as err:
        assert err.code.name in ACCEPTED, err
        assert err.message
    else:
        assert vol.volume_id in sim_env.slots()
        controller.delete_volume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id))
    _assert_log_clean(sim_env)


@settings_
@given(volume_id=TEXT, snap_name=TEXT, size=SIZES)
def test_snapshot_and_expand_hostile(sim_env: SimEnv, controller: ControllerService,
                                     volume_id: str, snap_name: str, size: int) -> None:
    for call in (
        lambda: controller.create_snapshot(csi_pb2.CreateSnapshotRequest(
            source_volume_id=volume_id, name=snap_name)),
        lambda: controller.expand_volume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=size))),
        lambda: controller.delete_volume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id)),
        lambda: controller.delete_snapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=volume_id)),
        lambda: controller.list_snapshots(csi_pb2.ListSnapshotsRequest(
            snapshot_id=volume_id, source_volume_id=snap_name)),
        lambda: controller.get_volume(csi_pb2.ControllerGetVolumeRequest(volume_id=volume_id)),
    ):
        try:
            call()
        except CsiError as err:
            assert err.code.name in ACCEPTED, err
    _assert_log_clean(sim_env)
