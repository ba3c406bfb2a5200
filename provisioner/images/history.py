"""How long each image took to arrive on this host: the latest pull (from a registry) or load (an
image pushed over SSH) per image name, in `<root>/images/arrivals.json`. The metrics endpoint
serves them (provisioner_image_pull_duration_seconds); nothing else depends on the file, so a
failure to write it never fails the pull."""
from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..fsutil import atomic_write

log = logging.getLogger(__name__)
FILE = "images/arrivals.json"
KEEP = 200   # names remembered (the oldest arrivals are forgotten first)


@dataclass(frozen=True)
class Arrival:
    image: str
    how: str            # pull | load
    seconds: float
    layers: int         # layers of the image
    applied: int        # layers that had to be fetched and applied (0: all were there)
    at: float           # when it finished (epoch seconds)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def record(root: str | os.PathLike, arrival: Arrival) -> None:
    path = Path(root) / FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(".arrivals.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = {a.image: a for a in read(root)}
            data[arrival.image] = arrival
            latest = sorted(data.values(), key=lambda a: a.at)[-KEEP:]
            atomic_write(path, json.dumps([a.to_json() for a in latest], indent=1) + "\n", mode=0o644)
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("cannot record the arrival of %s in %s: %s", arrival.image, path, exc)


def record_loads(root: str | os.PathLike, results, seconds: float) -> None:
    """`image load` results (imageload.LoadResult): each name arrived in `seconds` (the whole
    command's time: for a pushed image the transfer is part of it)."""
    for r in results:
        for name in r.names:
            record(root, Arrival(name, "load", seconds, r.layers, len(r.applied), now()))


def read(root: str | os.PathLike) -> list[Arrival]:
    try:
        items = json.loads((Path(root) / FILE).read_text())
        return [Arrival(**{k: item[k] for k in Arrival.__dataclass_fields__}) for item in items]
    except (OSError, ValueError, TypeError, KeyError):
        return []


def now() -> float:
    return time.time()
