"""`provision image build-vm`: mmdebstrap a Debian cloud VM image that qemu boots directly.

Steps (each a frozen action, planned first, applied through the Runner):
  1. mmdebstrap the package list into a directory (root mode: we are root on the build machine);
  2. customise the tree: fstab, NoCloud-only datasource, a DHCP fallback, no baked-in host keys or
     machine-id (every VM must get its own), networkd enabled;
  3. copy the kernel and initrd out, for qemu's direct kernel boot (no bootloader needed);
  4. `mkfs.ext4 -d` the tree into a sparse raw disk (no partition table: root=/dev/vda);
  5. write image.json and move the finished directory into the cache in one rename, so a
     half-built image is never found by `find_image`.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ImageError
from ..fsutil import atomic_write
from ..remote.bundle import HostPython, dependency_wheels
from ..remote.deliver import AGENT_HOME, REMOTE_VENV, REMOTE_WHEELS
from ..runner import Runner
from .image import MANIFEST, VmImage
from .spec import ImageSpec, default_cache_dir

ROOT_LABEL = "vmroot"
KERNEL_APPEND = "root=/dev/vda rw console=ttyS0,115200 net.ifnames=1"

FILES = {
    "etc/fstab": "/dev/vda / ext4 defaults,discard,errors=remount-ro 0 1\n",
    # Only NoCloud: probing EC2/GCE metadata addresses from a local VM would just time out.
    "etc/cloud/cloud.cfg.d/90-provisioner.cfg": (
        "datasource_list: [ NoCloud, None ]\n"
        "datasource:\n  NoCloud:\n    fs_label: cidata\n"
    ),
    # Used only when the seed carries no network-config: DHCP on the first NIC.
    "etc/systemd/network/90-provisioner-dhcp.network": "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n",
    "etc/hostname": "localhost\n",
    # cloud-init prints the host key fingerprints only in its last stage (keys_to_console in
    # modules:final), tens of seconds after sshd is up on an emulated CPU. This prints the same
    # block, in cloud-init's format, as soon as cloud-init's init stage has made the keys; the
    # operator side reads either (the last complete block wins).
    "etc/systemd/system/provisioner-hostkeys.service": (
        "[Unit]\nDescription=Print SSH host key fingerprints on the console\n"
        "After=cloud-init.service\nConditionPathExistsGlob=/etc/ssh/ssh_host_*_key.pub\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/local/sbin/provisioner-hostkeys\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    ),
    "usr/local/sbin/provisioner-hostkeys": (
        "#!/bin/sh\n"
        "{\n"
        "  echo '-----BEGIN SSH HOST KEY FINGERPRINTS-----'\n"
        "  for f in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -l -f \"$f\"; done\n"
        "  echo '-----END SSH HOST KEY FINGERPRINTS-----'\n"
        "} > /dev/console 2>&1\n"
    ),
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
}


E2SCRUB_UNITS = ("e2scrub_reap.service", "e2scrub_all.timer", "e2scrub_all.service")


@dataclass(frozen=True)
class Debootstrap:
    spec: ImageSpec
    target: Path
    agent_wheels: Path | None = None   # wheels of the agent's dependencies, baked into REMOTE_VENV

    def argv(self) -> list[str]:
        hooks = []
        if self.agent_wheels is not None:
            # mmdebstrap runs customize hooks with /proc, /sys and /dev mounted in the chroot. The
            # wheels land where agent delivery keeps them: root's alone (0700), as delivery makes it.
            stage, venv = REMOTE_WHEELS, REMOTE_VENV
            script = (f"install -d -m 0700 {AGENT_HOME} {stage} && "
                      f"mv /var/tmp/{self.agent_wheels.name}/*.whl {stage}/ && "
                      f"rm -rf /var/tmp/{self.agent_wheels.name} && "
                      f"chmod 0600 {stage}/* && python3 -m venv --without-pip {venv} && "
                      f"python3 -m pip --python {venv}/bin/python install -q --disable-pip-version-check "
                      f"--no-index --find-links {stage} {stage}/*.whl && "   # byte code made here, once
                      # which wheels the venv holds: agent delivery then installs only its own wheel
                      f"(cd {stage} && ls -1 *.whl | LC_ALL=C sort > {venv}.deps)")
            hooks = [f"--customize-hook=copy-in {self.agent_wheels} /var/tmp",
                     f"--customize-hook=chroot \"$1\" sh -c {shlex.quote(script)}"]
        return ["mmdebstrap", "--mode=root", f"--variant={self.spec.variant}", "--quiet",
                "--include=" + ",".join(self.spec.all_packages()),
                "--aptopt=APT::Install-Recommends \"false\"", *hooks,
                self.spec.suite, str(self.target), f"deb {self.spec.mirror} {self.spec.suite} main"]


@dataclass(frozen=True)
class Customise:
    tree: Path


@dataclass(frozen=True)
class ExtractBoot:
    tree: Path
    dest: Path


@dataclass(frozen=True)
class MakeFilesystem:
    tree: Path
    disk: Path
    size_mb: int  # 0: from the tree


@dataclass(frozen=True)
class Publish:
    staging: Path
    final: Path
    key: str


def plan(spec: ImageSpec, cache: Path, staging: Path, agent_wheels: Path | None = None) -> list:
    tree = staging / "rootfs"
    return [Debootstrap(spec, tree, agent_wheels if spec.agent else None), Customise(tree), ExtractBoot(tree, staging),
            MakeFilesystem(tree, staging / "disk.raw", spec.size_mb),
            Publish(staging, cache / "images" / spec.key(), spec.key())]


def _tree_mb(tree: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total // (1 << 20)


def _customise(tree: Path, runner: Runner) -> None:
    for rel, text in FILES.items():
        atomic_write(tree / rel, text, mode=0o644)
    # Every VM must generate its own host keys and machine id on first boot.
    for key in (tree / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    atomic_write(tree / "etc/machine-id", "", mode=0o444)
    dbus_id = tree / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    os.chmod(tree / "usr/local/sbin/provisioner-hostkeys", 0o755)
    runner.run(["systemctl", f"--root={tree}", "enable", "systemd-networkd.service", "provisioner-hostkeys.service"])
    # e2fsprogs' LVM-snapshot scrubbers: no LVM here, and the boot-time one costs ~30 s of an
    # emulated CPU while the deploy is installing the agent
    runner.run(["systemctl", f"--root={tree}", "mask", *E2SCRUB_UNITS])
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (tree / leftover).glob("*"):
            if p.is_file():
                p.unlink()


def _extract_boot(tree: Path, dest: Path) -> tuple[str, str]:
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise ImageError(f"VM image build: no kernel/initrd under {tree}/boot (is a linux-image package included?)")
    shutil.copy2(kernels[-1], dest / "vmlinuz")
    shutil.copy2(initrds[-1], dest / "initrd.img")
    return kernels[-1].name, initrds[-1].name


def apply(actions: list, runner: Runner, progress: Callable[[str], None]) -> VmImage:
    result: VmImage | None = None
    for action in actions:
        start = time.monotonic()
        if isinstance(action, Debootstrap):
            progress(f"vm image: mmdebstrap {action.spec.suite} with {len(action.spec.all_packages())} packages"
                     " (downloads from the mirror; a few minutes)…")
            runner.run(action.argv(), timeout=3600)
        elif isinstance(action, Customise):
            progress("vm image: customising (fstab, NoCloud datasource, networkd, no baked-in host keys)…")
            _customise(action.tree, runner)
        elif isinstance(action, ExtractBoot):
            kernel, _ = _extract_boot(action.tree, action.dest)
            progress(f"vm image: kernel {kernel} extracted for direct boot")
        elif isinstance(action, MakeFilesystem):
            size = action.size_mb or (_tree_mb(action.tree) * 3 // 2 + 1024)
            progress(f"vm image: mkfs.ext4 -d into a {size} MiB sparse disk…")
            with open(action.disk, "wb") as f:
                f.truncate(size << 20)
            runner.run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(action.tree), str(action.disk)],
                       timeout=1800)
            shutil.rmtree(action.tree)
        elif isinstance(action, Publish):
            manifest = {"disk": "disk.raw", "format": "raw", "kernel": "vmlinuz", "initrd": "initrd.img",
                        "append": KERNEL_APPEND, "key": action.key, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                              time.gmtime())}
            atomic_write(action.staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
            action.final.parent.mkdir(parents=True, exist_ok=True)
            if action.final.exists():
                shutil.rmtree(action.final)
            os.rename(action.staging, action.final)
            result = VmImage.from_manifest(action.final)
        progress(f"vm image:   done in {time.monotonic() - start:.1f}s")
    assert result is not None
    return result


def build(spec: ImageSpec | None = None, *, runner: Runner, cache: Path | None = None, force: bool = False,
          progress: Callable[[str], None] = lambda _m: None) -> tuple[VmImage, bool]:
    """Build (or reuse) the image for `spec`. Returns (image, built_now)."""
    from .image import find_image

    spec = spec or ImageSpec()
    cache = cache or default_cache_dir()
    if not force:
        existing = find_image(spec, cache)
        if existing is not None:
            progress(f"vm image: cached at {existing.disk.parent}")
            return existing, False
    if os.geteuid() != 0:
        raise ImageError("VM image build needs root (mmdebstrap --mode=root and a root-owned tree)")
    (cache / "images").mkdir(parents=True, exist_ok=True)
    wheels = None
    if spec.agent:   # the agent's dependencies, for the image's own Python
        system = spec.system
        wheels = dependency_wheels(runner, HostPython(system.python, system.glibc), progress=progress)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=cache / "images"))
    try:
        img = apply(plan(spec, cache, staging, wheels), runner, progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return img, True
