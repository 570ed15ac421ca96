"""`rds-sim`: run the simulator (`serve`), steer a running one (`fault`), measure it (`bench`)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from .control import ControlError, request
from .faults import PROFILES

EXIT_USAGE = 2


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:2222` or `[::1]:2222` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _nth(text: str) -> int | None:
    if text == "every":
        return None
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("N counts from 1 (or 'every')")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rds-sim", description="RouterOS-RDS simulator")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the simulated RDS over SSH until SIGTERM/SIGINT")
    s.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 2222),
                   metavar="HOST:PORT", help="port 0 picks a free port (default 127.0.0.1:2222)")
    s.add_argument("--state-dir", type=Path, required=True)
    s.add_argument("--user", default="admin")
    s.add_argument("--password-file", type=Path, help="file holding the password")
    s.add_argument("--authorized-keys", type=Path, help="OpenSSH authorized_keys file")
    s.add_argument("--host-key", type=Path,
                   help="host private key (default: STATE_DIR/ssh_host_rsa_key, created as RSA)")
    s.add_argument("--export-backend", choices=["none", "fabric", "nvmet"], default="none")
    s.add_argument("--fabric-dir", type=Path,
                   help="fabric backend: node roots and fabric.sock live here")
    s.add_argument("--fabric-nodes", default="",
                   help="fabric backend: comma-separated node ids to create at start")
    s.add_argument("--nvmet-configfs", type=Path, default=Path("/sys/kernel/config/nvmet"),
                   help="nvmet backend: configfs root (default /sys/kernel/config/nvmet)")
    s.add_argument("--nvmet-address", default="0.0.0.0",
                   help="nvmet backend: address the NVMe/TCP ports listen on (default 0.0.0.0)")
    s.add_argument("--nvmet-port", type=int, default=None,
                   help="nvmet backend: one TCP port for every export (default: each disk's "
                        "nvme-tcp-server-port)")
    s.add_argument("--latency-profile", choices=sorted(PROFILES), default="none")
    s.add_argument("--slot-name-max", type=int, default=32)
    s.add_argument("--identity", default="rds")
    s.add_argument("--parse-error-exit-status", type=int, choices=[0, 1], default=0,
                   help="exit status of parse errors (7.24: 0, v6: 1)")
    s.add_argument("--allow-non-loopback", action="store_true",
                   help="allow listening on a non-loopback address")
    s.add_argument("--max-connections", type=int, default=64)
    s.add_argument("-v", "--verbose", action="store_true", help="log at debug level to stderr")

    f = sub.add_parser("fault", help="inject faults into a running simulator")
    f.add_argument("--state-dir", type=Path, required=True)
    fsub = f.add_subparsers(dest="fault", required=True)
    r = fsub.add_parser("reboot", help="refuse SSH and drop exports for N seconds")
    r.add_argument("--seconds", type=float, required=True)
    lat = fsub.add_parser("latency", help="add latency to a command kind, or load a profile")
    lat.add_argument("kind", nargs="?", help="e.g. '/disk add'")
    lat.add_argument("seconds", nargs="?", type=float)
    lat.add_argument("--per-gib", type=float, default=0.0, help="extra seconds per GiB of size")
    lat.add_argument("--size-arg", default="file-size")
    lat.add_argument("--profile", choices=sorted(PROFILES))
    d = fsub.add_parser("drop", help="drop the connection around the Nth matching command")
    d.add_argument("kind")
    d.add_argument("--nth", type=_nth, default=1, help="N or 'every' (default 1)")
    d.add_argument("--when", choices=["before", "after"], default="before")
    fl = fsub.add_parser("fail", help="fail matching commands with a RouterOS error text")
    fl.add_argument("kind")
    fl.add_argument("message")
    fl.add_argument("--nth", type=_nth, default=None, help="N or 'every' (default every)")
    pf = fsub.add_parser("pool-full", help="make /disk add fail with 'not enough space'")
    pf.add_argument("--off", action="store_true")
    fsub.add_parser("clear", help="remove every fault rule")
    fsub.add_parser("status", help="print the simulator's status as JSON")
    lg = fsub.add_parser("log", help="print the last command log entries as JSON lines")
    lg.add_argument("--last", type=int, default=20)

    fb = sub.add_parser("fabric", help="steer the simulated NVMe host fabric of a running serve")
    fb.add_argument("--fabric-dir", type=Path, required=True)
    fbsub = fb.add_subparsers(dest="fabric_op", required=True)
    fbsub.add_parser("status", help="print hosts, controllers and network rules as JSON")
    for name, what in (("block", "drop packets (like nft drop)"), ("unblock", "stop dropping")):
        bl = fbsub.add_parser(name, help=what)
        bl.add_argument("--node", help="only this node (default: every node)")
        bl.add_argument("--port", type=int, help="only this port (default: every port)")
    ah = fbsub.add_parser("add-host", help="add a simulated node host")
    ah.add_argument("node")
    ah.add_argument("--hostnqn")
    sub.add_parser("nvme", help="nvme-cli for a fabric node: rds-sim nvme --node-root DIR ...")

    st = sub.add_parser("stack", help="simulator + fabric + rds-csi processes, until interrupted")
    st.add_argument("--csi-endpoint", required=True, help="unix:///PATH for node-1 (mode all)")
    st.add_argument("--workdir", type=Path, required=True)
    st.add_argument("--nodes", type=int, default=1)
    st.add_argument("--rds-csi", default="rds-csi", help="the driver executable")
    st.add_argument("--driver-arg", action="append", default=[],
                    help="extra argument for every rds-csi process (repeatable)")
    st.add_argument("-v", "--verbose", action="store_true")

    b = sub.add_parser("bench", help="measure command round-trip over one SSH connection")
    b.add_argument("--disks", type=int, default=1000)
    b.add_argument("--commands", type=int, default=1000)
    b.add_argument("--state-dir", type=Path, help="default: a temporary directory")
    return p


def serve(args: argparse.Namespace) -> int:
    from .exports import ExportBackend, NoneBackend
    from .server import Simulator

    backend: ExportBackend = NoneBackend()
    if args.export_backend == "nvmet":
        from .nvmet import Nvmet, NvmetBackend, NvmetError

        nvmet = Nvmet(args.nvmet_configfs)
        try:
            nvmet.check_root()
        except NvmetError as e:
            print(f"rds-sim: {e}", file=sys.stderr)
            return EXIT_USAGE
        backend = NvmetBackend(nvmet, address=args.nvmet_address, port=args.nvmet_port)
    elif args.export_backend == "fabric":
        if args.fabric_dir is None:
            print("rds-sim: --export-backend fabric needs --fabric-dir", file=sys.stderr)
            return EXIT_USAGE
        from .fabric.engine import FabricEngine

        engine = FabricEngine(args.fabric_dir)  # backend.close() closes the engine
        backend = engine.backend
        for node in filter(None, (n.strip() for n in args.fabric_nodes.split(","))):
            engine.add_host(node)
    elif args.export_backend != "none":
        print(f"rds-sim: export backend {args.export_backend} is not available yet",
              file=sys.stderr)
        return EXIT_USAGE
    if args.password_file is None and args.authorized_keys is None:
        print("rds-sim: give --password-file and/or --authorized-keys", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    host, port = args.listen
    try:
        password = (
            args.password_file.read_text().rstrip("\r\n") if args.password_file else None
        )
        sim = Simulator(
            args.state_dir,
            host=host,
            port=port,
            user=args.user,
            password=password,
            authorized_keys=args.authorized_keys,
            host_key=args.host_key,
            identity=args.identity,
            slot_name_max=args.slot_name_max,
            export_backend=backend,
            parse_error_exit_status=args.parse_error_exit_status,
            latency_profile=args.latency_profile,
            allow_non_loopback=args.allow_non_loopback,
            max_connections=args.max_connections,
        )
        bound = sim.start()
    except (OSError, ValueError) as e:
        print(f"rds-sim: {e}", file=sys.stderr)
        close = getattr(backend, "close", None)
        if close is not None:
            close()
        return EXIT_USAGE

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on {shown}:{bound}", flush=True)
    while not done.wait(1.0):
        pass
    sim.stop()
    close = getattr(backend, "close", None)
    if close is not None:  # e.g. nvmet: the exports go away with the process
        close()
    return 0


def fault(args: argparse.Namespace) -> int:
    req: dict[str, Any]
    match args.fault:
        case "reboot":
            req = {"op": "reboot", "seconds": args.seconds}
        case "latency" if args.profile:
            req = {"op": "latency", "profile": args.profile}
        case "latency":
            if args.kind is None or args.seconds is None:
                print("rds-sim: latency needs KIND SECONDS or --profile", file=sys.stderr)
                return EXIT_USAGE
            req = {"op": "latency", "kind": args.kind, "seconds": args.seconds,
                   "per_gib": args.per_gib, "size_arg": args.size_arg}
        case "drop":
            req = {"op": "drop", "kind": args.kind, "nth": args.nth, "when": args.when}
        case "fail":
            req = {"op": "fail", "kind": args.kind, "message": args.message, "nth": args.nth}
        case "pool-full":
            req = {"op": "pool_full", "on": not args.off}
        case "log":
            req = {"op": "log", "last": args.last}
        case other:
            req = {"op": other}
    try:
        reply = request(args.state_dir, req)
    except ControlError as e:
        print(f"rds-sim: {e}", file=sys.stderr)
        return 1
    if args.fault == "log":
        for entry in reply["entries"]:
            print(json.dumps(entry))
    elif args.fault == "status":
        reply.pop("ok", None)
        print(json.dumps(reply, indent=2))
    else:
        print("ok")
    return 0


def fabric(args: argparse.Namespace) -> int:
    from .fabric.engine import CONTROL_SOCKET, request

    req: dict[str, Any] = {"op": args.fabric_op.replace("-", "_")}
    if args.fabric_op in ("block", "unblock"):
        req.update(node=args.node, port=args.port)
    elif args.fabric_op == "add-host":
        req.update(node=args.node, hostnqn=args.hostnqn)
    try:
        reply = request(args.fabric_dir / CONTROL_SOCKET, req)
    except OSError as e:
        print(f"rds-sim: no fabric at {args.fabric_dir}: {e}", file=sys.stderr)
        return 1
    if not reply.pop("ok", False):
        print(f"rds-sim: {reply.get('error')}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2) if reply else "ok")
    return 0


def stack(args: argparse.Namespace) -> int:
    from .fabric.stack import run_stack

    return run_stack(args)


def bench(args: argparse.Namespace) -> int:
    from .bench import run

    return run(disks=args.disks, commands=args.commands, state_dir=args.state_dir)


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["nvme"]:  # everything after goes to the node's nvme-cli untouched
        from .fabric.client import main as nvme_main

        return nvme_main(raw[1:])
    args = build_parser().parse_args(raw)
    handlers = {"serve": serve, "fault": fault, "bench": bench, "fabric": fabric,
                "stack": stack}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
