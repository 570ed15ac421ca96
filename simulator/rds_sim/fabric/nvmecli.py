"""nvme-cli 2.3 (Debian 12's `nvme`, libnvme 1.3) for a simulated host: the subset the driver
uses, with the same flags, output and exit codes.

Taken from nvme-cli 2.3 fabrics.c / nvme.c / nvme-print.c and libnvme 1.3 fabrics.c:
- every failing command exits 1 (`main` returns `err ? 1 : 0`);
- `connect` prints nothing on success unless `-o normal` (`device: nvme0`) or `-o json`;
  an existing controller with the same transport/traddr/trsvcid/subsysnqn (any state) gives
  `already connected` (even with --duplicate-connect, which 2.3 checks too late);
  kernel errors print `Failed to write to /dev/nvme-fabrics: <strerror>` (libnvme), then
  `could not add new controller: <libnvme message>`;
- libnvme passes reconnect_delay / keep_alive_tmo only when > 0 and ctrl_loss_tmo when >= -1
  (measured with the real binary), so 0 means the kernel default for the first two;
- `disconnect -n` always exits 0 and prints `NQN:<arg> disconnected <k> controller(s)`;
  `disconnect -d` of an unknown device prints `Did not find device X` and exits 0 (measured).
"""

from __future__ import annotations

import errno
import getopt
import os
from collections.abc import Callable
from dataclasses import dataclass

from . import jsonc
from .host import (
    FIRMWARE,
    MODEL,
    SECTOR,
    ConnectError,
    ConnectOptions,
    Controller,
    FabricHost,
    Head,
    Subsystem,
)

VERSION = "nvme version 2.3 (git 2.3)\nlibnvme version 1.3 (git 1.3)\n"

# libnvme 1.3 nvme_errno_to_string for the errno a failed write to /dev/nvme-fabrics leaves
_CONNECT_ERRORS = {
    errno.EALREADY: "already connected",
    errno.EINVAL: "invalid arguments/configuration",
    errno.EADDRINUSE: "hostnqn already in use",
    errno.ENODEV: "invalid interface",
    errno.EOPNOTSUPP: "not supported",
    errno.ECONNREFUSED: "connection refused",
}
_WRITE_ERROR = "failed to write to nvme-fabrics device"


class _Out:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []

    def print(self, s: str = "") -> None:
        self.out.append(s + "\n")

    def error(self, s: str) -> None:
        self.err.append(s + "\n")


@dataclass
class _Opt:
    long: str
    short: str | None
    arg: bool  # takes a value
    kind: str = "str"  # str | int | flag | incr


def _parse(
    cmd: str, argv: list[str], opts: list[_Opt], o: _Out
) -> tuple[dict[str, object], list[str]] | None:
    shorts = "".join((x.short + (":" if x.arg else "")) for x in opts if x.short)
    longs = [x.long + ("=" if x.arg else "") for x in opts]
    try:
        found, rest = getopt.gnu_getopt(argv, shorts, longs)
    except getopt.GetoptError as e:
        opt = e.opt
        dash = "-" if len(opt) == 1 else "--"
        if "requires argument" in e.msg:
            o.error(f"{cmd}: option requires an argument -- '{opt}'")
        else:
            o.error(f"{cmd}: unrecognized option '{dash}{opt}'")
        return None
    values: dict[str, object] = {}
    for name, val in found:
        spec = next(x for x in opts if (name == f"--{x.long}" or name == f"-{x.short}"))
        if spec.kind == "int":
            try:
                values[spec.long] = int(val, 0)
            except ValueError:
                o.error(f"Expected integer argument for '{spec.long}' but got '{val}'!")
                return None
        elif spec.kind == "flag":
            values[spec.long] = True
        elif spec.kind == "incr":
            values[spec.long] = int(str(values.get(spec.long, 0))) + 1
        else:
            values[spec.long] = val
    return values, rest


