"""Pull an image into the layer store, pipelined.

Docker and containerd download at most three layers at a time and extract each one only once
it is fully downloaded. Here every missing layer starts downloading at once:

- the first missing layer is applied straight from its network stream;
- every later layer downloads into a spool file, and when its turn comes it is applied by a
  reader that follows the spool file while it is still being written (`Spool.reader()` waits
  for more bytes), so applying layer N+1 overlaps downloading the layers after it;
- layers whose chain is already in the store are not downloaded at all.

Each blob's compressed bytes are hashed as they arrive (transport.BlobReader) and a mismatch
is raised at EOF; the store drains every stream to EOF before it commits a layer, so a bad
blob never lands. The store itself verifies the uncompressed diff_id. A failing download stops
the whole pull early; layers this pull committed before the failure are discarded again and no
image record is written, so a failed pull leaves the store as it found it.

The store lock is held for the whole pull (downloads included): concurrent pulls serialise, and
the second finds the shared chains already stored; it also makes leftover spool directories of
a killed pull safe to delete at the start of the next one.

Limits (a hostile image is not trusted with the host's disk): each layer may write no more than
the store's free space less a reserve (and less the downloads still arriving), and the pull as a
whole no more than `max_size` uncompressed bytes when given (`image pull --max-size`). The
compressed sizes are checked against both before anything is downloaded; each entry's size at its
tar header, before its data is written (a gzip bomb stops at the header of its big file). A
violation is one LayerTooLarge naming the image and the layer; the store is left as it was.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import ImageError, RegistryError
from . import history
from . import reference as _reference
from .registry import Platform, Registry, ResolvedImage
from .sources import PullSettings, open_image
from .tarsafety import Budget, LayerError, LayerTooLarge, human
from .transport import ReadStream

log = logging.getLogger(__name__)

SPOOL_DIR = ".pull-spool"
CHUNK = 1 << 20
MAX_PARALLEL = 16


class Observer:
    """Progress callbacks; called from download threads too, so implementations lock."""

    def resolved(self, image: ResolvedImage, needed: list[int]) -> None: ...
    def bytes(self, index: int, n: int) -> None: ...
    def downloaded(self, index: int) -> None: ...
    def applying(self, index: int) -> None: ...
    def applied(self, index: int) -> None: ...
    def finished(self, result: "PullResult") -> None: ...


@dataclass
class PullResult:
    reference: str
    image_id: str
    manifest_digest: str
    layers: int
    fetched_layers: int
    bytes: int
    seconds: float
    record: object = None

    @property
    def rate(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {"reference": self.reference, "id": self.image_id, "manifest_digest": self.manifest_digest,
                "layers": self.layers, "fetched_layers": self.fetched_layers, "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "bytes_per_second": round(self.rate)}


class Spool:
    """One layer downloading into a file that can be read while it grows."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._cond = threading.Condition()
        self.written = 0
        self.done = False
        self.error: BaseException | None = None

    def fill(self, source, cancel: threading.Event) -> None:
        """Runs in a download thread: copy `source` (a BlobReader) into the file."""
        try:
            while not cancel.is_set():
                chunk = source.read(CHUNK)
                if not chunk:
                    self.finish(None)
                    return
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._fd, view):]
                with self._cond:
                    self.written += len(chunk)
                    self._cond.notify_all()
            self.finish(ImageError("pull cancelled"))
        except BaseException as err:  # handed to the applying thread, which re-raises it
            self.finish(err)
        finally:
            source.close()

    def finish(self, error: BaseException | None) -> None:
        with self._cond:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self.error = error
            self.done = True
            self._cond.notify_all()

    def wait_for(self, pos: int, cancel: threading.Event) -> int:
        """Block until bytes past `pos` exist (returns how many) or the download ends (0)."""
        with self._cond:
            while True:
                if self.error is not None:
                    raise self.error
                if self.written > pos:
                    return self.written - pos
                if self.done or cancel.is_set():
                    return 0
                self._cond.wait(0.5)

    def reader(self, cancel: threading.Event) -> "SpoolReader":
        return SpoolReader(self, cancel)


