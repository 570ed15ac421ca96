"""The kernel's IDA: hands out the lowest free integer at or above a minimum."""

from __future__ import annotations


class Ida:
    def __init__(self, minimum: int = 0) -> None:
        self.minimum = minimum
        self._used: set[int] = set()

    def alloc(self) -> int:
        n = self.minimum
        while n in self._used:
            n += 1
        self._used.add(n)
        return n

    def free(self, n: int) -> None:
        self._used.discard(n)

    def __contains__(self, n: object) -> bool:
        return n in self._used

    def used(self) -> set[int]:
        return set(self._used)
