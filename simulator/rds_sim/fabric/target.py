"""The target side: what the simulated RDS exports over NVMe/TCP, as an ExportBackend.

Mirrors Linux nvmet, which RouterOS uses: a port listens while at least one export uses it;
a subsystem admits any host when its allow list is empty, else only the listed host NQNs;
controller IDs come from a per-subsystem IDA starting at 1. Changing the allow list does not
disconnect hosts already connected (nvmet keeps existing controllers); it applies to the next
connect or reconnect.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..exports import Export
from .ida import Ida


@dataclass(frozen=True)
class Block:
    """A network rule: packets between `node` (None = every node) and `port` (None = every
    port) are dropped, like `nft ... drop`."""

    node: str | None = None
    port: int | None = None

    def matches(self, node: str, port: int) -> bool:
        return (self.node is None or self.node == node) and (self.port is None or self.port == port)


class FabricBackend:
    """ExportBackend for `Simulator(export_backend=...)`; tells the fabric engine what changed."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.address = address
        self.lock = threading.RLock()
        self.exports: dict[str, Export] = {}  # slot -> export
        self.up = True
        self.blocks: list[Block] = []
        self._cntlids: dict[str, Ida] = {}
        # set by the engine: called with ("added"|"removed"|"changed"|"down"|"up"|"block", export)
        self.listener: Callable[[str, Export | None], None] | None = None
        self.on_close: Callable[[], None] | None = None

    # --- ExportBackend ------------------------------------------------------------------------

    def export_added(self, e: Export) -> None:
        with self.lock:
            self.exports[e.slot] = e
        self._notify("added", e)

    def export_removed(self, e: Export) -> None:
        with self.lock:
            self.exports.pop(e.slot, None)
            self._cntlids.pop(e.nqn, None)
        self._notify("removed", e)

    def export_changed(self, e: Export) -> None:
        with self.lock:
            old = self.exports.get(e.slot)
            self.exports[e.slot] = e
            if old is not None and (old.nqn != e.nqn or old.port != e.port):
                self._cntlids.pop(old.nqn, None)
        self._notify("changed", e)

    def device_down(self) -> None:
        with self.lock:
            self.up = False
            self.exports.clear()
            self._cntlids.clear()
        self._notify("down", None)

    def device_up(self, exports: list[Export]) -> None:
        with self.lock:
            self.exports = {e.slot: e for e in exports}
            self.up = True
        self._notify("up", None)

    def close(self) -> None:
        """Tear down whatever owns this backend (the fabric engine sets `on_close`)."""
        if self.on_close is not None:
            self.on_close()

    def _notify(self, kind: str, e: Export | None) -> None:
        if self.listener is not None:
            self.listener(kind, e)

    # --- network faults -----------------------------------------------------------------------

    def block(self, node: str | None = None, port: int | None = None) -> None:
        with self.lock:
            b = Block(node, port)
            if b not in self.blocks:
                self.blocks.append(b)
        self._notify("block", None)

    def unblock(self, node: str | None = None, port: int | None = None) -> None:
        """Remove the rule added with the same arguments (both None: remove every rule)."""
        with self.lock:
            if node is None and port is None:
                self.blocks.clear()
            else:
                self.blocks = [b for b in self.blocks if b != Block(node, port)]
        self._notify("block", None)

    # --- what a host sees ---------------------------------------------------------------------

    def find(self, nqn: str, port: int) -> Export | None:
        with self.lock:
            for e in self.exports.values():
                if e.nqn == nqn and e.port == port:
                    return e
            return None

    def blocked(self, node: str, port: int) -> bool:
        with self.lock:
            return any(b.matches(node, port) for b in self.blocks)

    def reach(self, node: str, traddr: str, port: int) -> int:
        """0 if a TCP connection from `node` to traddr:port would be accepted, else an errno."""
        with self.lock:
            if traddr != self.address or not self.up:
                return errno.ETIMEDOUT
            if self.blocked(node, port):
                return errno.ETIMEDOUT
            if not any(e.port == port for e in self.exports.values()):
                return errno.ECONNREFUSED
            return 0

    def alive(self, node: str, traddr: str, port: int, nqn: str) -> bool:
        """Does an established association still carry traffic (no drop rule, export there)?"""
        return self.reach(node, traddr, port) == 0 and self.find(nqn, port) is not None

    def admit(self, node: str, traddr: str, port: int, nqn: str, hostnqn: str) -> tuple[int, int]:
        """Fabrics connect: (0, cntlid) or (errno, 0)."""
        with self.lock:
            err = self.reach(node, traddr, port)
            if err:
                return err, 0
            e = self.find(nqn, port)
            if e is None:  # nvmet: Connect Invalid Parameters -> the host's write fails with EIO
                return errno.EIO, 0
            if e.allowed_hosts and hostnqn not in e.allowed_hosts:  # Connect Invalid Host
                return errno.EIO, 0
            return 0, self._cntlids.setdefault(nqn, Ida(1)).alloc()

    def release(self, nqn: str, cntlid: int) -> None:
        with self.lock:
            ida = self._cntlids.get(nqn)
            if ida is not None:
                ida.free(cntlid)
