"""The menu tree the parser resolves names against, and the item model printers work on.

RouterOS parses against a schema: an unknown word is `bad command name`, an unknown argument is
`expected end of command`. So menus declare their commands, arguments and item properties here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from .expressions import Expr
    from .parser import ParsedCommand
    from .runtime import ExecContext, Runtime

# how a property value prints: str is quoted in detail, raw is not; bytes are space-grouped;
# human is a size like 10.0GiB; percent prints with a '%'
PropKind = Literal["str", "raw", "bool", "bytes", "human", "int", "percent"]
PropValue = str | int | bool
Handler = Callable[["Runtime", "ParsedCommand", "ExecContext"], str]
T = TypeVar("T")


@dataclass(frozen=True)
class Prop:
    key: str
    kind: PropKind
    value: PropValue


class HasProps(Protocol):
    """What a `where` expression is tested against: an Item, or a lazy view of one."""

    id: int

    def prop(self, key: str) -> Prop | None: ...


@dataclass
class Item:
    """One printable entry of a menu (a disk, a file)."""

    id: int  # internal id, shown as `*1A`
    name: str  # what positional references match (slot, file name)
    flags: str  # flag letters in header order
    comment: str
    props: list[list[Prop]]  # groups: each group starts on a new line in `print detail`
    hidden: list[Prop] = field(default_factory=list)  # `where` may test them; print does not show

    def prop(self, key: str) -> Prop | None:
        for group in [*self.props, self.hidden]:
            for p in group:
                if p.key == key:
                    return p
        return None


@dataclass(frozen=True)
class Arg:
    name: str
    kind: Literal["value", "flag"] = "value"
    positional: bool = False  # may be given without `name=`, e.g. `set pvc-1 ...`


@dataclass
class CommandSpec:
    name: str
    handler: Handler
    args: list[Arg] = field(default_factory=list)
    where: bool = False  # accepts `where <expression>`
    expression: bool = False  # `find`: the rest of the command is an expression

    def arg(self, name: str, prefixes: bool = True) -> Arg | None:
        return _lookup({a.name: a for a in self.args}, name, prefixes)


@dataclass
class Menu:
    name: str
    path: str  # "/disk", "/system/identity"
    parent: Menu | None = None
    children: dict[str, Menu] = field(default_factory=dict)
    commands: dict[str, CommandSpec] = field(default_factory=dict)
    # properties a `where` / `find` expression may name, with their kinds
    properties: dict[str, PropKind] = field(default_factory=dict)
    flags: list[tuple[str, str]] = field(default_factory=list)  # (letter, NAME) for the header
    table_columns: list[str] = field(default_factory=list)
    items: Callable[[Runtime], list[Item]] | None = None  # every item, in print order
    # the items a `where` expression matches, in print order; None: filter `items`. A menu sets it
    # to skip building the items that do not match
    select: Callable[[Runtime, Expr | None], list[Item]] | None = None
    name_prop: str = "name"  # the property that positional names (`Item.name`) match

    def add(self, child: Menu) -> Menu:
        child.parent = self
        child.path = (self.path.rstrip("/") + "/" + child.name) if self.name else "/" + child.name
        self.children[child.name] = child
        return child

    def child(self, word: str, prefixes: bool = True) -> Menu | CommandSpec | None:
        """Exact names first, then a unique prefix (RouterOS accepts `pri` for `print`)."""
        names: dict[str, Menu | CommandSpec] = {**self.children, **self.commands}
        return _lookup(names, word, prefixes)


def _lookup(names: dict[str, T], word: str, prefixes: bool) -> T | None:
    if word in names:
        return names[word]
    if not prefixes:
        return None
    matches = [v for k, v in names.items() if k.startswith(word)]
    return matches[0] if len(matches) == 1 and word else None
