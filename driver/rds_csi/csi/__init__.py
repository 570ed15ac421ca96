"""Generated CSI v1 stubs (``make proto`` regenerates them from proto/csi.proto)."""
