"""The qemu command line for one local VM (pure), and the accelerator choice.

KVM when /dev/kvm works, TCG otherwise. Some nested setups expose a /dev/kvm that opens and
answers KVM_GET_API_VERSION, yet guests never get past the kernel's first lines; the driver
detects that by watching the console (`KVM_FIRST_OUTPUT_S`) and falls back to TCG, remembering the
verdict in `<root>/local/accel.json` so later launches do not pay the probe again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...vmimage import VmImage
from .seed import mac_for
from .spec import DiskPlan, PortForward, VmSpec

QEMU = "qemu-system-x86_64"
# Under KVM the kernel's first console lines appear within a second or two; no output by then
# means the accelerator is not really working.
KVM_FIRST_OUTPUT_S = 20.0


@dataclass(frozen=True)
class QemuFiles:
    overlay: Path
    seed: Path
    console: Path
    pidfile: Path
    state_dir: Path


def netdev(ssh_port: int, ports: tuple[PortForward, ...]) -> str:
    """User-mode networking; every forward binds 127.0.0.1 only, never another address."""
    fwd = [f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22"]
    fwd += [f"hostfwd={p.proto}:127.0.0.1:{p.host_port}-:{p.guest_port}" for p in ports]
    return ",".join(["user", "id=net0", *fwd])


def disk_args(disks: list[DiskPlan], state_dir: Path) -> list[str]:
    args: list[str] = []
    if any(d.bus == "scsi" for d in disks):
        args += ["-device", "virtio-scsi-pci,id=scsi0"]
    for i, d in enumerate(disks):
        drive = f"disk{i}"
        args += ["-drive", f"if=none,id={drive},file={state_dir / d.file},format=qcow2,discard=unmap"]
        if d.bus == "nvme":
            # One controller per disk, as on Nitro. The model reads "QEMU NVMe Ctrl" for all of
            # them; the serial says EBS ("vol…") or instance store ("AWS…"): see spec.py.
            args += ["-device", f"nvme,serial={d.serial},drive={drive}"]
        else:
            args += ["-device", f"scsi-hd,bus=scsi0.0,drive={drive},vendor={d.vendor},product={d.product},"
                                f"serial={d.serial}"]
    return args


def argv(spec: VmSpec, image: VmImage, files: QemuFiles, disks: list[DiskPlan], ssh_port: int,
         accel: str) -> list[str]:
    cpu = "max" if accel == "tcg" else "qemu64"  # "host" trips on MSRs some nested hosts refuse
    args = [
        QEMU, "-name", f"provision-{spec.stack}-{spec.host}",
        "-machine", "q35", "-accel", accel, "-cpu", cpu, "-smp", str(spec.cpus), "-m", str(spec.memory_mb),
        "-nodefaults", "-display", "none", "-daemonize", "-pidfile", str(files.pidfile),
        "-serial", f"file:{files.console}",
        "-drive", f"file={files.overlay},if=virtio,format=qcow2,discard=unmap",
        "-drive", f"file={files.seed},if=virtio,format=raw,readonly=on",
        "-netdev", netdev(ssh_port, spec.ports),
        "-device", f"virtio-net-pci,netdev=net0,mac={mac_for(spec.stack, spec.host)}",
        "-device", "virtio-rng-pci",
    ]
    if image.direct_boot:
        args += ["-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", image.append]
    return args + disk_args(disks, files.state_dir)
