"""The NVMe host boundary the node service and the monitor use.

``attach`` is idempotent: a subsystem that is already connected and live is used
as it is; a connected controller that never produced a namespace block device
(an "orphan", e.g. left behind by a crashed attach or a target that exported the
namespace late) is reset with disconnect + connect. Every answer is resolved from
sysfs by NQN at the moment it is needed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from rds_csi.nvme.cli import ConnectOptions, NvmeCli, NvmeCliError, validate_nqn
from rds_csi.nvme.sysfs import GONE_STATES, LIVE, Controller, Namespace, NvmeSysfs

log = logging.getLogger("rds_csi.nvme.host")


class AttachError(Exception):
    """The volume could not be attached (or detached); the message says why."""


class NvmeHost(Protocol):
    nqn_prefix: str

    def attach(self, nqn: str, address: str, port: int, opts: ConnectOptions) -> Namespace: ...

    def resolve(self, nqn: str) -> Namespace | None: ...

    def controllers(self, nqn: str) -> list[Controller]: ...

    def detach(self, nqn: str) -> None: ...

    def rescan(self, nqn: str) -> Namespace | None: ...

    def connected_nqns(self) -> set[str]: ...

    def block_device_present(self, major: int, minor: int) -> bool: ...

    def owns(self, nqn: str) -> bool: ...


class SysfsNvmeHost:
    """NvmeHost over the nvme CLI and a sysfs tree."""

    def __init__(
        self,
        sysfs: NvmeSysfs,
        cli: NvmeCli,
        *,
        nqn_prefix: str,
        attach_timeout: float = 30.0,
        orphan_grace: float = 2.0,
        poll_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sysfs = sysfs
        self.cli = cli
        self.nqn_prefix = nqn_prefix
        self.attach_timeout = attach_timeout
        self.orphan_grace = orphan_grace
        self.poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep

    def owns(self, nqn: str) -> bool:
        """Whether this NQN is one of the driver's volumes (``<prefix>:<slot>``)."""
        return nqn.startswith(self.nqn_prefix + ":") and len(nqn) > len(self.nqn_prefix) + 1

    # ------------------------------------------------------------------ reads

    def resolve(self, nqn: str) -> Namespace | None:
        return self.sysfs.device_for(nqn)

    def controllers(self, nqn: str) -> list[Controller]:
        return self.sysfs.controllers_for(nqn)

    def connected_nqns(self) -> set[str]:
        return self.sysfs.nqns()

    def block_device_present(self, major: int, minor: int) -> bool:
        return self.sysfs.block_device_present(major, minor)

    # ------------------------------------------------------------------ waiting

    def _wait(self, what: str, timeout: float, ready: Callable[[], bool]) -> bool:
        deadline = self._clock() + timeout
        while True:
            if ready():
                return True
            if self._clock() >= deadline:
                log.debug("gave up waiting", extra={"fields": {"for": what, "timeout": timeout}})
                return False
            self._sleep(self.poll_interval)

    def _live_device(self, nqn: str) -> Namespace | None:
        ctrls = self.sysfs.controllers_for(nqn)
        ns = self.sysfs.device_for(nqn, ctrls)
        if ns is None:
            return None
        states = {c.name: c.state for c in ctrls}
        if any(states.get(c) == LIVE for c in ns.controllers):
            return ns
        # A tree without path entries: any live controller of the subsystem will do.
        if not ns.controllers and LIVE in states.values():
            return ns
        return None

    def _wait_live_device(self, what: str, nqn: str, timeout: float) -> Namespace | None:
        """Poll until ``nqn`` has a device reached through a live controller, or None."""
        found: list[Namespace] = []

        def ready() -> bool:
            ns = self._live_device(nqn)
            if ns is not None:
                found.append(ns)
            return ns is not None

        return found[-1] if self._wait(what, timeout, ready) else None

    # ------------------------------------------------------------------ attach

    def attach(self, nqn: str, address: str, port: int, opts: ConnectOptions) -> Namespace:
        validate_nqn(nqn)
        ctrls = self.sysfs.controllers_for(nqn)
        if ctrls:
            for c in ctrls:
                if c.traddr and (c.traddr != address or c.trsvcid not in ("", str(port))):
                    log.warning("connected controller has another address than the volume",
                                extra={"fields": {"nqn": nqn, "controller": c.name,
                                                  "address": c.address,
                                                  "expected": f"{address}:{port}"}})
            ns = self._live_device(nqn)
            if ns is not None:
                return ns
            if all(c.state in GONE_STATES for c in ctrls):
                # Being deleted: let the kernel finish, then connect afresh.
                self._wait(f"{nqn} controllers to go away", self.attach_timeout,
                           lambda: not [c for c in self.sysfs.controllers_for(nqn)
                                        if c.state in GONE_STATES])
            elif any(c.live for c in ctrls):
                # Live but no device yet: the namespace scan is asynchronous; give it a
                # moment before calling it an orphan.
                ns = self._wait_live_device(f"{nqn} namespace", nqn, self.orphan_grace)
                if ns is not None:
                    return ns
                log.warning("orphan NVMe connection (controller without namespace): resetting",
                            extra={"fields": {"nqn": nqn,
                                              "controllers": [c.name for c in ctrls]}})
                self._disconnect(nqn)
            else:
                # connecting/resetting: the kernel is reconnecting on its own.
                ns = self._wait_live_device(f"{nqn} live", nqn, self.attach_timeout)
                if ns is not None:
                    return ns
                states = ", ".join(f"{c.name}={c.state}"
                                   for c in self.sysfs.controllers_for(nqn))
                raise AttachError(f"{nqn} is connected but not live ({states}) after "
                                  f"{self.attach_timeout:g}s: the target is unreachable")
        return self._connect_and_wait(nqn, address, port, opts)

    def _connect_and_wait(self, nqn: str, address: str, port: int,
                          opts: ConnectOptions) -> Namespace:
        answer = "reported success"
        try:
            self.cli.connect(nqn, address, port, opts)
        except NvmeCliError as exc:
            answer = "said already connected"
            if not (exc.already_connected or self.sysfs.controllers_for(nqn)):
                raise AttachError(str(exc)) from exc
            log.info("nvme connect: already connected", extra={"fields": {"nqn": nqn}})
        except ValueError as exc:
            raise AttachError(str(exc)) from exc
        ns = self._wait_live_device(f"{nqn} namespace", nqn, self.attach_timeout)
        if ns is not None:
            log.info("attached", extra={"fields": {"nqn": nqn, "device": ns.name,
                                                   "devno": ns.devno_text}})
            return ns
        ctrls = self.sysfs.controllers_for(nqn)
        if not ctrls:
            raise AttachError(f"nvme connect {nqn} {answer} but no controller "
                              "appeared in sysfs")
        states = ", ".join(f"{c.name}={c.state}" for c in ctrls)
        raise AttachError(f"{nqn}: no namespace block device appeared within "
                          f"{self.attach_timeout:g}s ({states})")

    # ------------------------------------------------------------------ detach

    def _disconnect(self, nqn: str) -> None:
        try:
            self.cli.disconnect(nqn)
        except NvmeCliError as exc:
            raise AttachError(str(exc)) from exc
        self._wait(f"{nqn} disconnected", self.attach_timeout,
                   lambda: not self.sysfs.controllers_for(nqn))

    def detach(self, nqn: str) -> None:
        """Disconnect every controller of ``nqn``; only NQNs under the driver's prefix."""
        if not self.owns(nqn):
            raise AttachError(f"refusing to disconnect {nqn}: not under the driver's NQN "
                              f"prefix {self.nqn_prefix}:")
        if not self.sysfs.controllers_for(nqn):
            return
        self._disconnect(nqn)
        log.info("detached", extra={"fields": {"nqn": nqn}})

    # ------------------------------------------------------------------ resize

    def rescan(self, nqn: str) -> Namespace | None:
        """Ask every live controller of ``nqn`` to rescan namespaces; return the device."""
        for ctrl in self.sysfs.controllers_for(nqn):
            if ctrl.live:
                try:
                    self.cli.ns_rescan(self.sysfs.controller_dev_path(ctrl.name))
                except NvmeCliError as exc:
                    log.warning("ns-rescan failed", extra={"fields": {
                        "nqn": nqn, "controller": ctrl.name, "error": str(exc)}})
        return self.sysfs.device_for(nqn)
