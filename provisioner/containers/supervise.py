"""Per-container supervision: the Python side of `native/shim` (provision-shim).

`start()` launches a detached shim that runs the command (later `provision-runtime run ...`),
keeps it alive per a Docker restart policy and captures its output. The shim outlives the
CLI; everything we know about it afterwards is in these files:

  <state_dir>/<name>.state.json  written atomically by the shim (status, pid, exit code, restarts)
  <state_dir>/<name>.pid         the shim's pid, flock-ed by it for its whole life
  <log_dir>/<name>.log[.1 .2]    JSON lines {"log", "stream", "time"} (Docker's json-file shape)
  <state_dir>/<name>.spec.json   how it was started (argv, policy, ...), for restore() at boot
  <state_dir>/<name>.health.json the healthcheck's state, written atomically by the shim, which runs
                                 the check itself (status, failing streak, last output; see health())
  <state_dir>/<name>.health.pid  the pid a running check's exec writes (killed on its timeout)

`stop()` writes the wanted timeout to <state_dir>/<name>.stop and sends the shim SIGTERM; the
shim sends the stop signal, waits, then SIGKILLs the process group, and does not restart.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import CommandError, ContainerError
from ..fsutil import atomic_write, private_dir
from ..native import SHIM, shim_path
from ..runspec.restart import RestartPolicy


DEFAULT_LOG_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_LOG_MAX_FILES = 3
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SIGNALS = {s.name for s in signal.Signals}


@dataclass(frozen=True)
class ShimPaths:
    state: Path
    pid: Path
    stop: Path
    log: Path

    @classmethod
    def of(cls, name: str, log_dir: str | os.PathLike, state_dir: str | os.PathLike) -> "ShimPaths":
        if not _NAME.fullmatch(name):
            raise ContainerError(f"bad container name {name!r} (letters, digits, '_', '.', '-')")
        state_dir, log_dir = Path(state_dir).absolute(), Path(log_dir).absolute()  # the shim runs in /
        return cls(state_dir / f"{name}.state.json", state_dir / f"{name}.pid",
                   state_dir / f"{name}.stop", log_dir / f"{name}.log")

    @property
    def spec(self) -> Path:
        return self.state.with_name(self.state.name.replace(".state.json", ".spec.json"))

    @property
    def health(self) -> Path:
        return self.state.with_name(self.state.name.replace(".state.json", ".health.json"))

    @property
    def health_pid(self) -> Path:
        return self.state.with_name(self.state.name.replace(".state.json", ".health.pid"))


@dataclass(frozen=True)
class HealthCheck:
    """A healthcheck as the shim runs it: `argv` is one check (e.g. the runtime's exec of the
    test into the container), with Docker's meanings and defaults for the rest (seconds)."""

    argv: tuple[str, ...]
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0
    pid_file: str | None = None   # where the check writes the pid to kill on timeout
    start_interval: float = 0.0   # during the start period, checks this often (0: every interval)

    def to_json(self) -> dict:
        return {**self.__dict__, "argv": list(self.argv)}

    @classmethod
    def from_json(cls, data: dict) -> "HealthCheck":
        return cls(**{**data, "argv": tuple(data["argv"])})

    def shim_args(self, health_file: Path) -> list[str]:
        args = ["--health-cmd", self.argv[0]]
        for a in self.argv[1:]:
            args += ["--health-cmd-arg", a]
        args += ["--health-file", str(health_file), "--health-interval", f"{self.interval:g}",
                 "--health-timeout", f"{self.timeout:g}", "--health-retries", str(self.retries),
                 "--health-start-period", f"{self.start_period:g}"]
        if self.pid_file:
            args += ["--health-pid-file", self.pid_file]
        if self.start_interval:
            args += ["--health-start-interval", f"{self.start_interval:g}"]
        return args


@dataclass(frozen=True)
class Health:
    """The shim's health file: about the container's latest start (`pid`, `restart_count`)."""

    status: str                 # starting | healthy | unhealthy
    failing_streak: int = 0
    checks: int = 0             # since that start
    exit_code: int | None = None  # of the last check; -1: it timed out
    output: str = ""            # the last check's output (its first 4 KiB)
    started_at: str = ""
    checked_at: str = ""        # when the last check ended ("" before the first)
    pid: int | None = None
    restart_count: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ShimStatus:
    name: str
    status: str  # running | restarting | exited | dead (shim gone unexpectedly) | unknown (never started)
    shim_alive: bool
    shim_pid: int | None = None
    pid: int | None = None
    exit_code: int | None = None
    restart_count: int = 0
    backoff_ms: int = 0  # the delay before the latest restart
    policy: str = "no"
    stop_requested: bool = False
    started_at: str = ""
    finished_at: str = ""
    error: str = ""

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _pid_alive(pid: int) -> bool:
    """True if pid runs a provision-shim (not a zombie, not a recycled pid)."""
    try:
        stat = _read(f"/proc/{pid}/stat")
        cmd = _read(f"/proc/{pid}/cmdline").split(b"\0", 1)[0]
    except OSError:
        return False
    state = stat.rsplit(b")", 1)[1].split()[0]
    return state not in (b"Z", b"X") and os.path.basename(cmd.decode(errors="replace")) == SHIM