_NVMF_OPTS = [
    _Opt("transport", "t", True), _Opt("traddr", "a", True), _Opt("trsvcid", "s", True),
    _Opt("host-traddr", "w", True), _Opt("host-iface", "f", True), _Opt("hostnqn", "q", True),
    _Opt("hostid", "I", True), _Opt("nqn", "n", True), _Opt("dhchap-secret", "S", True),
    _Opt("nr-io-queues", "i", True, "int"), _Opt("nr-write-queues", "W", True, "int"),
    _Opt("nr-poll-queues", "P", True, "int"), _Opt("queue-size", "Q", True, "int"),
    _Opt("keep-alive-tmo", "k", True, "int"), _Opt("reconnect-delay", "c", True, "int"),
    _Opt("ctrl-loss-tmo", "l", True, "int"), _Opt("tos", "T", True, "int"),
    _Opt("duplicate-connect", "D", False, "flag"), _Opt("disable-sqflow", "d", False, "flag"),
    _Opt("hdr-digest", "g", False, "flag"), _Opt("data-digest", "G", False, "flag"),
]


def connect(host: FabricHost, argv: list[str], o: _Out) -> int:
    spec = [
        *_NVMF_OPTS,
        _Opt("dhchap-ctrl-secret", "C", True), _Opt("config", "J", True),
        _Opt("verbose", "v", False, "incr"), _Opt("dump-config", "O", False, "flag"),
        _Opt("output-format", "o", True),
    ]
    parsed = _parse("connect", argv, spec, o)
    if parsed is None:
        return 1
    v, _ = parsed
    fmt = str(v.get("output-format", ""))
    if fmt not in ("", "normal", "json"):
        return 1
    nqn, transport, traddr = v.get("nqn"), v.get("transport"), v.get("traddr")
    if not nqn:
        o.error("required argument [--nqn | -n] not specified")
        return 1
    if not transport:
        o.error("required argument [--transport | -t] not specified")
        return 1
    if transport != "loop" and not traddr:
        o.error(f"required argument [--traddr | -a] not specified for transport {transport}")
        return 1
    trsvcid = str(v.get("trsvcid") or ("4420" if transport in ("tcp", "rdma") else ""))
    with host.lock:
        for c in host.controllers():
            if (c.subsys.nqn == nqn and transport == "tcp"
                    and str(c.traddr).lower() == str(traddr).lower()
                    and str(c.trsvcid) == trsvcid
                    and not v.get("host-traddr") and not v.get("host-iface")):
                o.error("already connected")
                return 1
        try:
            port = int(trsvcid)
        except ValueError:
            o.error(f"could not add new controller: {_CONNECT_ERRORS[errno.EINVAL]}")
            return 1

        def positive(key: str) -> int | None:
            x = v.get(key)
            return int(str(x)) if x is not None and int(str(x)) > 0 else None

        tmo = v.get("ctrl-loss-tmo")
        opts = ConnectOptions(
            nqn=str(nqn), traddr=str(traddr), trsvcid=port, transport=str(transport),
            hostnqn=str(v["hostnqn"]) if v.get("hostnqn") else None,
            hostid=str(v["hostid"]) if v.get("hostid") else None,
            ctrl_loss_tmo=int(str(tmo)) if tmo is not None and int(str(tmo)) >= -1 else None,
            reconnect_delay=positive("reconnect-delay"),
            keep_alive_tmo=positive("keep-alive-tmo"),
        )
        try:
            ctrl = host.connect(opts)
        except ConnectError as e:
            # libnvme logs the failed write first (seen with the real binary on Linux 6.1)
            o.error(f"Failed to write to /dev/nvme-fabrics: {os.strerror(e.errno)}")
            o.error("could not add new controller: "
                    + _CONNECT_ERRORS.get(e.errno, _WRITE_ERROR))
            return 1
    if fmt == "normal":
        o.print(f"device: {ctrl.name}")
    elif fmt == "json":
        o.print(jsonc.dumps({"device": ctrl.name}))
    return 0


