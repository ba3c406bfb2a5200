"""Load an image from an OCI layout into the store, when some layer blobs are not in the layout.

The receiving half of `provision image push` (host/imagepush.py), usable on its own:

- `layer_states(store, diff_ids)`: which layer chains of an image the store already holds; the
  sender asks this first and then ships only the blobs of the missing ones.
- `read_layout(dir)`: the manifest and config an OCI layout's index.json points at (one tagged
  entry, or an index descended for a platform), every digest and size verified.
- `load(store, dir, names)`: applies the layers whose chain is missing (their blobs must be in
  the layout; a missing one is one ImageError naming its digest, found before the store is
  touched), checks every layer blob's digest as it streams, and records the image under `names`.
  A failure leaves the store as it was: chains this load added are discarded again.

A layout arriving as a tar stream (`docker save | ssh … load`) is imagereceive's.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import ImageError
from . import reference as _reference
from .registry import INDEX_TYPES, LAYER_TYPES, Platform, host_platform
from .store import ImageRecord, Store, check_digest
from .transport import ReadStream

REF_NAME = "org.opencontainers.image.ref.name"
INCOMING = "incoming"
MAX_JSON = 16 << 20
CHUNK = 1 << 20
_BLOB_NAME = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")


# ---- which layers the store lacks --------------------------------------------------------------
@dataclass(frozen=True)
class LayerState:
    index: int
    diff_id: str
    chain_id: str
    present: bool

    def to_json(self) -> dict:
        return {"index": self.index, "diff_id": self.diff_id, "chain_id": self.chain_id, "present": self.present}


def diff_ids_of(doc: object, where: str = "image config") -> list[str]:
    """The diff_ids of an image config (`rootfs.diff_ids`), or of a bare JSON list of them."""
    ids = doc.get("rootfs", {}).get("diff_ids") if isinstance(doc, dict) and isinstance(doc.get("rootfs"), dict) \
        else doc
    if not isinstance(ids, list):
        raise ImageError(f"{where}: no rootfs.diff_ids list (expected an image config or a JSON list of diff_ids)")
    for d in ids:
        check_digest(d, f"diff_id in {where}")
    return list(ids)


def layer_states(store, diff_ids: list[str]) -> list[LayerState]:
    """Each layer's chain id and whether the store holds it. A layer whose chain is present needs
    no blob: the store builds chains on their parents, so everything below it is present too."""
    out, parent = [], None
    for i, diff_id in enumerate(diff_ids):
        parent = store.chain_id(parent, diff_id)
        out.append(LayerState(i, diff_id, parent, store.has_chain(parent)))
    return out


def layers_answer(store, diff_ids: list[str], name: str | None = None, missing_only: bool = False) -> dict:
    """What `provision image layers` prints for one image: its layers' states, the missing indices,
    and the image the store holds under `name` (a normalised reference), if any."""
    states = layer_states(store, diff_ids)
    image = None
    if name:
        try:
            rec = store.get_image(name)
            image = {"name": name, "id": rec.id, "manifest_digest": rec.manifest_digest}
        except ImageError:
            pass
    return {"layers": [s.to_json() for s in states if not (missing_only and s.present)],
            "missing": [s.index for s in states if not s.present], "image": image}


def answer_query(store, doc: object, name: str | None = None, missing_only: bool = False) -> dict:
    """`layers_answer` for an image config / diff_id list, or for each entry of
    {"images": [{"name": REF, "diff_ids": [...] or "config": {...}}, ...]} (then {"images": [answers]})."""
    if not (isinstance(doc, dict) and "images" in doc):
        return layers_answer(store, diff_ids_of(doc, "image config on stdin"), name, missing_only)
    entries = doc["images"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ImageError("image query on stdin: 'images' must be a list of {name, diff_ids} objects")
    out = []
    for i, entry in enumerate(entries):
        where = f"image query on stdin, entry {i}"
        if not isinstance(entry.get("name"), str):
            raise ImageError(f"{where}: no name")
        ref = str(_reference.parse(entry["name"]))
        ids = diff_ids_of(entry["diff_ids"] if "diff_ids" in entry else entry.get("config"), where)
        out.append({"name": ref, **layers_answer(store, ids, ref, missing_only)})
    return {"images": out}


# ---- reading a layout ----------------------------------------------------------------------------
@dataclass
class LayoutImage:
    manifest_digest: str
    manifest: bytes
    config: bytes
    layers: list[dict]
    diff_ids: list[str]
    tag: str | None = None


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / check_digest(digest).split(":", 1)[1]


def _descriptor(d: object, where: str) -> dict:
    if not isinstance(d, dict) or not isinstance(d.get("digest"), str) or not isinstance(d.get("size"), int):
        raise ImageError(f"{where}: not a descriptor with a digest and a size")
    check_digest(d["digest"], f"digest in {where}")
    return d


def _read_blob(layout: Path, desc: dict, what: str) -> bytes:
    path = _blob_path(layout, desc["digest"])
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON + 1)
    except FileNotFoundError:
        raise ImageError(f"{layout}: {what} blob {desc['digest']} is missing from the layout") from None
    if len(data) > MAX_JSON:
        raise ImageError(f"{layout}: {what} blob {desc['digest']} is larger than {MAX_JSON} bytes; refused")
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != desc["digest"] or len(data) != desc["size"]:
        raise ImageError(f"{layout}: {what} blob {desc['digest']} failed verification "
                         f"(content is {got}, {len(data)} bytes; descriptor says {desc['size']})")
    return data


def _json(data: bytes, where: str) -> dict:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ImageError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ImageError(f"{where}: not a JSON object")
    return doc


def read_layout(layout: Path, tag: str | None = None, platform: Platform | None = None) -> LayoutImage:
    """The image `tag` names in the layout (the only entry when `tag` is None), verified."""
    layout = Path(layout)
    entries, tags = _index(layout)
    if tag is None:
        if len(entries) != 1:
            raise ImageError(f"{layout} holds {len(entries)} images ({', '.join(tags)}): "
                             "name one with --tag")
        desc = _descriptor(entries[0], f"{layout}/index.json entry 0")
    else:
        if tag not in tags:
            raise ImageError(f"tag {tag!r} not found in OCI layout {layout} "
                             f"(tags: {', '.join(t for t in tags if t) or 'none'})")
        desc = _descriptor(entries[tags.index(tag)], f"{layout}/index.json tag {tag}")
    doc = _json(_read_blob(layout, desc, "manifest"), f"{layout}: manifest {desc['digest']}")
    if doc.get("mediaType") in INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
        want = platform or host_platform()
        subs = [_descriptor(m, f"{layout}: index {desc['digest']}") for m in doc.get("manifests") or []]
        match = [m for m in subs if want.matches(m.get("platform") or {})]
        if not match:
            raise ImageError(f"{layout}: no manifest for platform {want} in index {desc['digest']}")
        desc = match[0]
        doc = _json(_read_blob(layout, desc, "manifest"), f"{layout}: manifest {desc['digest']}")
    where = f"{layout}: manifest {desc['digest']}"
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ImageError(f"{where}: no layers list")
    layers = [_descriptor(d, f"{where} layer {i}") for i, d in enumerate(layers)]
    for i, d in enumerate(layers):
        if d.get("mediaType") not in LAYER_TYPES:
            raise ImageError(f"{where}: layer {i} has unsupported media type {d.get('mediaType')!r}")
    config = _read_blob(layout, _descriptor(doc.get("config"), f"{where} config"), "config")
    diff_ids = diff_ids_of(_json(config, f"{layout}: image config"), f"{layout}: image config")
    if len(diff_ids) != len(layers):
        raise ImageError(f"{layout}: image config lists {len(diff_ids)} diff_ids for {len(layers)} layers")
    manifest = _blob_path(layout, desc["digest"]).read_bytes()
    return LayoutImage(desc["digest"], manifest, config, layers, diff_ids, tag)


def _index(layout: Path) -> tuple[list, list[str]]:
    """index.json's entries and their ref.name annotations ("" when untagged)."""
    if not (layout / "oci-layout").is_file():
        raise ImageError(f"{layout}: not an OCI image layout (no oci-layout file)")
    try:
        index = _json((layout / "index.json").read_bytes(), f"{layout}/index.json")
    except FileNotFoundError:
        raise ImageError(f"{layout}: not an OCI image layout (no index.json)") from None
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"{layout}/index.json: no manifests")
    return entries, [str((e.get("annotations") or {}).get(REF_NAME) or "") if isinstance(e, dict) else ""
                     for e in entries]


