"""A small CSI client for poking a running driver by hand.

    csictl.py --endpoint unix:///path/csi.sock info | caps | probe
    csictl.py --endpoint ... create NAME [--size 1Gi] [--block] [--param k=v ...]
    csictl.py --endpoint ... list | capacity | get VOLUME_ID | delete VOLUME_ID
    csictl.py --endpoint ... expand VOLUME_ID SIZE
    csictl.py --endpoint ... snapshot VOLUME_ID NAME | snapshots | delete-snapshot SNAPSHOT_ID
Node calls (--endpoint is the node plugin's socket; the volume context comes from
ControllerGetVolume on --controller-endpoint, default the same socket):
    csictl.py --endpoint ... node-info
    csictl.py --endpoint ... stage VOLUME_ID STAGING_DIR [--block] [--fs ext4|xfs]
    csictl.py --endpoint ... publish VOLUME_ID STAGING_DIR TARGET [--block] [--ro]
    csictl.py --endpoint ... stats VOLUME_ID PATH
    csictl.py --endpoint ... unpublish VOLUME_ID TARGET | unstage VOLUME_ID STAGING_DIR

Built from the same csi.proto as the driver; any client built from the official spec
proto talks to the driver the same way.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from google.protobuf.message import Message
from google.protobuf.text_format import MessageToString

from rds_csi.capacity import parse_quantity
from rds_csi.csi import csi_pb2, csi_pb2_grpc

MODE = csi_pb2.VolumeCapability.AccessMode


def _capability(block: bool) -> csi_pb2.VolumeCapability:
    if block:
        return csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                        access_mode=MODE(mode=MODE.SINGLE_NODE_WRITER))
    return csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(),
                                    access_mode=MODE(mode=MODE.SINGLE_NODE_WRITER))


def _node_capability(args: argparse.Namespace) -> csi_pb2.VolumeCapability:
    cap = _capability(args.block)
    if not args.block and getattr(args, "fs", ""):
        cap.mount.fs_type = args.fs
    return cap


def _context(args: argparse.Namespace, channel: grpc.Channel) -> dict[str, str]:
    target = (args.controller_endpoint or args.endpoint).removeprefix("tcp://")
    if target == args.endpoint.removeprefix("tcp://"):
        ctl = csi_pb2_grpc.ControllerStub(channel)
        vol = ctl.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(
            volume_id=args.volume_id), timeout=60).volume
    else:
        with grpc.insecure_channel(target) as other:
            vol = csi_pb2_grpc.ControllerStub(other).ControllerGetVolume(
                csi_pb2.ControllerGetVolumeRequest(volume_id=args.volume_id), timeout=60).volume
    return dict(vol.volume_context)


def _node_call(args: argparse.Namespace, channel: grpc.Channel) -> Message | None:
    node = csi_pb2_grpc.NodeStub(channel)
    t = 120
    if args.call == "node-info":
        return node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=t)
    if args.call == "stage":
        return node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
            volume_id=args.volume_id, staging_target_path=args.staging,
            volume_capability=_node_capability(args),
            volume_context=_context(args, channel)), timeout=t)
    if args.call == "publish":
        return node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_id=args.volume_id, staging_target_path=args.staging,
            target_path=args.target, volume_capability=_node_capability(args),
            readonly=args.ro), timeout=t)
    if args.call == "stats":
        return node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
            volume_id=args.volume_id, volume_path=args.path), timeout=t)
    if args.call == "unpublish":
        return node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=args.volume_id, target_path=args.target), timeout=t)
    if args.call == "unstage":
        return node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
            volume_id=args.volume_id, staging_target_path=args.staging), timeout=t)
    return None


def _call(args: argparse.Namespace, channel: grpc.Channel) -> Message:
    reply = _node_call(args, channel)
    if reply is not None:
        return reply
    identity = csi_pb2_grpc.IdentityStub(channel)
    ctl = csi_pb2_grpc.ControllerStub(channel)
    t = 60
    if args.call == "info":
        return identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=t)
    if args.call == "caps":
        return identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest(), timeout=t)
    if args.call == "probe":
        return identity.Probe(csi_pb2.ProbeRequest(), timeout=t)
    if args.call == "create":
        params = dict(p.split("=", 1) for p in args.param)
        return ctl.CreateVolume(csi_pb2.CreateVolumeRequest(
            name=args.name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=parse_quantity(args.size)),
            volume_capabilities=[_capability(args.block)], parameters=params), timeout=t)
    if args.call == "list":
        return ctl.ListVolumes(csi_pb2.ListVolumesRequest(), timeout=t)
    if args.call == "capacity":
        return ctl.GetCapacity(csi_pb2.GetCapacityRequest(), timeout=t)
    if args.call == "get":
        return ctl.ControllerGetVolume(
            csi_pb2.ControllerGetVolumeRequest(volume_id=args.volume_id), timeout=t)
    if args.call == "delete":
        return ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=args.volume_id), timeout=t)
    if args.call == "expand":
        return ctl.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=args.volume_id,
            capacity_range=csi_pb2.CapacityRange(required_bytes=parse_quantity(args.size))),
            timeout=t)
    if args.call == "snapshot":
        return ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
            source_volume_id=args.volume_id, name=args.name), timeout=t)
    if args.call == "snapshots":
        return ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest(), timeout=t)
    if args.call == "delete-snapshot":
        return ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=args.snapshot_id),
                                  timeout=t)
    raise AssertionError(args.call)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", required=True, help="unix:///path or tcp://host:port")
    parser.add_argument("--controller-endpoint", default="",
                        help="node calls: where ControllerGetVolume is asked for the volume "
                             "context (default: --endpoint)")
    sub = parser.add_subparsers(dest="call", required=True)
    sub.add_parser("node-info")
    st = sub.add_parser("stage")
    st.add_argument("volume_id")
    st.add_argument("staging")
    st.add_argument("--block", action="store_true")
    st.add_argument("--fs", default="", help="ext4 or xfs (default: the volume's fsType)")
    pb = sub.add_parser("publish")
    pb.add_argument("volume_id")
    pb.add_argument("staging")
    pb.add_argument("target")
    pb.add_argument("--block", action="store_true")
    pb.add_argument("--ro", action="store_true")
    stats = sub.add_parser("stats")
    stats.add_argument("volume_id")
    stats.add_argument("path")
    up = sub.add_parser("unpublish")
    up.add_argument("volume_id")
    up.add_argument("target")
    us = sub.add_parser("unstage")
    us.add_argument("volume_id")
    us.add_argument("staging")
    for name in ("info", "caps", "probe", "list", "capacity", "snapshots"):
        sub.add_parser(name)
    create = sub.add_parser("create")
    create.add_argument("name")
    create.add_argument("--size", default="1Gi")
    create.add_argument("--block", action="store_true")
    create.add_argument("--param", action="append", default=[], help="k=v StorageClass param")
    for name in ("get", "delete"):
        sub.add_parser(name).add_argument("volume_id")
    expand = sub.add_parser("expand")
    expand.add_argument("volume_id")
    expand.add_argument("size")
    snap = sub.add_parser("snapshot")
    snap.add_argument("volume_id")
    snap.add_argument("name")
    sub.add_parser("delete-snapshot").add_argument("snapshot_id")
    args = parser.parse_args()
    target = args.endpoint.removeprefix("tcp://")
    with grpc.insecure_channel(target) as channel:
        try:
            reply = _call(args, channel)
        except grpc.RpcError as err:
            print(f"{err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    print(MessageToString(reply).rstrip() or "{} (OK)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
