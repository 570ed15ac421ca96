"""Device output samples written by hand from ROUTEROS.md (not produced by any formatter).

Lines are joined with CRLF as the device does. `W80_*` are wrapped at 80 columns, `W40_*` at 40.
"""

from __future__ import annotations


def crlf(*lines: str) -> str:
    return "".join(line + "\r\n" for line in lines)


FLAGS = (
    "Flags: X - DISABLED; B - BLOCK-DEVICE; M - MOUNTED; t - NVME-TCP-EXPORT; "
    "i - ISCSI-EXPORT; n - NFS-SHARING; s - SMB-SHARING; r - RAID-MEMBER"
)
# The same legend as the device prints it at 80 columns: wrapped, separator kept at the end.
FLAGS_W80 = (
    "Flags: X - DISABLED; B - BLOCK-DEVICE; M - MOUNTED; t - NVME-TCP-EXPORT; ",
    "i - ISCSI-EXPORT; n - NFS-SHARING; s - SMB-SHARING; r - RAID-MEMBER",
)

# One exported volume with a comment, word-wrapped at 80 with the separator kept at line ends
# (v6-style trailing spaces).
W80_ONE_DISK_KEEP_SPACES = crlf(
    *FLAGS_W80,
    " 0 B t ;;; k8s pvc default/data-0",
    '       type=file slot="pvc-5f0c1e2a" slot-default="" parent="" fs=- ',
    '       model="/storage-pool/k8s/pvc-5f0c1e2a.img" size=10 737 418 240 ',
    "       mount-filesystem=yes mount-read-only=no compress=no sector-size=512 ",
    "       raid-master=none nvme-tcp-export=yes nvme-tcp-server-port=4420 ",
    '       nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-5f0c1e2a" ',
    '       nvme-tcp-server-allow-host-name="" iscsi-export=no nfs-sharing=no ',
    "       smb-sharing=no media-sharing=no media-interface=none swap=no ",
    "       file-path=/storage-pool/k8s/pvc-5f0c1e2a.img file-size=10.0GiB ",
    "       file-offset=0",
    "",
)

# Character-folded at exactly 80 columns: breaks fall inside keys (`nvme-|tcp-server-port`,
# `nfs|-sharing`), right after `=` (`parent=|""`), inside quoted values (model, nqn, host list)
# and inside unquoted values (`mount-read-only=|no`, the file-path).
W80_FOLDED = crlf(
    FLAGS,
    ' 1 B t type=file slot="pvc-0123456789abcdef0123456789ab" slot-default="" parent=',
    '       "" fs=- model="/storage-pool/kubernetes/volumes/pvc-0123456789abcdef01234',
    '       56789ab.img" size=1 099 511 627 776 mount-filesystem=yes mount-read-only=',
    "       no compress=no sector-size=512 raid-master=none nvme-tcp-export=yes nvme-",
    '       tcp-server-port=4421 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-01',
    '       23456789abcdef0123456789ab" nvme-tcp-server-allow-host-name="nqn.2014-08.',
    "       org.nvmexpress:uuid:4c4c4544-0042-3610-8052-b4c04f4b4e32,nqn.2014-08.org.",
    '       nvmexpress:uuid:5d5d5544-0042-3610-8052-b4c04f4b4e33" iscsi-export=no nfs',
    "       -sharing=no smb-sharing=no media-sharing=no media-interface=none swap=no ",
    "       file-path=/storage-pool/kubernetes/volumes/pvc-0123456789abcdef0123456789",
    "       ab.img file-size=1.0TiB file-offset=0",
    "",
)

# Word-wrapped at 40 with separators dropped at line ends, fixed flag columns, a disabled
# unexported snapshot. Overlong tokens are split at exactly 40 columns; `...824` ends a full
# line right before `mount-filesystem=` (a dropped separator at the full width).
W40_SNAPSHOT_DROPPED_SPACES = crlf(
    "Flags: X - DISABLED; B - BLOCK-DEVICE;",
    "M - MOUNTED; t - NVME-TCP-EXPORT",
    ' 2 X     type=file slot="snap-a1"',
    '         slot-default="" parent="" fs=- ',
    '         model="/storage-pool/snapshots/',
    '         snap-a1.img" size=1 073 741 824',
    "         mount-filesystem=yes",
    "         mount-read-only=no compress=no",
    "         sector-size=512",
    "         raid-master=none",
    "         nvme-tcp-export=no",
    "         nvme-tcp-server-port=4420",
    '         nvme-tcp-server-nqn="snap-a1" n',
    "         vme-tcp-server-allow-host-name=",
    '         "" iscsi-export=no',
    "         nfs-sharing=no smb-sharing=no",
    "         media-sharing=no",
    "         media-interface=none swap=no fi",
    "         le-path=storage-pool/snapshots/",
    "         snap-a1.img file-size=1024.0MiB",
    "         file-offset=0",
    "",
)

