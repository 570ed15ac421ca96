"""nvme CLI argv and the attach/detach boundary over a hand-written sysfs tree."""

from __future__ import annotations

import subprocess

import pytest
from nodefix import NQN_A, PREFIX, SysTree

from rds_csi.nvme.cli import ConnectOptions, NvmeCli, NvmeCliError
from rds_csi.nvme.host import AttachError, SysfsNvmeHost
from rds_csi.nvme.sysfs import NvmeSysfs


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ScriptedNvme:
    """Plays the nvme binary: records argv, changes the tree like the kernel would."""

    def __init__(self, tree: SysTree) -> None:
        self.tree = tree
        self.argv: list[list[str]] = []
        self.on_connect = "namespace"  # namespace | orphan | fail | already
        self.next_ctrl = 0

    def __call__(self, argv, timeout):
        self.argv.append(list(argv))
        cmd = argv[1]
        if cmd == "connect":
            nqn = argv[argv.index("-n") + 1]
            if self.on_connect == "fail":
                return subprocess.CompletedProcess(argv, 1, "", "Failed to write to "
                                                   "/dev/nvme-fabrics: Connection refused\n")
            if self.on_connect == "fenced":  # nvme-cli 2.3 on Linux 6.1, host not allowed
                return subprocess.CompletedProcess(
                    argv, 1, "", "Failed to write to /dev/nvme-fabrics: Input/output error\n"
                    "could not add new controller: failed to write to nvme-fabrics device\n")
            if self.on_connect == "already":
                return subprocess.CompletedProcess(argv, 1, "", "already connected\n")
            c = self.next_ctrl
            self.next_ctrl += 1
            self.tree.controller(c, nqn, s=0)
            if self.on_connect == "namespace":
                self.tree.namespace(0, c + 1, minor=c, via=(c,))
            return subprocess.CompletedProcess(argv, 0, f"connecting to device: nvme{c}\n", "")
        if cmd == "disconnect":
            nqn = argv[argv.index("-n") + 1]
            n = 0
            for ctrl in sorted(self.tree.ctl.iterdir()):
                if (ctrl / "subsysnqn").read_text().strip() == nqn:
                    c = int(ctrl.name[4:])
                    for path in ctrl.glob("nvme*c*n*"):
                        s, rest = path.name[4:].split("c")
                        self.tree.remove_namespace(int(s), int(rest.split("n")[1]))
                    self.tree.remove_controller(c)
                    n += 1
            return subprocess.CompletedProcess(argv, 0, f"NQN:{nqn} disconnected {n} "
                                               "controller(s)\n", "")
        if cmd == "ns-rescan":
            return subprocess.CompletedProcess(argv, 0, "", "")
        raise AssertionError(argv)


@pytest.fixture
def world(tmp_path):
    tree = SysTree(tmp_path / "sys")
    nvme = ScriptedNvme(tree)
    clock = FakeClock()
    host = SysfsNvmeHost(NvmeSysfs(tree.root, tmp_path / "dev"),
                         NvmeCli("/usr/sbin/nvme", runner=nvme), nqn_prefix=PREFIX,
                         attach_timeout=5, orphan_grace=1, clock=clock, sleep=clock.sleep)
    return tree, nvme, host, clock


OPTS = ConnectOptions()


def test_connect_argv_defaults_to_reconnect_forever():
    argv = NvmeCli("/x/nvme").connect_argv(NQN_A, "10.0.0.1", 4420, ConnectOptions())
    assert argv == ["connect", "-t", "tcp", "-a", "10.0.0.1", "-s", "4420", "-n", NQN_A,
                    "-l", "-1", "-c", "5", "-k", "5"]
    argv = NvmeCli().connect_argv(NQN_A, "rds.lan", 4421, ConnectOptions(
        ctrl_loss_tmo=600, reconnect_delay=2, keep_alive_tmo=7,
        host_nqn="nqn.2014-08.org.nvmexpress:uuid:abc"))
    assert argv[argv.index("-q") + 1] == "nqn.2014-08.org.nvmexpress:uuid:abc"
    assert argv[-6:] == ["-l", "600", "-c", "2", "-k", "7"]


@pytest.mark.parametrize("bad", ["10.0.0.1;reboot", "a b", ""])
def test_connect_argv_refuses_bad_addresses(bad):
    with pytest.raises(ValueError):
        NvmeCli().connect_argv(NQN_A, bad, 4420, OPTS)


def test_options_validation():
    with pytest.raises(ValueError):
        ConnectOptions(ctrl_loss_tmo=-2)
    with pytest.raises(ValueError):
        ConnectOptions(reconnect_delay=0)
    with pytest.raises(ValueError):
        ConnectOptions(host_nqn="not an nqn")
    with pytest.raises(ValueError):
        NvmeCli().connect_argv("nqn.2000-02.x:a b", "1.2.3.4", 4420, OPTS)