class SpoolReader(ReadStream):
    """File-like reader of a growing spool: EOF only once the download finished and verified."""

    def __init__(self, spool: Spool, cancel: threading.Event):
        self.spool = spool
        self.cancel = cancel
        self._f = open(spool.path, "rb", buffering=0)
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        if n == 0:
            return b""
        avail = self.spool.wait_for(self.pos, self.cancel)
        if avail == 0:
            if self.cancel.is_set() and not self.spool.done:
                raise ImageError("pull cancelled")
            return b""
        data = self._f.read(min(n, avail))
        self.pos += len(data)
        return data

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed


class _Watched(ReadStream):
    """Wraps the direct network stream so a failure in any other download stops the pull early."""

    def __init__(self, inner, failures: list):
        self.inner = inner
        self.failures = failures

    def read(self, n: int = -1) -> bytes:
        if self.failures:
            raise self.failures[0]
        return self.inner.read(n)

    def close(self) -> None:
        self.inner.close()


def _raise_stream_error(stream, err: BaseException) -> None:
    try:
        while stream.read(CHUNK):
            pass
    except RegistryError as stream_err:
        raise stream_err from err
    except (ImageError, OSError):
        pass


def chain_ids(store, diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    parent = None
    for d in diff_ids:
        parent = store.chain_id(parent, d)
        out.append(parent)
    return out


def clean_spool(root: Path) -> None:
    """Remove spool files a killed pull left behind (call with the store lock held)."""
    shutil.rmtree(Path(root) / SPOOL_DIR, ignore_errors=True)


def pull(
    ref: str,
    store,
    root: Path,
    *,
    platform: Platform | None = None,
    insecure_registries: Iterable[str] = (),
    settings: PullSettings | None = None,
    observer: Observer | None = None,
    registry: Registry | None = None,
    max_parallel: int = MAX_PARALLEL,
    runner=None,
    max_size: int | None = None,
) -> PullResult:
    """Pull `ref` into `store` (whose state lives under `root`); returns what was done. Where it
    comes from (remaps, mirrors, credentials) is `settings`; the image is stored under `ref`.
    `max_size`: at most that many uncompressed bytes for the layers this pull applies."""
    obs = observer or Observer()
    start = time.monotonic()
    parsed = _reference.parse(ref)
    if registry is not None:
        reg, image = registry, registry.resolve(platform)
    else:
        settings = (settings or PullSettings(runner=runner)).with_insecure(insecure_registries)
        reg, image = open_image(parsed, settings, platform)
    names = [str(parsed)]
    with store.lock():
        store.recover()
        clean_spool(root)
        chains = chain_ids(store, image.diff_ids)
        have = -1
        for k in range(len(chains) - 1, -1, -1):
            if store.has_chain(chains[k]):
                have = k
                break
        needed = list(range(have + 1, len(chains)))
        _check_room(store, image, needed, max_size)
        obs.resolved(image, needed)
        try:
            fetched = _fetch_and_apply(reg, store, Path(root), image, chains, needed, obs, max_parallel, max_size)
        except BaseException:
            # Leave the store as it was: drop the complete chains this pull added before it failed.
            store.discard_unused(chains[k] for k in needed)
            raise
        record = store.put_image(names, image.manifest_digest, image.manifest, image.config)
    result = PullResult(str(parsed), image.config_digest, image.manifest_digest, len(chains), len(needed),
                        fetched, time.monotonic() - start, record)
    history.record(root, history.Arrival(str(parsed), "pull", result.seconds, len(chains), len(needed),
                                         history.now()))
    obs.finished(result)
    return result


def _check_room(store, image: ResolvedImage, needed: list[int], max_size: int | None) -> None:
    """The compressed bytes alone must fit (a layer never takes less room than that, nearly)."""
    compressed = sum(image.layers[i].size for i in needed)
    budget = store.free_space_budget()
    if max_size is not None and max_size < budget.limit:
        budget = Budget(max_size, f"--max-size {human(max_size)}")
    if compressed > budget.limit:
        raise LayerTooLarge(f"{image.reference.familiar}: its {len(needed)} new layer(s) are {human(compressed)} "
                            f"compressed, more than the {human(budget.limit)} it may write ({budget.why}); "
                            "nothing was stored")


def _budget(store, image: ResolvedImage, index: int, spools: dict, used: int, max_size: int | None) -> Budget:
    """What layer `index` may write: the store's free space less the downloads still arriving into
    the spool (on the same filesystem), and what is left of --max-size."""
    pending = sum(max(0, image.layers[i].size - sp.written) for i, sp in spools.items() if i > index)
    budget = store.free_space_budget(pending)
    if max_size is not None and max_size - used < budget.limit:
        budget = Budget(max(0, max_size - used), f"--max-size {human(max_size)}"
                        + (f", {human(used)} of it taken by the layers before" if used else ""))
    return budget


def _fetch_and_apply(reg: Registry, store, root: Path, image: ResolvedImage, chains: list[str],
                     needed: list[int], obs: Observer, max_parallel: int, max_size: int | None = None) -> int:
    if not needed:
        return 0
    cancel = threading.Event()
    failures: list[BaseException] = []
    spool_dir = root / SPOOL_DIR / str(os.getpid())
    spool_dir.mkdir(parents=True, exist_ok=True)
    counted = [0]
    count_lock = threading.Lock()

    def on_bytes(index: int):
        def cb(n: int) -> None:
            with count_lock:
                counted[0] += n
            obs.bytes(index, n)
        return cb

    def download(index: int, spool: Spool) -> None:
        if cancel.is_set():
            spool.finish(ImageError("pull cancelled"))
            return
        try:
            source = reg.open_blob(image.layers[index], on_bytes(index))
        except BaseException as err:
            spool.finish(err)
        else:
            spool.fill(source, cancel)
        if spool.error is None:
            obs.downloaded(index)
        elif not cancel.is_set():
            failures.append(spool.error)

    first, rest = needed[0], needed[1:]
    spools: dict[int, Spool] = {}
    used = 0
    pool = ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(rest))), thread_name_prefix="pull")
    try:
        for index in rest:
            spools[index] = Spool(spool_dir / f"layer-{index}")
            pool.submit(download, index, spools[index])
        for index in needed:
            desc = image.layers[index]
            parent = chains[index - 1] if index > 0 else None
            if index == first:
                stream = _Watched(reg.open_blob(desc, on_bytes(index)), failures)
            else:
                stream = spools[index].reader(cancel)
            obs.applying(index)
            try:
                got = store.add_layer(parent, image.diff_ids[index], stream, desc.media_type,
                                      _budget(store, image, index, spools, used, max_size))
            except LayerTooLarge as err:
                raise LayerTooLarge(f"{image.reference.familiar}: {err}; nothing was stored") from None
            except ImageError as err:
                # A corrupted blob usually breaks decompression before its digest can be checked at
                # EOF; read on to report the real cause (the digest) rather than a CRC error.
                _raise_stream_error(stream, err)
                if isinstance(err, LayerError):
                    raise LayerError(f"{image.reference.familiar}: {err}") from err
                raise
            finally:
                stream.close()
            used += store.layer_info(got).get("size", 0)
            if index == first:
                obs.downloaded(index)
            else:
                spools[index].path.unlink(missing_ok=True)
            if got != chains[index]:
                raise ImageError(f"{image.reference.familiar}: store produced chain {got} for layer {index}, "
                                 f"expected {chains[index]}")
            obs.applied(index)
    finally:
        cancel.set()
        pool.shutdown(wait=True)
        shutil.rmtree(spool_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            spool_dir.parent.rmdir()   # gone when no other pull uses it: the root as it was
    return counted[0]
