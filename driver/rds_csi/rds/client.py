"""Typed RDS client: builds a validated command, runs it on a Transport, checks for device errors
and parses the answer.

No retries here beyond the transport's reconnect. After `ConnectionLost` the command may or may not
have run: the caller looks (`get_disk`, `get_file`) before acting again. Creating is the only
non-idempotent operation (`AlreadyExists`); removals treat "absent" as done.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from rds_csi.errors import NoSuchItem, RdsParseError
from rds_csi.rds import commands
from rds_csi.rds.commands import NvmeExport
from rds_csi.rds.parser import (
    Item,
    check_errors,
    parse_bool,
    parse_int,
    parse_key_values,
    parse_percent,
    parse_print,
    parse_size,
)
from rds_csi.rds.transport import Transport

log = logging.getLogger(__name__)

__all__ = ["Disk", "FileEntry", "NvmeExport", "Pool", "RdsClient", "SystemResource"]


@dataclass(frozen=True)
class Disk:
    """A `/disk` entry. `size_bytes` is exact; `file_size_bytes` is parsed from a one-decimal
    human size and is therefore approximate."""

    slot: str
    type: str
    file_path: str | None
    size_bytes: int | None
    file_size_bytes: int | None
    nvme_export: bool
    port: int | None
    nqn: str | None
    allow_host_names: tuple[str, ...]
    comment: str | None
    disabled: bool
    flags: frozenset[str]
    model: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Pool:
    slot: str
    mount_point: str | None
    size_bytes: int
    free_bytes: int
    use_percent: int | None


@dataclass(frozen=True)
class FileEntry:
    """A `/file` entry; `name` never has a leading `/`. `size_bytes` is approximate (human)."""

    name: str
    type: str
    size_bytes: int | None
    last_modified: str | None
    properties: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class SystemResource:
    version: str | None
    board_name: str | None
    uptime: str | None
    cpu_load_percent: int | None
    free_memory_bytes: int | None
    total_memory_bytes: int | None
    properties: Mapping[str, str] = field(default_factory=dict, repr=False)


def _opt_size(props: Mapping[str, str], key: str) -> int | None:
    v = props.get(key)
    if v is None or v in ("", "-"):
        return None
    return parse_size(v)


def _opt_bool(props: Mapping[str, str], key: str) -> bool | None:
    v = props.get(key)
    return None if v in (None, "") else parse_bool(v)


def _lenient(parse: Callable[[str], int], value: str | None) -> int | None:
    """For informational fields: a format we do not know must not fail the call."""
    if not value:
        return None
    try:
        return parse(value)
    except RdsParseError:
        return None


def disk_from_item(item: Item) -> Disk:
    p = item.props
    slot = p.get("slot")
    if not slot:
        raise RdsParseError(f"disk item without a slot: {dict(p)}")
    export = _opt_bool(p, "nvme-tcp-export")
    disabled = _opt_bool(p, "disabled")
    port = p.get("nvme-tcp-server-port")
    hosts = p.get("nvme-tcp-server-allow-host-name", "")
    comment = item.comment if item.comment is not None else p.get("comment")
    return Disk(
        slot=slot,
        type=p.get("type", ""),
        file_path=p.get("file-path"),
        size_bytes=_opt_size(p, "size"),
        file_size_bytes=_opt_size(p, "file-size"),
        nvme_export=export if export is not None else "t" in item.flags,
        port=parse_int(port) if port else None,
        nqn=p.get("nvme-tcp-server-nqn") or None,
        allow_host_names=tuple(h.strip() for h in hosts.split(",") if h.strip()),
        comment=comment or None,
        disabled=disabled if disabled is not None else "X" in item.flags,
        flags=item.flags,
        model=p.get("model") or None,
        properties=dict(p),
    )


def pool_from_item(item: Item) -> Pool:
    p = item.props
    size, free = _opt_size(p, "size"), _opt_size(p, "free")
    if size is None or free is None:
        raise RdsParseError(f"pool {p.get('slot')!r} shows no size/free: {dict(p)}")
    use = p.get("use")
    return Pool(
        slot=p.get("slot", ""),
        mount_point=p.get("mount-point") or None,
        size_bytes=size,
        free_bytes=free,
        use_percent=parse_percent(use) if use else None,
    )


def file_from_item(item: Item) -> FileEntry:
    p = item.props
    name = p.get("name")
    if not name:
        raise RdsParseError(f"file item without a name: {dict(p)}")
    return FileEntry(
        name=name,
        type=p.get("type", ""),
        size_bytes=_opt_size(p, "size"),
        last_modified=p.get("last-modified"),
        properties=dict(p),
    )


class RdsClient:
    """Typed operations on one RDS through a Transport (usually a CircuitBreaker(SshTransport))."""

    def __init__(
        self, transport: Transport, *, timeout: float = 30.0, create_timeout: float = 300.0
    ) -> None:
        self._transport = transport
        self._timeout = timeout
        self._create_timeout = create_timeout  # creating or copying a large file takes long

    def run(self, command: str, *, timeout: float | None = None) -> str:
        """Run a built command; raise the device's error as a typed exception; return stdout."""
        out = self._transport.run(command, timeout=self._timeout if timeout is None else timeout)
        check_errors(out.stdout, out.exit_status, command)
        return out.stdout

    # --- disks ---------------------------------------------------------------------------

    def create_disk(
        self,
        slot: str,
        file_path: str,
        size_bytes: int,
        *,
        export: NvmeExport | None,
        comment: str | None = None,
    ) -> None:
        """Create a file-backed disk (and its sparse file); export=None leaves it unexported.

        Raises AlreadyExists for a duplicate slot and NotEnoughSpace when the pool is full.
        """
        self.run(
            commands.add_file_disk(slot, file_path, size_bytes, export=export, comment=comment),
            timeout=self._create_timeout,
        )

    def create_disk_copy(
        self,
        slot: str,
        source_slot: str,
        file_path: str,
        size_bytes: int,
        *,
        export: NvmeExport | None,
        comment: str | None = None,
    ) -> None:
        """Create a disk whose file is a copy-on-write copy of `source_slot`'s file (clones and
        snapshots; snapshots use export=None)."""
        cmd = commands.add_file_disk(
            slot, file_path, size_bytes, export=export, comment=comment, copy_from_slot=source_slot
        )
        self.run(cmd, timeout=self._create_timeout)

    def get_disk(self, slot: str) -> Disk | None:
        for disk in self._disks(commands.print_disk(slot)):
            if disk.slot == slot:
                return disk
        return None

    def list_disks(self, slot_prefix: str = "") -> list[Disk]:
        """Disks whose slot starts with `slot_prefix`. A slot listed twice (seen on the device
        during races) is returned once."""
        seen: dict[str, Disk] = {}
        for disk in self._disks(commands.print_disks(slot_prefix)):
            if disk.slot in seen:
                log.info("disk %s listed twice by the RDS; keeping the first entry", disk.slot)
                continue
            if disk.slot.startswith(slot_prefix):
                seen[disk.slot] = disk
        return list(seen.values())

    def resize_disk(self, slot: str, size_bytes: int) -> None:
        """Set the file size. A missing slot is silently ignored by the device: look first."""
        self.run(commands.set_file_size(slot, size_bytes), timeout=self._create_timeout)

    def set_export(self, slot: str, enabled: bool) -> None:
        self.run(commands.set_export(slot, enabled))

    def set_comment(self, slot: str, comment: str) -> None:
        self.run(commands.set_comment(slot, comment))

    def set_allowed_hosts(self, slot: str, host_nqns: Sequence[str]) -> None:
        """Restrict which host NQNs may connect. An EMPTY list lets ANY host connect."""
        self.run(commands.set_allowed_hosts(slot, host_nqns))

    def remove_disk(self, slot: str) -> None:
        """Remove the disk entry (not its file). Absent is fine."""
        with contextlib.suppress(NoSuchItem):
            self.run(commands.remove_disk(slot))

    def _disks(self, command: str) -> list[Disk]:
        return [disk_from_item(i) for i in parse_print(self.run(command))]

    # --- files and pool ------------------------------------------------------------------

    def get_file(self, name: str) -> FileEntry | None:
        """`name` may carry a leading `/` (as disk file-paths may); /file names never do."""
        wanted = name.removeprefix("/")
        for item in parse_print(self.run(commands.print_file(name))):
            entry = file_from_item(item)
            if entry.name == wanted:
                return entry
        return None

    def list_files(self, prefix: str) -> list[FileEntry]:
        """Files whose name starts with `prefix` (no leading `/`), filtered here."""
        wanted = prefix.removeprefix("/")
        entries = [file_from_item(i) for i in parse_print(self.run(commands.print_files()))]
        return [e for e in entries if e.name.startswith(wanted)]

    def remove_file(self, name: str) -> None:
        """Delete a file (the disk entry's removal keeps it). Absent is fine."""
        with contextlib.suppress(NoSuchItem):
            self.run(commands.remove_file(name))

    def get_pool(self, name: str) -> Pool:
        """The pool disk by slot or mount point; NoSuchItem if there is none."""
        items = parse_print(self.run(commands.print_pool(name)))
        for item in items:
            if name in (item.props.get("slot"), item.props.get("mount-point")):
                return pool_from_item(item)
        raise NoSuchItem(f"no pool named {name!r}", command=commands.print_pool(name))

    # --- system --------------------------------------------------------------------------

    def identity(self) -> str:
        kv = parse_key_values(self.run(commands.system_identity()))
        if "name" not in kv:
            raise RdsParseError(f"identity without a name: {kv}")
        return kv["name"]

    def resource(self) -> SystemResource:
        kv = parse_key_values(self.run(commands.system_resource()))
        load = kv.get("cpu-load")
        return SystemResource(
            version=kv.get("version"),
            board_name=kv.get("board-name"),
            uptime=kv.get("uptime"),
            cpu_load_percent=_lenient(parse_percent, load),
            free_memory_bytes=_lenient(parse_size, kv.get("free-memory")),
            total_memory_bytes=_lenient(parse_size, kv.get("total-memory")),
            properties=kv,
        )

    def monitor_traffic(self, slot: str) -> dict[str, str]:
        """One sample of a disk's traffic counters as raw `key: value` strings."""
        return parse_key_values(self.run(commands.monitor_traffic(slot)))

    def ping(self, *, timeout: float = 10.0) -> None:
        """Cheap liveness check: raises RdsUnavailable/ConnectionLost if the RDS does not answer."""
        self.run(commands.system_identity(), timeout=timeout)
