"""Linux nvmet (the kernel NVMe-oF target) configured through configfs, and the export backend
that turns the simulator's exports into real NVMe/TCP subsystems.

This is what nvmetcli does, without nvmetcli (not packaged for Debian 12 nor on PyPI): directories
and attribute files under ``/sys/kernel/config/nvmet``:

    hosts/<hostnqn>/
    subsystems/<nqn>/attr_allow_any_host, attr_serial, attr_model, ...
    subsystems/<nqn>/allowed_hosts/<hostnqn> -> ../../../hosts/<hostnqn>
    subsystems/<nqn>/namespaces/<nsid>/device_path, device_uuid, buffered_io, enable
    ports/<portid>/addr_trtype, addr_adrfam, addr_traddr, addr_trsvcid
    ports/<portid>/subsystems/<nqn> -> ../../../subsystems/<nqn>

Rules the kernel enforces and the code follows: configfs creates the attribute files and default
groups itself on mkdir; namespace attributes change only while the namespace is disabled, and a
file on tmpfs needs ``buffered_io=1`` before ``enable=1`` (no O_DIRECT there); a port's address
changes only while no subsystem is linked, and a port with no subsystem linked does not listen;
``allow_any_host=1`` and explicit allowed hosts exclude each other; a subsystem cannot be removed
while a port links it, nor a host while a subsystem allows it. Teardown therefore goes: unlink
port subsystems, remove ports, disable and remove namespaces, drop allowed hosts, remove
subsystems, remove hosts. Measured in the kernel tier: a file on overlayfs gets a 1-byte logical
block size in Linux 6.1 (hosts see a 0-size disk), so back namespaces with files on tmpfs or a
real filesystem.

`Nvmet.dump()` / `restore()` use nvmetcli's JSON format (``hosts``, ``ports``, ``subsystems`` with
attribute groups ``attr``/``addr``/``param``/``device``), so a saved file loads with
``nvmetcli restore`` and the other way round. One addition that nvmetcli ignores: a namespace's
``buffered_io``.

The configfs root is a parameter: unit tests point it at a directory that imitates configfs (see
simulator/tests/nvmet/fakefs.py); the real thing runs inside the kernel tier's micro-VMs.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exports import Export

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/kernel/config/nvmet")


class NvmetError(RuntimeError):
    """A configfs operation failed (the message names the path and the errno text)."""


class ConfigfsIO:
    """The filesystem operations nvmet configuration needs; plain syscalls on real configfs.
    Tests substitute an imitation that applies the kernel's rules to an ordinary directory."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def symlink(self, target: Path, link: Path) -> None:
        os.symlink(target, link)

    def unlink(self, link: Path) -> None:
        os.unlink(link)

    def write(self, path: Path, value: str) -> None:
        # configfs attributes take one write(); no O_CREAT (an unknown attribute is an error)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def read(self, path: Path) -> str:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()


@dataclass(frozen=True)
class PortAddr:
    traddr: str
    trsvcid: int
    trtype: str = "tcp"
    adrfam: str = "ipv4"


def modprobe(*modules: str) -> None:
    """Load kernel modules (nvmet, nvmet-tcp...); NvmetError if modprobe fails."""
    for m in modules:
        p = subprocess.run(["modprobe", m], capture_output=True, text=True)
        if p.returncode != 0:
            raise NvmetError(f"modprobe {m}: {p.stderr.strip() or p.returncode}")


