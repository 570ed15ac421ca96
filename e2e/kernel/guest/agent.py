"""Guest-side command agent of the rds-csi micro-VMs (stdlib only, runs as a child of PID 1).

Speaks JSON lines over the virtio serial port named ``rdsvm.agent``:

    -> {"id": 1, "op": "run", "cmd": "echo hi", "timeout": 30, "input": "optional stdin"}
    <- {"id": 1, "status": 0, "output": "hi\\n"}          (status 124 and "timed out" on timeout)
    -> {"id": 2, "op": "spawn", "cmd": "rds-sim serve ...", "log": "/tmp/sim.log"}
    <- {"id": 2, "pid": 123}                                (runs in its own session)
    -> {"id": 3, "op": "ping"}
    <- {"id": 3, "pong": true}

Requests run concurrently, each in its own thread; commands run under /bin/sh -c with stdout
and stderr merged.
"""

import json
import os
import subprocess
import sys
import threading
import time

PORT_NAME = "rdsvm.agent"


def find_port() -> str:
    base = "/sys/class/virtio-ports"
    for _ in range(100):
        if os.path.isdir(base):
            for dev in sorted(os.listdir(base)):
                try:
                    with open(os.path.join(base, dev, "name")) as f:
                        if f.read().strip() == PORT_NAME:
                            return "/dev/" + dev
                except OSError:
                    pass
        time.sleep(0.1)
    raise SystemExit("agent: no virtio port named " + PORT_NAME)


class Agent:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR)
        self.lock = threading.Lock()

    def send(self, msg: dict) -> None:
        data = (json.dumps(msg) + "\n").encode()
        with self.lock:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]

    def handle(self, req: dict) -> None:
        rid = req.get("id")
        try:
            op = req.get("op")
            if op == "ping":
                self.send({"id": rid, "pong": True})
            elif op == "run":
                self.send({"id": rid, **run(req)})
            elif op == "spawn":
                self.send({"id": rid, "pid": spawn(req)})
            else:
                self.send({"id": rid, "error": f"unknown op {op!r}"})
        except Exception as e:  # never let one request kill the agent
            self.send({"id": rid, "error": f"{type(e).__name__}: {e}"})

    def serve(self) -> None:
        buf = b""
        while True:
            chunk = os.read(self.fd, 65536)
            if not chunk:  # host side not connected: wait for it
                time.sleep(0.05)
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    req = json.loads(line)
                except ValueError:
                    continue
                threading.Thread(target=self.handle, args=(req,), daemon=True).start()


def run(req: dict) -> dict:
    data = req.get("input")
    try:
        p = subprocess.run(
            ["/bin/sh", "-c", req["cmd"]],
            input=data.encode() if data is not None else None,
            stdin=None if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=req.get("timeout"),
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as e:
        out = (e.output or b"").decode(errors="replace")
        return {"status": 124, "output": out + "\n[agent: timed out]\n"}
    return {"status": p.returncode, "output": p.stdout.decode(errors="replace")}


def spawn(req: dict) -> int:
    log = req.get("log") or "/dev/null"
    with open(log, "ab") as out:
        p = subprocess.Popen(
            ["/bin/sh", "-c", req["cmd"]],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    threading.Thread(target=p.wait, daemon=True).start()  # reap it when it ends
    return p.pid


def main() -> None:
    agent = Agent(find_port())
    print("rdsvm: agent ready", flush=True)
    agent.serve()


if __name__ == "__main__":
    sys.exit(main())
