"""provisioner: launch VMs on AWS, GCE or local qemu, prepare their disks, run containers."""

__version__ = "0.1.0"