class Nvmet:
    """The nvmet configuration under one configfs root."""

    def __init__(self, root: Path | str = DEFAULT_ROOT, io: ConfigfsIO | None = None) -> None:
        self.root = Path(root)
        self.io = io or ConfigfsIO()

    # --- plumbing ---

    def _op(self, what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except OSError as e:
            raise NvmetError(f"{what} {args[-1]}: {e.strerror or e}") from e

    def _set(self, path: Path, value: object) -> None:
        self._op("write " + str(value) + " to", self.io.write, path, str(value))

    def _get(self, path: Path) -> str:
        return self.io.read(path)

    def _ls(self, path: Path) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    def check_root(self) -> None:
        if not (self.root / "subsystems").is_dir():
            raise NvmetError(f"{self.root} is not an nvmet configfs root "
                             "(modprobe nvmet; mount -t configfs none /sys/kernel/config)")

    def subsys_dir(self, nqn: str) -> Path:
        return self.root / "subsystems" / nqn

    def port_dir(self, portid: int) -> Path:
        return self.root / "ports" / str(portid)

    def ns_dir(self, nqn: str, nsid: int) -> Path:
        return self.subsys_dir(nqn) / "namespaces" / str(nsid)

    # --- hosts ---

    def hosts(self) -> list[str]:
        return self._ls(self.root / "hosts")

    def add_host(self, hostnqn: str) -> None:
        d = self.root / "hosts" / hostnqn
        if not d.is_dir():
            self._op("mkdir", self.io.mkdir, d)

    def remove_host(self, hostnqn: str) -> None:
        d = self.root / "hosts" / hostnqn
        if d.is_dir():
            self._op("rmdir", self.io.rmdir, d)

    def hosts_in_use(self) -> set[str]:
        return {h for s in self.subsystems() for h in self.allowed_hosts(s)}

    # --- subsystems ---

    def subsystems(self) -> list[str]:
        return self._ls(self.root / "subsystems")

    def create_subsystem(
        self,
        nqn: str,
        *,
        allowed_hosts: Iterable[str] = (),
        serial: str | None = None,
        model: str | None = None,
    ) -> None:
        """Create (or adopt) a subsystem; no allowed hosts means any host may connect."""
        d = self.subsys_dir(nqn)
        if not d.is_dir():
            self._op("mkdir", self.io.mkdir, d)
        if serial is not None and (d / "attr_serial").exists():
            self._set(d / "attr_serial", serial)
        if model is not None and (d / "attr_model").exists() and not self.namespaces(nqn):
            self._set(d / "attr_model", model)  # the kernel fixes the model once in use
        self.set_allowed_hosts(nqn, allowed_hosts)

    def allowed_hosts(self, nqn: str) -> list[str]:
        return self._ls(self.subsys_dir(nqn) / "allowed_hosts")

    def allow_any_host(self, nqn: str) -> bool:
        return self._get(self.subsys_dir(nqn) / "attr_allow_any_host") == "1"

    def set_allowed_hosts(self, nqn: str, hosts: Iterable[str]) -> None:
        """Exactly these hosts may connect; an empty list means any host (attr_allow_any_host)."""
        d = self.subsys_dir(nqn)
        want = list(dict.fromkeys(hosts))
        have = self.allowed_hosts(nqn)
        if not want:
            for h in have:
                self._op("unlink", self.io.unlink, d / "allowed_hosts" / h)
            if not self.allow_any_host(nqn):
                self._set(d / "attr_allow_any_host", 1)
            self._drop_unused_hosts(have)
            return
        if self.allow_any_host(nqn):
            self._set(d / "attr_allow_any_host", 0)
        for h in want:
            if h not in have:
                self.add_host(h)
                self._op("symlink", self.io.symlink, self.root / "hosts" / h,
                         d / "allowed_hosts" / h)
        gone = [h for h in have if h not in want]
        for h in gone:
            self._op("unlink", self.io.unlink, d / "allowed_hosts" / h)
        self._drop_unused_hosts(gone)

    def _drop_unused_hosts(self, candidates: Iterable[str]) -> None:
        in_use = self.hosts_in_use()
        for h in candidates:
            if h not in in_use:
                self.remove_host(h)

    def delete_subsystem(self, nqn: str) -> None:
        """Unlink it from every port, remove its namespaces and allowed hosts, then itself."""
        d = self.subsys_dir(nqn)
        if not d.is_dir():
            return
        for p in self.ports():
            if nqn in self.port_subsystems(p):
                self.unlink(p, nqn)
        for nsid in self.namespaces(nqn):
            self.remove_namespace(nqn, nsid)
        hosts = self.allowed_hosts(nqn)
        for h in hosts:
            self._op("unlink", self.io.unlink, d / "allowed_hosts" / h)
        self._op("rmdir", self.io.rmdir, d)
        self._drop_unused_hosts(hosts)

    # --- namespaces ---

    def namespaces(self, nqn: str) -> list[int]:
        return sorted(int(n) for n in self._ls(self.subsys_dir(nqn) / "namespaces"))

    def add_namespace(
        self,
        nqn: str,
        nsid: int,
        device_path: Path | str,
        *,
        buffered_io: bool | None = None,
        ns_uuid: str | None = None,
        enable: bool = True,
    ) -> None:
        """Create (or reconfigure) namespace `nsid` backed by a file or a block device.
        `buffered_io` defaults to True for a regular file (tmpfs and overlayfs refuse O_DIRECT)."""
        d = self.ns_dir(nqn, nsid)
        if not d.is_dir():
            self._op("mkdir", self.io.mkdir, d)
        elif self.ns_enabled(nqn, nsid):
            self._set(d / "enable", 0)
        if buffered_io is None:
            buffered_io = _is_regular_file(Path(device_path))
        self._set(d / "device_path", str(device_path))
        if ns_uuid is not None:
            self._set(d / "device_uuid", ns_uuid)
        if (d / "buffered_io").exists():
            self._set(d / "buffered_io", int(buffered_io))
        if enable:
            self._set(d / "enable", 1)

    def ns_enabled(self, nqn: str, nsid: int) -> bool:
        return self._get(self.ns_dir(nqn, nsid) / "enable") == "1"

    def enable_namespace(self, nqn: str, nsid: int, on: bool = True) -> None:
        self._set(self.ns_dir(nqn, nsid) / "enable", int(on))

    def revalidate_namespace(self, nqn: str, nsid: int) -> None:
        """Tell connected hosts the backing file's size changed (kernel >= 5.15)."""
        f = self.ns_dir(nqn, nsid) / "revalidate_size"
        if f.exists():
            self._set(f, 1)

    def remove_namespace(self, nqn: str, nsid: int) -> None:
        d = self.ns_dir(nqn, nsid)
        if not d.is_dir():
            return
        if self.ns_enabled(nqn, nsid):
            self._set(d / "enable", 0)
        self._op("rmdir", self.io.rmdir, d)

    # --- ports ---

    def ports(self) -> list[int]:
        return sorted(int(p) for p in self._ls(self.root / "ports"))

    def port_addr(self, portid: int) -> PortAddr:
        d = self.port_dir(portid)
        return PortAddr(self._get(d / "addr_traddr"), int(self._get(d / "addr_trsvcid") or 0),
                        self._get(d / "addr_trtype"), self._get(d / "addr_adrfam"))

    def create_port(self, portid: int, addr: PortAddr) -> None:
        """Create (or re-address) a port. It listens once a subsystem is linked."""
        d = self.port_dir(portid)
        if d.is_dir():
            if self.port_addr(portid) == addr:
                return
            linked = self.port_subsystems(portid)
            for nqn in linked:  # the kernel refuses address changes on an enabled port
                self.unlink(portid, nqn)
        else:
            self._op("mkdir", self.io.mkdir, d)
            linked = []
        self._set(d / "addr_trtype", addr.trtype)
        self._set(d / "addr_adrfam", addr.adrfam)
        self._set(d / "addr_traddr", addr.traddr)
        self._set(d / "addr_trsvcid", addr.trsvcid)
        for nqn in linked:
            self.link(portid, nqn)

    def port_subsystems(self, portid: int) -> list[str]:
        return self._ls(self.port_dir(portid) / "subsystems")

    def link(self, portid: int, nqn: str) -> None:
        """Expose a subsystem on a port (the first link makes the port listen)."""
        link = self.port_dir(portid) / "subsystems" / nqn
        if not os.path.lexists(link):
            self._op("symlink", self.io.symlink, self.subsys_dir(nqn), link)

    def unlink(self, portid: int, nqn: str) -> None:
        link = self.port_dir(portid) / "subsystems" / nqn
        if os.path.lexists(link):
            self._op("unlink", self.io.unlink, link)

    def delete_port(self, portid: int) -> None:
        d = self.port_dir(portid)
        if not d.is_dir():
            return
        for nqn in self.port_subsystems(portid):
            self.unlink(portid, nqn)
        for r in self._ls(d / "referrals"):
            self._op("rmdir", self.io.rmdir, d / "referrals" / r)
        for g in self._ls(d / "ana_groups"):
            if g != "1":  # group 1 belongs to the kernel
                self._op("rmdir", self.io.rmdir, d / "ana_groups" / g)
        self._op("rmdir", self.io.rmdir, d)

    # --- the whole configuration ---

    def clear(self) -> None:
        """Remove everything: ports (links first), subsystems (namespaces first), hosts."""
        for p in self.ports():
            self.delete_port(p)
        for s in self.subsystems():
            self.delete_subsystem(s)
        for h in self.hosts():
            self.remove_host(h)

    def is_empty(self) -> bool:
        return not (self.ports() or self.subsystems() or self.hosts())

    def _attrs(self, d: Path, group: str) -> dict[str, str]:
        out = {}
        for name in self._ls(d):
            f = d / name
            if not name.startswith(group + "_") or f.is_dir() or f.is_symlink():
                continue
            if not os.stat(f).st_mode & stat.S_IWUSR:
                continue
            try:
                out[name[len(group) + 1:]] = self._get(f)
            except OSError:
                continue  # write-only attributes (revalidate_size)
        return out

    def dump(self) -> dict[str, Any]:
        """The configuration in nvmetcli's JSON format."""
        subsystems = []
        for nqn in self.subsystems():
            d = self.subsys_dir(nqn)
            namespaces = []
            for nsid in self.namespaces(nqn):
                nd = self.ns_dir(nqn, nsid)
                ns: dict[str, Any] = {
                    "nsid": nsid,
                    "enable": int(self._get(nd / "enable") or 0),
                    "device": self._attrs(nd, "device"),
                }
                if (nd / "ana_grpid").exists():
                    ns["ana_grpid"] = int(self._get(nd / "ana_grpid") or 1)
                if (nd / "buffered_io").exists():
                    ns["buffered_io"] = int(self._get(nd / "buffered_io") or 0)
                namespaces.append(ns)
            subsystems.append({
                "nqn": nqn,
                "attr": self._attrs(d, "attr"),
                "allowed_hosts": self.allowed_hosts(nqn),
                "namespaces": namespaces,
            })
        ports = []
        for p in self.ports():
            d = self.port_dir(p)
            ports.append({
                "portid": p,
                "addr": self._attrs(d, "addr"),
                "param": self._attrs(d, "param"),
                "subsystems": self.port_subsystems(p),
                "referrals": [
                    {"name": r, "addr": self._attrs(d / "referrals" / r, "addr"),
                     "enable": int(self._get(d / "referrals" / r / "enable") or 0)}
                    for r in self._ls(d / "referrals")
                ],
            })
        return {"hosts": [{"nqn": h} for h in self.hosts()], "ports": ports,
                "subsystems": subsystems}

    def save(self, path: Path | str) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".temp")
        tmp.write_text(json.dumps(self.dump(), sort_keys=True, indent=2) + "\n")
        os.replace(tmp, path)

    def restore(self, config: dict[str, Any], *, clear_existing: bool = True,
                abort_on_error: bool = False) -> list[str]:
        """Load an nvmetcli configuration; returns the non-fatal errors (like nvmetcli, an
        attribute this kernel does not have is reported and skipped)."""
        if clear_existing:
            self.clear()
        elif self.subsystems():
            raise NvmetError("subsystems present, not restoring")
        errors: list[str] = []

        def attempt(what: str, fn: Any, *args: Any) -> bool:
            try:
                fn(*args)
                return True
            except (NvmetError, OSError, KeyError, ValueError, TypeError) as e:
                if abort_on_error:
                    raise NvmetError(f"{what}: {e}") from e
                errors.append(f"{what}: {e}, skipped")
                return False

        def set_group(d: Path, group: str, values: dict[str, Any]) -> None:
            for name, value in values.items():
                f = d / f"{group}_{name}"
                if not f.exists():
                    errors.append(f"no attribute {f}, skipped")
                    continue
                attempt(f"set {f}", self._set, f, value)

        for h in config.get("hosts", []):
            attempt(f"host {h.get('nqn')}", self.add_host, h["nqn"])
        for s in config.get("subsystems", []):
            nqn = s.get("nqn")
            if not nqn or not attempt(f"subsystem {nqn}", self._op, "mkdir", self.io.mkdir,
                                      self.subsys_dir(nqn)):
                continue
            d = self.subsys_dir(nqn)
            for ns in s.get("namespaces", []):
                nsid = int(ns["nsid"])
                nd = self.ns_dir(nqn, nsid)
                if not attempt(f"namespace {nqn}/{nsid}", self._op, "mkdir", self.io.mkdir, nd):
                    continue
                set_group(nd, "device", ns.get("device", {}))
                for group in ("ana", "resv"):
                    set_group(nd, group, ns.get(group, {}))
                if "ana_grpid" in ns and (nd / "ana_grpid").exists():
                    attempt(f"ana_grpid {nqn}/{nsid}", self._set, nd / "ana_grpid",
                            ns["ana_grpid"])
                if (nd / "buffered_io").exists():
                    buffered = ns.get("buffered_io")
                    if buffered is None:
                        buffered = int(_is_regular_file(Path(ns.get("device", {}).get("path", ""))))
                    attempt(f"buffered_io {nqn}/{nsid}", self._set, nd / "buffered_io", buffered)
                if ns.get("enable"):
                    attempt(f"enable {nqn}/{nsid}", self._set, nd / "enable", 1)
            # nvmetcli's order: allowed hosts, then attributes (allow_any_host is 0 with hosts)
            for h in s.get("allowed_hosts", []):
                attempt(f"allowed host {h}", self._op, "symlink", self.io.symlink,
                        self.root / "hosts" / h, d / "allowed_hosts" / h)
            set_group(d, "attr", s.get("attr", {}))
        for p in config.get("ports", []):
            portid = int(p["portid"])
            d = self.port_dir(portid)
            if not attempt(f"port {portid}", self._op, "mkdir", self.io.mkdir, d):
                continue
            set_group(d, "addr", p.get("addr", {}))
            set_group(d, "param", p.get("param", {}))
            for r in p.get("referrals", []):
                rd = d / "referrals" / r["name"]
                if attempt(f"referral {r['name']}", self._op, "mkdir", self.io.mkdir, rd):
                    set_group(rd, "addr", r.get("addr", {}))
                    if r.get("enable"):
                        attempt(f"enable referral {r['name']}", self._set, rd / "enable", 1)
            for nqn in p.get("subsystems", []):
                attempt(f"link {nqn} to port {portid}", self.link, portid, nqn)
        return errors

    def restore_file(self, path: Path | str, **kw: Any) -> list[str]:
        return self.restore(json.loads(Path(path).read_text()), **kw)


