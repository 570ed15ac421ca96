"""`where` / `[find ...]` expressions: an AST and its evaluation against menu items."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from .errors import CommandError
from .schema import HasProps, Prop
from .values import parse_bool, parse_size


@dataclass(frozen=True)
class Cond:
    prop: str
    op: str | None  # "=", "!=", "~", "<", ">", "<=", ">="; None tests truthiness
    value: str = ""


@dataclass(frozen=True)
class Not:
    expr: Expr


@dataclass(frozen=True)
class And:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or:
    left: Expr
    right: Expr


Expr = Cond | Not | And | Or
_ORDER = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}


def matches(expr: Expr | None, item: HasProps) -> bool:
    if expr is None:
        return True
    if isinstance(expr, Not):
        return not matches(expr.expr, item)
    if isinstance(expr, And):
        return matches(expr.left, item) and matches(expr.right, item)
    if isinstance(expr, Or):
        return matches(expr.left, item) or matches(expr.right, item)
    return _test(expr, _prop(item, expr.prop))


def leading_equality(expr: Expr | None, prop: str) -> str | None:
    """V if `prop=V` is the condition evaluated first (alone, or leftmost in `and`s).

    Then an item whose `prop` is not V fails the expression before anything else is evaluated
    (nothing that could raise), so an index on `prop` may pick the candidates."""
    while isinstance(expr, And):
        expr = expr.left
    if isinstance(expr, Cond) and expr.prop == prop and expr.op == "=":
        return expr.value
    return None


def _prop(item: HasProps, key: str) -> Prop | None:
    if key == ".id":
        return Prop(".id", "raw", f"*{item.id:X}")
    return item.prop(key)


def _text(p: Prop) -> str:
    if isinstance(p.value, bool):
        return "yes" if p.value else "no"
    return str(p.value)


def _test(c: Cond, p: Prop | None) -> bool:
    if p is None:
        return c.op == "!="
    if c.op is None:
        return bool(p.value)
    if c.op == "~":
        try:
            return re.search(c.value, _text(p)) is not None
        except re.error as err:
            raise CommandError(f"invalid value for argument {c.prop}") from err
    left: object
    right: object
    if isinstance(p.value, bool):
        left, right = p.value, parse_bool(c.value)
    elif isinstance(p.value, int):
        left, right = p.value, parse_size(c.value.rstrip("%"))
    else:
        left, right = p.value, c.value
    if right is None:
        return c.op == "!="
    if c.op == "=":
        return left == right
    if c.op == "!=":
        return left != right
    if isinstance(left, bool) or type(left) is not type(right):
        return False
    return bool(_ORDER[c.op](left, right))
