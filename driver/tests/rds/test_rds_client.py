"""RdsClient over a scripted Transport (exact commands, canned device output), and once end to end
over real SSH."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import ros_samples as S
from sshd_fixture import Reply, SshServer

from rds_csi.errors import (
    AlreadyExists,
    InvalidValue,
    NoSuchItem,
    NotEnoughSpace,
    RdsSyntaxError,
)
from rds_csi.rds import CircuitBreaker, NvmeExport, RdsClient
from rds_csi.rds.transport import CommandOutput, SshTransport

NQN = "nqn.2000-02.com.mikrotik:pvc-a"
HOST = "nqn.2014-08.org.nvmexpress:uuid:4c4c4544-0042-3610-8052-b4c04f4b4e32"


class Device:
    """Answers each command with a canned (output, exit status); unknown commands get the
    device's parse error with exit 0."""

    def __init__(self, answers: dict[str, tuple[str, int]] | None = None) -> None:
        self.answers = answers or {}
        self.sent: list[tuple[str, float]] = []

    def run(self, command: str, *, timeout: float) -> CommandOutput:
        self.sent.append((command, timeout))
        out, status = self.answers.get(command, ("bad command name (line 1 column 2)\r\n", 0))
        return CommandOutput(out, status)


def client(answers: dict[str, tuple[str, int]]) -> tuple[RdsClient, Device]:
    dev = Device(answers)
    return RdsClient(dev, timeout=7, create_timeout=99), dev


ADD_A = (
    '/disk add type=file file-path="storage-pool/k8s/pvc-a.img" file-size=5G slot="pvc-a" '
    'nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="' + NQN + '" '
    'comment="rds-csi/1 k:vol"'
)


def test_create_disk_sends_one_validated_add_with_the_long_timeout() -> None:
    c, dev = client({ADD_A: ("", 0)})
    c.create_disk(
        "pvc-a",
        "storage-pool/k8s/pvc-a.img",
        5 * 2**30,
        export=NvmeExport(NQN),
        comment="rds-csi/1 k:vol",
    )
    assert dev.sent == [(ADD_A, 99)]


@pytest.mark.parametrize(
    ("output", "status", "exc"),
    [
        ("failure: already have such entry\r\n", 1, AlreadyExists),
        ("failure: not enough space\r\n", 1, NotEnoughSpace),
        ("expected end of command (line 1 column 200)\r\n", 0, RdsSyntaxError),
    ],
)
def test_create_disk_errors(output: str, status: int, exc: type[Exception]) -> None:
    c, _ = client({ADD_A: (output, status)})
    with pytest.raises(exc):
        c.create_disk(
            "pvc-a",
            "storage-pool/k8s/pvc-a.img",
            5 * 2**30,
            export=NvmeExport(NQN),
            comment="rds-csi/1 k:vol",
        )


def test_create_copy_and_unexported_snapshot() -> None:
    snap = (
        '/disk add type=file file-path="storage-pool/snapshots/snap-a1.img" file-size=1G '
        'slot="snap-a1" nvme-tcp-export=no copy-from=[find slot="pvc-a"]'
    )
    clone = (
        '/disk add type=file file-path="/storage-pool/k8s/pvc-b.img" file-size=1536M '
        'slot="pvc-b" nvme-tcp-export=yes nvme-tcp-server-port=4421 '
        'nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-b" '
        f'nvme-tcp-server-allow-host-name="{HOST}" copy-from=[find slot="snap-a1"]'
    )
    c, dev = client({snap: ("", 0), clone: ("", 0)})
    c.create_disk_copy("snap-a1", "pvc-a", "storage-pool/snapshots/snap-a1.img", 2**30, export=None)
    c.create_disk_copy(
        "pvc-b",
        "snap-a1",
        "/storage-pool/k8s/pvc-b.img",
        1536 * 2**20,
        export=NvmeExport("nqn.2000-02.com.mikrotik:pvc-b", 4421, (HOST,)),
    )
    assert [cmd for cmd, _ in dev.sent] == [snap, clone]


def test_invalid_values_are_rejected_before_anything_is_sent() -> None:
    c, dev = client({})
    with pytest.raises(InvalidValue):
        c.create_disk('pvc-a"; /system reboot', "p.img", 2**30, export=None)
    with pytest.raises(InvalidValue):
        c.resize_disk("pvc-a", 1000)  # not whole KiB
    with pytest.raises(InvalidValue):
        c.set_comment("pvc-a", "$(reboot)")
    with pytest.raises(InvalidValue):
        c.get_file("../etc/passwd")
    with pytest.raises(InvalidValue):
        c.set_allowed_hosts("pvc-a", HOST)  # type: ignore[arg-type]  # a str is not a list
    assert dev.sent == []


def test_get_disk_parses_wrapped_output_and_absent_is_none() -> None:
    slot = "pvc-0123456789abcdef0123456789ab"
    c, _ = client(
        {
            f'/disk print detail where slot="{slot}"': (S.W80_FOLDED, 0),
            '/disk print detail where slot="pvc-x"': (S.EMPTY_DETAIL, 0),
        }
    )
    d = c.get_disk(slot)
    assert d is not None and d.slot == slot and d.size_bytes == 2**40 and d.port == 4421
    assert c.get_disk("pvc-x") is None


