"""Commands every item menu shares: print (all forms), find, and resolving item references."""

from __future__ import annotations

from .. import format as fmt
from ..errors import CommandError
from ..expressions import Cond, Expr, matches
from ..parser import ParsedCommand, Value
from ..runtime import ExecContext, Runtime
from ..schema import Arg, CommandSpec, Item, Menu

PRINT_FLAGS = ["detail", "terse", "as-value", "count-only", "without-paging"]


def items_of(rt: Runtime, menu: Menu) -> list[Item]:
    assert menu.items is not None
    with rt.lock:
        return menu.items(rt)


def select(rt: Runtime, menu: Menu, where: Expr | None) -> list[Item]:
    """The items `where` matches, in print order (every item if there is no expression)."""
    with rt.lock:
        if menu.select is not None:
            return menu.select(rt, where)
        assert menu.items is not None
        return [it for it in menu.items(rt) if matches(where, it)]


def named(rt: Runtime, menu: Menu, name: str) -> list[Item]:
    """The items a positional name refers to (`set pvc-1 ...`)."""
    return select(rt, menu, Cond(menu.name_prop, "=", name))


def print_items(rt: Runtime, cmd: ParsedCommand, ctx: ExecContext) -> str:
    """Select under the lock, format outside it: a slow print never blocks mutations."""
    menu = cmd.menu
    listed = select(rt, menu, cmd.where)
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
        return select(rt, sub.menu, sub.where)
    by_name = named(rt, menu, value.text)
    if by_name:
        return by_name
    every: list[Item] | None = None  # the full list, built only for numbers and *ids
    out: list[Item] = []
    for ref in value.text.split(","):
        found: Item | None
        if ref.startswith("*") or ref.isdigit():
            every = items_of(rt, menu) if every is None else every
            found = _numbered(every, ref, ctx.listings.get(menu.path))
        else:
            found = next(iter(named(rt, menu, ref)), None)
        if found is None:
            raise CommandError("no such item")
        out.append(found)
    return out


def _numbered(items: list[Item], ref: str, listing: list[int] | None) -> Item | None:
    """`*1A` (internal id) or `3` (index into the last print, else position in `items`)."""
    by_id = {it.id: it for it in items}
    if ref.startswith("*"):
        try:
            return by_id.get(int(ref[1:], 16))
        except ValueError:
            return None
    n = int(ref)
    if listing is not None:
        return by_id.get(listing[n]) if n < len(listing) else None
    return items[n] if n < len(items) else None


def item_commands(menu: Menu) -> None:
    """Add print and find to an item menu."""
    menu.commands["print"] = CommandSpec(
        "print", print_items, [Arg(f, "flag") for f in PRINT_FLAGS], where=True
    )
    menu.commands["find"] = CommandSpec("find", find_items, expression=True)
