import pytest
from hypothesis import given
from hypothesis import strategies as st

from rds_csi.capacity import GiB, MiB, choose_size, fits, parse_quantity
from rds_csi.meta import Meta, MetaError, name_digest, params_to_meta
from rds_csi.params import ParameterError, VolumeParams, parse_parameters
from rds_csi.rds.commands import check_comment
from rds_csi.status import CsiError


def test_parameters_parse_and_defaults() -> None:
    p = parse_parameters({"fsType": "XFS", "nvmeAddress": "10.0.0.1", "nvmePort": "4421",
                          "ctrlLossTmo": "-1", "reconnectDelay": "2", "keepAliveTmo": "7",
                          "migrationTimeoutSeconds": "600", "volumePath": "storage-pool/vm",
                          "csi.storage.k8s.io/pvc/name": "data"})
    assert p == VolumeParams(fs_type="xfs", volume_path="storage-pool/vm", nvme_address="10.0.0.1",
                             nvme_port=4421, ctrl_loss_tmo=-1, reconnect_delay=2,
                             keep_alive_tmo=7, migration_timeout_seconds=600)
    assert parse_parameters({}) == VolumeParams()
    assert parse_parameters({"csi.storage.k8s.io/fstype": "xfs"}).fs_type == "xfs"


@pytest.mark.parametrize("raw,fragment", [
    ({"fsType": "btrfs"}, "fsType must be one of"),
    ({"nvmePort": "0"}, "between 1 and 65535"),
    ({"nvmePort": "44x"}, "must be an integer"),
    ({"ctrlLossTmo": "-2"}, "(or -1)"),
    ({"reconnectDelay": "0"}, "between 1 and 3600"),
    ({"migrationTimeoutSeconds": "5"}, "between 30 and 86400"),
    ({"nvmeAddress": "1.2.3.4;reboot"}, "neither an IP address"),
    ({"nvmeAddress": "a" * 64}, "at most 63"),
    ({"volumePath": "../../etc"}, "volume path"),
    ({"fstype": "ext4"}, "unknown parameter 'fstype'"),
])
def test_bad_parameters(raw: dict, fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_parameters(raw)


@given(st.text(max_size=128), st.integers(0, 64 << 40), st.integers(0, 2**63 - 1),
       st.sampled_from(["", "pvc-" + "a" * 28, "snap-" + "b" * 27]),
       st.sampled_from(["ext4", "xfs"]), st.integers(-1, 10**6))
def test_meta_round_trip_and_fits_the_command_builder(name, size, created, source, fs, clt):
    params = VolumeParams(fs_type=fs, nvme_address="a" * 63, ctrl_loss_tmo=clt)
    meta = Meta("vol", name_digest(name), size, created, source, params_to_meta(params))
    comment = meta.encode()
    assert check_comment(comment) == comment  # the builder accepts it: no '=' or quotes
    back = Meta.decode(comment)
    assert back == meta and back.is_for(name)
    assert back.volume_params(VolumeParams()) == params


def test_worst_case_comment_fits_the_device_limit() -> None:
    """Largest size (64 TiB, capacity.choose_size's maximum), longest address, a source,
    every parameter at its widest value."""
    params = VolumeParams(fs_type="ext4", nvme_address="a" * 63, nvme_port=65535,
                          ctrl_loss_tmo=31_536_000, reconnect_delay=3600, keep_alive_tmo=3600,
                          migration_timeout_seconds=86_400)
    meta = Meta("vol", name_digest("x" * 128), 64 << 40, 2**63 - 1, "snap-" + "f" * 27,
                params_to_meta(params))
    assert check_comment(meta.encode()) == meta.encode()


@pytest.mark.parametrize("comment", ["", "hello", "rds-csi/1 k:vol", "rds-csi/1 k:x h:a sz:1 t:1",
                                     "rds-csi/1 k:vol h:a sz:x t:1", "rds-csi/1 garbage"])
def test_foreign_or_damaged_comments(comment: str) -> None:
    with pytest.raises(MetaError):
        Meta.decode(comment)


@pytest.mark.parametrize("required,limit,expected", [
    (0, 0, GiB),
    (1, 0, MiB),
    (MiB + 1, 0, 2 * MiB),
    (5 * GiB, 5 * GiB, 5 * GiB),
    (0, 512 * MiB, 512 * MiB),
    (0, 3 * GiB, GiB),
    (0, MiB + 5, MiB),
])
def test_choose_size(required: int, limit: int, expected: int) -> None:
    size = choose_size(required, limit)
    assert size == expected
    assert fits(size, required, limit)


@pytest.mark.parametrize("required,limit,code", [
    (-1, 0, "INVALID_ARGUMENT"),
    (0, -1, "INVALID_ARGUMENT"),
    (10, 5, "INVALID_ARGUMENT"),
    (MiB + 1, MiB + 2, "OUT_OF_RANGE"),
    (0, MiB - 1, "OUT_OF_RANGE"),
    (2**62, 0, "OUT_OF_RANGE"),
])
def test_choose_size_errors(required: int, limit: int, code: str) -> None:
    with pytest.raises(CsiError) as err:
        choose_size(required, limit)
    assert err.value.code.name == code


@pytest.mark.parametrize("text,value", [
    ("0", 0), ("1048576", MiB), ("1Mi", MiB), ("10Gi", 10 * GiB), ("2G", 2 * GiB),
    ("1Ti", 1 << 40), ("3KiB", 3072),
])
def test_parse_quantity(text: str, value: int) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1.5Gi", "-1", "10Pi", "Gi"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)
