"""The image store: one btrfs subvolume per layer chain, image records as JSON.

Layout under `<root>/images` (the design of Docker's btrfs graph driver plus its repositories.json):

    layers/<chain hex>/        read-only subvolume: snapshot of the parent chain + this layer's diff
    layers/<chain hex>.json    {"chain_id", "parent", "diff_id", "size"} (written before the rename)
    blobs/sha256/<hex>         manifest and config bytes, exactly as pulled
    records/<config hex>.json  {"id", "manifest_digest", "chain_ids", "size", "created"}
    repositories.json          {"<normalized name>": "<image id>"}  (the one place names live)
    tmp/                       work in progress: temporary subvolumes, deleted by recover()
    lock                       flock: pulls, removals and prune exclude each other

Crash safety: a layer is built in tmp/ and renamed into layers/ only when complete, verified and
synced to disk (syncfs, then the rename, then an fsync of layers/);
records and repositories.json are replaced atomically (temp file + rename). A kill -9 at any
moment therefore leaves only complete layers and records, plus junk in tmp/ that `recover()` removes.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .. import fsutil
from ..sysinfo import fstype_of
from ..errors import CommandError, ImageError
from . import btrfs
from . import reference as _reference
from .reference import Reference
from .layers import apply_layer
from .tarapply import LayerError
from .tarsafety import Budget, human

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_READ = 1 << 20
# What a pull leaves free on the store's filesystem: 5% of it, at least 64 MiB, at most 2 GiB
# (containers write there too, and a full btrfs is slow to recover).
RESERVE_FRACTION, RESERVE_MIN, RESERVE_MAX = 0.05, 64 << 20, 2 << 30


def record_names(names: Iterable[str]) -> list[str]:
    """The names an image is recorded under: "repo:tag@sha256:…" is two, the tag (which moves) and
    the digest (which does not, so an image a release pinned keeps a name when its tag moves on)."""
    out = []
    for n in names:
        try:
            ref = _reference.parse(n)
        except ImageError:
            out.append(n)
            continue
        if ref.digest and ref.tag:
            out += [str(Reference(ref.domain, ref.path, ref.tag)), str(Reference(ref.domain, ref.path, None, ref.digest))]
        else:
            out.append(n)
    return list(dict.fromkeys(out))


@dataclass
class ImageRecord:
    id: str  # config digest
    manifest_digest: str
    config: dict
    chain_ids: list[str]
    size: int
    names: list[str] = field(default_factory=list)
    created: float = 0.0
    manifest: dict = field(default_factory=dict)

    @property
    def top_chain(self) -> str | None:
        return self.chain_ids[-1] if self.chain_ids else None

    def to_json(self) -> dict:
        return {
            "id": self.id, "names": self.names, "manifest_digest": self.manifest_digest,
            "chain_ids": self.chain_ids, "top_chain": self.top_chain, "size": self.size,
            "created": self.created, "config": self.config,
        }


def check_digest(digest: str, what: str = "digest") -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ImageError(f"invalid {what} {digest!r} (expected sha256:<64 hex digits>)")
    return digest


def _hex(digest: str) -> str:
    return check_digest(digest).split(":", 1)[1]


class Store:
    def __init__(self, root: Path, runner, *, check_fs: bool = True):
        self.root = Path(root)
        self.dir = self.root / "images"
        self.runner = runner
        if check_fs:
            fstype = fstype_of(self.root)
            if fstype != "btrfs":
                raise ImageError(
                    f"image store {self.dir} must be on btrfs (it is on {fstype or 'an unknown filesystem'}): "
                    "mount a btrfs filesystem there (e.g. loop-backed: truncate -s 20G f; mkfs.btrfs f; "
                    f"mount -o loop f {self.root}) or pass --root on btrfs; `provision doctor` checks this"
                )
        self.layers = self.dir / "layers"
        self.blobs = self.dir / "blobs" / "sha256"
        self.records = self.dir / "records"
        self.tmp = self.dir / "tmp"
        self.repos_file = self.dir / "repositories.json"
        try:
            # 0700: the layers hold what images bring (setuid-root binaries, device nodes)
            fsutil.private_dir(self.dir, 0o700)
            for d in (self.layers, self.blobs, self.records, self.tmp):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ImageError(f"cannot create the image store at {self.dir}: {exc.strerror or exc}") from exc
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._lock_fd: int | None = None

    # ---- locking and recovery ----------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Exclusive store lock (flock on images/lock); re-entrant within one Store object."""
        with self._lock:
            if self._lock_depth == 0:
                fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_fd = fd
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    os.close(self._lock_fd)  # closing releases the flock
                    self._lock_fd = None

    def recover(self) -> None:
        """Remove what a crash left behind: temp subvolumes, orphan layer metadata, temp files."""
        with self.lock():
            for entry in sorted(self.tmp.iterdir()):
                self._delete_tree(entry)
            for meta in self.layers.glob("*.json"):
                if not (self.layers / meta.stem).is_dir():
                    meta.unlink()
            for d in (self.dir, self.records, self.layers, self.blobs):
                for junk in d.glob(".*.tmp"):
                    junk.unlink()
            # a record whose names never made it into repositories.json (killed inside put_image)
            named = set(self._repos().values())
            for rec in self.records.glob("*.json"):
                if "sha256:" + rec.stem not in named:
                    rec.unlink()
            # a layer renamed into place but not yet flagged read-only (killed just after the rename)
            for layer in self.layers.iterdir():
                if layer.is_dir() and btrfs.is_subvolume(layer) and os.access(layer, os.W_OK):
                    btrfs.set_readonly(self.runner, layer, True)

    def _delete_tree(self, path: Path) -> None:
        if btrfs.is_subvolume(path):
            btrfs.delete(self.runner, path)
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()

    # ---- layers ------------------------------------------------------------------------------
    @staticmethod
    def chain_id(parent_chain_id: str | None, diff_id: str) -> str:
        check_digest(diff_id, "diff_id")
        if parent_chain_id is None:
            return diff_id
        check_digest(parent_chain_id, "chain id")
        return "sha256:" + hashlib.sha256(f"{parent_chain_id} {diff_id}".encode()).hexdigest()

    def layer_path(self, chain_id: str) -> Path:
        return self.layers / _hex(chain_id)

    def has_chain(self, chain_id: str) -> bool:
        return self.layer_path(chain_id).is_dir()

    def layer_info(self, chain_id: str) -> dict:
        try:
            return json.loads((self.layers / f"{_hex(chain_id)}.json").read_text())
        except FileNotFoundError:
            return {"chain_id": chain_id, "size": 0}

    def room(self) -> tuple[int, int, int]:
        """(bytes a layer may still write, bytes free, the reserve kept free) on the store's fs."""
        st = os.statvfs(self.dir)
        free = st.f_bavail * st.f_frsize
        reserve = min(max(int(st.f_blocks * st.f_frsize * RESERVE_FRACTION), RESERVE_MIN), RESERVE_MAX)
        return max(0, free - reserve), free, reserve

    def free_space_budget(self, pending: int = 0) -> Budget:
        """The free space a layer may fill, less `pending` bytes others will still write."""
        room, free, reserve = self.room()
        why = f"{human(free)} free on the store, less a {human(reserve)} reserve"
        if pending:
            why += f" and {human(pending)} of downloads still arriving"
        return Budget(max(0, room - pending), why)

    def add_layer(self, parent_chain_id: str | None, diff_id: str, fileobj, media_type: str,
                  budget: Budget | None = None) -> str:
        """Apply one layer on top of `parent_chain_id`; return the new chain id.

        Returns at once (without reading `fileobj`) when the chain is already stored. Otherwise
        reads `fileobj` to EOF (so a verifying stream can raise there), checks the diff_id,
        syncs the subvolume to disk and renames it into place; on any failure the store is unchanged.
        `budget` bounds what the layer writes (default: the store's free space less its reserve)."""
        chain = self.chain_id(parent_chain_id, diff_id)
        if self.has_chain(chain):
            return chain
        if parent_chain_id is not None and not self.has_chain(parent_chain_id):
            raise ImageError(f"parent layer chain {parent_chain_id} is not in the store")
        work = self.tmp / f"{_hex(chain)[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if parent_chain_id is None:
            btrfs.create(self.runner, work)
        else:
            btrfs.snapshot(self.runner, self.layer_path(parent_chain_id), work)
        try:
            try:
                applied = apply_layer(fileobj, media_type, work, budget or self.free_space_budget())
            except LayerError as err:
                raise type(err)(f"layer {diff_id[:19]}: {err}") from err
            while fileobj.read(_READ):
                pass
            if applied.diff_id != diff_id:
                raise ImageError(
                    f"layer diff_id mismatch: the image config says {diff_id}, the layer's uncompressed tar is "
                    f"{applied.diff_id}"
                )
            meta = {"chain_id": chain, "parent": parent_chain_id, "diff_id": diff_id, "size": applied.size,
                    "entries": applied.entries}
            # on disk before it counts: btrfs writes file data back lazily and can commit the
            # rename first, so a power cut would leave a "present" layer of empty files
            fsutil.syncfs(work)
            fsutil.atomic_write(self.layers / f"{_hex(chain)}.json", json.dumps(meta))
            try:
                os.rename(work, self.layer_path(chain))
            except OSError:
                if not self.has_chain(chain):  # someone else finished the same chain first: fine
                    raise
                btrfs.delete(self.runner, work)
                return chain
            fsutil.fsync_dir(self.layers)
        except BaseException:
            with contextlib.suppress(ImageError, CommandError, OSError):
                btrfs.delete(self.runner, work)
            raise
        # read-only after the rename: btrfs refuses to move a read-only subvolume to another directory
        btrfs.set_readonly(self.runner, self.layer_path(chain), True)
        return chain

    def snapshot(self, chain_id: str, dest: Path, readonly: bool = False) -> Path:
        """A snapshot of a layer chain at `dest` (writable by default: a container's rootfs)."""
        if not self.has_chain(chain_id):
            raise ImageError(f"layer chain {chain_id} is not in the store")
        dest = Path(dest)
        if dest.exists():
            raise ImageError(f"snapshot destination {dest} already exists")
        btrfs.snapshot(self.runner, self.layer_path(chain_id), dest, readonly=readonly)
        return dest

    # ---- images ------------------------------------------------------------------------------
    def _write_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blobs / _hex(digest)
        if not path.exists():
            fsutil.atomic_write(path, data)
        return digest

    def _repos(self) -> dict[str, str]:
        try:
            return json.loads(self.repos_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ImageError(f"{self.repos_file}: corrupt ({exc})") from exc

    def _write_repos(self, repos: dict[str, str]) -> None:
        fsutil.atomic_write(self.repos_file, json.dumps(dict(sorted(repos.items())), indent=1))

    def put_image(self, names: list[str], manifest_digest: str, manifest: bytes, config: bytes) -> "ImageRecord":
        names = record_names(names)
        check_digest(manifest_digest, "manifest digest")
        got = "sha256:" + hashlib.sha256(manifest).hexdigest()
        if got != manifest_digest:
            raise ImageError(f"manifest digest mismatch: expected {manifest_digest}, got {got}")
        try:
            cfg = json.loads(config)
            diff_ids = cfg["rootfs"]["diff_ids"]
            json.loads(manifest)
        except (ValueError, KeyError, TypeError) as exc:
            raise ImageError(f"image config/manifest for {names or manifest_digest} is invalid: {exc}") from exc
        chains, parent = [], None
        for diff_id in diff_ids:
            parent = self.chain_id(parent, diff_id)
            chains.append(parent)
        missing = [c for c in chains if not self.has_chain(c)]
        if missing:
            raise ImageError(f"cannot record image {names or manifest_digest}: layer chain {missing[0]} is not in the store")
        with self.lock():
            self._write_blob(manifest)
            image_id = self._write_blob(config)
            size = sum(self.layer_info(c).get("size", 0) for c in chains)
            record = {"id": image_id, "manifest_digest": manifest_digest, "chain_ids": chains, "size": size,
                      "created": time.time()}
            fsutil.atomic_write(self.records / f"{_hex(image_id)}.json", json.dumps(record, indent=1))
            repos = self._repos()
            displaced = {repos[n] for n in names if n in repos} - {image_id}
            repos.update({n: image_id for n in names})
            self._write_repos(repos)
            # an image whose last name moved to this one is gone (its layers stay until prune())
            for old in displaced - set(repos.values()):
                (self.records / f"{_hex(old)}.json").unlink(missing_ok=True)
            return self._load(image_id, repos)

    def _load(self, image_id: str, repos: dict[str, str] | None = None) -> ImageRecord:
        try:
            rec = json.loads((self.records / f"{_hex(image_id)}.json").read_text())
            config = json.loads((self.blobs / _hex(image_id)).read_bytes())
            manifest = json.loads((self.blobs / _hex(rec["manifest_digest"])).read_bytes())
        except FileNotFoundError as exc:
            raise ImageError(f"image {image_id} is not in the store") from exc
        repos = self._repos() if repos is None else repos
        names = sorted(n for n, i in repos.items() if i == image_id)
        return ImageRecord(rec["id"], rec["manifest_digest"], config, rec["chain_ids"], rec.get("size", 0),
                           names, rec.get("created", 0.0), manifest)

    def add_names(self, image_id: str, names: Iterable[str]) -> None:
        """More names for an image already here (the digests a release pinned)."""
        with self.lock():
            repos = self._repos()
            repos.update({n: image_id for n in record_names(names)})
            self._write_repos(repos)

    def _resolve(self, ref: str, repos: dict[str, str]) -> str:
        # "repo:tag@digest" is the image of that digest, whatever the tag names now
        for name in (ref, record_names([ref])[-1]):
            if name in repos:
                return repos[name]
        prefix = ref.removeprefix("sha256:").lower()
        if re.fullmatch(r"[0-9a-f]{4,64}", prefix):
            ids = [p.stem for p in self.records.glob("*.json") if p.stem.startswith(prefix)]
            if len(ids) == 1:
                return "sha256:" + ids[0]
            if len(ids) > 1:
                raise ImageError(f"image id prefix {ref!r} is ambiguous ({len(ids)} images match)")
        raise ImageError(f"image {ref!r} not found in the store")

    def get_image(self, ref_or_id: str) -> ImageRecord:
        repos = self._repos()
        return self._load(self._resolve(ref_or_id, repos), repos)

    def images(self) -> list[ImageRecord]:
        repos = self._repos()
        out = [self._load("sha256:" + p.stem, repos) for p in self.records.glob("*.json") if not p.name.startswith(".")]
        return sorted(out, key=lambda r: (r.names[:1] or [r.id], r.id))

    def remove_image(self, ref: str) -> None:
        """Remove a name (the image goes when its last name does) or, given an id, the image and
        all its names; then drop the layer chains no image uses any more."""
        with self.lock():
            repos = self._repos()
            image_id = self._resolve(ref, repos)
            if ref in repos:
                del repos[ref]
            else:
                repos = {n: i for n, i in repos.items() if i != image_id}
            self._write_repos(repos)
            if image_id not in repos.values():
                (self.records / f"{_hex(image_id)}.json").unlink(missing_ok=True)
            self.prune()

    def _used(self) -> tuple[set[str], set[str]]:
        """Hex ids of the layer chains and blobs some image record uses."""
        used_chains, used_blobs = set(), set()
        for rec_path in self.records.glob("*.json"):
            rec = json.loads(rec_path.read_text())
            used_chains.update(_hex(c) for c in rec["chain_ids"])
            used_blobs.update({_hex(rec["id"]), _hex(rec["manifest_digest"])})
        return used_chains, used_blobs

    def _delete_chain(self, hex_id: str) -> None:
        self._delete_tree(self.layers / hex_id)
        (self.layers / f"{hex_id}.json").unlink(missing_ok=True)

    def discard_unused(self, chain_ids: Iterable[str]) -> list[str]:
        """Delete the given chains if no image record uses them (undoing a failed pull)."""
        removed = []
        with self.lock():
            used_chains, _ = self._used()
            for chain in chain_ids:
                h = _hex(chain)
                if h not in used_chains and (self.layers / h).is_dir():
                    self._delete_chain(h)
                    removed.append(chain)
        return removed

    def prune(self) -> list[str]:
        """Delete layer chains (and manifest/config blobs) that no image record uses."""
        removed = []
        with self.lock():
            used_chains, used_blobs = self._used()
            for layer in sorted(self.layers.iterdir()):
                if layer.suffix == ".json" or layer.name.startswith("."):
                    continue
                if layer.name not in used_chains:
                    self._delete_chain(layer.name)
                    removed.append("sha256:" + layer.name)
            for blob in self.blobs.iterdir():
                if blob.name not in used_blobs:
                    blob.unlink()
        return removed

    def export(self, ref: str, dest: Path) -> None:
        """Write the image's flattened filesystem into directory `dest` (created; must be empty)."""
        record = self.get_image(ref)
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise ImageError(f"export destination {dest} must be an empty directory or not exist")
        dest.mkdir(parents=True, exist_ok=True)
        if record.top_chain is None:
            return
        src = self.layer_path(record.top_chain)
        # cp -a keeps owners, modes, xattrs, hardlinks, devices; --reflink shares extents on btrfs
        self.runner.run(["cp", "-a", "--reflink=auto", "-T", str(src), str(dest)])