def test_missing_binary_is_an_error():
    with pytest.raises(NvmeCliError, match="not found"):
        NvmeCli("/nonexistent/nvme").disconnect(NQN_A)


def test_attach_connects_and_waits_for_the_namespace(world):
    _tree, nvme, host, _ = world
    ns = host.attach(NQN_A, "10.0.0.1", 4420, OPTS)
    assert ns.name == "nvme0n1" and ns.controllers == ("nvme0",)
    assert [a[1] for a in nvme.argv] == ["connect"]
    # Idempotent: connected and live is fine, no second connect.
    assert host.attach(NQN_A, "10.0.0.1", 4420, OPTS) == ns
    assert len(nvme.argv) == 1
    assert host.resolve(NQN_A) == ns


def test_orphan_is_reset_with_disconnect_and_connect(world):
    tree, nvme, host, clock = world
    tree.controller(7, NQN_A, s=0)  # connected, no namespace
    nvme.next_ctrl = 0
    ns = host.attach(NQN_A, "10.0.0.1", 4420, OPTS)
    assert [a[1] for a in nvme.argv] == ["disconnect", "connect"]
    assert ns.name == "nvme0n1"
    assert clock.now >= 1  # the grace period for an asynchronous namespace scan


def test_already_connected_answer_is_accepted_when_sysfs_agrees(world):
    tree, nvme, host, _ = world
    nvme.on_connect = "already"
    tree.controller(0, NQN_A, s=0, state="deleting")
    tree.remove_controller(0)
    tree.controller(0, NQN_A, s=0)
    tree.namespace(0, 1, via=(0,))
    tree.set_state(0, "resetting")  # not live yet: attach waits, then connect says "already"
    with pytest.raises(AttachError, match="not live"):
        host.attach(NQN_A, "10.0.0.1", 4420, OPTS)
    tree.set_state(0, "live")
    assert host.attach(NQN_A, "10.0.0.1", 4420, OPTS).name == "nvme0n1"


def test_already_connected_race(world):
    _tree, nvme, host, _ = world
    nvme.on_connect = "already"
    with pytest.raises(AttachError, match=r"said already connected"):
        host.attach(NQN_A, "10.0.0.1", 4420, OPTS)


def test_connect_failure_is_an_attach_error_with_the_reason(world):
    _, nvme, host, _ = world
    nvme.on_connect = "fail"
    with pytest.raises(AttachError, match="Connection refused"):
        host.attach(NQN_A, "10.0.0.1", 4420, OPTS)


def test_a_fenced_host_gets_an_error_that_says_so(world):
    _, nvme, host, _ = world
    nvme.on_connect = "fenced"
    opts = ConnectOptions(host_nqn="nqn.2014-08.org.nvmexpress:uuid:node2")
    with pytest.raises(AttachError, match=r"(?s)Input/output error.*host NQN "
                       r"nqn.2014-08.org.nvmexpress:uuid:node2 is not allowed"):
        host.attach(NQN_A, "10.0.0.1", 4420, opts)
    nvme.on_connect = "fail"
    with pytest.raises(AttachError, match=r"(?s)Connection refused.*nothing listens there"):
        host.attach(NQN_A, "10.0.0.1", 4420, OPTS)


def test_namespace_that_never_appears_times_out(world):
    _, nvme, host, clock = world
    nvme.on_connect = "orphan"
    with pytest.raises(AttachError, match="no namespace block device appeared"):
        host.attach(NQN_A, "10.0.0.1", 4420, OPTS)
    assert clock.now >= 5


def test_detach_only_for_the_driver_prefix(world):
    _tree, nvme, host, _ = world
    host.attach(NQN_A, "10.0.0.1", 4420, OPTS)
    with pytest.raises(AttachError, match="refusing"):
        host.detach("nqn.2014-08.org.example:other")
    with pytest.raises(AttachError, match="refusing"):
        host.detach(PREFIX + "x:vol")
    host.detach(NQN_A)
    assert host.controllers(NQN_A) == []
    assert host.resolve(NQN_A) is None
    host.detach(NQN_A)  # nothing connected: fine, no command
    assert [a[1] for a in nvme.argv] == ["connect", "disconnect"]


def test_rescan_runs_on_live_controllers(world, tmp_path):
    _, nvme, host, _ = world
    host.attach(NQN_A, "10.0.0.1", 4420, OPTS)
    assert host.rescan(NQN_A).name == "nvme0n1"
    assert nvme.argv[-1] == ["/usr/sbin/nvme", "ns-rescan", str(tmp_path / "dev" / "nvme0")]