def _is_regular_file(p: Path) -> bool:
    try:
        return stat.S_ISREG(p.stat().st_mode)
    except OSError:
        return True  # not there yet: the simulator's disks are files


# --- the simulator's export backend ---------------------------------------------------------------

def namespace_uuid(nqn: str) -> str:
    """A namespace UUID that stays the same for one NQN (across reboots and simulator restarts)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "rds-sim:" + nqn))


def serial_of(nqn: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, "rds-sim-serial:" + nqn).hex[:20]


class NvmetBackend:
    """Every exported disk becomes an nvmet subsystem (namespace 1 = the disk's backing file) on
    an NVMe/TCP port; removal takes it away. A reboot fault (device_down) unlinks every subsystem
    from its port, so the port stops listening and hosts see their controller go to
    `connecting`; device_up links them again. Allowed host NQNs become allowed_hosts (none: any
    host). The TCP port is the disk's nvme-tcp-server-port unless `port` overrides it; the
    configfs port id is the TCP port number.

    Backend methods run under the device's lock and never raise: a configfs failure is logged
    and kept in `errors` (the RouterOS command itself succeeded)."""

    def __init__(
        self,
        nvmet: Nvmet | None = None,
        *,
        address: str = "0.0.0.0",
        port: int | None = None,
        adrfam: str = "ipv4",
        model: str = "RDS",
    ) -> None:
        self.nvmet = nvmet or Nvmet()
        self.address = address
        self.port_override = port
        self.adrfam = adrfam
        self.model = model
        self.exports: dict[str, Export] = {}
        self.up = True
        self.errors: list[str] = []
        self._lock = threading.Lock()

    # --- ExportBackend ---

    def export_added(self, e: Export) -> None:
        with self._lock:
            self._guard(f"add {e.slot}", self._add, e)

    def export_removed(self, e: Export) -> None:
        with self._lock:
            self._guard(f"remove {e.slot}", self._remove, e)

    def export_changed(self, e: Export) -> None:
        with self._lock:
            self._guard(f"change {e.slot}", self._change, e)

    def device_down(self) -> None:
        with self._lock:
            self.up = False
            for e in self.exports.values():
                self._guard(f"unlink {e.slot}", self.nvmet.unlink, self.tcp_port(e), e.nqn)

    def device_up(self, exports: list[Export]) -> None:
        with self._lock:
            self.up = True
            want = {e.slot: e for e in exports}
            for slot, old in list(self.exports.items()):
                new = want.get(slot)
                if new is None or (new.nqn, self.tcp_port(new), new.path) != (
                        old.nqn, self.tcp_port(old), old.path):
                    self._guard(f"remove {slot}", self._remove, old)
            for e in exports:
                if e.slot not in self.exports:
                    self._guard(f"add {e.slot}", self._add, e)
                else:
                    self._guard(f"change {e.slot}", self._change, e)
                    self._guard(f"link {e.slot}", self.nvmet.link, self.tcp_port(e), e.nqn)

    # --- beyond the protocol ---

    def tcp_port(self, e: Export) -> int:
        return self.port_override or e.port

    def close(self) -> None:
        """Remove every subsystem this backend created, and the ports it left unused."""
        with self._lock:
            for e in list(self.exports.values()):
                self._guard(f"remove {e.slot}", self._remove, e)

    def _guard(self, what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except (NvmetError, OSError) as err:
            msg = f"nvmet: {what}: {err}"
            log.error("%s", msg)
            self.errors.append(msg)

    def _add(self, e: Export) -> None:
        n = self.nvmet
        self.exports[e.slot] = e
        n.create_subsystem(e.nqn, allowed_hosts=e.allowed_hosts, serial=serial_of(e.nqn),
                           model=self.model)
        n.add_namespace(e.nqn, 1, e.path, ns_uuid=namespace_uuid(e.nqn))
        port = self.tcp_port(e)
        n.create_port(port, PortAddr(self.address, port, "tcp", self.adrfam))
        if self.up:
            n.link(port, e.nqn)

    def _change(self, e: Export) -> None:
        old = self.exports.get(e.slot)
        self.exports[e.slot] = e
        n = self.nvmet
        if old is None or old.allowed_hosts != e.allowed_hosts:
            n.set_allowed_hosts(e.nqn, e.allowed_hosts)
        if old is None or old.size != e.size:
            n.revalidate_namespace(e.nqn, 1)

    def _remove(self, e: Export) -> None:
        self.exports.pop(e.slot, None)
        port = self.tcp_port(e)
        self.nvmet.delete_subsystem(e.nqn)
        if port in self.nvmet.ports() and not self.nvmet.port_subsystems(port) and not any(
                self.tcp_port(x) == port for x in self.exports.values()):
            self.nvmet.delete_port(port)
