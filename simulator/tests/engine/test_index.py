"""The fast paths stay exact: the slot/name indexes, pool accounting, lazy `where`, and the
cached state.json pieces all agree with the plain full-scan versions through every change."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rds_sim.device import Device
from rds_sim.routeros.errors import CommandError
from rds_sim.routeros.expressions import matches
from rds_sim.routeros.menus.base import select
from rds_sim.routeros.model import Disk, FileEntry, State, StateFile
from rds_sim.routeros.parser import parse

from .conftest import Run, add

GiB = 1 << 30

DISK_WHERES = [
    "",
    "where slot=a",
    "where slot=b and nvme-tcp-export",
    "where slot=nope",
    "where slot=storage-pool",
    'where slot~"^[ab]"',
    'where slot=a or mount-point="storage-pool"',
    "where !disabled and slot=c",
    "where (slot=c) and file-size>1G",
    "where slot=c and (comment=hi or disabled)",
    "where free>0",
    "where use<50",
    "where size>=2G",
    "where .id=*3",
    "where mount-point",
    "where nvme-tcp-server-nqn=a",
    "where comment~i",
]
FILE_WHERES = [
    "",
    "where name=storage-pool/k8s/a.img",
    "where name=storage-pool",
    "where name=nope",
    'where name~"k8s/[bc]"',
    "where type=directory",
    "where name=storage-pool/k8s/b.img and size>1G",
    "where size<2G",
    'where last-modified~"^2"',
]


def _check_consistent(device: Device) -> None:
    """Every index and counter agrees with a scan of the lists, and select with filtering."""
    rt = device._rt
    state = rt.state
    for slot in {d.slot for d in state.disks} | {"nope"}:
        assert state.disks_with_slot(slot) == [d for d in state.disks if d.slot == slot]
        assert state.disk(slot) is next((d for d in state.disks if d.slot == slot), None)
    for name in {f.name for f in state.files} | {"nope"}:
        assert state.files_named(name) == [f for f in state.files if f.name == name]
    for pool in rt.pools():
        prefix = pool.mount_point + "/"
        assert rt.used(pool) == sum(
            f.size for f in state.files if f.type == "file" and f.name.startswith(prefix)
        )
    for menu_name, wheres in (("disk", DISK_WHERES), ("file", FILE_WHERES)):
        for where in wheres:
            cmd = parse(f"/{menu_name} print {where}", device._root)[0]
            assert cmd.menu.items is not None
            expected = [it for it in cmd.menu.items(rt) if matches(cmd.where, it)]
            assert select(rt, cmd.menu, cmd.where) == expected, (menu_name, where)


def _reference_json(state: State) -> str:
    return json.dumps(state.to_json(), indent=1, sort_keys=True)


def test_indexes_follow_add_set_remove_and_restart(tmp_path: Path) -> None:
    device = Device(tmp_path, pool_size=100 * GiB)

    def run(line: str) -> None:
        device.execute(line)
        _check_consistent(device)
        saved = (tmp_path / "state.json").read_text()
        assert saved == _reference_json(device._rt.state)

    _check_consistent(device)
    for slot in "abc":
        run(
            f"/disk add type=file file-path=storage-pool/k8s/{slot}.img file-size=1G slot={slot}"
            f" nvme-tcp-export=yes"
        )
    run("/disk set [find slot=a] slot=a2")  # rename: the old slot is gone, the new one found
    assert device.execute("/disk print count-only where slot=a").output == "0\r\n"
    assert device.execute("/disk print count-only where slot=a2").output == "1\r\n"
    run("/disk set b slot=a")  # the freed slot can be taken again
    run("/disk set [find slot=c] file-size=3G comment=hi")  # pool accounting follows growth
    run("/disk remove [find slot=a2]")
    run("/disk add type=file file-path=storage-pool/k8s/a.img slot=a3")  # re-attach a kept file
    run("/file remove [find name=storage-pool/k8s/a.img]")  # in use: refused, nothing changes
    run("/disk remove a3")
    run("/file remove [find name=storage-pool/k8s/a.img]")  # the space comes back
    run("/disk add type=file file-path=storage-pool/x/d.img file-size=2G")  # default slot file1
    run("/file remove [find name=storage-pool/x]")  # a directory: refused, a disk uses d.img
    run("/disk disable [find slot=c]")
    before = {
        line: device.execute(line).output
        for line in ("/disk print detail", "/file print detail", "/disk print where free>0")
    }

    again = Device(tmp_path, pool_size=100 * GiB)  # restart: indexes rebuilt from the file
    _check_consistent(again)
    assert {line: again.execute(line).output for line in before} == before
    assert again.execute("/disk print count-only where slot=a").output == "1\r\n"
    assert again.execute("/disk print count-only where slot=a2").output == "0\r\n"
    assert again.execute(ADD_A).exit_status != 0  # duplicate slot still refused
    assert again.execute("/disk set c slot=file1").output == "failure: already have such entry\r\n"


ADD_A = "/disk add type=file file-path=storage-pool/k8s/z.img file-size=1G slot=a"


def test_random_commands_keep_indexes_exact(tmp_path: Path) -> None:
    rng = random.Random(3)
    device = Device(tmp_path, pool_size=20 * GiB)
    for step in range(150):
        s, t = f"s{rng.randrange(6)}", f"s{rng.randrange(6)}"
        line = rng.choice(
            [
                f"/disk add type=file file-path=storage-pool/k8s/{s}.img file-size=1G slot={s}",
                f"/disk add type=file file-path=storage-pool/k8s/{s}.img copy-from={t} slot={t}x",
                f"/disk set [find slot={s}] slot={t}",
                f"/disk set {s} file-size=2G",
                f"/disk remove [find slot={s}]",
                f"/file remove [find name=storage-pool/k8s/{s}.img]",
                f"/disk {rng.choice(['enable', 'disable'])} {s}",
            ]
        )
        device.execute(line)
        if step % 10 == 0:
            _check_consistent(device)
            device = Device(tmp_path, pool_size=20 * GiB)
    _check_consistent(device)


def test_where_errors_are_unchanged_by_the_index(run: Run) -> None:
    add(run, "a")
    # a bad regex evaluated first fails on the pool even when no slot matches...
    res = run('/disk print where model~"(" and slot=nope', expect=1)
    assert res.output == "invalid value for argument model\r\n"
    # ...but after a failing slot=, it is never evaluated (as on a full scan)
    assert run('/disk print count-only where slot=nope and model~"("').output == "0\r\n"
    res = run('/disk print count-only where slot=a and model~"("', expect=1)
    assert res.output == "invalid value for argument model\r\n"


def test_positional_names_numbers_and_ids(run: Run, device: Device) -> None:
    for slot in "abc":
        add(run, slot)
    run("/disk set b comment=named")
    run("/disk set 3 comment=numbered")  # position in the full list: c
    run("/disk print where slot=a or slot=b; /disk set 1 comment=listed")  # index in that print: b
    ids = {d.slot: d.id for d in device.disks()}
    run(f"/disk set *{ids['a']:X},c comment=both")
    assert {d.slot: d.comment for d in device.disks()} == {
        "storage-pool": "",
        "a": "both",
        "b": "listed",
        "c": "both",
    }
    assert run("/disk set nope comment=x", expect=1).output == "no such item\r\n"
    assert run("/disk set a,nope comment=x", expect=1).output == "no such item\r\n"
    assert run("/disk set 9 comment=x", expect=1).output == "no such item\r\n"
    device.set_traffic("b", read_ops=7)
    assert "read-ops-per-second: 7\r\n" in run("/disk monitor-traffic b once").output
    assert run("/disk monitor-traffic nope once", expect=1).output == "no such item\r\n"


def test_duplicate_slots_in_a_state_file_are_served_by_scanning(tmp_path: Path) -> None:
    """Commands never make two disks with one slot; a hand-edited state file might."""
    Device(tmp_path, pool_size=100 * GiB).execute(
        "/disk add type=file file-path=storage-pool/a.img file-size=1G slot=a"
    )
    path = tmp_path / "state.json"
    data = json.loads(path.read_text())
    twin = {**data["disks"][1], "id": 99, "file_path": "storage-pool/b.img"}
    data["disks"].append(twin)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    device = Device(tmp_path, pool_size=100 * GiB)
    out = device.execute("/disk print as-value where slot=a").output
    assert out.count(".id=") == 2
    _check_consistent(device)
    device.execute("/disk remove *63")
    _check_consistent(device)
    assert device.execute("/disk print count-only where slot=a").output == "1\r\n"


@pytest.mark.parametrize(
    "state",
    [
        State("rds"),
        State(
            'r"d\\s\u00e9\n',
            [Disk(1, "storage-pool", type="raid", mount_point="storage-pool", size=5)],
            [FileEntry(2, "storage-pool", "directory", 0, 1.5)],
            3,
        ),
        State(
            "rds",
            [Disk(1, "a", comment="x;y\t\u2603", disabled=True), Disk(2, "b", size=7)],
            [FileEntry(3, "a", "file", 10, 1.0), FileEntry(4, "b", "file", 10, 1)],
            5,
        ),
    ],
)
def test_state_file_bytes_match_json_dumps(tmp_path: Path, state: State) -> None:
    sf = StateFile(tmp_path / "state.json")
    sf.save(state)
    assert (tmp_path / "state.json").read_text() == _reference_json(state)
    assert sf.load() == state
    # cached pieces never stand in for different values, even equal ones of another type
    for d in state.disks:
        d.disabled = not d.disabled
    for f in state.files:
        f.mtime = int(f.mtime) if isinstance(f.mtime, float) else float(f.mtime)
    assert sf.dumps(state) == _reference_json(state)


def test_select_equals_filtering_built_items_for_every_property(run: Run, device: Device) -> None:
    """Each property `where` can name gives the same result lazily as on built items."""
    add(run, "a")
    add(run, "b", size="3G")
    run("/disk set a comment=hi; /disk disable b")
    rt = device._rt
    for menu_name in ("disk", "file"):
        cmd = parse(f"/{menu_name} print", device._root)[0]
        for key in cmd.menu.properties:
            for line in (f"where {key}", f"where {key}=no", f"where !{key}", f'where {key}~"a"'):
                where = parse(f"/{menu_name} print {line}", device._root)[0].where
                assert cmd.menu.items is not None
                try:
                    expected = [it for it in cmd.menu.items(rt) if matches(where, it)]
                except CommandError:
                    expected = None
                try:
                    got = select(rt, cmd.menu, where)
                except CommandError:
                    got = None
                assert got == expected, (menu_name, line)
