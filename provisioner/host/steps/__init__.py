"""The boot hook's steps, one module per concern. Each has the same shape:

- `facts(ctx) -> Facts`: read the system (files under `ctx.sysroot`, commands through `ctx.runner`);
- `plan(facts, desired...) -> tuple[Action, ...]`: pure; empty when the host already matches;
- `apply(ctx, actions)`: the only part that changes anything;
- `run(ctx, dry_run) -> Outcome`: the three in a row, what the orchestrator calls.

`ctx.sysroot` prefixes every path a step reads or writes (`/` on a host, a temp dir in tests), so
tests never touch this machine's /etc.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import HostConfig

RESULT_FILE = "host/boot-result.json"   # the boot hook's result (boot.py writes it; the agent serves it)


@dataclass
class StepContext:
    config: HostConfig
    runner: Any
    root: Path                        # provisioner's state root (<root>/host, <root>/logs, ...)
    sysroot: Path = Path("/")         # prefix of /etc, /run, /proc, /home for this run
    python: str = sys.executable      # the agent's interpreter, which the systemd unit runs
    options: dict = field(default_factory=dict)  # per-step overrides (tests: desired sysctls, ...)

    def path(self, absolute: str) -> Path:
        """An absolute system path under the sysroot."""
        return self.sysroot / absolute.lstrip("/")

    @property
    def systemd(self) -> bool:
        """sd_booted(3): systemd is PID 1 when /run/systemd/system exists."""
        return self.path("/run/systemd/system").is_dir()

    @property
    def on_real_root(self) -> bool:
        return os.path.realpath(self.sysroot) == "/"


@dataclass(frozen=True)
class Outcome:
    """What a step did (or, on dry runs, would do)."""

    changes: tuple[str, ...] = ()
    message: str = ""
    skipped: bool = False


class Skip(Exception):
    """Raised by a step that does not apply to this host (the reason is the message)."""


def describe(actions) -> tuple[str, ...]:
    return tuple(a.describe() for a in actions)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