# ---- loading -------------------------------------------------------------------------------------
class VerifiedFile(ReadStream):
    """Reads a blob file, checking its size and sha256 at EOF (an ImageError instead of the final b"")."""

    def __init__(self, f: BinaryIO, desc: dict, where: str):
        self.f, self.desc, self.where = f, desc, where
        self.h = hashlib.sha256()
        self.n = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n if n is not None and n >= 0 else -1)
        if data:
            self.h.update(data)
            self.n += len(data)
            return data
        got = "sha256:" + self.h.hexdigest()
        if got != self.desc["digest"] or self.n != self.desc["size"]:
            raise ImageError(f"{self.where}: layer blob {self.desc['digest']} failed verification "
                             f"(content is {got}, {self.n} bytes; descriptor says {self.desc['size']})")
        return b""

    def blame(self, err: BaseException) -> None:
        """A corrupt blob usually breaks decompression before EOF: read on, and raise the digest
        mismatch (the real cause) instead of a CRC error when there is one."""
        try:
            while self.read(CHUNK):
                pass
        except ImageError as mismatch:
            raise mismatch from err


@dataclass
class LoadResult:
    names: list[str]
    image_id: str
    manifest_digest: str
    layers: int
    applied: list[int] = field(default_factory=list)
    present: list[int] = field(default_factory=list)
    seconds: float = 0.0
    record: ImageRecord | None = None
    chain_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"names": self.names, "id": self.image_id, "manifest_digest": self.manifest_digest,
                "layers": self.layers, "applied": self.applied, "present": self.present,
                "seconds": round(self.seconds, 3)}


