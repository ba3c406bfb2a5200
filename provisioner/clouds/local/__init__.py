"""The local cloud: qemu VMs that present disks like AWS or GCE, seeded with NoCloud."""
from .driver import LocalCloud
from .spec import PortForward, VmSpec, VolumeDisk, local_nvme_role

__all__ = ["LocalCloud", "PortForward", "VmSpec", "VolumeDisk", "local_nvme_role"]
