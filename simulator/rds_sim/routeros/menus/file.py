"""/file: the files and directories on the device's filesystems (backing files of disks)."""

from __future__ import annotations

import time

from ..errors import CommandError
from ..expressions import Expr, leading_equality, matches
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


class _FileView:
    """A file's properties, each computed only when asked (`where` tests one or two)."""

    def __init__(self, f: FileEntry) -> None:
        self.id = f.id
        self._f = f

    def prop(self, key: str) -> Prop | None:
        f = self._f
        if key == "name":
            return Prop("name", "raw", f.name)
        if key == "type":
            return Prop("type", "raw", _type(f))
        if key == "size" and f.type == "file":
            return Prop("size", "human", f.size)
        if key == "last-modified":
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.mtime))
            return Prop("last-modified", "raw", stamp)
        return None


def _item(f: FileEntry) -> Item:
    view = _FileView(f)
    info = [p for key in ("type", "size", "last-modified") if (p := view.prop(key)) is not None]
    return Item(f.id, f.name, "", "", [[Prop("name", "raw", f.name)], info])


def items(rt: Runtime) -> list[Item]:
    return [_item(f) for f in sorted(rt.state.files, key=lambda f: f.name)]


def select(rt: Runtime, where: Expr | None) -> list[Item]:
    """`where name=X ...` looks the name up; anything else tests every file, lazily."""
    name = leading_equality(where, "name")
    files = rt.state.files if name is None else rt.state.files_named(name)
    found = [f for f in files if matches(where, _FileView(f))]
    return [_item(f) for f in sorted(found, key=lambda f: f.name)]


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
    menu.select = select
    menu.table_columns = ["name", "type", "size", "last-modified"]
    menu.properties = {
        "name": "raw",
        "type": "raw",
        "size": "human",
        "last-modified": "raw",
    }
    item_commands(menu)
    menu.commands["remove"] = CommandSpec("remove", remove, [Arg("numbers", positional=True)])
