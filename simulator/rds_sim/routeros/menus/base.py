"""Commands every item menu shares: print (all forms), find, and resolving item references."""

from __future__ import annotations

from .. import format as fmt
from ..errors import CommandError
from ..expressions import matches
from ..parser import ParsedCommand, Value
from ..runtime import ExecContext, Runtime
from ..schema import Arg, CommandSpec, Item, Menu

PRINT_FLAGS = ["detail", "terse", "as-value", "count-only", "without-paging"]


def items_of(rt: Runtime, menu: Menu) -> list[Item]:
    assert menu.items is not None
    with rt.lock:
        return menu.items(rt)


def print_items(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
    """Snapshot under the lock, format outside it: a slow print never blocks mutations."""
    menu = cmd.menu
    listed = [it for it in items_of(rt, menu) if matches(cmd.where, it)]
    ctx.listings[menu.path] = [it.id for it in listed]
    numbered = list(enumerate(listed))
    b = rt.behaviour
    if "count-only" in cmd.flags:
        return fmt.lines_out([str(len(listed))])
    if "as-value" in cmd.flags:
        return fmt.as_value(numbered)
    if "terse" in cmd.flags:
        return fmt.terse(numbered)
    if "detail" in cmd.flags:
        return fmt.detail(numbered, menu.flags, ctx.width, b)
    return fmt.table(numbered, menu.flags, menu.table_columns, ctx.width, b)


def find_items(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
    """`find` on its own line returns a list nobody prints."""
    return ""


def resolve(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext, arg: str) -> list[Item]:
    """Items named by an argument: `[find ...]`, a name, a number, `*id`, or a comma list.

    Numbers are indices into the last print of this command line, or else positions in the
    full list. A missing name or number is `no such item`; an empty `[find]` is just empty.
    """
    value = cmd.values.get(arg)
    if value is None:
        raise CommandError(f"missing value(s) of argument(s) {arg}")
    return resolve_value(rt, cmd.menu, value, ctx, arg)


def resolve_value(rt: Runtime, menu: Menu, value: Value, ctx: ExecContext, arg: str) -> list[Item]:
    if value.sub is not None:
        sub = value.sub.command
        if sub.spec.name != "find":
            raise CommandError(f"invalid value for argument {arg}")
        return [it for it in items_of(rt, sub.menu) if matches(sub.where, it)]
    items = items_of(rt, menu)
    by_name = [it for it in items if it.name == value.text]
    if by_name:
        return by_name
    out: list[Item] = []
    for ref in value.text.split(","):
        out.append(_one(items, ref, ctx.listings.get(menu.path)))
    return out


def _one(items: list[Item], ref: str, listing: list[int] | None) -> Item:
    by_id = {it.id: it for it in items}
    found: Item | None = None
    if ref.startswith("*"):
        try:
            found = by_id.get(int(ref[1:], 16))
        except ValueError:
            found = None
    elif ref.isdigit():
        n = int(ref)
        if listing is not None:
            found = by_id.get(listing[n]) if n < len(listing) else None
        elif n < len(items):
            found = items[n]
    else:
        found = next((it for it in items if it.name == ref), None)
    if found is None:
        raise CommandError("no such item")
    return found


def item_commands(menu: Menu) -> None:
    """Add print and find to an item menu."""
    menu.commands["print"] = CommandSpec(
        "print", print_items, [Arg(f, "flag") for f in PRINT_FLAGS], where=True
    )
    menu.commands["find"] = CommandSpec("find", find_items, expression=True)
