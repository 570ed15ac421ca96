"""/file: the files and directories on the device's filesystems (backing files of disks)."""

from __future__ import annotations

import time

from ..errors import CommandError
from ..model import FileEntry
from ..parser import ParsedCommand
from ..runtime import ExecContext, Runtime
from ..schema import Arg, CommandSpec, Item, Menu, Prop
from ..storage import normalize
from .base import item_commands, resolve


def _type(f: FileEntry) -> str:
    """`.img file` for x.img, `file` without an extension, `directory`."""
    if f.type == "directory":
        return "directory"
    base = f.name.rsplit("/", 1)[-1]
    return f".{base.rsplit('.', 1)[1]} file" if "." in base.lstrip(".") else "file"


def _item(f: FileEntry) -> Item:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.mtime))
    info = [Prop("type", "raw", _type(f))]
    if f.type == "file":
        info.append(Prop("size", "human", f.size))
    info.append(Prop("last-modified", "raw", stamp))
    return Item(f.id, f.name, "", "", [[Prop("name", "raw", f.name)], info])


def items(rt: Runtime) -> list[Item]:
    return [_item(f) for f in sorted(rt.state.files, key=lambda f: f.name)]


def remove(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
    """Removes files, and directories with everything inside them."""
    with rt.lock:
        for item in resolve(rt, cmd, ctx, "numbers"):
            name = item.name
            if any(p.mount_point == name for p in rt.pools()):
                raise CommandError("failure: can not remove mount point")
            inside = [f for f in rt.state.files if f.name == name or f.name.startswith(name + "/")]
            names = {f.name for f in inside}
            in_use = [d for d in rt.state.disks if d.is_file and normalize(d.file_path) in names]
            if in_use and rt.behaviour.refuse_remove_file_in_use:
                raise CommandError("failure: file is in use")
            if not inside:
                continue  # named twice
            rt.storage.remove(name)
            rt.state.remove_files(names)
            rt.persist()
    return ""


def build(root: Menu) -> None:
    menu = root.add(Menu("file", ""))
    menu.items = items
    menu.table_columns = ["name", "type", "size", "last-modified"]
    menu.properties = {
        "name": "raw",
        "type": "raw",
        "size": "human",
        "last-modified": "raw",
    }
    item_commands(menu)
    menu.commands["remove"] = CommandSpec("remove", remove, [Arg("numbers", positional=True)])
