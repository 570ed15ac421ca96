"""/disk: the storage pool and file-backed disks exported over NVMe/TCP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CommandError
from ..expressions import Expr, leading_equality, matches
from ..format import key_values
from ..model import Disk
from ..parser import ParsedCommand
from ..runtime import ExecContext, Runtime, Traffic
from ..schema import Arg, CommandSpec, Item, Menu, Prop, PropKind, PropValue
from ..storage import normalize
from ..values import bool_arg, int_arg, size_arg
from .base import item_commands, resolve, resolve_value

FLAGS = [
    ("X", "DISABLED"),
    ("B", "BLOCK-DEVICE"),
    ("M", "MOUNTED"),
    ("t", "NVME-TCP-EXPORT"),
    ("i", "ISCSI-EXPORT"),
    ("n", "NFS-SHARING"),
    ("s", "SMB-SHARING"),
    ("r", "RAID-MEMBER"),
]
EXPORT_ARGS = [
    "nvme-tcp-export",
    "nvme-tcp-server-port",
    "nvme-tcp-server-nqn",
    "nvme-tcp-server-allow-host-name",
]
ADD_ARGS = ["type", "file-path", "file-size", "slot", *EXPORT_ARGS, "comment", "disabled"]
SET_ARGS = ["file-size", "slot", *EXPORT_ARGS, "comment", "disabled"]


# Properties in print order: (key, kind, value of a disk). `where` computes only those it
# tests (see _DiskView); print builds them all, for the items that matched.
Getter = Callable[[Runtime, Disk], PropValue]
PropTable = list[tuple[str, PropKind, Getter]]


def _const(value: PropValue) -> Getter:
    return lambda rt, d: value


def _use(rt: Runtime, d: Disk) -> int:
    return (rt.used(d) * 100 + d.size // 2) // d.size if d.size else 0


_HEAD: PropTable = [
    ("type", "raw", lambda rt, d: d.type),
    ("slot", "str", lambda rt, d: d.slot),
    ("slot-default", "str", _const("")),
    ("parent", "str", _const("")),
]
_COMMON_TAIL: PropTable = [
    ("iscsi-export", "bool", _const(False)),
    ("nfs-sharing", "bool", _const(False)),
    ("smb-sharing", "bool", _const(False)),
    ("media-sharing", "bool", _const(False)),
    ("media-interface", "raw", _const("none")),
    ("swap", "bool", _const(False)),
]
FILE_PROPS: PropTable = [
    *_HEAD,
    ("fs", "raw", _const("-")),
    ("model", "str", lambda rt, d: d.file_path),
    ("size", "bytes", lambda rt, d: d.file_size),
    ("mount-filesystem", "bool", _const(True)),
    ("mount-read-only", "bool", _const(False)),
    ("compress", "bool", _const(False)),
    ("sector-size", "int", _const(512)),
    ("raid-master", "raw", _const("none")),
    ("nvme-tcp-export", "bool", lambda rt, d: d.nvme_tcp_export),
    ("nvme-tcp-server-port", "int", lambda rt, d: d.nvme_tcp_server_port),
    ("nvme-tcp-server-nqn", "str", lambda rt, d: d.nvme_tcp_server_nqn),
    ("nvme-tcp-server-allow-host-name", "str", lambda rt, d: d.nvme_tcp_server_allow_host_name),
    *_COMMON_TAIL,
    ("file-path", "raw", lambda rt, d: d.file_path),
    ("file-size", "human", lambda rt, d: d.file_size),
    ("file-offset", "int", _const(0)),
]
POOL_PROPS: PropTable = [
    *_HEAD,
    ("fs", "raw", _const("btrfs")),
    ("model", "str", _const("RAID6")),
    ("size", "bytes", lambda rt, d: d.size),
    ("free", "bytes", lambda rt, d: max(0, d.size - rt.used(d))),
    ("use", "percent", _use),
    ("mount-point", "str", lambda rt, d: d.mount_point),
    ("mount-filesystem", "bool", _const(True)),
    ("mount-read-only", "bool", _const(False)),
    ("compress", "bool", _const(False)),
    ("sector-size", "int", _const(4096)),
    ("raid-type", "raw", _const("raid6")),
    ("raid-master", "raw", _const("none")),
    ("nvme-tcp-export", "bool", _const(False)),
    *_COMMON_TAIL,
]
HIDDEN_PROPS: PropTable = [  # `where` may test them; print shows them as `;;;` and the X flag
    ("comment", "str", lambda rt, d: d.comment),
    ("disabled", "bool", lambda rt, d: d.disabled),
]
_LOOKUP = {
    kind: {key: (pk, get) for key, pk, get in [*table, *HIDDEN_PROPS]}
    for kind, table in (("file", FILE_PROPS), ("pool", POOL_PROPS))
}


def _props(rt: Runtime, d: Disk, table: PropTable) -> list[Prop]:
    return [Prop(key, kind, get(rt, d)) for key, kind, get in table]


def _item(rt: Runtime, d: Disk) -> Item:
    if d.is_file:
        props = _props(rt, d, FILE_PROPS)
        flags = "B" + ("t" if d.nvme_tcp_export else "")
    else:
        props = _props(rt, d, POOL_PROPS)
        flags = "BM"
    if d.disabled:
        flags = "X" + flags
    return Item(d.id, d.slot, flags, d.comment, [props], _props(rt, d, HIDDEN_PROPS))


class _DiskView:
    """A disk as `where` sees it: a property is computed only when the expression tests it."""

    def __init__(self, rt: Runtime, d: Disk) -> None:
        self.id = d.id
        self._rt = rt
        self._d = d
        self._lookup = _LOOKUP["file" if d.is_file else "pool"]

    def prop(self, key: str) -> Prop | None:
        found = self._lookup.get(key)
        if found is None:
            return None
        kind, get = found
        return Prop(key, kind, get(self._rt, self._d))


def items(rt: Runtime) -> list[Item]:
    return [_item(rt, d) for d in rt.state.disks]


def select(rt: Runtime, where: Expr | None) -> list[Item]:
    """`where slot=X ...` looks the slot up; anything else tests every disk, lazily."""
    slot = leading_equality(where, "slot")
    disks = rt.state.disks if slot is None else rt.state.disks_with_slot(slot)
    return [_item(rt, d) for d in disks if matches(where, _DiskView(rt, d))]


def _disk(rt: Runtime, item: Item) -> Disk | None:
    """The disk behind an item (None once it is removed: an item named twice)."""
    return next((d for d in rt.state.disks if d.id == item.id), None)


def _check_slot(rt: Runtime, slot: str, exclude_id: int | None = None) -> None:
    if not slot:
        raise CommandError("invalid value for argument slot")
    if len(slot) > rt.behaviour.slot_name_max:
        raise CommandError(rt.behaviour.slot_too_long_error)
    if any(d.id != exclude_id for d in rt.state.disks_with_slot(slot)):
        raise CommandError("failure: already have such entry")


def _check_nqn(rt: Runtime, nqn: str, exclude_id: int | None = None) -> None:
    if not rt.behaviour.unique_nqn:
        return
    if any(d.nvme_tcp_server_nqn == nqn and d.id != exclude_id for d in rt.state.disks):
        raise CommandError("failure: already have such entry")


def _space(rt: Runtime, pool_name: str, extra: int) -> None:
    pool = rt.pool_of(pool_name)
    if pool is not None and extra > rt.free(pool):
        raise CommandError("failure: not enough space")


@dataclass
class DiskArgs:
    """Arguments shared by add and set, parsed before any change so value errors change nothing."""

    export: bool | None = None
    port: int | None = None
    nqn: str | None = None
    hosts: str | None = None
    comment: str | None = None
    disabled: bool | None = None

    @classmethod
    def parse(cls, cmd: ParsedCommand) -> DiskArgs:
        out = cls(hosts=cmd.value("nvme-tcp-server-allow-host-name"), comment=cmd.value("comment"))
        if (v := cmd.value("nvme-tcp-export")) is not None:
            out.export = bool_arg("nvme-tcp-export", v)
        if (v := cmd.value("nvme-tcp-server-port")) is not None:
            out.port = int_arg("nvme-tcp-server-port", v, 1, 65535)
        if (v := cmd.value("nvme-tcp-server-nqn")) is not None:
            if not v:
                raise CommandError("invalid value for argument nvme-tcp-server-nqn")
            out.nqn = v
        if (v := cmd.value("disabled")) is not None:
            out.disabled = bool_arg("disabled", v)
        return out

    def only_comment(self) -> bool:
        return (self.export, self.port, self.nqn, self.hosts, self.disabled) == (None,) * 5

    def apply(self, d: Disk) -> None:
        d.nvme_tcp_export = d.nvme_tcp_export if self.export is None else self.export
        d.nvme_tcp_server_port = self.port or d.nvme_tcp_server_port
        d.nvme_tcp_server_nqn = self.nqn or d.nvme_tcp_server_nqn
        if self.hosts is not None:
            d.nvme_tcp_server_allow_host_name = self.hosts
        if self.comment is not None:
            d.comment = self.comment
        d.disabled = d.disabled if self.disabled is None else self.disabled


def add(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
    size_text = cmd.value("file-size")
    size = size_arg("file-size", size_text) if size_text is not None else None
    values = DiskArgs.parse(cmd)
    kind = cmd.value("type")
    if kind is None:
        raise CommandError("missing value(s) of argument(s) type")
    if kind != "file":
        raise CommandError("input does not match any value of type")
    raw_path = cmd.value("file-path")
    if raw_path is None:
        raise CommandError("missing value(s) of argument(s) file-path")
    name = normalize(raw_path)
    if name is None:
        raise CommandError("invalid value for argument file-path")
    with rt.lock:
        source = None
        if (src_value := cmd.values.get("copy-from")) is not None:
            found = resolve_value(rt, cmd.menu, src_value, ctx, "copy-from")
            if len(found) != 1:
                raise CommandError("no such item")
            source = _disk(rt, found[0])
            if source is None or not source.is_file:
                raise CommandError("invalid value for argument copy-from")
            if size is not None and size < source.file_size:
                raise CommandError("invalid value for argument file-size")
            size = size if size is not None else source.file_size
        slot = cmd.value("slot")
        if slot is None:
            slot = next(f"file{n}" for n in range(1, 10**6) if rt.state.disk(f"file{n}") is None)
        _check_slot(rt, slot)
        nqn = values.nqn or slot
        _check_nqn(rt, nqn)
        pool = rt.pool_of(name)
        if pool is None:
            raise CommandError(rt.behaviour.file_path_not_on_pool_error)
        existing = rt.state.file(name)
        if existing is not None and (existing.type != "file" or source is not None):
            raise CommandError("failure: file already exists")
        if existing is not None and any(normalize(d.file_path) == name for d in rt.state.disks):
            raise CommandError("failure: file is in use")
        if existing is None and size is None:
            raise CommandError("missing value(s) of argument(s) file-size")
        if existing is not None:  # re-attach a kept file; growing it if asked
            if size is not None and size < existing.size:
                raise CommandError("failure: can not shrink file")
            size = max(existing.size, size or 0)
            _space(rt, name, size - existing.size)
            rt.resize_file(name, size)
        else:
            assert size is not None
            _space(rt, name, size)
            if source is not None:
                rt.storage.copy(source.file_path, name, size)
            else:
                rt.storage.create(name, size)
            rt.add_file(name, size)
        disk = Disk(rt.state.new_id(), slot, file_path=raw_path, file_size=size)
        values.apply(disk)
        disk.nvme_tcp_server_nqn = nqn
        rt.state.add_disk(disk)
        rt.persist()
        rt.sync_export(None, rt.export_of(disk))
    return ""


def set_(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
    size_text = cmd.value("file-size")
    size = size_arg("file-size", size_text) if size_text is not None else None
    values = DiskArgs.parse(cmd)
    slot = cmd.value("slot")
    with rt.lock:
        targets = resolve(rt, cmd, ctx, "numbers")
        for item in targets:
            d = _disk(rt, item)
            if d is None:
                raise CommandError("no such item")
            if not d.is_file and (
                size is not None or slot is not None or not values.only_comment()
            ):
                raise CommandError("failure: not supported for this disk")
            before = rt.export_of(d)
            if slot is not None:
                _check_slot(rt, slot, d.id)
            if values.nqn is not None:
                _check_nqn(rt, values.nqn, d.id)
            name = normalize(d.file_path) or ""
            if size is not None and size != d.file_size:
                if size < d.file_size:
                    raise CommandError("failure: can not shrink file")
                _space(rt, name, size - d.file_size)
                rt.resize_file(name, size)
                d.file_size = size
            if slot is not None:
                rt.state.rename_disk(d, slot)
            values.apply(d)
            rt.persist()
            rt.sync_export(before, rt.export_of(d))
    return ""


def _toggle(disabled: bool) -> CommandSpec:
    def run(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
        with rt.lock:
            for item in resolve(rt, cmd, ctx, "numbers"):
                d = _disk(rt, item)
                assert d is not None  # enable/disable never removes a disk
                before = rt.export_of(d)
                d.disabled = disabled
                rt.persist()
                rt.sync_export(before, rt.export_of(d))
        return ""

    return CommandSpec("disable" if disabled else "enable", run, [Arg("numbers", positional=True)])


def remove(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
    """Removes the entry only: the backing file stays until `/file remove`."""
    with rt.lock:
        for item in resolve(rt, cmd, ctx, "numbers"):
            d = _disk(rt, item)
            if d is None:
                continue  # named twice
            if not d.is_file:
                raise CommandError("failure: can not remove this disk")
            before = rt.export_of(d)
            rt.state.remove_disk(d)
            rt.persist()
            rt.sync_export(before, None)
    return ""


def _rate(bps: int) -> str:
    for unit, size in (("Gbps", 10**9), ("Mbps", 10**6), ("kbps", 10**3)):
        if bps >= size:
            return f"{bps / size:.1f}{unit}"
    return f"{bps}bps"


def monitor_traffic(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
    """Prints one sample; without `once` an exec session would print forever, so one it is."""
    found = resolve(rt, cmd, ctx, "numbers")
    if not found:
        return ""
    t = rt.traffic.get(found[0].name, Traffic())
    return key_values(
        [
            ("read-ops-per-second", str(t.read_ops)),
            ("write-ops-per-second", str(t.write_ops)),
            ("read-rate", _rate(t.read_bps)),
            ("write-rate", _rate(t.write_bps)),
        ]
    )


def build(root: Menu) -> None:
    disk = root.add(Menu("disk", ""))
    disk.flags = FLAGS
    disk.table_columns = ["slot", "type", "model", "size"]
    disk.items = items
    disk.select = select
    disk.name_prop = "slot"
    # what `where` may name: every key of the property tables, with its kind
    disk.properties = {key: kind for key, kind, _ in [*FILE_PROPS, *POOL_PROPS, *HIDDEN_PROPS]}
    item_commands(disk)
    disk.commands["add"] = CommandSpec("add", add, [Arg(a) for a in [*ADD_ARGS, "copy-from"]])
    disk.commands["set"] = CommandSpec(
        "set", set_, [Arg("numbers", positional=True), *(Arg(a) for a in SET_ARGS)]
    )
    disk.commands["remove"] = CommandSpec("remove", remove, [Arg("numbers", positional=True)])
    disk.commands["enable"] = _toggle(False)
    disk.commands["disable"] = _toggle(True)
    disk.commands["monitor-traffic"] = CommandSpec(
        "monitor-traffic", monitor_traffic, [Arg("numbers", positional=True), Arg("once", "flag")]
    )
