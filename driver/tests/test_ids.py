import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rds_csi.ids import IdError, Naming, validate_base_path, validate_csi_name

N = Naming()
SLOT = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@given(st.text(min_size=1, max_size=40).filter(lambda s: validate_ok(s)))
def test_every_valid_name_maps_to_a_safe_32_char_slot(name: str) -> None:
    slot = N.volume_slot(name)
    assert len(slot) == 32 and SLOT.match(slot)
    assert N.is_volume_id(slot) and not N.is_snapshot_id(slot)
    assert N.volume_slot(name) == slot  # deterministic
    snap = N.snapshot_slot(name)
    assert len(snap) == 32 and N.is_snapshot_id(snap) and not N.is_volume_id(snap)


def validate_ok(name: str) -> bool:
    try:
        validate_csi_name(name)
    except IdError:
        return False
    return True


def test_distinct_names_distinct_slots() -> None:
    slots = {N.volume_slot(f"pvc-{i}") for i in range(5000)}
    assert len(slots) == 5000


@pytest.mark.parametrize("name,fragment", [
    ("", "required"),
    ("x" * 129, "longer than 128"),
    ("é" * 65, "longer than 128"),
    ("a\x00b", "U+0000"),
    ("a\x1fb", "U+001F"),
    ("a\x85b", "U+0085"),
])
def test_bad_names(name: str, fragment: str) -> None:
    with pytest.raises(IdError, match=re.escape(fragment)):
        N.volume_slot(name)


def test_names_with_allowed_whitespace_and_unicode() -> None:
    for name in ["a b", "tab\there", "line\nbreak", "日本語", "x" * 128]:
        assert N.is_volume_id(N.volume_slot(name))


@pytest.mark.parametrize("vid", [
    "pvc-" + "0" * 27, "pvc-" + "0" * 29, "pvc-" + "G" * 28, "snap-" + "0" * 27,
    "pvc-" + "0" * 27 + ";", "", "../pvc", "pvc-" + "0" * 27 + "\n",
])
def test_malformed_ids_are_not_ids(vid: str) -> None:
    assert not N.is_volume_id(vid)


def test_paths_and_nqn() -> None:
    slot = N.volume_slot("pvc-1")
    assert N.file_path(slot) == f"storage-pool/k8s/{slot}.img"
    assert N.file_path(slot, "/storage-pool/other/") == f"storage-pool/other/{slot}.img"
    assert N.snapshot_file_path("snap-x") == "storage-pool/k8s/snapshots/snap-x.img"
    assert N.nqn(slot) == f"nqn.2000-02.com.mikrotik:{slot}"


@pytest.mark.parametrize("path", ["", "/", "a/../b", "a/.hidden", "a b", "a;b", "a//b" + "/x" * 9,
                                  "a\\b", "-a", "a/$(x)"])
def test_bad_base_paths(path: str) -> None:
    with pytest.raises(IdError):
        validate_base_path(path)


@pytest.mark.parametrize("kwargs", [
    {"volume_prefix": "PVC-"}, {"volume_prefix": "a" * 13}, {"volume_prefix": "snap-"},
    {"snapshot_prefix": "pvc-x"}, {"nqn_prefix": "iqn.2000-01.x"}, {"base_path": "../x"},
])
def test_bad_naming(kwargs: dict) -> None:
    with pytest.raises(IdError):
        Naming(**kwargs)
