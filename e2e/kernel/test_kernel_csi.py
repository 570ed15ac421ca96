"""The driver end to end on real nvmet and nvme-tcp (issue 6): rds-sim with the nvmet backend and
`rds-csi --mode controller` in the RDS VM, `rds-csi --mode node` in two node VMs (real /sys, /dev,
nvme-cli, mkfs, mounts). CSI calls go over the plugins' unix sockets from inside the VMs, like a
CO's. Every scenario writes data and checks it byte for byte after the fault.

One testbed for the module (boots cost 10-20 s each under TCG); every scenario leaves nothing
behind (the `clean` fixture checks: no controller, no kubelet mount, no node state, no subsystem
beyond the ones the RDS should export).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agree import SEQUENCES, FabricRunner, KernelRunner, differences, normalize
from csi_rig import Cluster, Volume, cap, ls
from kernel_rig import block_device, ctrl_state, read_sha, verify, write_pattern

SHORT = {"ctrlLossTmo": "60", "reconnectDelay": "1"}
LONG = {"ctrlLossTmo": "5", "reconnectDelay": "1"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    started = time.monotonic()
    c = Cluster(nodes=2)
    with c:
        print(f"\ncluster up in {time.monotonic() - started:.1f} s "
              f"(boot rds {c.tb.rds.boot_seconds:.1f} s)")
        yield c


@pytest.fixture
def clean(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    started = time.monotonic()
    yield cluster
    print(f"\n{request.node.name}: {time.monotonic() - started:.1f} s")
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for n in cluster.nodes:
            print(f"\n--- {n.node_id} driver log ---\n"
                  + "\n".join(n.log_text().splitlines()[-60:]))
            print(f"--- {n.node_id} console ---\n{n.guest.console(30)}")  # type: ignore[attr-defined]
        return
    for n in cluster.nodes:
        assert n.mounts() == [], n.mounts()
        assert ls(n.guest, f"{n.state_dir}/volumes") == []
        assert n.guest.check("ls /sys/class/nvme 2>/dev/null; true").split() == []
    assert cluster.configfs_subsystems() == []


def lifecycle(c: Cluster, fs: str) -> None:
    n1 = c.nodes[0]
    vol = c.create(f"pvc-life-{fs}", 320 << 20, params={"fsType": fs})
    assert vol.nqn in c.configfs_subsystems()
    n1.stage(vol, cap(fs=fs))
    staged = n1.mounts()
    assert len(staged) == 1 and f" - {fs} " in staged[0], staged
    target = n1.publish(vol, cap(fs=fs))
    n1.write_file(f"{target}/data", "life", 8)
    n1.check_file(f"{target}/data", "life")
    abnormal, msg = n1.condition(vol, target)
    assert not abnormal, msg
    n1.unpublish(vol, target)
    n1.unstage(vol)
    assert n1.controller(vol) is None
    # stage again: the filesystem and the data are still there (nothing was reformatted)
    n1.stage(vol, cap(fs=fs))
    n1.check_file(f"{n1.staging(vol)}/data", "life")
    n1.unstage(vol)
    c.delete(vol)
    assert n1.mounts() == []
    assert n1.controller(vol) is None
    assert vol.nqn not in c.configfs_subsystems()
    assert ls(n1.guest, f"{n1.state_dir}/volumes") == []


@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_1_lifecycle(clean: Cluster, fs: str) -> None:
    lifecycle(clean, fs)


def _teardown(c: Cluster, node_vols: list[tuple[int, Volume, str | None]]) -> None:
    """Unpublish (when a target is given), unstage, then delete every volume."""
    for i, vol, target in node_vols:
        n = c.nodes[i]
        if target:
            n.unpublish(vol, target)
        n.unstage(vol)
    for vol in {v.volume_id: v for _, v, _ in node_vols}.values():
        c.delete(vol)


def _wait_controller(c: Cluster, node: int, vol: Volume, present: bool,
                     timeout: float) -> float:
    n = c.nodes[node]
    started = time.monotonic()
    while (n.controller(vol) is not None) != present:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{n.node_id}: controller of {vol.name} "
                                 f"{'never appeared' if present else 'still there'}")
        time.sleep(0.3)
    return time.monotonic() - started


@pytest.mark.parametrize("fault", ["rds-reboot", "link-down"])
def test_2_short_outage(clean: Cluster, fault: str) -> None:
    """Shorter than ctrl_loss_tmo: the kernel reconnects the same controller, I/O waits and
    resumes, the condition goes abnormal then normal, nothing is repaired."""
    c, n1 = clean, clean.nodes[0]
    g = n1.guest
    vol = c.create(f"pvc-short-{fault}", params=SHORT)
    n1.stage(vol, cap())
    target = n1.publish(vol, cap())
    n1.write_file(f"{target}/before", "s1", 4)
    ctrl, devno = n1.controller(vol), n1.devno(n1.staging(vol))
    g.check("head -c 4M /dev/urandom > /tmp/s2.bin; rm -f /tmp/s2.rc")
    t0 = time.monotonic()
    if fault == "rds-reboot":
        assert c.sim is not None
        c.sim.fault("reboot", "--seconds", "8")
    else:
        c.tb.partition(1)
    try:
        g.spawn(f"dd if=/tmp/s2.bin of={target}/during bs=1M conv=fsync status=none; "
                "echo $? > /tmp/s2.rc", log="/tmp/s2.log")
        msg = n1.wait_condition(vol, target, abnormal=True, timeout=20)
        print(f"\n{fault}: abnormal after {time.monotonic() - t0:.1f} s: {msg}")
        assert ctrl is not None and ctrl_state(g, ctrl) in ("connecting", "resetting")
        assert g.run("cat /tmp/s2.rc")[0] != 0, "the write did not wait for the target"
        if fault == "link-down":
            time.sleep(max(0.0, 10 - (time.monotonic() - t0)))
    finally:
        if fault == "link-down":
            c.tb.partition(1, cut=False)
    n1.wait_condition(vol, target, abnormal=False, timeout=60)
    print(f"{fault}: healthy again {time.monotonic() - t0:.1f} s after the fault")
    assert g.wait_for("cat /tmp/s2.rc", timeout=60).strip() == "0", g.run("cat /tmp/s2.log")
    assert n1.controller(vol) == ctrl and n1.devno(n1.staging(vol)) == devno
    n1.check_file(f"{target}/before", "s1")
    n1.check_file(f"{target}/during", "s2")
    assert "recovering staging mount" not in n1.log_text()
    _teardown(c, [(0, vol, target)])


def test_3_long_outage_remounts(clean: Cluster) -> None:
    """Longer than ctrl_loss_tmo with ext4 mounted: the kernel deletes the controller (the
    mount pins the old numbers), the monitor reconnects, the volume comes back under new
    numbers and the staging and publish mounts are moved to it; fsynced data survives."""
    c, n1 = clean, clean.nodes[0]
    assert c.sim is not None
    vol = c.create("pvc-long", params=LONG)
    n1.stage(vol, cap())
    target = n1.publish(vol, cap())
    n1.write_file(f"{target}/before", "l1", 8)
    devno = n1.devno(n1.staging(vol))
    t0 = time.monotonic()
    c.sim.fault("reboot", "--seconds", "20")
    gone = _wait_controller(c, 0, vol, present=False, timeout=30)
    print(f"\ncontroller deleted {gone:.1f} s into the outage")
    abnormal, msg = n1.condition(vol, target)
    assert abnormal, msg
    print(f"during: {msg}")
    n1.wait_condition(vol, target, abnormal=False, timeout=120)
    print(f"healthy again {time.monotonic() - t0:.1f} s after the outage began")
    after = n1.devno(n1.staging(vol))
    assert after != devno, "expected new numbers: the stale mount pinned the old ones"
    assert n1.devno(target) == after
    log = n1.log_text()
    assert "reconnected" in log and "recovering staging mount" in log, log[-3000:]
    n1.check_file(f"{target}/before", "l1")
    n1.write_file(f"{target}/after", "l2", 4)
    n1.check_file(f"{target}/after", "l2")
    _teardown(c, [(0, vol, target)])


def test_4_renumbered_block_volume(clean: Cluster) -> None:
    """Another subsystem takes the numbers a lost volume had; the block publish node (which
    then points at the other volume) is re-pointed at the volume's new major:minor."""
    c, n1 = clean, clean.nodes[0]
    g = n1.guest
    a = c.create("pvc-renum-a", block=True, params=LONG)
    b = c.create("pvc-renum-b", block=True, params=LONG)
    n1.stage(a, cap(block=True))
    ta = n1.publish(a, cap(block=True))
    old = n1.devno(ta)
    assert old == n1.devno(block_device(g, a.nqn))
    write_pattern(g, ta, "r1", 8)
    c.rds_cli(f"/disk set [find slot={c.slot(a)}] nvme-tcp-export=no")
    gone = _wait_controller(c, 0, a, present=False, timeout=30)
    print(f"\nA unexported; its controller deleted after {gone:.1f} s")
    n1.stage(b, cap(block=True))
    tb_ = n1.publish(b, cap(block=True))
    print(f"A had {old}; B got {n1.devno(tb_)}")
    assert n1.devno(tb_) == old, "B did not take A's freed numbers"
    write_pattern(g, tb_, "r2", 4)
    abnormal, msg = n1.condition(a, ta)
    assert abnormal, msg
    c.rds_cli(f"/disk set [find slot={c.slot(a)}] nvme-tcp-export=yes")
    n1.wait_condition(a, ta, abnormal=False, timeout=90)
    new = n1.devno(ta)
    assert new != old and new == n1.devno(block_device(g, a.nqn)), (old, new)
    assert "re-pointed block device node" in n1.log_text()
    verify(g, ta, "r1", 8)
    verify(g, tb_, "r2", 4)
    _teardown(c, [(0, a, ta), (0, b, tb_)])


