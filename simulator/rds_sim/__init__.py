"""rds_sim: a RouterOS-RDS SSH simulator and NVMe test fabric for rds-csi."""
