"""Load an image from an OCI layout straight into the store (no registry): tests and benchmarks."""
from __future__ import annotations

from pathlib import Path

from ..images.store import ImageRecord, Store
from .layout import read_image


def load_layout(store: Store, layout: Path, tag: str, names: list[str] | None = None,
                platform: tuple[str, str] = ("linux", "amd64")) -> ImageRecord:
    manifest, config, manifest_digest = read_image(layout, tag, platform)
    blobs = Path(layout) / "blobs" / "sha256"
    parent = None
    with store.lock():
        for desc, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
            with open(blobs / desc["digest"].split(":", 1)[1], "rb") as f:
                parent = store.add_layer(parent, diff_id, f, desc["mediaType"])
        manifest_bytes = (blobs / manifest_digest.split(":", 1)[1]).read_bytes()
        config_bytes = (blobs / manifest["config"]["digest"].split(":", 1)[1]).read_bytes()
        return store.put_image(names or [f"layout/{Path(layout).name}:{tag}"], manifest_digest,
                               manifest_bytes, config_bytes)