def disconnect(host: FabricHost, argv: list[str], o: _Out) -> int:
    spec = [_Opt("nqn", "n", True), _Opt("device", "d", True),
            _Opt("verbose", "v", False, "incr")]
    parsed = _parse("disconnect", argv, spec, o)
    if parsed is None:
        return 1
    v, _ = parsed
    if not v.get("nqn") and not v.get("device"):
        o.error("Neither device name [--device | -d] nor NQN [--nqn | -n] provided")
        return 1
    with host.lock:
        if v.get("nqn"):
            arg = str(v["nqn"])
            n = 0
            for one in arg.split(","):
                if not one:
                    continue
                for c in _topology_ctrls(host):
                    if c.subsys.nqn == one and c.instance in host.ctrls:
                        host.delete(c)
                        n += 1
            o.print(f"NQN:{arg} disconnected {n} controller(s)")
        if v.get("device"):
            for name in str(v["device"]).split(","):
                if name.startswith("/dev/"):
                    name = name[5:]
                found = host.find_ctrl(name)
                if found is None:
                    o.error(f"Did not find device {name}")
                    return 0
                host.delete(found)
    return 0


def disconnect_all(host: FabricHost, argv: list[str], o: _Out) -> int:
    parsed = _parse("disconnect-all", argv,
                    [_Opt("transport", "r", True), _Opt("verbose", "v", False, "incr")], o)
    if parsed is None:
        return 1
    v, _ = parsed
    with host.lock:
        for c in _topology_ctrls(host):
            if v.get("transport") and v["transport"] != "tcp":
                continue
            host.delete(c)
    return 0


# --- libnvme's view of the topology ---------------------------------------------------------


def _alpha(name: str) -> str:
    return name  # scandir(alphasort): plain byte order, nvme10 before nvme2


def _topology_ctrls(host: FabricHost) -> list[Controller]:
    return sorted(host.ctrls.values(), key=lambda c: _alpha(c.name))


def _hosts(host: FabricHost) -> list[tuple[str, str, list[Subsystem]]]:
    """Hosts in libnvme scan order (by controller), each with its subsystems."""
    order: list[tuple[str, str, list[Subsystem]]] = []
    placed: set[int] = set()
    for c in _topology_ctrls(host):
        entry = next((h for h in order if h[0] == c.hostnqn and h[1] == c.hostid), None)
        if entry is None:
            entry = (c.hostnqn, c.hostid, [])
            order.append(entry)
        if id(c.subsys) not in placed:
            placed.add(id(c.subsys))
            entry[2].append(c.subsys)
    rest = sorted((s for s in host.subsystems if id(s) not in placed), key=lambda s: s.name)
    if rest:  # subsystems without controllers go to the default host (/etc/nvme/hostnqn)
        entry = next((h for h in order if h[0] == host.hostnqn and h[1] == host.hostid), None)
        if entry is None:
            entry = (host.hostnqn, host.hostid, [])
            order.append(entry)
        entry[2].extend(rest)
    # libnvme links every new host, subsystem and controller at the head of its list (ccan
    # list_add), so it prints them in reverse scan order (checked against the real binary)
    return [(n, i, subs[::-1]) for n, i, subs in order[::-1]]


def _live_heads(s: Subsystem) -> list[Head]:
    return sorted((h for h in s.heads if not h.zombie), key=lambda h: _alpha(h.name),
                  reverse=True)


def _paths(s: Subsystem) -> list[Controller]:
    return sorted(s.ctrls, key=lambda c: _alpha(c.name), reverse=True)


def list_subsys(host: FabricHost, argv: list[str], o: _Out) -> int:
    parsed = _parse("list-subsys", argv,
                    [_Opt("output-format", "o", True), _Opt("verbose", "v", False, "incr")], o)
    if parsed is None:
        return 1
    v, rest = parsed
    fmt = str(v.get("output-format", "normal"))
    if fmt not in ("normal", "json"):
        return 1
    want: tuple[int, int] | None = None
    if rest:
        name = os.path.basename(rest[0])
        try:
            a, b = name.removeprefix("nvme").split("n", 1)
            want = (int(a), int(b))
        except ValueError:
            o.error(f"Invalid device name {name}")
            return 1
    with host.lock:
        hosts = _hosts(host)
        if want is not None:
            hosts = [(n, i, [s for s in subs if s.instance == want[0]
                             and any(h.instance == want[1] for h in _live_heads(s))])
                     for n, i, subs in hosts]
            hosts = [h for h in hosts if h[2]]
        if fmt == "json":
            root = []
            for hostnqn, hostid, subs in hosts:
                entry: dict[str, object] = {"HostNQN": hostnqn, "HostID": hostid}
                entry["Subsystems"] = [
                    {"Name": s.name, "NQN": s.nqn,
                     "Paths": [{"Name": c.name, "Transport": "tcp",
                                "Address": host.address(c), "State": c.state}
                               for c in _paths(s)]}
                    for s in subs
                ]
                root.append(entry)
            o.print(jsonc.dumps(root))
            return 0
        for _, _, subs in hosts:
            for s in subs:
                o.print(f"{s.name} - NQN={s.nqn}")
                o.print("\\")
                tail = " " if _live_heads(s) else ""  # the multipath branch prints an ANA column
                for c in _paths(s):
                    o.print(f" +- {c.name} tcp {host.address(c)} {c.state}{tail}")
    return 0


