"""VM image build: the plan, the cache key, and resolving what the user asked to boot."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.errors import ImageError
from provisioner.testing import FakeRunner
from provisioner.vmimage import ImageSpec, find_image, open_image
from provisioner.vmimage import build as _  # noqa: F401  (import check)
from provisioner.vmimage.build import Debootstrap, ExtractBoot, MakeFilesystem, Publish, apply, plan
from provisioner.vmimage.image import MANIFEST


def test_cache_key_follows_the_package_list():
    a, b = ImageSpec(), ImageSpec(extra_packages=("htop",))
    assert a.key() == ImageSpec().key() and a.key() != b.key()
    assert ImageSpec(extra_packages=("btrfs-progs",)).key() == a.key()  # already included: same image
    assert a.key().startswith("bookworm-")


def test_plan_installs_what_the_agent_needs():
    actions = plan(ImageSpec(), Path("/c"), Path("/c/images/.build-x"))
    assert [type(a) for a in actions][0] is Debootstrap and type(actions[-1]) is Publish
    argv = actions[0].argv()
    assert argv[:2] == ["mmdebstrap", "--mode=root"]
    include = next(a for a in argv if a.startswith("--include=")).split("=", 1)[1].split(",")
    for pkg in ("linux-image-cloud-amd64", "systemd", "udev", "cloud-init", "openssh-server", "btrfs-progs",
                "python3", "python3-venv", "python3-pip", "nvme-cli", "iproute2", "nftables", "sudo",
                "ca-certificates"):
        assert pkg in include
    assert actions[-1].final == Path("/c/images") / ImageSpec().key()


def _fake_tree(tree: Path) -> None:
    (tree / "boot").mkdir(parents=True)
    (tree / "boot" / "vmlinuz-6.1.0-1-cloud-amd64").write_bytes(b"k")
    (tree / "boot" / "initrd.img-6.1.0-1-cloud-amd64").write_bytes(b"i")
    (tree / "etc" / "ssh").mkdir(parents=True)
    (tree / "etc" / "ssh" / "ssh_host_ed25519_key").write_text("secret")
    (tree / "etc" / "machine-id").write_text("abc\n")


def test_apply_customises_extracts_and_publishes(tmp_path):
    staging = tmp_path / "images" / ".build-1"
    staging.mkdir(parents=True)

    def debootstrap(argv):
        _fake_tree(Path(argv[-2]))
        from provisioner.runner import Result
        return Result(argv, 0, "", "")

    def mkfs(argv):
        assert Path(argv[-1]).stat().st_size >= 1 << 30  # sparse disk sized with headroom
        from provisioner.runner import Result
        return Result(argv, 0, "", "")

    fake = (FakeRunner().expect(["mmdebstrap"], prefix=True, handler=debootstrap)
            .expect(["systemctl"], prefix=True).expect(["mkfs.ext4"], prefix=True, handler=mkfs))
    seen = []
    tree = staging / "rootfs"
    actions = plan(ImageSpec(), tmp_path, staging)
    # check the customised tree before mkfs removes it
    orig = MakeFilesystem
    img = apply(actions, fake, seen.append)
    assert orig is MakeFilesystem
    assert img.kernel.read_bytes() == b"k" and img.initrd.read_bytes() == b"i"
    assert img.append.startswith("root=/dev/vda") and "console=ttyS0" in img.append
    assert find_image(ImageSpec(), tmp_path) == img
    assert not staging.exists() and not tree.exists()
    assert any("mmdebstrap" in m for m in seen)
    assert fake.commands("systemctl")[0][-3:] == ("enable", "systemd-networkd.service",
                                                  "provisioner-hostkeys.service")
    assert fake.commands("systemctl")[1][-4:] == ("mask", "e2scrub_reap.service", "e2scrub_all.timer",
                                                  "e2scrub_all.service")


def test_customise_removes_host_keys_and_machine_id(tmp_path):
    from provisioner.vmimage.build import _customise

    _fake_tree(tmp_path)
    _customise(tmp_path, FakeRunner().expect(["systemctl"], prefix=True))
    assert not list((tmp_path / "etc" / "ssh").glob("ssh_host_*"))
    assert (tmp_path / "etc" / "machine-id").read_text() == ""
    assert "NoCloud" in (tmp_path / "etc/cloud/cloud.cfg.d/90-provisioner.cfg").read_text()
    assert (tmp_path / "etc/fstab").read_text().startswith("/dev/vda / ext4")


def test_open_image_errors(tmp_path):
    fake = FakeRunner()
    with pytest.raises(ImageError, match="VM image missing: .*run `provision image build-vm --os debian-12`"):
        open_image(None, fake, cache=tmp_path)
    with pytest.raises(ImageError, match="nothing.qcow2 does not exist"):
        open_image(tmp_path / "nothing.qcow2", fake)
    (tmp_path / "d").mkdir()
    with pytest.raises(ImageError, match="directory without image.json"):
        open_image(tmp_path / "d", fake)
    (tmp_path / "d" / MANIFEST).write_text(json.dumps({"disk": "disk.raw", "format": "raw", "kernel": "vmlinuz",
                                                         "initrd": "initrd.img"}))
    with pytest.raises(ImageError, match="disk.raw is missing"):
        open_image(tmp_path / "d", fake)


def test_open_user_cloud_image_probes_format(tmp_path):
    disk = tmp_path / "debian-12-genericcloud-amd64.qcow2"
    disk.write_bytes(b"QFI\xfb")
    fake = FakeRunner().expect(["qemu-img", "info", "--output=json", str(disk)], stdout='{"format": "qcow2"}')
    img = open_image(disk, fake)
    assert img.format == "qcow2" and not img.direct_boot
    fake = FakeRunner().expect(["qemu-img", "info"], prefix=True, stdout='{"format": "vmdk"}')
    with pytest.raises(ImageError, match="format vmdk not supported"):
        open_image(disk, fake)