def _read_pid(path: str | os.PathLike) -> int | None:
    try:
        text = _read(path).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def status(name: str, state_dir: str | os.PathLike, log_dir: str | os.PathLike | None = None) -> ShimStatus:
    # ShimPaths.of's state and pid files, as plain strings: this runs for every container of every
    # listing (`log_dir` names no file read here)
    if not _NAME.fullmatch(name):
        raise ContainerError(f"bad container name {name!r} (letters, digits, '_', '.', '-')")
    state_dir = os.path.join(os.getcwd(), state_dir)     # absolute, as Path.absolute() (unchanged if it is)
    state_path = os.path.join(state_dir, f"{name}.state.json")
    shim_pid = _read_pid(os.path.join(state_dir, f"{name}.pid"))
    alive = shim_pid is not None and _pid_alive(shim_pid)
    try:
        data = json.loads(_read(state_path))
    except FileNotFoundError:
        return ShimStatus(name, "running" if alive else "unknown", alive, shim_pid)
    except (OSError, ValueError) as exc:
        raise ContainerError(f"{state_path}: unreadable supervisor state ({exc})") from exc
    st = data.get("status") or "unknown"
    if st in ("running", "restarting") and not alive:
        st = "dead"  # the shim was killed or the machine rebooted under it
    return ShimStatus(
        name=name, status=st, shim_alive=alive, shim_pid=data.get("shim_pid") or shim_pid,
        pid=data.get("pid") or None, exit_code=data.get("exit_code"),
        restart_count=int(data.get("restart_count") or 0), backoff_ms=int(data.get("backoff_ms") or 0),
        policy=data.get("policy") or "no",
        stop_requested=bool(data.get("stop_requested")), started_at=data.get("started_at") or "",
        finished_at=data.get("finished_at") or "", error=data.get("error") or "",
    )


def record_attached(name: str, state_dir: str | os.PathLike, status_: str, exit_code: int | None = None) -> None:
    """The state of a container run attached to a terminal (`run -it`, no supervisor): what the
    shim would have written, so ps and inspect read it the same way."""
    paths = ShimPaths.of(name, state_dir, state_dir)
    paths.state.parent.mkdir(parents=True, exist_ok=True)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data = {"name": name, "status": status_, "exit_code": exit_code, "restart_count": 0, "policy": "no",
            "started_at" if status_ == "running" else "finished_at": now}
    atomic_write(paths.state, json.dumps(data) + "\n")


