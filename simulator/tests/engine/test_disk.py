"""/disk and /file semantics: real backing files, pool accounting, exports, persistence, hooks."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from rds_sim.device import CommandInfo, Device, DropConnection, InjectedError
from rds_sim.exports import NoneBackend

from .conftest import Run, add

GiB = 1 << 30


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/disk set nope comment=x", "no such item"),
        ("/disk remove nope", "no such item"),
        ("/disk set 7 comment=x", "no such item"),
        (
            "/disk add type=file file-path=storage-pool/a.img file-size=1G slot=pvc-1",
            "failure: already have such entry",
        ),
        (
            "/disk add type=file file-path=storage-pool/a.img file-size=1T slot=big",
            "failure: not enough space",
        ),
        (
            "/disk add type=foo file-path=storage-pool/a.img file-size=1G",
            "input does not match any value of type",
        ),
        (
            "/disk add type=file file-path=storage-pool/a.img file-size=1G nvme-tcp-export=maybe",
            "input does not match any value of nvme-tcp-export",
        ),
        (
            "/disk add type=file file-path=storage-pool/a.img file-size=lots",
            "invalid value for argument file-size",
        ),
        (
            "/disk add type=file file-path=storage-pool/a.img file-size=1G nvme-tcp-server-port=0",
            "invalid value for argument nvme-tcp-server-port",
        ),
        (
            "/disk add type=file file-path=storage-pool/../../x.img file-size=1G slot=e",
            "invalid value for argument file-path",
        ),
        (
            "/disk add type=file file-path=elsewhere/x.img file-size=1G slot=e",
            "failure: file-path is not on a mounted disk",
        ),
        (
            "/disk add type=file file-path=storage-pool/x.img file-size=1G slot=" + "s" * 33,
            "invalid value for argument slot",
        ),
        (
            "/disk add type=file file-path=storage-pool/x.img slot=e",
            "missing value(s) of argument(s) file-size",
        ),
        ("/disk set pvc-1 file-size=512M", "failure: can not shrink file"),
        ("/disk set pvc-1 file-size=200G", "failure: not enough space"),
        ("/disk set pvc-1 disabled=perhaps", "input does not match any value of disabled"),
        ('/disk print where slot~"("', "invalid value for argument slot"),
    ],
)
def test_runtime_errors_exit_1(run: Run, line: str, message: str) -> None:
    add(run, "pvc-1")
    result = run(line, expect=1)
    assert result.output == message + "\r\n"


def test_runtime_error_stops_the_line_after_earlier_commands_ran(run: Run, device: Device) -> None:
    result = run(
        "/disk add type=file file-path=storage-pool/a.img file-size=1M slot=a;"
        "/disk set nope comment=x;"
        "/disk add type=file file-path=storage-pool/b.img file-size=1M slot=b",
        expect=1,
    )
    assert result.output == "no such item\r\n"
    assert [d.slot for d in device.disks()] == ["storage-pool", "a"]


def test_empty_find_does_nothing(run: Run) -> None:
    assert run("/disk remove [find slot=nope]").output == ""
    assert run("/disk set [find slot=nope] comment=x").output == ""


def test_slot_limit_is_configurable(tmp_path: Path) -> None:
    dev = Device(tmp_path, slot_name_max=40)
    slot = "s" * 40
    r = dev.execute(f"/disk add type=file file-path=storage-pool/x.img file-size=1M slot={slot}")
    assert r.exit_status == 0, r.output


def test_add_creates_sparse_backing_file(run: Run, device: Device) -> None:
    add(run, "pvc-1", "10G")
    path = device.disk_file_path("pvc-1")
    st = path.stat()
    assert st.st_size == 10 * GiB
    assert st.st_blocks * 512 < 1 << 20  # sparse
    assert path.is_relative_to(device._rt.storage.root)


def test_defaults_nqn_is_slot_and_port_4420(run: Run, device: Device) -> None:
    run("/disk add type=file file-path=storage-pool/a.img file-size=1M slot=a")
    d = next(d for d in device.disks() if d.slot == "a")
    assert (d.nvme_tcp_server_nqn, d.nvme_tcp_server_port, d.nvme_tcp_export) == ("a", 4420, False)


def test_file_path_shown_as_given(run: Run) -> None:
    run("/disk add type=file file-path=/storage-pool/test.img file-size=1M slot=a")
    out = run("/disk print detail where slot=a").output
    assert "file-path=/storage-pool/test.img " in out
    assert 'model="/storage-pool/test.img"' in out
    assert run('/file print count-only where name="storage-pool/test.img"').output == "1\r\n"


def test_copy_from_copies_bytes(run: Run, device: Device) -> None:
    add(run, "src", "64M")
    src = device.disk_file_path("src")
    with open(src, "r+b") as f:
        f.seek(5 << 20)
        f.write(b"hello volume")
        f.seek(60 << 20)
        f.write(b"tail")
    run(
        "/disk add type=file file-path=storage-pool/k8s/snap.img slot=snap"
        " copy-from=[find slot=src]"
    )
    dst = device.disk_file_path("snap")
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_size == 64 << 20
    with open(src, "r+b") as f:  # a copy, not a link
        f.seek(5 << 20)
        f.write(b"HELLO")
    assert dst.read_bytes()[5 << 20 : (5 << 20) + 5] == b"hello"


def test_copy_from_by_name_and_bigger_size(run: Run, device: Device) -> None:
    add(run, "src", "1M")
    run("/disk add type=file file-path=storage-pool/c.img slot=c copy-from=src file-size=2M")
    assert device.disk_file_path("c").stat().st_size == 2 << 20
    run("/disk add type=file file-path=storage-pool/d.img slot=d copy-from=nope", expect=1)


def test_pool_accounting(run: Run, device: Device) -> None:
    def free() -> int:
        out = run("/disk print as-value where slot=storage-pool").output
        return int(dict(f.split("=", 1) for f in out.strip().split(";"))["free"])

    assert free() == 100 * GiB
    add(run, "a", "30G")
    assert free() == 70 * GiB
    add(run, "b", "70G")
    assert free() == 0
    add(run, "c", "1", expect=1)
    run("/disk set a file-size=31G", expect=1)
    run("/disk remove a")  # the file stays, and keeps its space
    assert free() == 0
    run('/file remove [find name="storage-pool/k8s/a.img"]')
    assert free() == 30 * GiB
    assert "use=70%" in run("/disk print detail where slot=storage-pool").output


def test_set_file_size_grows_the_file(run: Run, device: Device, backend: NoneBackend) -> None:
    add(run, "pvc-1", "1G")
    run("/disk set [find slot=pvc-1] file-size=20G")
    assert device.disk_file_path("pvc-1").stat().st_size == 20 * GiB
    assert backend.exports["pvc-1"].size == 20 * GiB
    assert backend.events[-1].kind == "changed"
    out = run('/file print detail where name~"pvc-1"').output
    assert "size=20.0GiB" in out


def test_remove_keeps_file_and_readd_reuses_it(run: Run, device: Device) -> None:
    add(run, "pvc-1", "1G")
    path = device.disk_file_path("pvc-1")
    path.write_bytes(b"data")  # shrinks the host file; re-add keeps what is there
    run("/disk remove [find slot=pvc-1]")
    assert path.exists()
    run("/disk add type=file file-path=storage-pool/k8s/pvc-1.img slot=pvc-1")
    with open(device.disk_file_path("pvc-1"), "rb") as f:
        assert f.read(4) == b"data"
    assert path.stat().st_size == 1 << 30


def test_file_remove_refuses_file_in_use(run: Run, device: Device) -> None:
    add(run, "pvc-1")
    r = run('/file remove [find name="storage-pool/k8s/pvc-1.img"]', expect=1)
    assert r.output == "failure: file is in use\r\n"
    run("/disk remove pvc-1; /file remove [find name=storage-pool/k8s]")
    assert run("/file print count-only").output == "1\r\n"
    assert not (device._rt.storage.root / "storage-pool" / "k8s").exists()


def test_exports_follow_disks(run: Run, backend: NoneBackend) -> None:
    add(run, "a")
    assert set(backend.exports) == {"a"}
    e = backend.exports["a"]
    assert (e.nqn, e.port, e.allowed_hosts) == ("nqn.2000-02.com.mikrotik:a", 4420, [])
    run("/disk set a nvme-tcp-server-allow-host-name=nqn.h1,nqn.h2")
    assert backend.exports["a"].allowed_hosts == ["nqn.h1", "nqn.h2"]
    run("/disk set a nvme-tcp-export=no")
    assert backend.exports == {}
    run("/disk set a nvme-tcp-export=yes")
    run("/disk disable a")
    assert backend.exports == {}
    run("/disk enable a")
    run("/disk remove a")
    kinds = [ev.kind for ev in backend.events]
    assert kinds == ["up", "added", "changed", "removed", "added", "removed", "added", "removed"]


def test_power_cycle(device: Device, run: Run, backend: NoneBackend) -> None:
    add(run, "a")
    device.power_off()
    assert backend.exports == {} and not backend.up
    device.power_on()
    assert set(backend.exports) == {"a"} and backend.up


def test_state_survives_restart(tmp_path: Path) -> None:
    first = Device(tmp_path, pool_size=100 * GiB)
    first.execute(
        "/disk add type=file file-path=storage-pool/a.img file-size=1G slot=a nvme-tcp-export=yes"
    )
    first.execute("/system identity set name=rds-2")
    before = first.execute("/disk print detail").output
    backend = NoneBackend()
    second = Device(tmp_path, pool_size=100 * GiB, export_backend=backend)
    assert second.execute("/disk print detail").output == before
    assert second.identity == "rds-2"
    assert set(backend.exports) == {"a"}  # device_up with persisted exports
    second.execute("/disk add type=file file-path=storage-pool/b.img file-size=1G slot=b")
    ids = {d.id for d in second.disks()}
    assert len(ids) == 3  # ids keep counting
    assert not list(tmp_path.glob("*.tmp"))


class Recorder:
    def __init__(self, fail_on: str = "", drop_after: str = "") -> None:
        self.seen: list[tuple[str, str]] = []
        self.fail_on = fail_on
        self.drop_after = drop_after

    def before_command(self, cmd: CommandInfo) -> None:
        self.seen.append(("before", cmd.text))
        if cmd.verb == self.fail_on:
            raise InjectedError("failure: not enough space")

    def after_command(self, cmd: CommandInfo, exit_status: int) -> None:
        self.seen.append((f"after {exit_status}", cmd.text))
        if cmd.verb == self.drop_after:
            raise DropConnection("bye")


def test_hook_sees_every_command_and_injects_errors(device: Device) -> None:
    hook = Recorder(fail_on="add")
    r = device.execute(
        "/disk print count-only; /disk add type=file file-path=storage-pool/a.img"
        " file-size=1M slot=a; /disk print",
        hook=hook,
    )
    assert (r.exit_status, r.output) == (1, "1\r\nfailure: not enough space\r\n")
    assert [s for s, _ in hook.seen] == ["before", "after 0", "before", "after 1"]
    assert [d.slot for d in device.disks()] == ["storage-pool"]


def test_drop_after_command_keeps_its_effect(tmp_path: Path) -> None:
    dev = Device(tmp_path)
    with pytest.raises(DropConnection):
        dev.execute(
            "/disk add type=file file-path=storage-pool/a.img file-size=1M slot=a",
            hook=Recorder(drop_after="add"),
        )
    assert [d.slot for d in Device(tmp_path).disks()] == ["storage-pool", "a"]


def test_system_reboot_drops_connection_and_keeps_disks(device: Device, run: Run) -> None:
    add(run, "a")
    with pytest.raises(DropConnection):
        device.execute("/system reboot")
    assert [d.slot for d in device.disks()] == ["storage-pool", "a"]


def test_unquoted_injection_runs_second_command(device: Device, run: Run) -> None:
    seen: list[str] = []
    device.on_reboot = lambda: seen.append("reboot")
    with pytest.raises(DropConnection):
        device.execute(
            "/disk add type=file file-path=storage-pool/a.img file-size=1M slot=x;/system reboot"
        )
    assert seen == ["reboot"]


def test_concurrent_adds(device: Device) -> None:
    errors: list[str] = []

    def worker(n: int) -> None:
        for k in range(10):
            slot = f"pvc-{n}-{k}"
            r = device.execute(
                f"/disk add type=file file-path=storage-pool/k8s/{slot}.img file-size=1M"
                f" slot={slot} nvme-tcp-export=yes; /disk print count-only"
            )
            if r.exit_status:
                errors.append(r.output)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert device.execute("/disk print count-only where type=file").output == "80\r\n"
    assert len({d.id for d in device.disks()}) == 81
    assert len(os.listdir(device._rt.storage.root / "storage-pool" / "k8s")) == 80


def test_concurrent_duplicate_slot_only_one_wins(device: Device) -> None:
    results: list[int] = []

    def worker(n: int) -> None:
        r = device.execute(
            f"/disk add type=file file-path=storage-pool/k8s/same-{n}.img file-size=1M slot=same"
        )
        results.append(r.exit_status)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0] + [1] * 7


class FailAfter:
    def before_command(self, cmd: CommandInfo) -> None:
        pass

    def after_command(self, cmd: CommandInfo, exit_status: int) -> None:
        raise InjectedError("failure: injected after")


def test_injected_error_after_command_stops_the_line(device: Device) -> None:
    r = device.execute("/disk print count-only; /disk print count-only", hook=FailAfter())
    assert (r.exit_status, r.output) == (1, "1\r\nfailure: injected after\r\n")
