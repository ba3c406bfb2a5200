"""Write OCI image layouts: `oci-layout`, `index.json`, `blobs/sha256/*`.

Images can use OCI or Docker schema2 media types (a layout is only a container for blobs; umoci
reads OCI ones, skopeo copies both). Several images can share one layout under different tags, and
a multi-platform index can be written as one tagged entry.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .. import fsutil
from ..errors import ImageError
from .tarbuild import Entry, tar_bytes

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TYPES = {
    ("oci", None): "application/vnd.oci.image.layer.v1.tar",
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("docker", None): "application/vnd.docker.image.rootfs.diff.tar",
}
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Layer:
    """One layer: entries (or a ready tar) and how to compress it."""

    entries: tuple[Entry, ...] = ()
    tar: bytes | None = None
    compression: str | None = "gzip"  # gzip | zstd | None

    def raw(self) -> bytes:
        return self.tar if self.tar is not None else tar_bytes(list(self.entries))


def compress(raw: bytes, compression: str | None) -> bytes:
    if compression is None:
        return raw
    if compression == "gzip":
        return gzip.compress(raw, compresslevel=6, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(raw)
    raise ImageError(f"unknown layer compression {compression!r}")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class LayoutWriter:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.blobs = self.path / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        fsutil.atomic_write(self.path / "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}), mode=0o644)
        self.index_path = self.path / "index.json"
        if not self.index_path.exists():
            self._write_index({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})

    def _write_index(self, index: dict) -> None:
        fsutil.atomic_write(self.index_path, json.dumps(index, indent=2), mode=0o644)

    def blob(self, data: bytes, media_type: str, **extra) -> dict:
        digest = digest_of(data)
        path = self.blobs / digest.split(":", 1)[1]
        if not path.exists():
            fsutil.atomic_write(path, data, mode=0o644)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.split(":", 1)[1]

    def image(self, layers: list[Layer], config: dict | None = None, *, fmt: str = "oci",
              platform: tuple[str, str] = ("linux", "amd64"), variant: str | None = None) -> dict:
        """Write layer, config and manifest blobs; return the manifest's descriptor (with platform)."""
        if fmt not in ("oci", "docker"):
            raise ImageError(f"unknown image format {fmt!r} (oci or docker)")
        descriptors, diff_ids = [], []
        for layer in layers:
            raw = layer.raw()
            key = (fmt, layer.compression)
            if key not in LAYER_TYPES:
                raise ImageError(f"{fmt} images cannot have {layer.compression} layers")
            descriptors.append(self.blob(compress(raw, layer.compression), LAYER_TYPES[key]))
            diff_ids.append(digest_of(raw))
        os_, arch = platform
        cfg = {
            "created": "2024-01-01T00:00:00Z", "architecture": arch, "os": os_,
            "config": dict(config or {}),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "provisioner imagebuild"}
                        for _ in layers],
        }
        if variant:
            cfg["variant"] = variant
        config_desc = self.blob(json.dumps(cfg, indent=1).encode(), OCI_CONFIG if fmt == "oci" else DOCKER_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST,
                    "config": config_desc, "layers": descriptors}
        plat = {"architecture": arch, "os": os_, **({"variant": variant} if variant else {})}
        return self.blob(json.dumps(manifest, indent=1).encode(), manifest["mediaType"], platform=plat)

    def index(self, manifests: list[dict], *, fmt: str = "oci") -> dict:
        """A multi-platform index (OCI) / manifest list (Docker) over manifest descriptors."""
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX if fmt == "oci" else DOCKER_LIST, "manifests": manifests}
        return self.blob(json.dumps(body, indent=1).encode(), body["mediaType"])

    def tag(self, descriptor: dict, tag: str) -> None:
        """Point `tag` at a manifest or index in index.json (replacing an older entry of that tag)."""
        index = json.loads(self.index_path.read_text())
        entries = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != tag]
        desc = {k: v for k, v in descriptor.items() if k != "platform"}
        desc["annotations"] = {REF_NAME: tag}
        entries.append(desc)
        index["manifests"] = entries
        self._write_index(index)


    def retag(self, old: str, new: str) -> None:
        index = json.loads(self.index_path.read_text())
        for m in index["manifests"]:
            if m.get("annotations", {}).get(REF_NAME) == old:
                m["annotations"][REF_NAME] = new
        index["manifests"] = [m for i, m in enumerate(index["manifests"])
                              if m.get("annotations", {}).get(REF_NAME) != new
                              or i == max(j for j, n in enumerate(index["manifests"])
                                          if n.get("annotations", {}).get(REF_NAME) == new)]
        self._write_index(index)


def read_image(layout: Path, tag: str, platform: tuple[str, str] = ("linux", "amd64")) -> tuple[dict, dict, str]:
    """(manifest, config, manifest digest) for `tag`, descending into an index for `platform`."""
    layout = Path(layout)
    index = json.loads((layout / "index.json").read_text())
    for desc in index["manifests"]:
        if desc.get("annotations", {}).get(REF_NAME) == tag:
            break
    else:
        raise ImageError(f"tag {tag!r} not found in OCI layout {layout}")

    def blob(d: dict) -> dict:
        return json.loads((layout / "blobs" / "sha256" / d["digest"].split(":", 1)[1]).read_bytes())

    doc = blob(desc)
    while "manifests" in doc and "layers" not in doc:
        want = {"os": platform[0], "architecture": platform[1]}
        match = [m for m in doc["manifests"] if {k: m.get("platform", {}).get(k) for k in want} == want]
        if not match:
            raise ImageError(f"{layout}:{tag}: no manifest for platform {'/'.join(platform)}")
        desc = match[0]
        doc = blob(desc)
    return doc, blob(doc["config"]), desc["digest"]