def test_list_disks_by_prefix_drops_duplicates() -> None:
    twice = S.W80_THREE_ITEMS + S.W80_THREE_ITEMS.split("\r\n", 2)[2]  # pvc-a, pvc-b listed twice
    c, _dev = client(
        {
            '/disk print detail where slot~"^pvc-"': (twice, 0),
            "/disk print detail": (S.W80_THREE_ITEMS, 0),
        }
    )
    assert [d.slot for d in c.list_disks("pvc-")] == ["pvc-a", "pvc-b"]
    assert [d.slot for d in c.list_disks()] == ["storage-pool", "pvc-a", "pvc-b"]


def test_setters_send_find_by_slot() -> None:
    cmds = {
        '/disk set [find slot="pvc-a"] file-size=20G': ("", 0),
        '/disk set [find slot="pvc-a"] nvme-tcp-export=no': ("", 0),
        '/disk set [find slot="pvc-a"] nvme-tcp-export=yes': ("", 0),
        '/disk set [find slot="pvc-a"] comment="x y"': ("", 0),
        f'/disk set [find slot="pvc-a"] nvme-tcp-server-allow-host-name="{HOST},{HOST}"': ("", 0),
        '/disk set [find slot="pvc-a"] nvme-tcp-server-allow-host-name=""': ("", 0),
    }
    c, dev = client(cmds)
    c.resize_disk("pvc-a", 20 * 2**30)
    c.set_export("pvc-a", False)
    c.set_export("pvc-a", True)
    c.set_comment("pvc-a", "x y")
    c.set_allowed_hosts("pvc-a", [HOST, HOST])
    c.set_allowed_hosts("pvc-a", [])
    assert [cmd for cmd, _ in dev.sent] == list(cmds)
    assert dev.sent[0][1] == 99  # growing a file may take long


@pytest.mark.parametrize(("output", "status"), [("", 0), ("no such item\r\n", 1)])
def test_removals_are_idempotent(output: str, status: int) -> None:
    c, dev = client(
        {
            '/disk remove [find slot="pvc-a"]': (output, status),
            '/file remove [find name="storage-pool/k8s/pvc-a.img"]': (output, status),
        }
    )
    c.remove_disk("pvc-a")
    c.remove_file("/storage-pool/k8s/pvc-a.img")  # /file names never carry the leading slash
    assert len(dev.sent) == 2


def test_removal_reports_other_failures() -> None:
    c, _ = client({'/disk remove [find slot="pvc-a"]': ("failure: disk is busy\r\n", 1)})
    with pytest.raises(Exception, match="disk is busy"):
        c.remove_disk("pvc-a")


def test_get_file() -> None:
    c, _dev = client(
        {
            '/file print detail where name="storage-pool/k8s/pvc-x.img"': (S.FILE_DETAIL, 0),
            '/file print detail where name="storage-pool/k8s/none.img"': (S.FILE_EMPTY, 0),
        }
    )
    f = c.get_file("/storage-pool/k8s/pvc-x.img")
    assert f is not None and f.name == "storage-pool/k8s/pvc-x.img" and f.size_bytes == 10 * 2**30
    assert c.get_file("storage-pool/k8s/none.img") is None


def test_get_pool_by_slot_or_mount_point() -> None:
    q = '/disk print detail where slot="storage-pool" or mount-point="storage-pool"'
    c, _ = client(
        {
            q: (S.W80_THREE_ITEMS.split("\r\n\r\n")[0] + "\r\n", 0),
            '/disk print detail where slot="nopool" or mount-point="nopool"': (S.EMPTY_DETAIL, 0),
        }
    )
    pool = c.get_pool("storage-pool")
    assert (pool.size_bytes, pool.free_bytes, pool.use_percent) == (
        7_681_574_174_720,
        7_301_927_047_168,
        5,
    )
    with pytest.raises(NoSuchItem):
        c.get_pool("nopool")


def test_system_and_monitor() -> None:
    c, dev = client(
        {
            "/system identity print": (S.SYSTEM_IDENTITY, 0),
            "/system resource print": (S.SYSTEM_RESOURCE, 0),
            "/disk monitor-traffic pvc-a once": (S.MONITOR_TRAFFIC, 0),
        }
    )
    assert c.identity() == "rds-lab-1"
    r = c.resource()
    assert (r.version, r.board_name, r.cpu_load_percent) == ("7.24 (stable)", "RDS2216", 3)
    assert r.total_memory_bytes == round(15.5 * 2**30)
    assert c.monitor_traffic("pvc-a")["write-rate"] == "12.8Mbps"
    c.ping(timeout=3)
    assert dev.sent[-1] == ("/system identity print", 3)


def test_end_to_end_over_ssh_with_a_breaker(
    server: SshServer, make_transport: Callable[..., SshTransport]
) -> None:
    slot = "pvc-0123456789abcdef0123456789ab"
    server.handler = lambda cmd: (
        Reply(S.W80_FOLDED)
        if cmd == f'/disk print detail where slot="{slot}"'
        else Reply("no such item\r\n", exit_status=1)
    )
    c = RdsClient(CircuitBreaker(make_transport()))
    d = c.get_disk(slot)
    assert d is not None and d.nqn == f"nqn.2000-02.com.mikrotik:{slot}"
    c.remove_disk("pvc-zzz")  # absent: fine
    server.drop_all()
    assert c.get_disk(slot) == d  # reconnected