def test_5_rds_restart_two_nodes(clean: Cluster) -> None:
    """The rds-sim process stops (its nvmet exports torn down) and starts again while a
    filesystem volume is attached on node1 and a block volume on node2."""
    c = clean
    n1, n2 = c.nodes
    assert c.sim is not None
    forever = {"ctrlLossTmo": "-1", "reconnectDelay": "1"}
    fs = c.create("pvc-restart-fs", params=forever)
    blk = c.create("pvc-restart-blk", block=True, params=forever)
    n1.stage(fs, cap())
    t1 = n1.publish(fs, cap())
    n1.write_file(f"{t1}/before", "rs1", 4)
    n2.stage(blk, cap(block=True))
    t2 = n2.publish(blk, cap(block=True))
    write_pattern(n2.guest, t2, "rs2", 8)
    before = (n1.devno(n1.staging(fs)), n2.devno(t2))
    t0 = time.monotonic()
    c.sim.stop()
    assert c.configfs_subsystems() == []
    n1.wait_condition(fs, t1, abnormal=True, timeout=20)
    n2.wait_condition(blk, t2, abnormal=True, timeout=20)
    c.sim.start()
    print(f"\nrds-sim back after {time.monotonic() - t0:.1f} s")
    n1.wait_condition(fs, t1, abnormal=False, timeout=90)
    n2.wait_condition(blk, t2, abnormal=False, timeout=90)
    print(f"both volumes healthy {time.monotonic() - t0:.1f} s after the stop")
    assert (n1.devno(n1.staging(fs)), n2.devno(t2)) == before
    n1.check_file(f"{t1}/before", "rs1")
    verify(n2.guest, t2, "rs2", 8)
    n1.write_file(f"{t1}/after", "rs3", 2)
    n1.check_file(f"{t1}/after", "rs3")
    _teardown(c, [(0, fs, t1), (1, blk, t2)])


