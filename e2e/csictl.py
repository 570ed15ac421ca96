"""A tiny CSI client for poking a running driver by hand.

    python e2e/csictl.py --endpoint unix:///path/csi.sock info
    python e2e/csictl.py --endpoint unix:///path/csi.sock caps
    python e2e/csictl.py --endpoint unix:///path/csi.sock probe

Built from the same csi.proto as the driver; any client built from the
official spec proto works the same way.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from google.protobuf.text_format import MessageToString

from rds_csi.csi import csi_pb2, csi_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", required=True, help="unix:///path or host:port")
    parser.add_argument("call", choices=["info", "caps", "probe"])
    args = parser.parse_args()
    target = args.endpoint.removeprefix("tcp://")
    with grpc.insecure_channel(target) as channel:
        identity = csi_pb2_grpc.IdentityStub(channel)
        try:
            if args.call == "info":
                reply = identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=10)
            elif args.call == "caps":
                reply = identity.GetPluginCapabilities(
                    csi_pb2.GetPluginCapabilitiesRequest(), timeout=10)
            else:
                reply = identity.Probe(csi_pb2.ProbeRequest(), timeout=10)
        except grpc.RpcError as err:
            print(f"{err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    print(MessageToString(reply).rstrip() or "{}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