def health(name: str, state_dir: str | os.PathLike) -> Health | None:
    """The container's health as its shim last wrote it; None without a healthcheck (or before
    the shim's first write)."""
    path = ShimPaths.of(name, state_dir, state_dir).health
    try:
        data = json.loads(path.read_bytes().decode("utf-8", errors="replace"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ContainerError(f"{path}: unreadable health state ({exc})") from exc
    fields = {k: data[k] for k in Health.__dataclass_fields__ if k in data}
    if fields.get("status") not in ("starting", "healthy", "unhealthy"):
        raise ContainerError(f"{path}: unreadable health state (status {fields.get('status')!r})")
    return Health(**fields)


def check_health_now(name: str, state_dir: str | os.PathLike) -> bool:
    """Asks the shim for a healthcheck now (SIGUSR1) rather than at the next interval: what `up`
    does once a container runs. False if there is no live shim running checks."""
    paths = ShimPaths.of(name, state_dir, state_dir)
    pid = _read_pid(paths.pid)
    # only a shim that writes a health file runs checks (and handles SIGUSR1 rather than dying of it)
    if pid is None or not paths.health.exists() or not _pid_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return False
    return True


def start(
    name: str,
    argv: Sequence[str],
    policy: str | RestartPolicy = "no",
    log_dir: str | os.PathLike = ".",
    state_dir: str | os.PathLike = ".",
    *,
    runner,
    stop_signal: str = "SIGTERM",
    stop_timeout: float = 10.0,
    log_max_size: int = DEFAULT_LOG_MAX_SIZE,
    log_max_files: int = DEFAULT_LOG_MAX_FILES,
    backoff_max_ms: int = 60_000,
    backoff_reset_ms: int = 10_000,
    shim: str | None = None,
    exit_command: Sequence[str] | None = None,
    health: HealthCheck | None = None,
    keep_stdin: bool = False,
    on_change: Sequence[str] | None = None,
) -> ShimStatus:
    """Starts `argv` under a detached shim; returns once the command has been exec'd.
    The command runs in / with the caller's environment and stdin on /dev/null (the runtime
    sets the container's own cwd and env), in its own process group. `exit_command` (an argv with
    an absolute path) runs once the command is done for good and the shim has let go of it.
    `health`: the shim runs this healthcheck while the command runs (see health())."""
    paths = ShimPaths.of(name, log_dir, state_dir)
    if not argv:
        raise ContainerError(f"{name}: no command to run")
    pol = policy if isinstance(policy, RestartPolicy) else RestartPolicy.parse(policy)
    sig = stop_signal.upper()
    sig = sig if sig.isdigit() or sig.startswith("SIG") else "SIG" + sig
    if not sig.isdigit() and sig not in _SIGNALS:
        raise ContainerError(f"{name}: unknown stop signal {stop_signal!r}")
    if log_max_size < 1024 or log_max_files < 1:
        raise ContainerError(f"{name}: log limits must be >= 1024 bytes and >= 1 file")
    if health is not None and (not health.argv or health.interval <= 0 or health.timeout <= 0
                               or health.retries < 1 or health.start_period < 0 or health.start_interval < 0):
        raise ContainerError(f"{name}: bad healthcheck (a command, interval and timeout > 0, retries >= 1)")
    current = status(name, state_dir, log_dir)
    if current.shim_alive:
        raise ContainerError(f"{name} is already running (supervisor pid {current.shim_pid})")
    shim = shim or shim_path()
    if not shim:   # built when the package is installed (scripts/install.sh, the wheel's build)
        raise ContainerError(f"{SHIM} not found: build it with `make -C native/shim` (scripts/install.sh does), "
                             "or set PROVISION_SHIM")
    private_dir(paths.state.parent, 0o700)
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    paths.stop.unlink(missing_ok=True)
    paths.health.unlink(missing_ok=True)   # a new shim writes it afresh: never a stale health
    spec = {"argv": list(argv), "policy": str(pol), "log_dir": str(Path(log_dir).resolve()),
            "stop_signal": sig, "stop_timeout": stop_timeout, "log_max_size": log_max_size,
            "log_max_files": log_max_files, "backoff_max_ms": backoff_max_ms, "backoff_reset_ms": backoff_reset_ms,
            "exit_command": list(exit_command) if exit_command else None,
            "health": health.to_json() if health else None, "keep_stdin": keep_stdin,
            "on_change": list(on_change) if on_change else None}
    atomic_write(paths.spec, json.dumps(spec, indent=2) + "\n")
    cmd = [
        shim, "--name", name, "--state", str(paths.state), "--pid-file", str(paths.pid),
        "--stop-file", str(paths.stop), "--log", str(paths.log), "--restart", str(pol),
        "--stop-signal", sig, "--stop-timeout", f"{stop_timeout:g}",
        "--log-max-size", str(log_max_size), "--log-max-files", str(log_max_files),
        "--backoff-max-ms", str(backoff_max_ms), "--backoff-reset-ms", str(backoff_reset_ms),
    ] + (["--keep-stdin"] if keep_stdin else [])
    if on_change:
        cmd += ["--on-change", on_change[0]] + [x for a in on_change[1:] for x in ("--on-change-arg", a)]
    if exit_command:
        if not os.path.isabs(exit_command[0]):
            raise ContainerError(f"{name}: the exit command must be an absolute path (got {exit_command[0]!r})")
        cmd += ["--exit-command", exit_command[0]]
        for arg in exit_command[1:]:
            cmd += ["--exit-command-arg", arg]
    if health is not None:
        cmd += health.shim_args(paths.health)
    cmd += ["--", *argv]
    # The launcher returns as soon as the daemon reports the first exec, so this is an
    # ordinary short command through the Runner; the daemon's stdio is /dev/null.
    try:
        result = runner.run(cmd, timeout=30)
    except CommandError as exc:
        reason = (exc.stderr.strip().splitlines() or [f"exit {exc.returncode}"])[-1]
        reason = reason.removeprefix("provision-shim: ")
        raise ContainerError(f"cannot start {name}: {reason}") from exc
    fields = result.stdout.split()
    st = status(name, state_dir, log_dir)
    if len(fields) == 2 and fields[0].isdigit():
        st = ShimStatus(**{**st.__dict__, "shim_pid": int(fields[0])})
    return st


def stop(name: str, state_dir: str | os.PathLike, timeout: float | None = None, *,
         wait: bool = True, grace: float = 5.0, log_dir: str | os.PathLike | None = None) -> ShimStatus:
    """Stops the container: stop signal, `timeout` seconds, then SIGKILL; no restart after."""
    paths = ShimPaths.of(name, log_dir or state_dir, state_dir)
    st = status(name, state_dir, log_dir)
    if not st.shim_alive:
        return st
    if timeout is not None:
        atomic_write(paths.stop, f"{max(timeout, 0):g}\n")
    try:
        os.kill(st.shim_pid, signal.SIGTERM)
    except ProcessLookupError:
        return status(name, state_dir, log_dir)
    if not wait:
        return st
    budget = (timeout if timeout is not None else 10.0) + grace
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        if not _pid_alive(st.shim_pid):
            return status(name, state_dir, log_dir)
        time.sleep(0.02)
    raise ContainerError(f"{name}: supervisor (pid {st.shim_pid}) did not stop within {budget:g}s")


def remove(name: str, log_dir: str | os.PathLike, state_dir: str | os.PathLike) -> None:
    """Deletes the state and logs of a stopped container."""
    paths = ShimPaths.of(name, log_dir, state_dir)
    if status(name, state_dir, log_dir).shim_alive:
        raise ContainerError(f"{name} is running; stop it first")
    for p in (paths.state, paths.pid, paths.stop, paths.spec, paths.health, paths.health_pid,
              *shimlogs.log_files(paths.log)):
        p.unlink(missing_ok=True)


def _spec(name: str, state_dir: str | os.PathLike) -> dict:
    path = ShimPaths.of(name, state_dir, state_dir).spec
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ContainerError(f"no such container: {name} (never started under {state_dir})") from None
    except (OSError, ValueError) as exc:
        raise ContainerError(f"{path}: unreadable container spec ({exc})") from exc


def _start_from_spec(name: str, spec: dict, state_dir, runner, shim: str | None) -> ShimStatus:
    return start(name, spec["argv"], spec["policy"], spec["log_dir"], state_dir, runner=runner,
                 stop_signal=spec["stop_signal"], stop_timeout=spec["stop_timeout"],
                 log_max_size=spec["log_max_size"], log_max_files=spec["log_max_files"],
                 backoff_max_ms=spec["backoff_max_ms"], backoff_reset_ms=spec.get("backoff_reset_ms", 10_000),
                 shim=shim, exit_command=spec.get("exit_command"),
                 health=HealthCheck.from_json(spec["health"]) if spec.get("health") else None,
                 keep_stdin=bool(spec.get("keep_stdin")), on_change=spec.get("on_change"))


def restart(name: str, state_dir: str | os.PathLike, *, runner, timeout: float | None = None,
            shim: str | None = None) -> ShimStatus:
    """`start` of a stopped container and `restart` of any: stop it if it runs, then start it
    again as it was first started (same command, policy and limits)."""
    spec = _spec(name, state_dir)
    stop(name, state_dir, timeout, log_dir=spec["log_dir"])
    return _start_from_spec(name, spec, state_dir, runner, shim)


def restore(state_dir: str | os.PathLike, *, runner, shim: str | None = None,
            before_start: Callable[[str], None] | None = None) -> list[str]:
    """At boot (from the host agent): starts again every container whose restart policy says
    so (Docker's daemon-start rule: `always`, and `unless-stopped` unless the user stopped it)
    and whose supervisor is not running. `before_start(name)` runs first for each of them:
    the place to rebuild what a reboot took (network.reconnect: netns, veth, rules).
    Returns the names started."""
    started = []
    for spec_path in sorted(Path(state_dir).glob("*.spec.json")):
        name = spec_path.name[: -len(".spec.json")]
        spec = _spec(name, state_dir)
        st = status(name, state_dir, spec["log_dir"])
        if st.shim_alive or not RestartPolicy.parse(spec["policy"]).restart_at_boot(st.stop_requested):
            continue
        if before_start is not None:
            before_start(name)
        _start_from_spec(name, spec, state_dir, runner, shim)
        started.append(name)
    return started


# the log reading lives in shimlogs; these names stay importable from here
from . import shimlogs  # noqa: E402
from .shimlogs import LogLine, log_text, logs  # noqa: E402,F401