# Several items at 80 columns, one with a comment, separated by blank lines; the pool among them.
W80_THREE_ITEMS = crlf(
    *FLAGS_W80,
    " 0  BM   ;;; system pool",
    '         type=raid slot="storage-pool" slot-default="" parent="" fs=btrfs ',
    '         model="RAID5 4x NVMe" size=7 681 574 174 720 free=7 301 927 047 168 ',
    '         use=5% mount-point="storage-pool" mount-filesystem=yes ',
    "         mount-read-only=no compress=no sector-size=4096 raid-master=none ",
    "         nvme-tcp-export=no iscsi-export=no nfs-sharing=no smb-sharing=no ",
    "         media-sharing=no media-interface=none swap=no",
    "",
    ' 1  B  t type=file slot="pvc-a" slot-default="" parent="" fs=- ',
    '         model="storage-pool/k8s/pvc-a.img" size=5 368 709 120 ',
    "         mount-filesystem=yes mount-read-only=no compress=no sector-size=512 ",
    "         raid-master=none nvme-tcp-export=yes nvme-tcp-server-port=4420 ",
    '         nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-a" ',
    '         nvme-tcp-server-allow-host-name="" ',
    "         file-path=storage-pool/k8s/pvc-a.img file-size=5.0GiB file-offset=0",
    "",
    '10  B  t type=file slot="pvc-b" model="storage-pool/k8s/pvc-b.img" ',
    "         size=536 870 912 nvme-tcp-export=yes nvme-tcp-server-port=4420 ",
    '         nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-b" ',
    "         file-path=storage-pool/k8s/pvc-b.img file-size=512.0MiB file-offset=0",
    "",
)

EMPTY_DETAIL = crlf(*FLAGS_W80)

# Quoted strings with escapes (a foreign comment property and model).
TERSE_TWO = crlf(
    ' 0 B t type=file slot="pvc-a" model="a \\"quoted\\" \\\\ path\\_x" size=1 048 576 '
    'nvme-tcp-export=yes comment="caf\\C3\\A9"',
    ' 1   type=file slot="pvc-b" size=2048 nvme-tcp-export=no disabled=yes',
)

AS_VALUE_TWO_LINES = crlf(
    ".id=*1;type=file;slot=pvc-a;size=53687091200;nvme-tcp-export=true;"
    "nvme-tcp-server-port=4420;file-size=50.0GiB",
    '.id=*2;type=file;slot=pvc-b;size=1024;nvme-tcp-export=false;comment="x;y"',
)
AS_VALUE_ONE_LINE = (
    ".id=*1;slot=pvc-a;nvme-tcp-export=true;.id=*2;slot=pvc-b;nvme-tcp-export=false\r\n"
)

FILE_DETAIL = crlf(
    " 0   name=storage-pool/k8s type=directory last-modified=2025-11-11 14:30:00",
    "",
    " 1   name=storage-pool/k8s/pvc-x.img",
    "     type=.img file size=10.0GiB last-modified=2025-11-11 14:32:41",
    "",
)
FILE_EMPTY = ""

SYSTEM_RESOURCE = crlf(
    "                   uptime: 3d4h12m9s",
    "                  version: 7.24 (stable)",
    "               build-time: 2025-10-01 08:12:44",
    "              free-memory: 12.1GiB",
    "             total-memory: 15.5GiB",
    "                      cpu: ARM64",
    "                cpu-count: 16",
    "                 cpu-load: 3%",
    "        architecture-name: arm64",
    "               board-name: RDS2216",
    "                 platform: MikroTik",
)

SYSTEM_IDENTITY = crlf("  name: rds-lab-1", "")

MONITOR_TRAFFIC = crlf(
    "                    slot: pvc-a",
    "     read-ops-per-second: 120",
    "    write-ops-per-second: 35",
    "              read-rate: 3.2Mbps",
    "             write-rate: 12.8Mbps",
)

# (output, exit status, expected exception class name)
ERRORS = [
    ("failure: already have such entry\r\n", 1, "AlreadyExists"),
    ("failure: not enough space\r\n", 1, "NotEnoughSpace"),
    ("no such item\r\n", 1, "NoSuchItem"),
    ("syntax error (line 1 column 11)\r\n", 0, "RdsSyntaxError"),
    ("syntax error (line 1 column 11)\r\n", 1, "RdsSyntaxError"),
    ("expected end of command (line 1 column 42)\r\n", 0, "RdsSyntaxError"),
    ("bad command name dsik (line 1 column 2)\r\n", 0, "RdsSyntaxError"),
    ("input does not match any value of nvme-tcp-export\r\n", 0, "RdsSyntaxError"),
    ("invalid value for argument file-size\r\n", 0, "RdsSyntaxError"),
    ("failure: already have such entry\r\n", 0, "AlreadyExists"),
    ("failure: device busy\r\n", 1, "RdsCommandError"),
    ("something unexpected\r\n", 1, "RdsCommandError"),
    ("", 1, "RdsCommandError"),
]
