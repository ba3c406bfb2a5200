"""NVMe identify data, for the names clouds keep in vendor-specific areas.

- AWS EBS on Nitro: the block-device-mapping name ("sdf" or "/dev/sdf") is in the controller's
  vendor-specific area, bytes 3072–3103 of Identify Controller (amazon-ec2-utils `ebsnvme`).
- GCE NVMe persistent disk: a JSON blob with "device_name" starts at byte 384 of Identify
  Namespace (Google's `google_nvme_id`).

Read with the NVME_IOCTL_ADMIN_CMD ioctl on the namespace's block device (what nvme-cli does),
so no nvme-cli is needed. This is a read-only admin command, not an external program, so it
does not go through the Runner; every failure just means "name unknown".
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import struct

log = logging.getLogger(__name__)

# _IOWR('N', 0x41, struct nvme_admin_cmd) — linux/nvme_ioctl.h
NVME_IOCTL_ADMIN_CMD = 0xC0484E41
_ADMIN_CMD = struct.Struct("<BBHIIIQQII6III")   # 72 bytes: struct nvme_passthru_cmd
_OPC_IDENTIFY = 0x06
_CNS_NAMESPACE, _CNS_CONTROLLER = 0x00, 0x01
IDENTIFY_SIZE = 4096
EBS_VS_OFFSET, EBS_BDEV_LEN = 3072, 32
GCE_NS_JSON_OFFSET = 384


def identify(node: str, cns: int, nsid: int = 0) -> bytes | None:
    buf = ctypes.create_string_buffer(IDENTIFY_SIZE)
    cmd = bytearray(_ADMIN_CMD.pack(_OPC_IDENTIFY, 0, 0, nsid, 0, 0, 0, ctypes.addressof(buf),
                                    0, IDENTIFY_SIZE, cns, 0, 0, 0, 0, 0, 0, 0))
    try:
        fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        log.debug("nvme identify: cannot open %s: %s", node, exc)
        return None
    try:
        fcntl.ioctl(fd, NVME_IOCTL_ADMIN_CMD, cmd)
    except OSError as exc:
        log.debug("nvme identify cns=%d on %s failed: %s", cns, node, exc)
        return None
    finally:
        os.close(fd)
    return buf.raw


def ebs_device_name(controller: bytes | None) -> str | None:
    """'sdf' from Identify Controller data of an EBS volume (None when absent)."""
    if not controller or len(controller) < EBS_VS_OFFSET + EBS_BDEV_LEN:
        return None
    raw = controller[EBS_VS_OFFSET:EBS_VS_OFFSET + EBS_BDEV_LEN]
    name = raw.split(b"\x00", 1)[0].decode("ascii", "replace").strip()
    if name.startswith("/dev/"):
        name = name[5:]
    return name or None


def gce_device_name(namespace: bytes | None) -> str | None:
    """'data-1' from the JSON blob in Identify Namespace data of a GCE NVMe disk."""
    if not namespace or len(namespace) <= GCE_NS_JSON_OFFSET:
        return None
    blob = namespace[GCE_NS_JSON_OFFSET:].split(b"\x00", 1)[0].strip()
    if not blob:
        return None
    try:
        data = json.loads(blob.decode("utf-8", "replace"))
    except ValueError:
        return None
    name = data.get("device_name") if isinstance(data, dict) else None
    return str(name) if name else None