def _suffix_si(x: float) -> tuple[float, str]:
    for s in ("", "k", "M", "G", "T", "P", "E"):
        if x < 1000:
            return x, s
        x /= 1000
    return x, "Z"


def _list_item_json(h: Head) -> dict[str, object]:
    return {
        "NameSpace": h.nsid,
        "DevicePath": f"/dev/{h.name}",
        "Firmware": FIRMWARE,
        "ModelNumber": MODEL,
        "SerialNumber": h.subsys.serial,
        "UsedBytes": h.size,
        "MaximumLBA": h.size // SECTOR,
        "PhysicalSize": h.size,
        "SectorSize": SECTOR,
    }


def list_ns(host: FabricHost, argv: list[str], o: _Out) -> int:
    parsed = _parse("list", argv,
                    [_Opt("output-format", "o", True), _Opt("verbose", "v", False, "flag")], o)
    if parsed is None:
        return 1
    v, _ = parsed
    fmt = str(v.get("output-format", "normal"))
    if fmt not in ("normal", "json"):
        o.error("Invalid output format")
        return 1
    with host.lock:
        heads = [h for _, _, subs in _hosts(host) for s in subs for h in _live_heads(s)]
        if fmt == "json":
            o.print(jsonc.dumps({"Devices": [_list_item_json(h) for h in heads]}))
            return 0
        dash = "-" * 50
        o.print(f"{'Node':<21} {'Generic':<21} {'SN':<20} {'Model':<40} {'Namespace':<9} "
                f"{'Usage':<26} {'Format':<16} {'FW Rev':<8}")
        o.print(f"{dash[:21]} {dash[:21]} {dash[:20]} {dash[:40]} {dash[:9]} {dash[:26]} "
                f"{dash[:16]} {dash[:8]}")
        for h in heads:
            size, suf = _suffix_si(float(h.size))
            usage = f"{size:6.2f} {suf:>2}B / {size:6.2f} {suf:>2}B"
            fmt_s = f"{SECTOR:3.0f} {'':>2}B + {0:2d} B"
            generic = f"ng{h.subsys.instance}n{h.instance}"
            o.print(f"{'/dev/' + h.name:<21} {generic:<21} {h.subsys.serial:<20} "
                    f"{MODEL:<40} {h.nsid:<9d} {usage:<26} {fmt_s:<16} {FIRMWARE:<8}")
    return 0


_COMMANDS: dict[str, Callable[[FabricHost, list[str], _Out], int]] = {
    "connect": connect,
    "disconnect": disconnect,
    "disconnect-all": disconnect_all,
    "list": list_ns,
    "list-subsys": list_subsys,
}


def run(host: FabricHost, argv: list[str]) -> tuple[int, str, str]:
    """Run `nvme <argv>` on `host`: (exit status, stdout, stderr)."""
    o = _Out()
    if not argv:
        o.print("nvme-2.3")
        o.print("usage: nvme <command> [<device>] [<args>]")
        return 1, "".join(o.out), ""
    cmd, rest = argv[0], argv[1:]
    if cmd in ("version", "--version"):
        return 0, VERSION, ""
    fn = _COMMANDS.get(cmd)
    if fn is None:
        o.error(f"ERROR: Invalid sub-command '{cmd}' for plugin nvme")
        return 1, "", "".join(o.err)
    rc = fn(host, rest, o)
    return rc, "".join(o.out), "".join(o.err)
