"""CSI calls from inside a micro-VM, the way a CO issues them: gRPC over the plugin's unix socket.

Importing grpc and the generated CSI code takes seconds under TCG, so one long-lived relay per
guest does the gRPC side and short stdlib-only clients (``python3 -S``, ~0.3 s) hand it requests:

    csi_relay.py serve SOCKET                 (venv python: imports grpc, rds_csi.csi)
    csi_relay.py call SOCKET < request.json   (python3 -S: stdlib only)

A request is one JSON object: {"endpoint": "unix:///run/csi/node.sock", "service": "Node",
"method": "NodeStageVolume", "request": {...protobuf JSON, proto field names...}, "timeout": 60}.
The reply: {"ok": true, "reply": {...}} or {"ok": false, "code": "UNAVAILABLE", "details": "..."}.
`call` prints the reply and exits 0 (a gRPC error is a reply too; exit 1 only when the relay
cannot be reached).
"""

import json
import os
import socket
import sys
import threading


def call(path: str) -> int:
    data = sys.stdin.buffer.read().strip() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError as e:
            print(json.dumps({"ok": False, "code": "RELAY", "details": str(e)}))
            return 1
        s.sendall(data)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    sys.stdout.write(buf.decode(errors="replace"))
    return 0


def serve(path: str) -> int:
    import grpc
    from google.protobuf import json_format

    from rds_csi.csi import csi_pb2, csi_pb2_grpc

    channels: dict[str, grpc.Channel] = {}
    lock = threading.Lock()

    def channel(endpoint: str) -> grpc.Channel:
        with lock:
            ch = channels.get(endpoint)
            if ch is None:
                ch = channels[endpoint] = grpc.insecure_channel(endpoint)
            return ch

    def handle(req: dict) -> dict:
        stub = getattr(csi_pb2_grpc, req["service"] + "Stub")(channel(req["endpoint"]))
        method = req["method"]
        message = json_format.ParseDict(req.get("request", {}),
                                        getattr(csi_pb2, method + "Request")())
        try:
            reply = getattr(stub, method)(message, timeout=float(req.get("timeout", 60)),
                                          wait_for_ready=True)
        except grpc.RpcError as err:
            return {"ok": False, "code": err.code().name, "details": err.details()}
        return {"ok": True, "reply": json_format.MessageToDict(
            reply, preserving_proto_field_name=True)}

    def conn(c: socket.socket) -> None:
        with c:
            f = c.makefile("rwb")
            line = f.readline()
            try:
                out = handle(json.loads(line))
            except Exception as e:  # a broken request must not kill the relay
                out = {"ok": False, "code": "RELAY", "details": f"{type(e).__name__}: {e}"}
            f.write(json.dumps(out).encode() + b"\n")
            f.flush()

    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    print("relay ready", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=conn, args=(c,), daemon=True).start()


if __name__ == "__main__":
    op, sock = sys.argv[1:3]
    sys.exit(serve(sock) if op == "serve" else call(sock))
