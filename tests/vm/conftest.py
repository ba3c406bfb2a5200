"""VM tier fixtures: the base image (built once per machine, cached), an operator key, a local cloud.

Skips with a clear reason when qemu, mmdebstrap or the image build are not available.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from provisioner.clouds.local import LocalCloud
from provisioner.errors import ProvisionerError
from provisioner.remote.ssh import ensure_keypair
from provisioner.runner import Runner
from provisioner.vmimage import default_cache_dir
from provisioner.vmimage.build import build


def _progress(msg: str) -> None:
    print(msg, flush=True)


@pytest.fixture(scope="session")
def vm_image():
    for tool in ("qemu-system-x86_64", "qemu-img", "genisoimage", "mmdebstrap", "mkfs.ext4", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"vm tier: {tool} not installed (scripts/install.sh installs it)")
    try:
        image, _built = build(runner=Runner(), cache=default_cache_dir(), progress=_progress)
    except ProvisionerError as exc:
        pytest.skip(f"vm tier: the base VM image cannot be built here: {exc}")
    return image


@pytest.fixture(scope="session")
def vm_root(tmp_path_factory) -> Path:
    # One root for the session, so the KVM-or-TCG verdict (<root>/local/accel.json) is probed once.
    return tmp_path_factory.mktemp("vmroot")


@pytest.fixture(scope="session")
def operator_key(vm_root) -> Path:
    return ensure_keypair(vm_root / "keys" / "id_ed25519", Runner())


@pytest.fixture(scope="session")
def cloud(vm_root, vm_image) -> LocalCloud:
    return LocalCloud(vm_root, Runner(), image=vm_image, progress=_progress)


def public_key(key: Path) -> str:
    return Path(str(key) + ".pub").read_text()
