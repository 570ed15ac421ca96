"""Real nvmet target and nvme-tcp host (stock Debian 6.1 kernel in qemu micro-VMs): data written
over NVMe/TCP reads back byte for byte, across a pulled cable and a simulated RDS reboot."""

from __future__ import annotations

import json
import time

from kernel_rig import (
    VENV_BIN,
    Pair,
    RdsSim,
    block_device,
    connect,
    ctrl_state,
    disconnect,
    load_host,
    load_target,
    read_sha,
    verify,
    wait_state,
    watch_state,
    write_pattern,
)

NQN = "nqn.2000-02.com.mikrotik:kernel-tier-0"
CONFIGFS = "/sys/kernel/config/nvmet"

EXPORT = """
import json, sys
from rds_sim.nvmet import Nvmet, PortAddr
nv = Nvmet()
nv.check_root()
nqn, path, addr = sys.argv[1:4]
nv.create_subsystem(nqn)
nv.add_namespace(nqn, 1, path)
nv.create_port(1, PortAddr(addr, 4420))
nv.link(1, nqn)
print(json.dumps(nv.dump()))
"""

ROUND_TRIP = """
import json
from rds_sim.nvmet import Nvmet
nv = Nvmet()
nv.save("/tmp/nvmet.json")
before = nv.dump()
nv.clear()
assert nv.is_empty(), nv.dump()
assert nv.restore_file("/tmp/nvmet.json") == []
assert nv.dump() == before, (nv.dump(), before)
nv.clear()
print(json.dumps(nv.dump()))
"""


def py(guest_cmd_args: str) -> str:
    return f"{VENV_BIN}/python - {guest_cmd_args}"


def test_nvme_tcp_io_survives_a_pulled_cable(pair: Pair) -> None:
    rds, node = pair.rds, pair.node
    load_target(rds)
    load_host(node)
    backing = "/srv/kernel-tier-0.img"  # on tmpfs: needs buffered_io
    rds.check(f"truncate -s 64M {backing}")
    dump = json.loads(rds.check(py(f"{NQN} {backing} {pair.rds_addr}"), input=EXPORT))
    (ns,) = dump["subsystems"][0]["namespaces"]
    assert ns["enable"] == 1 and ns["buffered_io"] == 1
    assert rds.check(f"ls {CONFIGFS}/ports/1/subsystems").split() == [NQN]

    ctrl = connect(node, NQN, pair.rds_addr, ctrl_loss_tmo=10, reconnect_delay=1)
    assert ctrl_state(node, ctrl) == "live"
    dev = block_device(node, NQN)
    write_pattern(node, dev, "a", 8)
    verify(node, dev, "a", 8)
    # the bytes are in the target's backing file too
    assert read_sha(rds, backing, 8, direct=False) == node.check(
        "sha256sum < /tmp/a.bin").split()[0]

    # pull the cable with a write in flight: it must wait for the reconnect, not fail
    node.check("head -c 4M /dev/urandom > /tmp/b.bin")
    pair.pull(True)
    pulled = time.monotonic()
    node.spawn(f"dd if=/tmp/b.bin of={dev} bs=1M seek=16 oflag=direct conv=fsync status=none; "
               "echo $? > /tmp/b.rc", log="/tmp/b.log")
    seen = watch_state(node, ctrl, 9.0)
    pair.pull(False)
    seen += wait_state(node, ctrl, "live", timeout=40)
    print(f"states: {seen}; live again {time.monotonic() - pulled:.1f} s after the pull")
    assert "connecting" in seen or "resetting" in seen, seen
    assert seen[-1] == "live"
    assert node.wait_for("cat /tmp/b.rc", timeout=60).strip() == "0", node.run("cat /tmp/b.log")
    assert block_device(node, NQN) == dev  # same controller, same device node
    verify(node, dev, "a", 8)
    verify(node, dev, "b", 4, offset_mib=16)

    disconnect(node, NQN)
    # real configfs: save, teardown that leaves nothing, restore, the same dump, teardown again
    after = json.loads(rds.check(py(""), input=ROUND_TRIP))
    assert after == {"hosts": [], "ports": [], "subsystems": []}
    assert rds.check(f"ls {CONFIGFS}/subsystems {CONFIGFS}/ports {CONFIGFS}/hosts").split() == [
        f"{CONFIGFS}/hosts:", f"{CONFIGFS}/ports:", f"{CONFIGFS}/subsystems:"]


def test_rds_sim_nvmet_backend_exports_disks_to_a_node(pair: Pair) -> None:
    rds, node = pair.rds, pair.node
    load_host(node)
    sim = RdsSim(rds, address=pair.rds_addr).start()
    nqn = sim.add_disk("pvc-kernel-tier", "64M")
    sub = f"{CONFIGFS}/subsystems/{nqn}"
    backing = rds.check(f"cat {sub}/namespaces/1/device_path").strip()
    assert backing.endswith("/pvc-kernel-tier.img")
    assert rds.check(f"cat {sub}/namespaces/1/enable").strip() == "1"
    assert rds.check(f"ls {CONFIGFS}/ports/4420/subsystems").split() == [nqn]

    ctrl = connect(node, nqn, pair.rds_addr, ctrl_loss_tmo=10, reconnect_delay=1)
    dev = block_device(node, nqn)
    write_pattern(node, dev, "a", 8)
    verify(node, dev, "a", 8)
    assert read_sha(rds, backing, 8, direct=False) == node.check(
        "sha256sum < /tmp/a.bin").split()[0]

    # an RDS reboot: the port stops listening for its duration, the host keeps reconnecting
    sim.fault("reboot", "--seconds", "5")
    assert rds.check(f"ls {CONFIGFS}/ports/4420/subsystems").split() == []
    seen = wait_state(node, ctrl, "connecting", timeout=15)
    seen += wait_state(node, ctrl, "live", timeout=40)
    print(f"states through the reboot: {seen}")
    assert rds.check(f"ls {CONFIGFS}/ports/4420/subsystems").split() == [nqn]
    verify(node, dev, "a", 8)
    write_pattern(node, dev, "b", 4, offset_mib=32)
    verify(node, dev, "b", 4, offset_mib=32)

    disconnect(node, nqn)
    status, out = sim.cli("/disk remove [find slot=pvc-kernel-tier]")
    assert status == 0, out
    assert rds.check(f"ls {CONFIGFS}/subsystems {CONFIGFS}/ports").split() == [
        f"{CONFIGFS}/ports:", f"{CONFIGFS}/subsystems:"]
    sim.stop()
