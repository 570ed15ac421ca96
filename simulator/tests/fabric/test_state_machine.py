"""Controller state machine and numbering on a fake clock (no sleeping through delays)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rds_sim.fabric.engine import FabricEngine
from rds_sim.fabric.host import FabricHost
from rds_sim.fabric.nvmecli import run

pytestmark = pytest.mark.usefixtures("engine")


def connect(host: FabricHost, nqn: str, *extra: str) -> str:
    rc, out, err = run(host, ["connect", "-t", "tcp", "-a", "127.0.0.1", "-s", "4420",
                              "-n", nqn, "-o", "normal", *extra])
    assert rc == 0, err
    return out.removeprefix("device: ").strip()


def sysfs(host: FabricHost, rel: str) -> str:
    return (host.root / "sys" / rel).read_text().rstrip("\n")


def states(host: FabricHost, name: str) -> list[str]:
    c = host.find_ctrl(name)
    assert c is not None
    return [s for _, s in c.history]


def test_connect_writes_sysfs_and_dev(engine: FabricEngine, make_export) -> None:
    e = make_export("pvc-a")
    h = engine.add_host("node-1")
    assert connect(h, e.nqn, "-l", "10", "-c", "3", "-k", "7") == "nvme0"
    assert sysfs(h, "class/nvme/nvme0/state") == "live"
    assert sysfs(h, "class/nvme/nvme0/subsysnqn") == e.nqn
    assert sysfs(h, "class/nvme/nvme0/transport") == "tcp"
    assert sysfs(h, "class/nvme/nvme0/address") == \
        "traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1"
    assert sysfs(h, "class/nvme/nvme0/ctrl_loss_tmo") == "12"  # DIV_ROUND_UP(10, 3) * 3
    assert sysfs(h, "class/nvme/nvme0/reconnect_delay") == "3"
    assert sysfs(h, "class/nvme/nvme0/kato") == "7"
    assert sysfs(h, "class/nvme/nvme0/hostnqn") == h.hostnqn
    assert sysfs(h, "class/nvme/nvme0/cntlid") == "1"
    assert sysfs(h, "class/nvme-subsystem/nvme-subsys0/subsysnqn") == e.nqn
    assert (h.root / "sys/class/nvme-subsystem/nvme-subsys0/nvme0").resolve() == \
        (h.root / "sys/class/nvme/nvme0").resolve()
    assert (h.root / "sys/class/nvme/nvme0/nvme0c0n1").is_dir()
    assert sysfs(h, "block/nvme0n1/size") == str(e.size // 512)
    st = os.stat(h.root / "dev/nvme0n1")
    assert sysfs(h, "block/nvme0n1/dev") == f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    assert (h.root / "sys/class/nvme-subsystem/nvme-subsys0/nvme0n1/dev").exists()
    assert sysfs(h, "class/nvme/nvme0/dev").endswith(":0")


def test_defaults_and_forever(engine: FabricEngine, make_export) -> None:
    a, b = make_export("pvc-a"), make_export("pvc-b")
    h = engine.add_host("node-1")
    connect(h, a.nqn)
    assert sysfs(h, "class/nvme/nvme0/ctrl_loss_tmo") == "600"
    assert sysfs(h, "class/nvme/nvme0/reconnect_delay") == "10"
    assert sysfs(h, "class/nvme/nvme0/kato") == "5"
    connect(h, b.nqn, "-l", "-1", "-c", "0", "-k", "0")  # libnvme drops 0 -> kernel defaults
    assert sysfs(h, "class/nvme/nvme1/ctrl_loss_tmo") == "off"
    assert sysfs(h, "class/nvme/nvme1/reconnect_delay") == "10"
    engine.backend.device_down()
    engine.advance(3600)
    assert [c.name for c in h.controllers()] == ["nvme1"]
    assert sysfs(h, "class/nvme/nvme1/state") == "connecting"


def test_short_outage_reconnects_with_same_numbers(engine: FabricEngine, make_export) -> None:
    e = make_export("pvc-a")
    h = engine.add_host("node-1")
    connect(h, e.nqn, "-l", "10", "-c", "1")
    rdev = os.stat(h.root / "dev/nvme0n1").st_rdev
    engine.backend.export_removed(e)  # target unlinks the port: noticed at once
    assert sysfs(h, "class/nvme/nvme0/state") == "connecting"
    assert sysfs(h, "class/nvme/nvme0/address") == "traddr=127.0.0.1,trsvcid=4420"
    assert (h.root / "dev/nvme0n1").exists()  # the namespace stays while reconnecting
    engine.advance(5)
    assert sysfs(h, "class/nvme/nvme0/state") == "connecting"
    engine.backend.export_added(e)
    engine.advance(1)
    assert sysfs(h, "class/nvme/nvme0/state") == "live"
    assert states(h, "nvme0") == ["new", "connecting", "live", "resetting", "connecting",
                                  "live"]
    assert os.stat(h.root / "dev/nvme0n1").st_rdev == rdev
    assert [c.name for c in h.controllers()] == ["nvme0"]


def test_long_outage_deletes_and_numbers_are_reused(engine: FabricEngine, make_export) -> None:
    e = make_export("pvc-a")
    h = engine.add_host("node-1")
    connect(h, e.nqn, "-l", "10", "-c", "2")
    engine.backend.device_down()
    engine.advance(9.9)
    assert sysfs(h, "class/nvme/nvme0/state") == "connecting"
    engine.advance(0.2)  # fifth failed attempt at +10 s
    assert h.controllers() == []
    assert states_gone(h)
    engine.backend.device_up([e])
    assert connect(h, e.nqn) == "nvme0"
    assert (h.root / "dev/nvme0n1").exists()


def states_gone(h: FabricHost) -> bool:
    return (not (h.root / "sys/class/nvme/nvme0").exists()
            and not (h.root / "sys/block/nvme0n1").exists()
            and not (h.root / "dev/nvme0n1").exists()
            and not (h.root / "dev/nvme0").exists()
            and not (h.root / "sys/class/nvme-subsystem/nvme-subsys0").exists())


def test_zero_ctrl_loss_tmo_deletes_on_first_error(engine: FabricEngine, make_export) -> None:
    e = make_export("pvc-a")
    h = engine.add_host("node-1")
    connect(h, e.nqn, "-l", "0")
    engine.backend.export_removed(e)
    assert h.controllers() == []


def test_packet_drop_is_noticed_by_keep_alive(engine: FabricEngine, make_export) -> None:
    e = make_export("pvc-a")
    h = engine.add_host("node-1")
    connect(h, e.nqn, "-l", "60", "-c", "2", "-k", "5")
    engine.block(port=4420)
    engine.advance(3)
    engine.unblock(port=4420)  # shorter than kato: nothing happens
    engine.advance(10)
    assert states(h, "nvme0")[-1] == "live"
    engine.block(node="node-1")
    engine.advance(4.9)
    assert sysfs(h, "class/nvme/nvme0/state") == "live"
    engine.advance(0.2)
    assert sysfs(h, "class/nvme/nvme0/state") == "connecting"
    engine.advance(10)
    assert sysfs(h, "class/nvme/nvme0/state") == "connecting"
    engine.unblock(node="node-1")
    engine.advance(2)
    assert sysfs(h, "class/nvme/nvme0/state") == "live"


def test_block_affects_only_that_node(engine: FabricEngine, make_export) -> None:
    e = make_export("pvc-a")
    h1, h2 = engine.add_host("node-1"), engine.add_host("node-2")
    connect(h1, e.nqn)
    connect(h2, e.nqn)
    engine.block(node="node-2")
    engine.advance(6)
    assert sysfs(h1, "class/nvme/nvme0/state") == "live"
    assert sysfs(h2, "class/nvme/nvme0/state") == "connecting"
    rc, _, err = run(engine.add_host("node-3"), ["connect", "-t", "tcp", "-a", "127.0.0.1",
                                                 "-n", e.nqn])
    assert rc == 0, err


def test_pinned_by_mount_renumbers(engine: FabricEngine, make_export, workdir: Path) -> None:
    e = make_export("pvc-a")
    h = engine.add_host("node-1")
    connect(h, e.nqn, "-l", "4", "-c", "2")
    dev = h.root / "dev/nvme0n1"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(dev)], check=True)
    mnt = workdir / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", str(dev), str(mnt)], check=True)
    (mnt / "hello").write_text("before")
    engine.backend.device_down()
    engine.advance(5)
    assert h.controllers() == []
    # del_gendisk: the block device leaves sysfs and /dev, the numbers stay taken
    assert not dev.exists()
    assert not (h.root / "sys/block/nvme0n1").exists()
    assert sysfs(h, "class/nvme-subsystem/nvme-subsys0/subsysnqn") == e.nqn
    assert not (h.root / "sys/class/nvme/nvme0").exists()
    engine.backend.device_up([e])
    assert connect(h, e.nqn) == "nvme1"
    assert (h.root / "dev/nvme0n2").exists()
    assert (h.root / "sys/class/nvme-subsystem/nvme-subsys0/nvme1").exists()
    assert (h.root / "sys/class/nvme/nvme1/nvme0c1n2").is_dir()
    mnt2 = workdir / "mnt2"
    mnt2.mkdir()
    subprocess.run(["umount", str(mnt)], check=True)
    subprocess.run(["mount", str(h.root / "dev/nvme0n2"), str(mnt2)], check=True)
    assert (mnt2 / "hello").read_text() == "before"
    subprocess.run(["umount", str(mnt2)], check=True)
    rc, out, _ = run(h, ["disconnect", "-n", e.nqn])
    assert (rc, out) == (0, f"NQN:{e.nqn} disconnected 1 controller(s)\n")
    assert connect(h, e.nqn) == "nvme0"  # nothing holds anything any more
    assert (h.root / "dev/nvme0n1").exists()


def test_pinned_by_open_fd(engine: FabricEngine, make_export) -> None:
    e = make_export("pvc-a")
    h = engine.add_host("node-1")
    connect(h, e.nqn)
    fd = os.open(h.root / "dev/nvme0n1", os.O_RDONLY)
    try:
        run(h, ["disconnect", "-d", "nvme0"])
        assert connect(h, e.nqn) == "nvme1"
        assert (h.root / "dev/nvme0n2").exists()
    finally:
        os.close(fd)


def test_a_held_head_released_before_the_disconnect_frees_the_subsystem(
        engine: FabricEngine, make_export) -> None:
    # measured on Linux 6.1 (e2e/kernel agree.py "ctrl-loss-held"): the zombie head goes on
    # its last close, so the disconnect of the new controller leaves no nvme-subsys behind
    e = make_export("pvc-a")
    h = engine.add_host("node-1")
    connect(h, e.nqn, "-l", "2", "-c", "1")
    fd = os.open(h.root / "dev/nvme0n1", os.O_RDONLY)
    engine.backend.export_removed(e)
    engine.advance(3)
    assert h.controllers() == []
    engine.backend.export_added(e)
    assert connect(h, e.nqn) == "nvme1"
    os.close(fd)
    run(h, ["disconnect", "-n", e.nqn])
    assert not (h.root / "sys/class/nvme-subsystem/nvme-subsys0").exists()
    assert h.subsystems == []


def test_other_subsystem_takes_the_numbers(engine: FabricEngine, make_export) -> None:
    a, b = make_export("pvc-a"), make_export("pvc-b")
    h = engine.add_host("node-1")
    connect(h, a.nqn, "-l", "2", "-c", "1")
    a_dev = sysfs(h, "block/nvme0n1/dev")
    engine.backend.export_removed(a)
    engine.advance(2)
    assert h.controllers() == []
    assert connect(h, b.nqn) == "nvme0"
    assert (h.root / "dev/nvme0n1").exists()
    engine.backend.export_added(a)
    assert connect(h, a.nqn) == "nvme1"
    assert sysfs(h, "class/nvme-subsystem/nvme-subsys1/subsysnqn") == a.nqn
    assert (h.root / "dev/nvme1n1").exists()
    # as in the kernel, B's disk took the device number A's had (lowest free)
    assert sysfs(h, "block/nvme0n1/dev") == a_dev


def test_resize_updates_size(engine: FabricEngine, make_export) -> None:
    from dataclasses import replace

    e = make_export("pvc-a", size=32 * 1024 * 1024)
    h = engine.add_host("node-1")
    connect(h, e.nqn)
    bigger = replace(e, size=48 * 1024 * 1024)
    with open(e.path, "r+b") as f:
        f.truncate(bigger.size)
    engine.backend.export_changed(bigger)
    assert sysfs(h, "block/nvme0n1/size") == str(bigger.size // 512)
    with open(h.root / "dev/nvme0n1", "rb") as f:
        assert f.seek(0, os.SEEK_END) == bigger.size


def test_sysfs_delete_controller_write(engine: FabricEngine, make_export) -> None:
    e = make_export("pvc-a")
    h = engine.add_host("node-1")
    connect(h, e.nqn)
    (h.root / "sys/class/nvme/nvme0/delete_controller").write_text("1")
    engine.advance(0.01)
    assert h.controllers() == []
