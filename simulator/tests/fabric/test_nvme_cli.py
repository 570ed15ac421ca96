"""The node's nvme command: nvme-cli 2.3 flags, outputs and exit codes; fencing; shared bytes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rds_sim.device import Device
from rds_sim.fabric.engine import FabricEngine
from rds_sim.fabric.nvmecli import run

pytestmark = pytest.mark.usefixtures("engine")

CONNECT = ["connect", "-t", "tcp", "-a", "127.0.0.1", "-s", "4420"]


def test_connect_outputs_and_exit_codes(engine: FabricEngine, make_export) -> None:
    a, b, c = make_export("pvc-a"), make_export("pvc-b"), make_export("pvc-c")
    h = engine.add_host("node-1")
    assert run(h, [*CONNECT, "-n", a.nqn]) == (0, "", "")  # silent without -o
    assert run(h, [*CONNECT, "-n", b.nqn, "-o", "json"]) == (0, '{\n  "device":"nvme1"\n}\n', "")
    assert run(h, ["connect", "--transport=tcp", "--traddr", "127.0.0.1", "--trsvcid=4420",
                   f"--nqn={c.nqn}", "--ctrl-loss-tmo", "30", "--reconnect-delay", "2",
                   "--keep-alive-tmo", "5", "--output-format", "normal"]) == \
        (0, "device: nvme2\n", "")
    assert run(h, [*CONNECT, "-n", a.nqn]) == (1, "", "already connected\n")
    assert run(h, ["connect", "-t", "tcp", "-a", "127.0.0.1", "-n", a.nqn]) == \
        (1, "", "already connected\n")  # default trsvcid 4420
    assert run(h, ["connect", "-t", "tcp", "-a", "127.0.0.1"]) == \
        (1, "", "required argument [--nqn | -n] not specified\n")
    assert run(h, ["connect", "-a", "127.0.0.1", "-n", a.nqn]) == \
        (1, "", "required argument [--transport | -t] not specified\n")
    assert run(h, ["connect", "-t", "tcp", "-n", a.nqn]) == \
        (1, "", "required argument [--traddr | -a] not specified for transport tcp\n")


def test_connect_errors(engine: FabricEngine, make_export) -> None:
    a = make_export("pvc-a")
    make_export("pvc-b", add=False)
    h = engine.add_host("node-1")
    # libnvme's line first, then nvme-cli's (both as the real binary prints them on Linux 6.1)
    failed = "Failed to write to /dev/nvme-fabrics: "
    refused = (1, "", f"{failed}Connection refused\n"
                      "could not add new controller: connection refused\n")
    generic = "could not add new controller: failed to write to nvme-fabrics device\n"
    rejected = (1, "", f"{failed}Input/output error\n{generic}")
    timed_out = (1, "", f"{failed}Connection timed out\n{generic}")
    assert run(h, ["connect", "-t", "tcp", "-a", "127.0.0.1", "-s", "4421", "-n", a.nqn]) == \
        refused
    assert run(h, [*CONNECT, "-n", "nqn.2000-02.com.mikrotik:pvc-b"]) == rejected  # unexported
    assert run(h, ["connect", "-t", "tcp", "-a", "127.0.0.2", "-n", a.nqn]) == timed_out
    assert run(h, [*CONNECT, "-n", a.nqn, "-I", "not-a-uuid"]) == \
        (1, "", f"{failed}Invalid argument\n"
                "could not add new controller: invalid arguments/configuration\n")
    engine.block(port=4420)
    assert run(h, [*CONNECT, "-n", a.nqn]) == timed_out
    engine.unblock()
    engine.backend.device_down()
    assert run(h, [*CONNECT, "-n", a.nqn]) == timed_out
    engine.backend.device_up([a])
    assert run(h, [*CONNECT, "-n", a.nqn])[0] == 0


def test_fencing_by_host_nqn(engine: FabricEngine, make_export) -> None:
    h1, h2 = engine.add_host("node-1"), engine.add_host("node-2")
    e = make_export("pvc-a", allowed=[h1.hostnqn])
    assert run(h2, [*CONNECT, "-n", e.nqn]) == \
        (1, "", "Failed to write to /dev/nvme-fabrics: Input/output error\n"
                "could not add new controller: failed to write to nvme-fabrics device\n")
    assert run(h1, [*CONNECT, "-n", e.nqn]) == (0, "", "")
    assert run(h2, [*CONNECT, "-n", e.nqn, "-q", h1.hostnqn])[0] == 0  # the NQN is the key
    # a new allow list does not cut existing controllers; it applies at reconnect
    from dataclasses import replace
    engine.backend.export_changed(replace(e, allowed_hosts=[h2.hostnqn]))
    assert (h1.root / "sys/class/nvme/nvme0/state").read_text() == "live\n"
    engine.block(node="node-1")
    engine.advance(5.1)
    engine.unblock()
    engine.advance(60)
    assert (h1.root / "sys/class/nvme/nvme0/state").read_text() == "connecting\n"


def test_disconnect_outputs(engine: FabricEngine, make_export) -> None:
    a, b = make_export("pvc-a"), make_export("pvc-b")
    h = engine.add_host("node-1")
    run(h, [*CONNECT, "-n", a.nqn])
    run(h, [*CONNECT, "-n", b.nqn])
    assert run(h, ["disconnect", "-n", "nqn.nope"]) == \
        (0, "NQN:nqn.nope disconnected 0 controller(s)\n", "")
    assert run(h, ["disconnect", "-d", "nvme9"]) == (0, "", "Did not find device nvme9\n")
    assert run(h, ["disconnect", "-d", "/dev/nvme1"]) == (0, "", "")
    assert run(h, ["disconnect", "--nqn", a.nqn]) == \
        (0, f"NQN:{a.nqn} disconnected 1 controller(s)\n", "")
    assert run(h, ["disconnect"]) == \
        (1, "", "Neither device name [--device | -d] nor NQN [--nqn | -n] provided\n")
    assert h.controllers() == []
    assert run(h, ["version"]) == \
        (0, "nvme version 2.3 (git 2.3)\nlibnvme version 1.3 (git 1.3)\n", "")


def test_list_outputs(engine: FabricEngine, make_export) -> None:
    a = make_export("pvc-a")
    h = engine.add_host("node-1")
    assert run(h, ["list", "-o", "json"]) == (0, '{\n  "Devices":[\n  ]\n}\n', "")
    assert run(h, ["list-subsys", "-o", "json"]) == (0, "[\n]\n", "")
    run(h, [*CONNECT, "-n", a.nqn])
    devices = json.loads(run(h, ["list", "-o", "json"])[1])["Devices"]
    assert devices == [{
        "NameSpace": 1, "DevicePath": "/dev/nvme0n1", "Firmware": "5.6.3",
        "ModelNumber": "Linux", "SerialNumber": devices[0]["SerialNumber"],
        "UsedBytes": a.size, "MaximumLBA": a.size // 512, "PhysicalSize": a.size,
        "SectorSize": 512}]
    subsys = json.loads(run(h, ["list-subsys", "-o", "json"])[1])
    assert subsys == [{"HostNQN": h.hostnqn, "HostID": h.hostid, "Subsystems": [
        {"Name": "nvme-subsys0", "NQN": a.nqn, "Paths": [
            {"Name": "nvme0", "Transport": "tcp", "State": "live",
             "Address": "traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1"}]}]}]
    assert run(h, ["list-subsys"])[1] == (
        f"nvme-subsys0 - NQN={a.nqn}\n\\\n"
        " +- nvme0 tcp traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1 live \n")
    assert run(h, ["frobnicate"])[0] == 1


def test_wrapper_script_is_a_real_command(engine: FabricEngine, make_export) -> None:
    a = make_export("pvc-a")
    h = engine.add_host("node-1")
    nvme = str(h.root / "bin/nvme")
    r = subprocess.run([nvme, *CONNECT, "-n", a.nqn, "-o", "json"], capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin"})
    assert (r.returncode, json.loads(r.stdout)) == (0, {"device": "nvme0"})
    r = subprocess.run([nvme, *CONNECT, "-n", a.nqn], capture_output=True, text=True)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "already connected\n")
    r = subprocess.run([nvme, "disconnect", "-n", a.nqn], capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, f"NQN:{a.nqn} disconnected 1 controller(s)\n")


def test_two_nodes_see_the_same_bytes(engine: FabricEngine, make_export) -> None:
    e = make_export("pvc-a")
    h1, h2 = engine.add_host("node-1"), engine.add_host("node-2")
    run(h1, [*CONNECT, "-n", e.nqn])
    run(h2, [*CONNECT, "-n", e.nqn])
    data = os.urandom(4096)
    with open(h1.root / "dev/nvme0n1", "r+b", buffering=0) as f:
        f.seek(1 << 20)
        f.write(data)
        os.fsync(f.fileno())
    with open(h2.root / "dev/nvme0n1", "rb", buffering=0) as f:
        f.seek(1 << 20)
        assert f.read(4096) == data
    with open(e.path, "rb") as f:  # it landed in the RDS disk file
        f.seek(1 << 20)
        assert f.read(4096) == data


def test_device_exports_drive_the_fabric(engine: FabricEngine, workdir: Path) -> None:
    dev = Device(workdir / "rds", export_backend=engine.backend)
    r = dev.execute('/disk add type=file file-path=storage-pool/k8s/pvc-x.img file-size=64M '
                    'slot=pvc-x nvme-tcp-export=yes nvme-tcp-server-port=4420 '
                    'nvme-tcp-server-nqn=nqn.2000-02.com.mikrotik:pvc-x')
    assert r.exit_status == 0, r.output
    h = engine.add_host("node-1")
    assert run(h, [*CONNECT, "-n", "nqn.2000-02.com.mikrotik:pvc-x", "-o", "normal"])[1] == \
        "device: nvme0\n"
    with open(h.root / "dev/nvme0n1", "r+b", buffering=0) as f:
        f.write(b"rds!")
        os.fsync(f.fileno())
    with open(dev.disk_file_path("pvc-x"), "rb") as f:
        assert f.read(4) == b"rds!"
    dev.power_off()
    assert (h.root / "sys/class/nvme/nvme0/state").read_text() == "connecting\n"
    dev.power_on()
    engine.advance(10)
    assert (h.root / "sys/class/nvme/nvme0/state").read_text() == "live\n"


def _real_nvme() -> bool:
    return shutil.which("nvme") is not None and shutil.which("unshare") is not None


@pytest.mark.skipif(not _real_nvme(), reason="needs nvme-cli and unshare")
def test_real_nvme_cli_reads_the_same_topology(engine: FabricEngine, make_export) -> None:
    """The real nvme-cli (libnvme's sysfs reader) over our sysfs, in a private mount ns."""
    a, b = make_export("pvc-a"), make_export("pvc-b")
    h = engine.add_host("node-1")
    run(h, [*CONNECT, "-n", a.nqn])
    run(h, [*CONNECT, "-n", b.nqn])
    script = f"mount --bind {h.root / 'sys'} /sys && nvme list-subsys -o json"
    real = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True)
    if real.returncode != 0 and "mount" in real.stderr:
        pytest.skip(f"no private mount namespace: {real.stderr.strip()}")
    assert real.stdout == run(h, ["list-subsys", "-o", "json"])[1]
    script = f"mount --bind {h.root / 'sys'} /sys && nvme disconnect -n {b.nqn}"
    real = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True)
    assert real.stdout == f"NQN:{b.nqn} disconnected 1 controller(s)\n"
    engine.advance(0.01)  # the kernel side: a write to delete_controller
    assert [c.name for c in h.controllers()] == ["nvme0"]
