"""The sysfs resolver against hand-written trees laid out like Linux 6.1 (multipath)."""

from __future__ import annotations

import pytest
from nodefix import NQN_A, NQN_B, SysTree

from rds_csi.nvme.sysfs import NvmeSysfs, parse_address, parse_devno


@pytest.fixture
def tree(tmp_path):
    return SysTree(tmp_path / "sys")


@pytest.fixture
def sysfs(tree, tmp_path):
    return NvmeSysfs(tree.root, tmp_path / "dev")


def test_empty_tree_and_missing_root(tmp_path):
    assert NvmeSysfs(tmp_path / "nothing").controllers() == []
    assert NvmeSysfs(tmp_path / "nothing").device_for(NQN_A) is None


def test_parse_address_and_devno():
    assert parse_address("traddr=10.0.0.1,trsvcid=4420,src_addr=10.0.0.2\n") == {
        "traddr": "10.0.0.1", "trsvcid": "4420", "src_addr": "10.0.0.2"}
    assert parse_address("traddr=fe80::1%eth0,trsvcid=4420")["traddr"] == "fe80::1%eth0"
    assert parse_address("") == {}
    assert parse_devno("259:3\n") == (259, 3)
    assert parse_devno("259") is None
    assert parse_devno("a:b") is None


def test_one_live_controller_with_a_namespace(tree, sysfs, tmp_path):
    tree.controller(0, NQN_A)
    tree.namespace(0, 1, major=259, minor=0, sectors=2097152)
    (ctrl,) = sysfs.controllers()
    assert ctrl.name == "nvme0" and ctrl.live and ctrl.nqn == NQN_A
    assert ctrl.traddr == "10.0.0.1" and ctrl.trsvcid == "4420"
    assert ctrl.address["src_addr"] == "10.0.0.9"
    assert ctrl.transport == "tcp" and ctrl.ctrl_loss_tmo == "off" and ctrl.kato == "5"
    assert ctrl.paths == ("nvme0c0n1",)
    ns = sysfs.device_for(NQN_A)
    assert ns is not None
    assert ns.name == "nvme0n1" and ns.devno == (259, 0) and ns.devno_text == "259:0"
    assert ns.size_bytes == 2097152 * 512
    assert ns.dev_path == str(tmp_path / "dev" / "nvme0n1")
    assert ns.controllers == ("nvme0",)
    assert not sysfs.is_orphan(NQN_A)
    assert sysfs.device_for(NQN_B) is None


def test_orphan_controller_without_namespace(tree, sysfs):
    tree.controller(0, NQN_A)
    assert sysfs.is_orphan(NQN_A)
    assert sysfs.device_for(NQN_A) is None
    assert sysfs.namespaces_for(NQN_A) == []


def test_states_are_read_verbatim_including_spaces(tree, sysfs):
    tree.controller(0, NQN_A, state="deleting (no IO)")
    tree.controller(1, NQN_B, s=1, state="connecting")
    states = {c.name: c.state for c in sysfs.controllers()}
    assert states == {"nvme0": "deleting (no IO)", "nvme1": "connecting"}


def test_renumbered_after_ctrl_loss_with_a_stale_mount(tree, sysfs):
    """The old controller is gone, a stale mount pinned the old head's numbers:
    the new connect gives nvme1 and head nvme0n2 in the same subsystem."""
    tree.controller(1, NQN_A, s=0)
    tree.namespace(0, 2, major=259, minor=3, via=(1,))
    ns = sysfs.device_for(NQN_A)
    assert ns is not None and ns.name == "nvme0n2" and ns.devno == (259, 3)
    assert ns.controllers == ("nvme1",)
    assert [c.name for c in sysfs.controllers_for(NQN_A)] == ["nvme1"]


def test_another_subsystem_took_the_freed_numbers(tree, sysfs):
    tree.controller(0, NQN_B, s=0)
    tree.namespace(0, 1, major=259, minor=0, via=(0,))
    tree.controller(1, NQN_A, s=1)
    tree.namespace(1, 1, major=259, minor=1, via=(1,))
    a, b = sysfs.device_for(NQN_A), sysfs.device_for(NQN_B)
    assert a is not None and a.name == "nvme1n1" and a.devno == (259, 1)
    assert b is not None and b.name == "nvme0n1"


def test_the_head_reached_through_a_live_controller_wins(tree, sysfs):
    tree.controller(0, NQN_A, s=0, state="connecting")
    tree.controller(2, NQN_A, s=0)
    tree.namespace(0, 1, major=259, minor=0, via=(0,))
    tree.namespace(0, 2, major=259, minor=5, via=(2,))
    assert sysfs.device_for(NQN_A).name == "nvme0n2"
    tree.set_state(2, "deleting")
    tree.set_state(0, "live")
    assert sysfs.device_for(NQN_A).name == "nvme0n1"


def test_disappearing_files_and_foreign_entries_are_ignored(tree, sysfs):
    tree.controller(0, NQN_A)
    tree.namespace(0, 1)
    (tree.root / "class/nvme/nvme-fabrics").mkdir()  # not a controller name
    (tree.ctl / "nvme0" / "state").unlink()  # being deleted while we read
    assert sysfs.controllers() == []
    # A namespace whose size vanished is skipped, not an exception.
    (tree.subsys_dir / "nvme-subsys0" / "nvme0n1" / "size").unlink()
    assert sysfs.namespaces_for(NQN_A) == []


def test_block_device_present_and_nqns(tree, sysfs):
    tree.controller(0, NQN_A)
    tree.namespace(0, 1, major=259, minor=7)
    assert sysfs.block_device_present(259, 7)
    assert not sysfs.block_device_present(259, 8)
    # Without /sys/dev/block the /sys/block scan still answers.
    (tree.root / "dev/block/259:7").unlink()
    assert sysfs.block_device_present(259, 7)
    tree.remove_namespace(0, 1)
    assert not sysfs.block_device_present(259, 7)
    assert sysfs.nqns() == {NQN_A}


def test_tree_with_plain_directories_instead_of_symlinks(tmp_path):
    """A simulated tree may use real directories: the reader does not depend on links."""
    root = tmp_path / "sys"
    ctrl = root / "class/nvme/nvme3"
    ctrl.mkdir(parents=True)
    for name, value in {"state": "live", "subsysnqn": NQN_A, "transport": "tcp",
                        "address": "traddr=1.2.3.4,trsvcid=4421"}.items():
        (ctrl / name).write_text(value + "\n")
    (ctrl / "nvme2c3n1").mkdir()
    sub = root / "class/nvme-subsystem/nvme-subsys2"
    (sub / "nvme3").mkdir(parents=True)
    (sub / "subsysnqn").write_text(NQN_A + "\n")
    head = root / "block/nvme2n1"
    head.mkdir(parents=True)
    (head / "dev").write_text("259:4\n")
    (head / "size").write_text("1024\n")
    (sub / "nvme2n1").mkdir()
    ns = NvmeSysfs(root, "/dev").device_for(NQN_A)
    assert ns is not None and ns.name == "nvme2n1" and ns.size_bytes == 1024 * 512
    assert ns.controllers == ("nvme3",) and ns.dev_path == "/dev/nvme2n1"
