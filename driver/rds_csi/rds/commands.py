"""RouterOS command lines built only from whitelisted values.

Every value is checked against a strict pattern for its field before it is placed in a command, so
nothing from a request can smuggle `;`, newlines, `[`, `$`, quotes or backslashes into the CLI
(RouterOS expands `$var` and `[cmd]` even inside double quotes). Strings are additionally quoted
with escaping, as a second line of defence. Anything else raises `InvalidValue`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from rds_csi.errors import InvalidValue

MAX_SLOT_LEN = 32  # newest firmware limits slot names to 32 characters
MAX_PATH_LEN = 255
MAX_NQN_LEN = 223  # NVMe base specification
MAX_COMMENT_LEN = 255
MAX_SIZE = 1 << 60
DEFAULT_NVME_PORT = 4420

_SLOT = re.compile(r"[a-z0-9][a-z0-9-]*")
_PATH_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_NQN = re.compile(r"nqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9-]+(?:\.[a-z0-9-]+)+:[a-z0-9.:-]+")
# No `=` so a comment can never be mistaken for a property when output is re-joined; no leading,
# trailing or doubled spaces because the device's line wrapping does not preserve them.
_COMMENT = re.compile(r"[A-Za-z0-9_.,:/@+%()#-]+(?: [A-Za-z0-9_.,:/@+%()#-]+)*")
_UNITS = (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))


def _fail(what: str, value: object) -> InvalidValue:
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return InvalidValue(f"invalid {what}: {shown}")


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def check_slot(slot: str) -> str:
    """A disk slot: lowercase letters, digits and dashes, at most 32 characters."""
    if not _is_str(slot) or len(slot) > MAX_SLOT_LEN or not _SLOT.fullmatch(slot):
        raise _fail("slot", slot)
    return slot


def check_path(path: str) -> str:
    """A file path of safe components (no `..`, no empty parts), optionally with a leading `/`."""
    if not _is_str(path) or not path or len(path) > MAX_PATH_LEN:
        raise _fail("file path", path)
    parts = path.removeprefix("/").split("/")
    if not all(_PATH_COMPONENT.fullmatch(p) for p in parts):
        raise _fail("file path", path)
    return path


def check_nqn(nqn: str) -> str:
    """An NVMe qualified name `nqn.YYYY-MM.reverse.domain:suffix`, lowercase."""
    if not _is_str(nqn) or len(nqn) > MAX_NQN_LEN or not _NQN.fullmatch(nqn):
        raise _fail("NQN", nqn)
    return nqn


def check_comment(comment: str) -> str:
    """A comment of safe characters; empty is allowed (it clears the comment)."""
    if not _is_str(comment) or len(comment) > MAX_COMMENT_LEN:
        raise _fail("comment", comment)
    if comment and not _COMMENT.fullmatch(comment):
        raise _fail("comment", comment)
    return comment


def check_port(port: int) -> int:
    if type(port) is not int or not 1 <= port <= 65535:
        raise _fail("port", port)
    return port


def size_arg(size_bytes: int) -> str:
    """Bytes as RouterOS input, in the largest binary unit that is exact (`10G`, `1536M`).

    Input units are binary on RDS. Sizes must be whole KiB: round up before calling.
    """
    if type(size_bytes) is not int or not 0 < size_bytes <= MAX_SIZE:
        raise _fail("size", size_bytes)
    for unit, factor in _UNITS:
        if size_bytes % factor == 0:
            return f"{size_bytes // factor}{unit}"
    raise _fail("size (must be a multiple of 1 KiB)", size_bytes)


def quote(value: str) -> str:
    """RouterOS double-quoted string. Values are whitelisted already: escaping is a second guard."""
    escaped = "".join("\\" + c if c in '"\\$' else c for c in value)
    return f'"{escaped}"'


def _find_slot(slot: str) -> str:
    return f"[find slot={quote(check_slot(slot))}]"


def _file_name(name: str) -> str:
    """`/file` names never carry a leading slash, whatever the disk's file-path looks like."""
    return check_path(name).removeprefix("/")


