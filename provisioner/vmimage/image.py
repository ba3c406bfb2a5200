"""A base image the local cloud can boot: a built one (disk + kernel + initrd) or a user's disk image."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import hostos
from ..errors import ImageError
from ..runner import Runner
from .spec import ImageSpec, default_cache_dir

MANIFEST = "image.json"


@dataclass(frozen=True)
class VmImage:
    disk: Path
    format: str  # "raw" or "qcow2"
    kernel: Path | None = None  # set: direct kernel boot (no bootloader in the disk)
    initrd: Path | None = None
    append: str = ""
    key: str = ""

    @property
    def direct_boot(self) -> bool:
        return self.kernel is not None

    def to_json(self) -> dict:
        return {"disk": str(self.disk), "format": self.format, "kernel": str(self.kernel) if self.kernel else None,
                "initrd": str(self.initrd) if self.initrd else None, "append": self.append, "key": self.key}

    @classmethod
    def from_manifest(cls, directory: Path) -> "VmImage":
        path = directory / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ImageError(f"VM image {directory}: unreadable {MANIFEST}: {exc}") from exc
        img = cls(disk=directory / data["disk"], format=data["format"],
                  kernel=directory / data["kernel"] if data.get("kernel") else None,
                  initrd=directory / data["initrd"] if data.get("initrd") else None,
                  append=data.get("append", ""), key=data.get("key", ""))
        for p in (img.disk, img.kernel, img.initrd):
            if p is not None and not p.is_file():
                raise ImageError(f"VM image {directory}: {p.name} is missing (rebuild with `provision image build-vm`)")
        return img


def find_image(spec: ImageSpec | None = None, cache: Path | None = None) -> VmImage | None:
    """The cached build for `spec`, or None when it has not been built yet."""
    spec = spec or ImageSpec()
    directory = (cache or default_cache_dir()) / "images" / spec.key()
    if not (directory / MANIFEST).is_file():
        return None
    return VmImage.from_manifest(directory)


def _probe_format(path: Path, runner: Runner) -> str:
    res = runner.run(["qemu-img", "info", "--output=json", str(path)], check=False)
    if res.returncode != 0:
        raise ImageError(f"VM image {path}: qemu-img cannot read it: {res.stderr.strip().splitlines()[-1:] or ''}")
    try:
        fmt = json.loads(res.stdout)["format"]
    except (ValueError, KeyError) as exc:
        raise ImageError(f"VM image {path}: unexpected qemu-img output") from exc
    if fmt not in ("raw", "qcow2"):
        raise ImageError(f"VM image {path}: format {fmt} not supported (use raw or qcow2)")
    return fmt


def open_image(path: Path | None, runner: Runner, cache: Path | None = None,
               system: str = hostos.DEFAULT) -> VmImage:
    """Resolve what the user asked for into a bootable image, or say clearly why not.

    `path` may be a directory made by `build-vm` (has image.json), a disk image file (qcow2/raw
    with its own bootloader, e.g. Debian's genericcloud image), or None for the build of host OS `system`.
    """
    if path is None:
        spec = ImageSpec(os=system)
        img = find_image(spec, cache=cache)
        if img is None:
            where = (cache or default_cache_dir()) / "images" / spec.key()
            raise ImageError(f"VM image missing: no {system} base image at {where}; run `provision image build-vm "
                             f"--os {system}` first (or pass --image PATH to a cloud image)")
        return img
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise ImageError(f"VM image missing: {path} is a directory without {MANIFEST}")
        return VmImage.from_manifest(path)
    if not path.is_file():
        raise ImageError(f"VM image missing: {path} does not exist")
    return VmImage(disk=path.resolve(), format=_probe_format(path, runner))