def load(store: Store, layout: Path, names: list[str], *, tag: str | None = None,
         platform: Platform | None = None) -> LoadResult:
    """Load the layout's image into `store` under `names`; blobs of layers whose chain is stored
    may be absent. All or nothing: on failure the chains this load added are discarded."""
    start = time.monotonic()
    layout = Path(layout)
    img = read_layout(layout, tag, platform)
    with store.lock():
        store.recover()
        states = layer_states(store, img.diff_ids)
        for s in states:  # every needed blob is there before the store is touched
            if not s.present and not _blob_path(layout, img.layers[s.index]["digest"]).is_file():
                raise ImageError(f"{layout}: layer {s.index} blob {img.layers[s.index]['digest']} is missing from "
                                 f"the layout and its chain {s.chain_id} is not in the store")
        added: list[str] = []
        try:
            parent = None
            for s in states:
                if not (s.present and store.has_chain(s.chain_id)):
                    desc = img.layers[s.index]
                    with open(_blob_path(layout, desc["digest"]), "rb") as f:
                        stream = VerifiedFile(f, desc, str(layout))
                        try:
                            got = store.add_layer(parent, s.diff_id, stream, desc["mediaType"])
                        except ImageError as err:
                            stream.blame(err)
                            raise
                    if got != s.chain_id:
                        raise ImageError(f"{layout}: store produced chain {got} for layer {s.index}, "
                                         f"expected {s.chain_id}")
                    added.append(got)
                parent = s.chain_id
            record = store.put_image(names, img.manifest_digest, img.manifest, img.config)
        except BaseException:
            store.discard_unused(added)
            raise
    applied = [s.index for s in states if not s.present]
    return LoadResult(list(names), record.id, img.manifest_digest, len(states), applied,
                      [s.index for s in states if s.present], time.monotonic() - start, record,
                      [s.chain_id for s in states])


def load_all(store: Store, layout: Path, *, platform: Platform | None = None) -> list[LoadResult]:
    """Load every image of the layout, each named by its tag (which must be a full image reference,
    as `image push` writes them). Each image is loaded all-or-nothing, in index order, so a layer
    blob shared by two of them is needed once."""
    _, tags = _index(Path(layout))
    names = []
    for tag in tags:
        try:
            names.append(str(_reference.parse(tag)))
        except ImageError as exc:
            raise ImageError(f"{layout}: tag {tag!r} is not an image reference ({exc}); load it with --tag and "
                             "--name") from None
    return [load(store, layout, [name], tag=tag, platform=platform) for tag, name in zip(tags, names)]
