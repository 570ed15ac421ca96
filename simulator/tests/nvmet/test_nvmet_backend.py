"""NvmetBackend driven by the real device model, over an imitation of configfs."""

from __future__ import annotations

from pathlib import Path

import pytest
from nvmet_fakefs import FakeConfigfs

from rds_sim.device import Device
from rds_sim.nvmet import Nvmet, NvmetBackend, PortAddr, namespace_uuid

PREFIX = "nqn.2000-02.com.mikrotik:"
HOST_A = "nqn.2014-08.org.nvmexpress:uuid:aaaa"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:bbbb"


def add_line(slot: str, port: int = 4420, extra: str = "") -> str:
    return (f"/disk add type=file file-path=storage-pool/k8s/{slot}.img file-size=1G slot={slot}"
            f" nvme-tcp-export=yes nvme-tcp-server-port={port}"
            f" nvme-tcp-server-nqn={PREFIX}{slot} {extra}").strip()


class Rig:
    def __init__(self, tmp: Path, **kw: object) -> None:
        self.fs = FakeConfigfs(tmp / "nvmet")
        self.nv = Nvmet(self.fs.root, self.fs)
        self.backend = NvmetBackend(self.nv, address="192.168.77.1", **kw)  # type: ignore[arg-type]
        self.device = Device(tmp / "state", export_backend=self.backend, pool_size=100 << 30)

    def run(self, line: str) -> None:
        r = self.device.execute(line)
        assert r.exit_status == 0, r.output
        assert self.backend.errors == []


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_disk_add_becomes_a_linked_subsystem_backed_by_the_disk_file(rig: Rig) -> None:
    rig.run(add_line("pvc-1"))
    nqn = PREFIX + "pvc-1"
    assert rig.nv.subsystems() == [nqn]
    ns = rig.nv.dump()["subsystems"][0]["namespaces"][0]
    assert ns["device"]["path"] == str(rig.device.disk_file_path("pvc-1"))
    assert ns["device"]["uuid"] == namespace_uuid(nqn)
    assert ns["enable"] == 1 and ns["buffered_io"] == 1
    assert rig.nv.port_addr(4420) == PortAddr("192.168.77.1", 4420)
    assert rig.nv.port_subsystems(4420) == [nqn]
    assert rig.nv.allow_any_host(nqn)


def test_disk_remove_takes_the_subsystem_and_the_unused_port_away(rig: Rig) -> None:
    rig.run(add_line("pvc-1"))
    rig.run(add_line("pvc-2", port=4421))
    rig.run("/disk remove [find slot=pvc-1]")
    assert rig.nv.subsystems() == [PREFIX + "pvc-2"]
    assert rig.nv.ports() == [4421]
    rig.run("/disk remove [find slot=pvc-2]")
    assert rig.nv.is_empty()


def test_allowed_host_names_map_to_allowed_hosts(rig: Rig) -> None:
    rig.run(add_line("pvc-1", extra=f"nvme-tcp-server-allow-host-name={HOST_A}"))
    nqn = PREFIX + "pvc-1"
    assert rig.nv.allowed_hosts(nqn) == [HOST_A] and not rig.nv.allow_any_host(nqn)
    rig.run(f"/disk set [find slot=pvc-1] nvme-tcp-server-allow-host-name={HOST_A},{HOST_B}")
    assert rig.nv.allowed_hosts(nqn) == sorted([HOST_A, HOST_B])
    rig.run('/disk set [find slot=pvc-1] nvme-tcp-server-allow-host-name=""')
    assert rig.nv.allowed_hosts(nqn) == [] and rig.nv.allow_any_host(nqn)
    assert rig.nv.hosts() == []


def test_reboot_unlinks_the_port_for_its_duration(rig: Rig) -> None:
    rig.run(add_line("pvc-1"))
    rig.run(add_line("pvc-2"))
    nqns = [PREFIX + "pvc-1", PREFIX + "pvc-2"]
    rig.device.power_off()
    assert rig.nv.port_subsystems(4420) == []  # the port stops listening
    assert rig.nv.subsystems() == nqns  # the disks themselves stay
    assert all(rig.nv.ns_enabled(n, 1) for n in nqns)
    rig.device.power_on()
    assert rig.nv.port_subsystems(4420) == nqns
    assert rig.backend.errors == []


def test_disabled_export_goes_away_and_comes_back(rig: Rig) -> None:
    rig.run(add_line("pvc-1"))
    rig.run("/disk set [find slot=pvc-1] nvme-tcp-export=no")
    assert rig.nv.is_empty()
    rig.run("/disk set [find slot=pvc-1] nvme-tcp-export=yes")
    assert rig.nv.port_subsystems(4420) == [PREFIX + "pvc-1"]


def test_resize_revalidates_the_namespace(rig: Rig) -> None:
    rig.run(add_line("pvc-1"))
    rig.fs.ops.clear()
    rig.run("/disk set [find slot=pvc-1] file-size=2G")
    assert ("write", f"subsystems/{PREFIX}pvc-1/namespaces/1/revalidate_size=1") in rig.fs.ops


def test_port_override_puts_every_export_on_one_port(tmp_path: Path) -> None:
    rig = Rig(tmp_path, port=4500)
    rig.run(add_line("pvc-1", port=4420))
    rig.run(add_line("pvc-2", port=4421))
    assert rig.nv.ports() == [4500]
    assert rig.nv.port_subsystems(4500) == [PREFIX + "pvc-1", PREFIX + "pvc-2"]


def test_a_restarted_simulator_exports_the_same_disks(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(add_line("pvc-1"))
    before = rig.nv.dump()
    # a new process on the same state dir and the same (still configured) configfs
    backend = NvmetBackend(rig.nv, address="192.168.77.1")
    Device(tmp_path / "state", export_backend=backend, pool_size=100 << 30)
    assert backend.errors == []
    assert rig.nv.dump() == before


def test_close_leaves_nothing(rig: Rig) -> None:
    rig.run(add_line("pvc-1", extra=f"nvme-tcp-server-allow-host-name={HOST_A}"))
    rig.run(add_line("pvc-2", port=4421))
    rig.backend.close()
    assert rig.nv.is_empty()


def test_configfs_failures_are_recorded_not_raised(rig: Rig) -> None:
    rig.fs.root.joinpath("ports").rename(rig.fs.root / "ports-gone")  # a broken configfs
    r = rig.device.execute(add_line("pvc-1"))
    assert r.exit_status == 0  # the RouterOS command itself succeeded
    assert rig.backend.errors and "add pvc-1" in rig.backend.errors[0]