def test_6_target_fencing(clean: Cluster) -> None:
    """Fencing on the target (ControllerPublish-based fencing is not implemented yet: the
    disk's nvme-tcp-server-allow-host-name is set directly on the simulated RDS)."""
    c = clean
    n1, n2 = c.nodes
    vol = c.create("pvc-fence")
    c.rds_cli(f"/disk set [find slot={c.slot(vol)}] "
              f"nvme-tcp-server-allow-host-name={n1.host_nqn}")
    reply = n2.try_stage(vol, cap())
    print(f"\nnode2 NodeStageVolume: {reply}")
    assert not reply["ok"] and reply["code"] == "UNAVAILABLE", reply
    assert "not allowed" in reply["details"] or "refused" in reply["details"], reply
    assert n2.controller(vol) is None
    n2.unstage(vol)  # what a CO does after a failed stage
    n1.stage(vol, cap())
    target = n1.publish(vol, cap())
    n1.write_file(f"{target}/fenced", "f1", 4)
    n1.check_file(f"{target}/fenced", "f1")
    _teardown(c, [(0, vol, target)])


def test_7_live_migration_raw_block(clean: Cluster) -> None:
    """KubeVirt-style live migration of a MULTI_NODE_MULTI_WRITER raw block volume: the
    target attaches while the source still writes; hand-off; the source detaches."""
    c = clean
    src, dst = c.nodes
    mode = "MULTI_NODE_MULTI_WRITER"
    capm = cap(block=True, mode=mode)
    vol = c.create("pvc-migrate", 64 << 20, block=True, params=SHORT, mode=mode)
    src.stage(vol, capm)
    ts = src.publish(vol, capm)
    g = src.guest
    g.check("head -c 16M /dev/urandom > /tmp/mig.bin; rm -f /tmp/mig.rc")
    sha = g.check("sha256sum < /tmp/mig.bin").split()[0]
    g.spawn(f"for i in $(seq 0 15); do dd if=/tmp/mig.bin of={ts} bs=1M skip=$i seek=$i "
            "count=1 oflag=direct conv=fsync status=none || exit 1; sleep 0.5; done; "
            "echo done > /tmp/mig.rc", log="/tmp/mig.log")
    dst.stage(vol, capm)
    td = dst.publish(vol, capm)
    first = dst.guest.check(f"dd if={td} bs=1M count=1 iflag=direct status=none | sha256sum")
    assert first.split()[0] == g.check(
        "head -c 1M /tmp/mig.bin | sha256sum").split()[0], "target misses the first MiB"
    # hand-off: the source stops writing (its writer ends), the target reads everything
    assert g.wait_for("cat /tmp/mig.rc", timeout=90).strip() == "done", g.run("cat /tmp/mig.log")
    assert read_sha(dst.guest, td, 16) == sha
    src.unpublish(vol, ts)
    src.unstage(vol)
    assert src.controller(vol) is None and dst.controller(vol) is not None
    assert read_sha(dst.guest, td, 16) == sha
    write_pattern(dst.guest, td, "mig2", 4, offset_mib=32)
    verify(dst.guest, td, "mig2", 4, offset_mib=32)
    _teardown(c, [(1, vol, td)])


