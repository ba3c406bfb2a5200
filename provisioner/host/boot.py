"""The boot hook (`provision host boot`), run by cloud-init at every boot.

Ordered steps, each idempotent, logged and timed. A step that fails does not stop the steps that
do not need it; a step that needs a failed (or skipped) one is skipped with the reason. The
result — per step: name, status ok|changed|skipped|failed, seconds, message, changes — is
written atomically to <root>/host/boot-result.json, where `provision host status` (locally or
over SSH) reads it. Log lines go to the `provisioner.host.boot` logger and <root>/logs/host-boot.log.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import ConfigError, HostError, ProvisionerError
from ..fsutil import atomic_write
from .steps import RESULT_FILE, Outcome, Skip, StepContext
from .steps import agent, api, containers, disks, firewall, logrotate, sysctl, timesync, users

log = logging.getLogger(__name__)

LOG_FILE = "logs/host-boot.log"
LOCK_FILE = "/run/provisioner/boot.lock"   # under the sysroot; /run is empty at every boot
LOCK_TIMEOUT = 900.0
OK, CHANGED, SKIPPED, FAILED = "ok", "changed", "skipped", "failed"


@dataclass(frozen=True)
class StepDef:
    name: str
    run: Callable[[StepContext, bool], Outcome]
    needs: tuple[str, ...] = ()


STEPS: tuple[StepDef, ...] = (
    StepDef("disks", disks.run),
    StepDef("users", users.run),
    StepDef("sysctl", sysctl.run),
    StepDef("logrotate", logrotate.run),
    StepDef("firewall", firewall.run),
    StepDef("timesync", timesync.run),
    # the container store and volumes live on the disks this host was told to prepare
    StepDef("containers", containers.run, needs=("disks",)),
    # the metrics endpoint and log shipper read the containers and buffer logs under <root>
    StepDef("agent", agent.run, needs=("disks",)),
    # the Engine API serves the containers and images under <root>
    StepDef("api", api.run, needs=("disks",)),
)
STEP_NAMES = tuple(s.name for s in STEPS)


@dataclass
class StepResult:
    name: str
    status: str
    seconds: float
    message: str = ""
    changes: list[str] = field(default_factory=list)
    trace: str = field(default="", repr=False)   # an unexpected error's traceback: the log only

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "trace"}


@dataclass
class BootResult:
    host: str
    stack: str | None
    started_at: str
    seconds: float = 0.0
    dry_run: bool = False
    steps: list[StepResult] = field(default_factory=list)
    inputs: str = ""            # inputs_digest of a full run ("" for a partial one)
    unchanged: bool = False     # returned from the last run: nothing ran (not written)

    @property
    def ok(self) -> bool:
        return all(s.status != FAILED for s in self.steps)

    @property
    def failed(self) -> list[str]:
        return [s.name for s in self.steps if s.status == FAILED]

    def to_json(self) -> dict:
        return {"version": 1, "agent": __version__, "host": self.host, "stack": self.stack,
                "started_at": self.started_at,
                "seconds": round(self.seconds, 3), "dry_run": self.dry_run, "ok": self.ok,
                "inputs": self.inputs, "unchanged": self.unchanged, "steps": [s.to_json() for s in self.steps]}

    @classmethod
    def from_json(cls, data: dict) -> "BootResult":
        steps = [StepResult(**{k: s[k] for k in ("name", "status", "seconds", "message", "changes") if k in s})
                 for s in data.get("steps", [])]
        return cls(data.get("host", "?"), data.get("stack"), data.get("started_at", ""),
                   float(data.get("seconds", 0.0)), bool(data.get("dry_run", False)), steps,
                   str(data.get("inputs", "")))


def _message(exc: BaseException) -> str:
    if isinstance(exc, ProvisionerError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc} (traceback in {LOG_FILE} under the root)"


def run_step(step: StepDef, ctx: StepContext, dry_run: bool) -> StepResult:
    t0 = time.monotonic()
    try:
        out = step.run(ctx, dry_run)
    except Skip as why:
        status, message, changes = SKIPPED, str(why), []
    # The boot hook's top level: the one place a broad catch is right. Whatever breaks in one
    # step is logged and recorded, and the next independent step still runs.
    except Exception as exc:  # noqa: BLE001
        status, message, changes = FAILED, _message(exc), []
        if not isinstance(exc, ProvisionerError):
            trace = "".join(traceback.format_exception(exc))
            return StepResult(step.name, status, round(time.monotonic() - t0, 3), message, changes, trace)
    else:
        changes = list(out.changes)
        # on dry runs "changed" means "would change" (the result says dry_run)
        status = SKIPPED if out.skipped else CHANGED if changes else OK
        message = out.message
    return StepResult(step.name, status, round(time.monotonic() - t0, 3), message, changes)


class _BootLog:
    """Log lines go to the module logger (the console, per -v) as they happen, and to
    <root>/logs/host-boot.log at the end: <root> is usually the ephemeral mount the disks step
    mounts, so the file is opened only once that step is done (a line written before would land
    in the directory under the mount and vanish from sight)."""

    def __init__(self, path: Path | None):
        self.path, self.lines = path, []

    def __call__(self, level: int, msg: str) -> None:
        log.log(level, "%s", msg)
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.lines.append(f"{stamp} {logging.getLevelName(level)} {msg}\n")

    def close(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(self.lines)
        except OSError as exc:
            log.warning("cannot write the boot log %s: %s", self.path, exc)


@contextmanager
def exclusive(path: Path, timeout: float = LOCK_TIMEOUT):
    """One boot hook at a time (cloud-init's per-boot run and `provision deploy` over SSH can
    meet): the second waits for the first, then finds the host converged."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise HostError(f"cannot take the boot lock {path}: {exc.strerror} (the boot hook runs as root)") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise HostError(f"another boot hook is running (pid {holder}, lock {path}); "
                                    f"gave up after {timeout:g}s") from None
                time.sleep(0.1)  # flock(2) has no timeout of its own
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _canonical(value):
    """The config as plain data, without where it was read from (path, line): what the steps act on."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
                if k not in ("path", "line")}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_canonical(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def inputs_digest(ctx: StepContext, key: str = "") -> str:
    """What the steps' outcome depends on: the host config, the agent's version, and `key` (deploy
    passes the installed agent's marker, so new agent code runs the steps again)."""
    data = json.dumps({"config": _canonical(ctx.config), "agent": __version__, "key": key}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


def boot(ctx: StepContext, *, steps: tuple[StepDef, ...] = STEPS, only: tuple[str, ...] = (),
         dry_run: bool = False, on_step: Callable[[StepResult], None] | None = None,
         result_path: Path | None = None, lock_timeout: float = LOCK_TIMEOUT,
         skip_unchanged: str | None = None) -> BootResult:
    """Runs the steps in order and writes the result file (not on dry runs). `skip_unchanged`
    (deploy's re-runs; the key of inputs_digest): when the last run of every step succeeded with
    the same inputs, nothing runs again and that result is returned, `unchanged`."""
    unknown = [n for n in only if n not in {s.name for s in steps}]
    if unknown:
        raise ConfigError(f"unknown boot step(s): {', '.join(unknown)} (steps: {', '.join(s.name for s in steps)})")
    if dry_run:
        return _boot(ctx, steps, only, dry_run, on_step, result_path)
    with exclusive(ctx.path(LOCK_FILE), lock_timeout):
        path = result_path or ctx.root / RESULT_FILE
        inputs = inputs_digest(ctx, skip_unchanged or "")
        if skip_unchanged is not None and not only:
            last = _last(path)
            if last is not None and last.ok and last.inputs == inputs and \
                    {s.name for s in last.steps} >= {s.name for s in steps}:
                last.unchanged = True
                say = _BootLog(ctx.root / LOG_FILE)
                try:
                    say(logging.INFO, f"boot hook: inputs unchanged since {last.started_at}; no step runs again")
                finally:
                    say.close()
                return last
        return _boot(ctx, steps, only, dry_run, on_step, result_path, inputs if not only else "")


def _last(path: Path) -> BootResult | None:
    try:
        return read_result(path)
    except HostError:
        return None


def _boot(ctx, steps, only, dry_run, on_step, result_path, inputs: str = "") -> BootResult:
    result = BootResult(ctx.config.host, ctx.config.stack,
                        datetime.now(timezone.utc).isoformat(timespec="seconds"), dry_run=dry_run, inputs=inputs)
    say = _BootLog(None if dry_run else ctx.root / LOG_FILE)
    t0 = time.monotonic()
    try:
        say(logging.INFO, f"boot hook for {ctx.config.stack or '-'}/{ctx.config.host}{' (dry run)' if dry_run else ''}")
        # A step that does not apply (skipped by itself: no disks configured) blocks nothing;
        # one that failed, or was skipped because what it needs failed, blocks its dependents.
        broken: dict[str, str] = {}
        for step in steps:
            if only and step.name not in only:
                continue
            blocked = [n for n in step.needs if n in broken]
            if blocked:
                r = StepResult(step.name, SKIPPED, 0.0,
                               "needs " + ", ".join(f"{n} ({broken[n]})" for n in blocked))
                broken[step.name] = "skipped"
            else:
                r = run_step(step, ctx, dry_run)
                if r.status == FAILED:
                    broken[step.name] = FAILED
            result.steps.append(r)
            level = logging.WARNING if r.status == FAILED else logging.INFO
            say(level, f"step {r.name}: {r.status} in {r.seconds:.2f}s: {r.message}"
                + "".join(f"\n  - {c}" for c in r.changes) + (f"\n{r.trace}" if r.trace else ""))
            if on_step:
                on_step(r)
        result.seconds = time.monotonic() - t0
        if not dry_run:
            write_result(result, result_path or ctx.root / RESULT_FILE)
        say(logging.INFO, f"boot hook done in {result.seconds:.2f}s: "
            + ("all steps ok" if result.ok else "failed: " + ", ".join(result.failed)))
    finally:
        say.close()
    return result


def write_result(result: BootResult, path: Path) -> None:
    try:
        atomic_write(path, json.dumps(result.to_json(), indent=2) + "\n", mode=0o644)
    except OSError as exc:
        raise HostError(f"cannot write the boot result {path}: {exc.strerror}") from None


def read_result(path: Path) -> BootResult:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise HostError(f"{path}: no boot result yet (the boot hook has not run on this host)") from None
    except (OSError, ValueError) as exc:
        raise HostError(f"{path}: unreadable boot result ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise HostError(f"{path}: not a boot result")
    return BootResult.from_json(data)


def rows(result: BootResult) -> list[list[str]]:
    out = [[s.name, s.status, f"{s.seconds:.2f}s", s.message] for s in result.steps]
    out.append(["total", "ok" if result.ok else FAILED, f"{result.seconds:.2f}s", ""])
    return out
