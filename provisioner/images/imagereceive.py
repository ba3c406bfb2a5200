"""Receiving an OCI layout as a tar stream (`docker save | ssh … load`): the other half of
imageload, for `provision image load -` and `provision image push`.

- `incoming(root)` + `receive_tar(stream, dir)`: a staging directory for a layout arriving as a tar
  on stdin, held by a flock while in use; directories whose lock is free were left by an
  interrupted load and are removed by the next one.
- `receive_and_load` applies layer blobs straight from such a stream when it can, staging only the
  rest.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tarfile
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import ImageError
from .imageload import (
    _BLOB_NAME, CHUNK, INCOMING, MAX_JSON, LoadResult, VerifiedFile, _index, layer_states, load_all, read_layout,
)
from .registry import Platform
from .store import Store


# ---- receiving a layout as a tar stream ----------------------------------------------------------
def _try_lock(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def incoming(root: Path) -> Iterator[Path]:
    """A fresh staging directory `<root>/incoming/<id>`, locked while in use and removed after.

    Creating a directory and locking it happen under `<root>/incoming/.lock`, as does the sweep of
    directories whose lock is free (left by a killed load), so a sweep never takes a new one."""
    base = Path(root) / INCOMING
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    gate = os.open(base / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)
        for stale in base.iterdir():
            if stale.name.startswith(".") or not stale.is_dir():
                continue
            fd = _try_lock(stale)
            if fd is not None:
                try:
                    shutil.rmtree(stale, ignore_errors=True)
                finally:
                    os.close(fd)
        work = base / f"{int(time.time())}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        work.mkdir(mode=0o700)
        fd = _try_lock(work)
        assert fd is not None  # made just now, under the gate
    finally:
        os.close(gate)  # releases the gate
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(fd)


@contextlib.contextmanager
def _stream_errors():
    try:
        yield
    except (tarfile.TarError, EOFError) as exc:
        raise ImageError(f"image stream: not a complete tar of an OCI layout ({exc}); was the sender interrupted?") \
            from None


def _entries(stream: BinaryIO) -> Iterator[tuple[str, BinaryIO]]:
    """(name, reader) per entry of a tar of an OCI layout: oci-layout, index.json, blobs/sha256/<hex>
    and nothing else (no links, no other paths). Use inside `_stream_errors()`."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            name = member.name.removeprefix("./").rstrip("/")
            if member.isdir() and name in ("", "blobs", "blobs/sha256"):
                continue
            blob = _BLOB_NAME.fullmatch(name)
            if not member.isfile() or not (blob or name in ("oci-layout", "index.json")):
                raise ImageError(f"image stream: unexpected entry {member.name!r} (an OCI layout holds only "
                                 "oci-layout, index.json and blobs/sha256/<hex>)")
            if not blob and member.size > MAX_JSON:
                raise ImageError(f"image stream: {name} is larger than {MAX_JSON} bytes; refused")
            yield name, tar.extractfile(member)


def _save(src: BinaryIO, path: Path) -> int:
    n = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                n += len(chunk)
    except OSError as exc:
        raise ImageError(f"image stream: cannot stage {path}: {exc.strerror or exc}") from None
    return n


def receive_tar(stream: BinaryIO, dest: Path) -> int:
    """Unpack a tar of an OCI layout into `dest`; returns the bytes received. Nothing is trusted
    yet: `read_layout` and `load` verify every blob they use."""
    with _stream_errors():
        return sum(_save(src, Path(dest) / name) for name, src in _entries(stream))


def _places(store, work: Path, platform: Platform | None) -> dict[str, list[tuple]] | None:
    """Once every manifest and config has arrived: layer blob digest -> the (parent chain, diff_id,
    chain, descriptor) places it fills whose chain the store lacks. None while metadata is missing."""
    try:
        _, tags = _index(work)
        images = [read_layout(work, tag, platform) for tag in tags]
    except ImageError:
        return None
    places: dict[str, list[tuple]] = {}
    for img in images:
        parent = None
        for s in layer_states(store, img.diff_ids):
            desc = img.layers[s.index]
            if not s.present and s.chain_id not in {p[2] for p in places.get(desc["digest"], [])}:
                places.setdefault(desc["digest"], []).append((parent, s.diff_id, s.chain_id, desc))
            parent = s.chain_id
    return places


def receive_and_load(stream: BinaryIO, store: Store, work: Path, *,
                     platform: Platform | None = None) -> list[LoadResult]:
    """`image load - --all` in one pass. A layer blob whose place is known when it arrives (the
    manifests and configs came first, as `image push` sends them; its parent chain is stored) is
    applied straight from the stream and verified as it goes; any other blob is staged in `work`.
    Then every image is recorded as by `load_all`. On failure the chains added are discarded."""
    added: list[str] = []
    places = None
    with store.lock():
        store.recover()
        try:
            with _stream_errors():
                for name, src in _entries(stream):
                    digest = "sha256:" + name.rsplit("/", 1)[1] if name.startswith("blobs/") else ""
                    spots = (places or {}).get(digest, [])
                    if len(spots) == 1 and (spots[0][0] is None or store.has_chain(spots[0][0])):
                        parent, diff_id, chain, desc = spots[0]
                        reader = VerifiedFile(src, desc, "image stream")
                        try:
                            store.add_layer(parent, diff_id, reader, desc["mediaType"])
                        except ImageError as err:
                            reader.blame(err)
                            raise
                        added.append(chain)
                        continue
                    _save(src, work / name)
                    if places is None and not spots:
                        places = _places(store, work, platform)
            results = load_all(store, work, platform=platform)
        except BaseException:
            store.discard_unused(added)
            raise
    fresh = set(added)  # layers applied from the stream count as applied by the first image using them
    for r in results:
        mine = [i for i in r.present if r.chain_ids[i] in fresh]
        fresh -= {r.chain_ids[i] for i in mine}
        r.applied, r.present = sorted(r.applied + mine), [i for i in r.present if i not in mine]
    return results
