"""rds-csi: Kubernetes CSI driver for MikroTik ROSE Data Server over NVMe/TCP."""
