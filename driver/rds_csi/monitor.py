"""The resilience monitor: keeps staged volumes usable through NVMe/TCP reconnections.

A background loop (injectable clock and sleep) that looks at every staged volume:

- the kernel reconnecting on its own (``connecting``/``resetting`` -> ``live``, same
  device): nothing to do but report (log, metric, abnormal condition while it lasts);
- the controller deleted (``ctrl_loss_tmo`` expired) or a controller without a
  namespace: reconnect (with backoff);
- the volume's block device changed number (a stale mount pinned the old one, or
  another subsystem took it): repair. Block volumes get their publish device nodes
  re-pointed at the new ``major:minor``; filesystem volumes get the dead staging
  mount lazily unmounted, the new device mounted at the staging path and the
  publish bind mounts re-established, all without the pod restarting.

Recovery is refused (abnormal condition, an event-worthy log line, a metric) when
it could risk data: the old device still exists or is held open by a process, the
new device is already in use, or it does not hold the expected filesystem. The
monitor never formats anything.

At start it disconnects orphan NVMe connections under the driver's NQN prefix that
no staged volume accounts for (and that nothing holds).

Speed after an outage (every volume of an RDS lost at once): a pass looks at the volumes in
parallel (``workers``); while any volume is not healthy passes come every
``urgent_interval`` instead of ``interval``; a volume's reconnect backoff never exceeds its
own ``reconnect_delay`` (the cadence the kernel would have used); while a target
(address:port) is unreachable only one volume at a time probes it, and the first reconnect
that succeeds releases every other volume of that target at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rds_csi.locks import OperationLocks
from rds_csi.metrics import Metrics
from rds_csi.mount import Mounter, MountError
from rds_csi.node import HEALTHY, Condition, assess, block_node_mode, connect_options
from rds_csi.nodestate import STAGED, StateError, StateStore, VolumeState
from rds_csi.nvme.host import AttachError, NvmeHost
from rds_csi.nvme.sysfs import GONE_STATES, LIVE, TRANSIENT_STATES, Namespace
from rds_csi.status import CsiError

log = logging.getLogger("rds_csi.monitor")

REPEAT_LOG_S = 30.0  # how often a still-abnormal volume's changing message is logged again


@dataclass
class _Track:
    states: tuple[str, ...] = ()
    reconnecting: bool = False
    condition: Condition | None = None
    next_reconnect: float = 0.0
    backoff: float = 0.0
    refused: str = ""
    logged_at: float = float("-inf")
    target: tuple[str, int] = ("", 0)


@dataclass
class _Target:
    """Reconnect state shared by the volumes of one address:port."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    failing: bool = False
    probing: bool = False
    next_probe: float = 0.0
    last_error: str = ""


