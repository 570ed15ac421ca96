"""json-c's JSON_C_TO_STRING_PRETTY | NOSLASHESCAPE layout, as nvme-cli 2.x prints it.

Two spaces per level, `"key":value` without a space, empty containers as `[` newline indent `]`.
"""

from __future__ import annotations

import json
from typing import Any


def dumps(obj: Any, level: int = 0) -> str:
    pad = "  " * (level + 1)
    end = "  " * level
    if isinstance(obj, dict):
        items = [f'{pad}{_str(k)}:{dumps(v, level + 1)}' for k, v in obj.items()]
        body = ",\n".join(items)
        return "{\n" + (body + "\n" if items else "") + end + "}"
    if isinstance(obj, list):
        items = [pad + dumps(v, level + 1) for v in obj]
        body = ",\n".join(items)
        return "[\n" + (body + "\n" if items else "") + end + "]"
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if isinstance(obj, int):
        return str(obj)
    if obj is None:
        return "null"
    return _str(str(obj))


def _str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)
