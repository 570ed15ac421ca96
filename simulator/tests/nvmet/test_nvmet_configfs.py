"""rds_sim.nvmet against an imitation of configfs (the real kernel runs in the kernel tier)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from nvmet_fakefs import FakeConfigfs

from rds_sim.nvmet import Nvmet, NvmetError, PortAddr

NQN = "nqn.2000-02.com.mikrotik:pvc-1"
HOST_A = "nqn.2014-08.org.nvmexpress:uuid:aaaa"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:bbbb"


@pytest.fixture
def fs(tmp_path: Path) -> FakeConfigfs:
    return FakeConfigfs(tmp_path / "nvmet")


@pytest.fixture
def nv(fs: FakeConfigfs) -> Nvmet:
    return Nvmet(fs.root, fs)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    f = tmp_path / "pvc-1.img"
    with f.open("wb") as fh:
        fh.truncate(64 << 20)
    return f


def export(nv: Nvmet, disk: Path, nqn: str = NQN, port: int = 4420) -> None:
    nv.create_subsystem(nqn)
    nv.add_namespace(nqn, 1, disk)
    nv.create_port(port, PortAddr("0.0.0.0", port))
    nv.link(port, nqn)


def test_export_writes_what_the_kernel_needs(nv: Nvmet, fs: FakeConfigfs, disk: Path) -> None:
    export(nv, disk)
    s = fs.root / "subsystems" / NQN
    assert (s / "attr_allow_any_host").read_text() == "1"
    ns = s / "namespaces" / "1"
    assert (ns / "device_path").read_text() == str(disk)
    assert (ns / "enable").read_text() == "1"
    port = fs.root / "ports" / "4420"
    assert (port / "addr_trtype").read_text() == "tcp"
    assert (port / "addr_adrfam").read_text() == "ipv4"
    assert (port / "addr_trsvcid").read_text() == "4420"
    assert os.readlink(port / "subsystems" / NQN) == str(s)
    assert nv.port_subsystems(4420) == [NQN]


def test_buffered_io_is_set_before_enable_for_a_file(nv: Nvmet, fs: FakeConfigfs,
                                                      disk: Path) -> None:
    nv.create_subsystem(NQN)
    nv.add_namespace(NQN, 1, disk)
    writes = [p for op, p in fs.ops if op == "write" and "/namespaces/1/" in p]
    names = [w.split("/")[-1] for w in writes]
    assert names.index("buffered_io=1") < names.index("enable=1")


def test_enable_without_buffered_io_is_refused_on_tmpfs(nv: Nvmet, disk: Path) -> None:
    nv.create_subsystem(NQN)
    with pytest.raises(NvmetError, match="Invalid argument"):
        nv.add_namespace(NQN, 1, disk, buffered_io=False)


def test_enable_needs_the_backing_file(nv: Nvmet, tmp_path: Path) -> None:
    nv.create_subsystem(NQN)
    with pytest.raises(NvmetError, match="No such file"):
        nv.add_namespace(NQN, 1, tmp_path / "missing.img", buffered_io=True)


def test_reconfiguring_an_enabled_namespace_disables_it_first(nv: Nvmet, disk: Path,
                                                              tmp_path: Path) -> None:
    export(nv, disk)
    other = tmp_path / "other.img"
    other.write_bytes(b"\0" * 4096)
    nv.add_namespace(NQN, 1, other)
    assert nv.ns_enabled(NQN, 1)
    assert nv.dump()["subsystems"][0]["namespaces"][0]["device"]["path"] == str(other)


def test_teardown_leaves_nothing_and_goes_in_order(nv: Nvmet, fs: FakeConfigfs,
                                                  disk: Path) -> None:
    export(nv, disk)
    export(nv, disk, nqn=NQN + "-b", port=4421)
    nv.set_allowed_hosts(NQN, [HOST_A])
    fs.ops.clear()
    nv.clear()
    assert nv.is_empty()
    for d in ("subsystems", "ports", "hosts"):
        assert list((fs.root / d).iterdir()) == []
    ops = [f"{op} {p}" for op, p in fs.ops]
    assert ops.index(f"unlink ports/4420/subsystems/{NQN}") < ops.index(f"rmdir subsystems/{NQN}")
    assert ops.index(f"write subsystems/{NQN}/namespaces/1/enable=0") < ops.index(
        f"rmdir subsystems/{NQN}/namespaces/1")
    assert ops.index(f"unlink subsystems/{NQN}/allowed_hosts/{HOST_A}") < ops.index(
        f"rmdir hosts/{HOST_A}")


def test_a_linked_subsystem_cannot_be_removed_directly(nv: Nvmet, fs: FakeConfigfs,
                                                       disk: Path) -> None:
    export(nv, disk)
    nv.remove_namespace(NQN, 1)
    with pytest.raises(OSError):
        fs.rmdir(fs.root / "subsystems" / NQN)  # what a naive teardown would hit
    nv.delete_subsystem(NQN)  # unlinks from the port first
    assert nv.subsystems() == [] and nv.port_subsystems(4420) == []


def test_allowed_hosts_and_allow_any_host_exclude_each_other(nv: Nvmet, fs: FakeConfigfs,
                                                             disk: Path) -> None:
    export(nv, disk)
    nv.set_allowed_hosts(NQN, [HOST_A, HOST_B])
    assert not nv.allow_any_host(NQN)
    assert nv.allowed_hosts(NQN) == sorted([HOST_A, HOST_B])
    assert nv.hosts() == sorted([HOST_A, HOST_B])
    nv.set_allowed_hosts(NQN, [HOST_B])
    assert nv.allowed_hosts(NQN) == [HOST_B]
    assert nv.hosts() == [HOST_B]  # a host nobody allows any more is removed
    nv.set_allowed_hosts(NQN, [])
    assert nv.allow_any_host(NQN)
    assert nv.allowed_hosts(NQN) == [] and nv.hosts() == []


def test_a_host_shared_by_two_subsystems_stays_while_one_allows_it(nv: Nvmet,
                                                                  disk: Path) -> None:
    export(nv, disk)
    export(nv, disk, nqn=NQN + "-b")
    nv.set_allowed_hosts(NQN, [HOST_A])
    nv.set_allowed_hosts(NQN + "-b", [HOST_A])
    nv.delete_subsystem(NQN)
    assert nv.hosts() == [HOST_A]
    nv.delete_subsystem(NQN + "-b")
    assert nv.hosts() == []


def test_readdressing_a_linked_port_relinks_its_subsystems(nv: Nvmet, disk: Path) -> None:
    export(nv, disk)
    nv.create_port(4420, PortAddr("192.168.77.1", 4420))
    assert nv.port_addr(4420) == PortAddr("192.168.77.1", 4420, "tcp", "ipv4")
    assert nv.port_subsystems(4420) == [NQN]


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NvmetError, match="modprobe nvmet"):
        Nvmet(tmp_path / "nope").check_root()


def test_dump_is_nvmetcli_format(nv: Nvmet, disk: Path) -> None:
    export(nv, disk)
    nv.set_allowed_hosts(NQN, [HOST_A])
    d = nv.dump()
    assert d["hosts"] == [{"nqn": HOST_A}]
    (s,) = d["subsystems"]
    assert s["nqn"] == NQN and s["allowed_hosts"] == [HOST_A]
    assert s["attr"]["allow_any_host"] == "0"
    (ns,) = s["namespaces"]
    assert ns["nsid"] == 1 and ns["enable"] == 1 and ns["device"]["path"] == str(disk)
    assert ns["buffered_io"] == 1
    (p,) = d["ports"]
    assert p["portid"] == 4420 and p["subsystems"] == [NQN] and p["referrals"] == []
    assert p["addr"]["trtype"] == "tcp" and p["addr"]["trsvcid"] == "4420"


def test_save_clear_restore_round_trip(nv: Nvmet, disk: Path, tmp_path: Path) -> None:
    export(nv, disk)
    export(nv, disk, nqn=NQN + "-b", port=4421)
    nv.set_allowed_hosts(NQN + "-b", [HOST_A])
    saved = tmp_path / "config.json"
    nv.save(saved)
    before = json.loads(saved.read_text())
    nv.clear()
    assert nv.is_empty()
    assert nv.restore_file(saved) == []
    assert nv.dump() == before


def test_restore_an_nvmetcli_file(nv: Nvmet, disk: Path) -> None:
    """The shape nvmetcli writes (attribute values as strings, ANA groups, an attribute this
    kernel lacks); no buffered_io key: a regular file gets buffered_io=1."""
    config = {
        "hosts": [],
        "ports": [{
            "addr": {"adrfam": "ipv4", "traddr": "192.168.77.1", "treq": "not specified",
                     "trsvcid": "4420", "trtype": "tcp"},
            "ana_groups": [{"ana": {"state": "optimized"}, "grpid": 1}],
            "param": {"inline_data_size": "16384", "pi_enable": "0"},
            "portid": 1, "referrals": [], "subsystems": ["nvmet-always"],
        }],
        "subsystems": [{
            "allowed_hosts": [],
            "attr": {"allow_any_host": "1", "serial": "123456789abcdef", "version": "1.3",
                     "firmware": "6.1"},
            "namespaces": [{"ana_grpid": 1, "enable": 1, "nsid": 1,
                            "device": {"nguid": "00000000-0000-0000-0000-000000000000",
                                       "path": str(disk),
                                       "uuid": "d592cdf3-5d1c-44e0-8412-3fcf7d99df27"}}],
            "nqn": "nvmet-always",
        }],
    }
    errors = nv.restore(config)
    assert len(errors) == 1 and "attr_firmware" in errors[0]
    assert nv.ns_enabled("nvmet-always", 1)
    assert nv.port_subsystems(1) == ["nvmet-always"]
    assert nv.port_addr(1) == PortAddr("192.168.77.1", 4420)


def test_restore_refuses_to_merge_unless_asked(nv: Nvmet, disk: Path) -> None:
    export(nv, disk)
    with pytest.raises(NvmetError, match="not restoring"):
        nv.restore({"subsystems": []}, clear_existing=False)


def test_restore_abort_on_error(nv: Nvmet, tmp_path: Path) -> None:
    config = {"subsystems": [{"nqn": NQN, "namespaces": [
        {"nsid": 1, "enable": 1, "device": {"path": str(tmp_path / "missing.img")}}]}]}
    assert any("enable" in e for e in nv.restore(config))
    with pytest.raises(NvmetError):
        nv.restore(config, abort_on_error=True)