@dataclass(frozen=True)
class NvmeExport:
    """NVMe/TCP export settings of a disk. Empty `allow_host_names` means any host may connect."""

    nqn: str
    port: int = DEFAULT_NVME_PORT
    allow_host_names: Sequence[str] = field(default_factory=tuple)


def _allow_hosts_arg(host_nqns: Sequence[str]) -> str:
    """Host NQNs as one comma-separated string (the device's list syntax) [inferred]."""
    if isinstance(host_nqns, str):
        raise _fail("host NQN list (got a single string)", host_nqns)
    return quote(",".join(check_nqn(h) for h in host_nqns))


def add_file_disk(
    slot: str,
    file_path: str,
    size_bytes: int,
    *,
    export: NvmeExport | None,
    comment: str | None = None,
    copy_from_slot: str | None = None,
) -> str:
    """`/disk add type=file ...`: an exported volume, or (export=None) an unexported one such as a
    snapshot. `copy_from_slot` makes a copy-on-write copy of another disk's file."""
    args = [
        "type=file",
        f"file-path={quote(check_path(file_path))}",
        f"file-size={size_arg(size_bytes)}",
        f"slot={quote(check_slot(slot))}",
    ]
    if export is None:
        args.append("nvme-tcp-export=no")
    else:
        args += [
            "nvme-tcp-export=yes",
            f"nvme-tcp-server-port={check_port(export.port)}",
            f"nvme-tcp-server-nqn={quote(check_nqn(export.nqn))}",
        ]
        if export.allow_host_names:
            args.append(
                f"nvme-tcp-server-allow-host-name={_allow_hosts_arg(export.allow_host_names)}"
            )
    if comment:
        args.append(f"comment={quote(check_comment(comment))}")
    if copy_from_slot is not None:
        args.append(f"copy-from={_find_slot(copy_from_slot)}")
    return "/disk add " + " ".join(args)


def set_file_size(slot: str, size_bytes: int) -> str:
    return f"/disk set {_find_slot(slot)} file-size={size_arg(size_bytes)}"


def set_export(slot: str, enabled: bool) -> str:
    if not isinstance(enabled, bool):
        raise _fail("export flag", enabled)
    return f"/disk set {_find_slot(slot)} nvme-tcp-export={'yes' if enabled else 'no'}"


def set_comment(slot: str, comment: str) -> str:
    return f"/disk set {_find_slot(slot)} comment={quote(check_comment(comment))}"


def set_allowed_hosts(slot: str, host_nqns: Sequence[str]) -> str:
    """Restrict which host NQNs may connect; an empty list lets ANY host connect."""
    arg = _allow_hosts_arg(host_nqns)
    return f"/disk set {_find_slot(slot)} nvme-tcp-server-allow-host-name={arg}"


def remove_disk(slot: str) -> str:
    """Removes the disk entry (not its file). Prints nothing when the slot is absent."""
    return f"/disk remove {_find_slot(slot)}"


def print_disk(slot: str) -> str:
    return f"/disk print detail where slot={quote(check_slot(slot))}"


def print_disks(slot_prefix: str = "") -> str:
    """All disks whose slot starts with `slot_prefix` (all disks when empty)."""
    if slot_prefix == "":
        return "/disk print detail"
    return f"/disk print detail where slot~{quote('^' + check_slot(slot_prefix))}"


def print_pool(name: str) -> str:
    """The pool disk, named by its slot or its mount point (both are slot-like names)."""
    q = quote(check_slot(name))
    return f"/disk print detail where slot={q} or mount-point={q}"


def print_file(name: str) -> str:
    return f"/file print detail where name={quote(_file_name(name))}"


def print_files() -> str:
    """Every file; callers filter by prefix (a regex built from a path would need escaping)."""
    return "/file print detail"


def remove_file(name: str) -> str:
    """Prints nothing when the file is absent."""
    return f"/file remove [find name={quote(_file_name(name))}]"


def system_resource() -> str:
    return "/system resource print"


def system_identity() -> str:
    return "/system identity print"


def monitor_traffic(slot: str) -> str:
    return f"/disk monitor-traffic {check_slot(slot)} once"
