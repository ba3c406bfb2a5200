"""The cgroup v2 parent of the containers (`Manager.cgroup_parent`, "/provisioner"), with the
controllers docker stats reads delegated to its children.

On v2 a cgroup has a controller's files (memory.current, pids.current, io.stat) only when its
parent enables that controller in cgroup.subtree_control. The runtime enables, on its way to a
container's cgroup, just the controllers the container's limits need (native/src/cgroup_v2.c), so
a container without a memory limit would have no memory.current at all. Docker's runtimes enable
every available controller for their containers' parent; this does the same for cpu, io, memory
and pids, from the root down to the parent, before a container starts. v1 and hybrid hosts have
the controllers mounted as hierarchies of their own: nothing to do there.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
WANTED = ("cpu", "io", "memory", "pids")


@dataclass(frozen=True)
class Enable:
    directory: str          # the cgroup whose children get the controllers
    controllers: tuple[str, ...]

    def describe(self) -> str:
        return f"echo {' '.join('+' + c for c in self.controllers)} > {self.directory}/cgroup.subtree_control"


def _words(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def plan(parent: str, mount: str | os.PathLike = "/sys/fs/cgroup") -> tuple[tuple[Enable, ...], bool]:
    """What to enable from `mount` down to `parent` (pure but for reading the cgroup files), and
    whether `parent` must be created first. Nothing when `mount` is not a v2 root."""
    root = Path(mount)
    available = _words(root / "cgroup.controllers")
    if not (root / "cgroup.subtree_control").exists() or not available:
        return (), False
    want = tuple(c for c in WANTED if c in available)
    dirs, d = [root], root
    for part in [p for p in parent.split("/") if p]:
        d = d / part
        dirs.append(d)
    actions = []
    for d in dirs:
        missing = tuple(c for c in want if c not in _words(d / "cgroup.subtree_control"))
        if missing:
            actions.append(Enable(str(d), missing))
    return tuple(actions), not dirs[-1].is_dir()


def delegate(parent: str, mount: str | os.PathLike = "/sys/fs/cgroup") -> None:
    """Applies plan(); a controller the kernel refuses is a warning (stats will lack its files),
    never a reason not to start the container."""
    actions, create = plan(parent, mount)
    if create:
        Path(mount, *[p for p in parent.split("/") if p]).mkdir(parents=True, exist_ok=True)
    for a in actions:
        path = Path(a.directory) / "cgroup.subtree_control"
        path.parent.mkdir(parents=True, exist_ok=True)
        for c in a.controllers:   # one at a time: a refused one does not take the others with it
            try:
                path.write_text(f"+{c}")
            except OSError as exc:
                log.warning("cannot enable the %s controller in %s: %s (container stats will lack it)", c,
                            a.directory, exc.strerror or exc)