class ResilienceMonitor:
    def __init__(
        self,
        store: StateStore,
        host: NvmeHost,
        mounter: Mounter,
        *,
        locks: OperationLocks,
        metrics: Metrics | None = None,
        interval: float = 2.0,
        urgent_interval: float = 0.25,
        workers: int = 1,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self.mounter = mounter
        self.locks = locks
        self.metrics = metrics or Metrics()
        self.interval = interval
        self.urgent_interval = min(urgent_interval, interval)
        self.workers = max(1, workers)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()  # a target came back: run the next pass now
        self._sleep = sleep or self._idle
        self._tracks: dict[str, _Track] = {}
        self._targets: dict[tuple[str, int], _Target] = {}
        self._guard = threading.Lock()  # _tracks and _targets membership
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="rds-csi-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _idle(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def urgent(self) -> bool:
        """Whether some volume is not healthy (passes then come every urgent_interval)."""
        with self._guard:
            tracks = list(self._tracks.values())
        return any(t.condition is None or t.condition.abnormal for t in tracks)

    def run(self) -> None:
        try:
            self.clean_orphans()
        except Exception:
            log.exception("orphan cleanup failed")
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("monitor pass failed")
            if self._stop.is_set():
                break
            self._sleep(self.urgent_interval if self.urgent() else self.interval)

    # ------------------------------------------------------------------ reporting

    def _count(self, action: str, result: str = "ok") -> None:
        self.metrics.monitor_actions.labels(action, result).inc()

    def condition(self, volume_id: str) -> Condition | None:
        track = self._tracks.get(volume_id)
        return track.condition if track else None

    def _report(self, state: VolumeState, track: _Track, condition: Condition) -> None:
        """Keep the condition current; log when it turns (ab)normal, and a changed message
        of a still-abnormal volume (countdowns, retry errors) at most every REPEAT_LOG_S."""
        old = track.condition
        now = self._clock()
        turned = old is None or old.abnormal != condition.abnormal
        changed = old is not None and old.message != condition.message
        if turned or (changed and now - track.logged_at >= REPEAT_LOG_S):
            level = logging.WARNING if condition.abnormal else logging.INFO
            log.log(level, "volume condition", extra={"fields": {
                "volume_id": state.volume_id, "abnormal": condition.abnormal,
                "message": condition.message}})
            track.logged_at = now
        track.condition = condition
        self.metrics.volume_abnormal.labels(state.volume_id).set(int(condition.abnormal))

    def _refuse(self, state: VolumeState, track: _Track, reason: str) -> str:
        message = f"recovery refused for volume {state.volume_id}: {reason}"
        if track.refused != reason:
            # The line an operator (or an event exporter) must see: data safety first.
            log.error("recovery refused", extra={"fields": {
                "volume_id": state.volume_id, "event": "RecoveryRefused", "reason": reason}})
            self._count("refused")
        track.refused = reason
        self._report(state, track, Condition(True, message))
        return "refused"

    # ------------------------------------------------------------------ orphans

    def _volume_id(self, nqn: str) -> str:
        return nqn[len(self.host.nqn_prefix) + 1:]

    def clean_orphans(self) -> list[str]:
        """Disconnect NQNs under the driver's prefix that no staged volume accounts for."""
        cleaned = []
        for nqn in sorted(self.host.connected_nqns()):
            if not self.host.owns(nqn):
                continue
            volume_id = self._volume_id(nqn)
            try:
                with self.locks.hold(volume_id, operation="monitor-orphan-cleanup",
                                     background=True):
                    if self._accounted_for(nqn, volume_id):
                        continue
                    ns = self.host.resolve(nqn)
                    if ns is not None:
                        holders = self.mounter.holders(ns.major, ns.minor)
                        if holders:
                            log.warning("orphan NVMe connection is in use; not disconnecting",
                                        extra={"fields": {"nqn": nqn, "holders":
                                                          [str(h) for h in holders]}})
                            self._count("orphan_cleaned", "refused")
                            continue
                    self.host.detach(nqn)
                    self._count("orphan_cleaned")
                    log.info("disconnected orphan NVMe connection", extra={"fields": {
                        "nqn": nqn}})
                    cleaned.append(nqn)
            except CsiError:
                continue  # an RPC is working on this volume right now
            except (AttachError, MountError) as exc:
                self._count("orphan_cleaned", "error")
                log.warning("cannot clean orphan NVMe connection", extra={"fields": {
                    "nqn": nqn, "error": str(exc)}})
        return cleaned

    def _accounted_for(self, nqn: str, volume_id: str) -> bool:
        try:
            if self.store.load(volume_id) is not None:
                return True
        except StateError:
            return True  # unreadable: be safe
        return any(s.nqn == nqn for s in self.store.all())

    # ------------------------------------------------------------------ the loop

    def tick(self) -> dict[str, str]:
        """One pass over every staged volume; returns what was done per volume."""
        done: dict[str, str] = {}
        states = self.store.all()
        self.metrics.volumes_staged.set(len(states))
        known = {s.volume_id for s in states}
        with self._guard:
            gone = set(self._tracks) - known
            for vid in gone:
                self._tracks.pop(vid, None)
        for vid in gone:
            with contextlib.suppress(KeyError):
                self.metrics.volume_abnormal.remove(vid)
        staged = [s for s in states if s.phase == STAGED]
        if self.workers > 1 and len(staged) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="rds-csi-mon")
            results = list(self._pool.map(self._check_locked, staged))
        else:
            results = [self._check_locked(s) for s in staged]
        for volume_id, result in results:
            if result:
                done[volume_id] = result
        return done

    def _check_locked(self, state: VolumeState) -> tuple[str, str]:
        try:
            with self.locks.hold(state.volume_id, operation="monitor", background=True):
                fresh = self.store.load(state.volume_id)
                if fresh is None or fresh.phase != STAGED:
                    return state.volume_id, ""
                return state.volume_id, self.check(fresh)
        except CsiError:
            return state.volume_id, "busy"
        except (StateError, MountError, OSError) as exc:
            log.error("monitor check failed", extra={"fields": {
                "volume_id": state.volume_id, "error": str(exc)}})
            self._count("check", "error")
            return state.volume_id, "error"

    def check(self, state: VolumeState) -> str:
        """Look at one staged volume and act; the caller holds its lock."""
        with self._guard:
            track = self._tracks.setdefault(state.volume_id, _Track())
        track.target = (state.address, state.port)
        ctrls = self.host.controllers(state.nqn)
        observed = tuple(f"{c.name}={c.state}" for c in ctrls)
        if observed != track.states:
            log.info("controller state", extra={"fields": {
                "volume_id": state.volume_id, "nqn": state.nqn,
                "before": list(track.states), "now": list(observed)}})
            track.states = observed
        live = [c for c in ctrls if c.state == LIVE]
        if ctrls and not live and any(c.state in TRANSIENT_STATES for c in ctrls):
            if not track.reconnecting:
                track.reconnecting = True
                self._count("reconnecting")
            self._report(state, track, assess(self.host, self.mounter, state)[0])
            return "reconnecting"
        if track.reconnecting and live:
            track.reconnecting = False
            self._count("live_again")
            log.info("controller live again", extra={"fields": {
                "volume_id": state.volume_id, "controllers": [c.name for c in live]}})
        ns = self.host.resolve(state.nqn) if live else None
        action = "ok"
        if ns is None or not live or all(c.state in GONE_STATES for c in ctrls):
            reconnected = self._reconnect(state, track)
            if reconnected is None:
                return "reconnect-failed"
            ns = reconnected
            action = "reconnected"
        result = self._repair_block(state, track, ns) if state.block else \
            self._repair_filesystem(state, track, ns)
        if result == "refused":
            return result
        if result != "ok":
            action = result if action == "ok" else f"{action}+{result}"
        fresh = self.store.load(state.volume_id) or state
        condition, _ = assess(self.host, self.mounter, fresh)
        if condition == HEALTHY:
            track.refused = ""
        self._report(fresh, track, condition)
        return action

    # ------------------------------------------------------------------ reconnect

    def _target(self, key: tuple[str, int]) -> _Target:
        with self._guard:
            return self._targets.setdefault(key, _Target())

    def _backoff_cap(self, state: VolumeState) -> float:
        # Never wait longer than the volume's own reconnect_delay: the kernel would have
        # retried at that cadence had ctrl_loss_tmo not run out.
        return min(self.backoff_max, max(self.backoff_initial, float(state.reconnect_delay)))

    def _reconnect(self, state: VolumeState, track: _Track) -> Namespace | None:
        now = self._clock()
        key = (state.address, state.port)
        target = self._target(key)
        where = f"{state.address}:{state.port}"
        if now < track.next_reconnect:
            self._report(state, track, Condition(
                True, f"NVMe/TCP connection to {state.nqn} lost; next reconnect attempt in "
                      f"{track.next_reconnect - now:.0f}s"))
            return None
        with target.lock:
            if target.failing and (target.probing or now < target.next_probe):
                waiting = True
            else:
                waiting = False
                probe = target.failing
                if probe:
                    target.probing = True
        if waiting:
            self._report(state, track, Condition(
                True, f"NVMe/TCP connection to {state.nqn} lost; {where} is unreachable "
                      f"({target.last_error}); waiting for it to answer again"))
            return None
        log.warning("reconnecting lost NVMe/TCP connection", extra={"fields": {
            "volume_id": state.volume_id, "nqn": state.nqn, "address": where}})
        try:
            ns = self.host.attach(state.nqn, state.address, state.port, connect_options(state))
        except (AttachError, ValueError) as exc:
            track.backoff = min(self._backoff_cap(state),
                                track.backoff * 2 or self.backoff_initial)
            track.next_reconnect = self._clock() + track.backoff
            with target.lock:
                target.failing = True
                if probe:
                    target.probing = False
                target.next_probe = self._clock() + track.backoff
                target.last_error = str(exc)
            self._count("reconnect", "error")
            self._report(state, track, Condition(
                True, f"NVMe/TCP connection to {state.nqn} lost; reconnect failed: {exc}"))
            return None
        with target.lock:
            recovered = target.failing
            target.failing = target.probing = False
            target.next_probe = 0.0
        track.backoff = 0.0
        track.next_reconnect = 0.0
        if recovered:
            # The target answers again: every other volume on it may reconnect now.
            with self._guard:
                others = [t for t in self._tracks.values() if t.target == key]
            for other in others:
                other.backoff = 0.0
                other.next_reconnect = 0.0
            self._wake.set()
            log.info("target reachable again", extra={"fields": {"address": where}})
        self._count("reconnect")
        log.info("reconnected", extra={"fields": {
            "volume_id": state.volume_id, "device": ns.name, "devno": ns.devno_text,
            "before": f"{state.device_major}:{state.device_minor}"}})
        return ns

    # ------------------------------------------------------------------ block

    def _repair_block(self, state: VolumeState, track: _Track, ns: Namespace) -> str:
        repointed = 0
        for target in sorted(state.publish):
            node = self.mounter.block_node(target)
            if node == ns.devno:
                continue
            if node is None and self.mounter.is_mount_point(target):
                return self._refuse(state, track, f"{target} is a mount point, not a device "
                                                  "node; not touching it")
            try:
                self.mounter.mknod_block(target, ns.major, ns.minor,
                                         block_node_mode(state.publish[target].read_only))
            except OSError as exc:
                self._count("repoint", "error")
                return self._refuse(state, track, f"cannot re-point {target}: {exc}")
            repointed += 1
            self._count("repoint")
            log.warning("re-pointed block device node", extra={"fields": {
                "volume_id": state.volume_id, "target": target,
                "before": f"{node[0]}:{node[1]}" if node else "none", "now": ns.devno_text}})
        old = state.devno
        if old is not None and old != ns.devno:
            holders = self.mounter.open_fds(*old)
            if holders:
                log.error("old device still held open after renumbering", extra={"fields": {
                    "volume_id": state.volume_id, "event": "StaleDeviceHeld",
                    "holders": [f"pid {p} ({c})" for p, c in holders]}})
        if state.devno != ns.devno:
            self.store.save(state.with_device(ns.name, ns.major, ns.minor))
        return "repointed" if repointed else "ok"

    # ------------------------------------------------------------------ filesystem

    def _repair_filesystem(self, state: VolumeState, track: _Track, ns: Namespace) -> str:
        staging = state.staging_path
        mounts = self.mounter.mounts_at(staging)
        if mounts and mounts[-1].devno == ns.devno:
            if self.mounter.check_path(staging) is not None:
                return "ok"  # reported by assess(); same device, nothing safe to do
            rebound = self._rebind_targets(state, track, ns, only_stale=True)
            if state.devno != ns.devno:
                self.store.save(state.with_device(ns.name, ns.major, ns.minor))
            return rebound
        old = mounts[-1].devno if mounts else state.devno
        reason = self._fs_refusal(state, old, ns)
        if reason:
            return self._refuse(state, track, reason)
        log.warning("recovering staging mount on the new device", extra={"fields": {
            "volume_id": state.volume_id, "staging": staging,
            "before": f"{old[0]}:{old[1]}" if old else "none", "now": ns.devno_text,
            "device": ns.name}})
        try:
            for target in sorted(state.publish):
                while self.mounter.mounts_at(target):
                    self.mounter.unmount(target, lazy=True)
            while self.mounter.mounts_at(staging):
                self.mounter.unmount(staging, lazy=True)
            self.mounter.mount(ns.dev_path, staging, state.fs_type, state.mount_flags)
        except MountError as exc:
            self._count("remount", "error")
            return self._refuse(state, track, f"remount of {staging} failed: {exc}")
        self._count("remount")
        state = state.with_device(ns.name, ns.major, ns.minor)
        self.store.save(state)
        self._rebind_targets(state, track, ns, only_stale=False)
        return "remounted"

    def _fs_refusal(self, state: VolumeState, old: tuple[int, int] | None,
                    ns: Namespace) -> str:
        if old is not None and old != ns.devno:
            if self.host.block_device_present(*old):
                return (f"the old device {old[0]}:{old[1]} still exists; mounting "
                        f"{ns.name} could mount the same filesystem twice")
            holders = self.mounter.open_fds(*old)
            if holders:
                return ("the old device is still held open by "
                        + ", ".join(f"pid {p} ({c})" for p, c in holders))
        in_use = self.mounter.holders(ns.major, ns.minor)
        if in_use:
            return f"the new device {ns.name} is already in use: " \
                   + "; ".join(map(str, in_use))
        try:
            found = self.mounter.probe(ns.dev_path)
        except MountError as exc:
            return f"cannot probe {ns.name}: {exc}"
        if found != state.fs_type:
            return (f"{ns.name} holds {found or 'no filesystem'}, expected {state.fs_type}; "
                    "the monitor never formats")
        return ""

    def _rebind_targets(self, state: VolumeState, track: _Track, ns: Namespace, *,
                        only_stale: bool) -> str:
        rebound = 0
        for target, pub in sorted(state.publish.items()):
            mounts = self.mounter.mounts_at(target)
            if only_stale and mounts and mounts[-1].devno == ns.devno:
                continue
            try:
                while self.mounter.mounts_at(target):
                    self.mounter.unmount(target, lazy=True)
                self.mounter.bind_mount(state.staging_path, target, read_only=pub.read_only)
            except (MountError, OSError) as exc:
                self._count("rebind", "error")
                log.error("cannot re-establish publish bind mount", extra={"fields": {
                    "volume_id": state.volume_id, "target": target, "error": str(exc)}})
                continue
            rebound += 1
            self._count("rebind")
            log.warning("re-established publish bind mount", extra={"fields": {
                "volume_id": state.volume_id, "target": target, "staging": state.staging_path,
                "read_only": pub.read_only}})
        return "rebound" if rebound else "ok"