@pytest.mark.parametrize("sequence", list(SEQUENCES))
def test_8_fabric_agrees_with_the_kernel(clean: Cluster, sequence: str,
                                         tmp_path: Path) -> None:
    """The same reconnect/renumbering sequence on node1's kernel and on the simulated fabric
    gives the same sysfs states, names and numbers (see agree.py)."""
    steps = SEQUENCES[sequence]
    kernel = KernelRunner(clean.rds, clean.nodes[0].guest, clean.tb.rds_addr).setup()
    try:
        kernel.run(steps)
    finally:
        kernel.teardown()
    fabric = FabricRunner(tmp_path)
    try:
        fabric.run(steps)
    finally:
        fabric.teardown()
    for cp in normalize(kernel.checkpoints):
        print(f"\nkernel {cp['step']}: {json.dumps({k: cp[k] for k in ('controllers', 'heads')})}")
    print(f"kernel states: {kernel.trace}\nfabric states: {fabric.trace}")
    diff = differences(kernel, fabric)
    assert not diff, "\n".join(diff)


def _getsize(c: Cluster, node: int, path: str) -> int:
    return int(c.nodes[node].guest.check(f"blockdev --getsize64 {path}").strip())


@pytest.mark.parametrize("kind", ["ext4", "xfs", "block"])
def test_9_online_expand(clean: Cluster, kind: str) -> None:
    """Online expansion on the real kernel: ControllerExpandVolume grows the disk's file on the
    RDS (nvmet revalidate_size), the node sees the new namespace size, NodeExpandVolume grows
    the mounted filesystem (resize2fs / xfs_growfs, which need CAP_SYS_RESOURCE: only the VM
    guest has it); data written before is intact and the new space takes writes. A raw block
    volume needs no node step: the host rescans on the target's namespace-changed event."""
    c, n1 = clean, clean.nodes[0]
    g = n1.guest
    block = kind == "block"
    # mkfs.xfs refuses filesystems under 300 MiB
    size, grown = (320 << 20, 512 << 20) if kind == "xfs" else (64 << 20, 192 << 20)
    capability = cap(block=True) if block else cap(fs=kind)
    vol = c.create(f"pvc-grow-{kind}", size, block=block,
                   params={} if block else {"fsType": kind})
    n1.stage(vol, capability)
    target = n1.publish(vol, capability)
    dev = block_device(g, vol.nqn)
    assert _getsize(c, 0, dev) == size
    t0 = time.monotonic()
    if block:
        write_pattern(g, target, "grow-blk1", 8)
        reply = c.expand(vol, grown, capability)
        assert int(reply["capacity_bytes"]) >= grown, reply
        assert not reply.get("node_expansion_required", False), reply
        g.wait_for(f"test $(blockdev --getsize64 {target}) -ge {grown}", timeout=30)
        print(f"\nblock: node sees {_getsize(c, 0, target)} bytes "
              f"{time.monotonic() - t0:.1f} s after ControllerExpandVolume")
        verify(g, target, "grow-blk1", 8)
        write_pattern(g, target, "grow-blk2", 4, offset_mib=size >> 20)
        verify(g, target, "grow-blk2", 4, offset_mib=size >> 20)
        verify(g, target, "grow-blk1", 8)
        _teardown(c, [(0, vol, target)])
        return
    n1.write_file(f"{target}/before", f"grow-{kind}1", 4)
    total0, _ = n1.fs_size(target)
    assert total0 <= size
    reply = c.expand(vol, grown, capability)
    assert int(reply["capacity_bytes"]) >= grown, reply
    assert reply.get("node_expansion_required") is True, reply
    print(f"\n{kind}: device {_getsize(c, 0, dev)} bytes on the node right after "
          "ControllerExpandVolume")
    assert n1.expand(vol, target, grown, capability) >= grown
    total1, avail1 = n1.fs_size(target)
    print(f"{kind}: filesystem {total0 >> 20} -> {total1 >> 20} MiB "
          f"({time.monotonic() - t0:.1f} s for both expand calls)")
    assert total1 >= total0 + (grown - size) * 9 // 10, (total0, total1)
    assert _getsize(c, 0, dev) >= grown
    n1.check_file(f"{target}/before", f"grow-{kind}1")
    # more than the whole old filesystem: only fits because it grew (unwritten extents: fast)
    assert avail1 > total0
    g.check(f"fallocate -l {total0} {target}/filler")
    n1.write_file(f"{target}/after", f"grow-{kind}2", 4)
    n1.check_file(f"{target}/after", f"grow-{kind}2")
    n1.check_file(f"{target}/before", f"grow-{kind}1")
    # what kubelet shows: NodeGetVolumeStats reports the grown filesystem
    stats = n1.csi.call("Node", "NodeGetVolumeStats",
                        {"volume_id": vol.volume_id, "volume_path": target}, timeout=30)
    total_stat = next(int(u["total"]) for u in stats["usage"] if u["unit"] == "BYTES")
    assert total_stat == total1, stats
    _teardown(c, [(0, vol, target)])
