"""The menu tree of the simulated RDS."""

from __future__ import annotations

from ..schema import Menu
from . import disk, file, system


def build_root() -> Menu:
    root = Menu("", "/")
    disk.build(root)
    file.build(root)
    system.build(root)
    return root
