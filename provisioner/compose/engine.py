"""`provision up/down/ps`: a stack's services as containers named `<stack>-<service>`.

Facts: `<root>/stacks/<stack>.json` records, per service, the container made for it and the hash
of the config it was made from; the container records say whether it runs. A service's
healthcheck is part of its container: the container's supervisor (provision-shim) runs it every
interval and keeps its health in a file, which `up` waits on and `ps` shows. `plan()` is pure: desired hashes + facts -> Remove/Create/Recreate/Start actions; an
unchanged, running stack plans nothing. `Stacks.apply()` runs the actions through the container
Manager, waiting before each service for its depends_on conditions, then for every healthcheck.

A recreated service's *linkers* are recreated too: their link env vars carry its address and
environment (Docker bakes them in at create). Services that only depends_on it are kept.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ContainerError, StackError
from ..fsutil import atomic_write, private_dir
from ..containers.lifecycle import Manager
from .names import container_name, volume_name
from ..runspec.health import HealthFlags
from ..runspec.mounts import VolumeSpec
from ..runspec.request import RunRequest
from ..stack.model import ServiceSpec, Stack

log = logging.getLogger(__name__)

STATE_DIR = "stacks"
UP_TIMEOUT = 120.0
HEALTH_POLL = 0.05   # how often `up` reads a service's health file while it waits


def profile_paths(spec: ServiceSpec) -> list[str]:
    """The seccomp profile file a service names (absolute: the loader made it so)."""
    return [spec.security.seccomp] if spec.security.seccomp not in (None, "unconfined") else []


def config_hash(spec: ServiceSpec, env_file_texts: dict[str, str]) -> str:
    """What the service's container is made from: every field but its line, and the contents of its
    env files and seccomp profiles (`env_file_texts`: path → text, for both)."""
    data = asdict(spec)
    data.pop("line", None)
    for key in ("health_disabled", "cloud_metadata"):
        if not data.get(key):
            data.pop(key, None)   # likewise: only a set flag changes the hash (older stacks keep theirs)
    if profile_paths(spec):   # a changed seccomp profile recreates the service, as a changed env file does
        data["security_opt_texts"] = [env_file_texts.get(f, "") for f in profile_paths(spec)]
    data["env_file_texts"] = [env_file_texts.get(f, "") for f in spec.env_files]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ---- facts and plan (pure) ----------------------------------------------------------------------

@dataclass(frozen=True)
class Current:
    container: str
    hash: str
    exists: bool
    running: bool


@dataclass(frozen=True)
class Create:
    service: str


@dataclass(frozen=True)
class Recreate:
    service: str
    reason: str


@dataclass(frozen=True)
class Start:
    service: str


@dataclass(frozen=True)
class Remove:
    service: str
    container: str


def plan(stack: Stack, hashes: dict[str, str], current: dict[str, Current]) -> list:
    """Removals first (services gone from the file), then services in dependency order."""
    actions: list = []
    for name, cur in sorted(current.items()):
        if name not in stack.services and cur.exists:
            actions.append(Remove(name, cur.container))
    recreated: set[str] = set()
    for name in stack.order:
        spec = stack.services[name]
        cur = current.get(name)
        if cur is None or not cur.exists:
            actions.append(Create(name))
            recreated.add(name)
        elif cur.hash != hashes[name]:
            actions.append(Recreate(name, "configuration changed"))
            recreated.add(name)
        elif any(t in recreated for t, _ in spec.links):
            actions.append(Recreate(name, "a linked service was recreated"))
            recreated.add(name)
        elif not cur.running:
            actions.append(Start(name))
    return actions


def describe(action) -> str:
    if isinstance(action, Remove):
        return f"remove {action.container} (service {action.service} is no longer in the file)"
    if isinstance(action, Recreate):
        return f"recreate {action.service} ({action.reason})"
    return f"{type(action).__name__.lower()} {action.service}"


# ---- acting -------------------------------------------------------------------------------------

@dataclass
class Stacks:
    manager: Manager
    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    insecure_registries: tuple[str, ...] = ()
    progress: Callable[[str], None] = field(default=lambda msg: None)

    @property
    def root(self) -> Path:
        return Path(self.manager.root)

    def _state_path(self, stack: str) -> Path:
        return self.root / STATE_DIR / f"{stack}.json"

    def load_state(self, stack: str) -> dict:
        try:
            return json.loads(self._state_path(stack).read_text())
        except FileNotFoundError:
            return {"services": {}}
        except (OSError, ValueError) as exc:
            raise StackError(f"unreadable stack state ({exc})", str(self._state_path(stack))) from exc

    def save_state(self, stack: str, state: dict) -> None:
        private_dir(self._state_path(stack).parent, 0o700)
        atomic_write(self._state_path(stack), json.dumps(state, indent=2, sort_keys=True) + "\n")

    @contextlib.contextmanager
    def locked(self, stack: str) -> Iterator[None]:
        d = private_dir(self.root / STATE_DIR, 0o700)
        with open(d / f".{stack}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def hashes(self, stack: Stack) -> dict[str, str]:
        out = {}
        for name, spec in stack.services.items():
            texts = {}
            for f in spec.env_files:
                try:
                    texts[f] = Path(f).read_text()
                except OSError as exc:
                    raise StackError(f"services.{name}.env_file: cannot read ({exc.strerror})", f) from exc
            for f in profile_paths(spec):
                try:
                    texts[f] = Path(f).read_text()
                except OSError as exc:
                    raise StackError(f"services.{name}.security_opt: cannot read ({exc.strerror})", f) from exc
            out[name] = config_hash(spec, texts)
        return out

    def facts(self, stack: Stack, state: dict) -> dict[str, Current]:
        """What exists: the recorded containers, plus any `<stack>-<service>` container the state
        does not know (its state file lost): unknown hash, so it is recreated, never duplicated."""
        entries = {n: (e["container"], e.get("hash", "")) for n, e in state.get("services", {}).items()}
        for name in stack.services:
            entries.setdefault(name, (container_name(stack.name, name), ""))
        out = {}
        for name, (cname, h) in entries.items():
            rec = self.manager.records.find(cname)
            if rec is None and name not in state.get("services", {}):
                continue
            if rec is not None and (state["services"].get(name) or {}).get("healthcheck") \
                    and not rec.config.get("healthcheck"):
                h = ""   # made before its supervisor ran healthchecks: recreate it so that it does
            out[name] = Current(cname, h, rec is not None, rec is not None and self.manager.is_running(rec))
        return out

    def plan(self, stack: Stack) -> list:
        return plan(stack, self.hashes(stack), self.facts(stack, self.load_state(stack.name)))

    # -- up -------------------------------------------------------------------------------------
    def up(self, stack: Stack, *, start_only: bool = False) -> list:
        """Create, recreate, remove and start what the plan says, in dependency order, waiting for
        health. `start_only`: only start existing containers that are not running (the boot hook's
        convergence: it must not create or recreate from a stack file whose images may not be here)."""
        _stop_legacy_monitor(self.root, stack.name)
        with self.locked(stack.name):
            state = self.load_state(stack.name)
            hashes = self.hashes(stack)
            actions = plan(stack, hashes, self.facts(stack, state))
            if start_only:
                actions = [a for a in actions if isinstance(a, Start)]
            for action in actions:
                self.progress(describe(action))
                if isinstance(action, Remove):
                    self._remove(action.container)
                    state["services"].pop(action.service, None)
                    self.save_state(stack.name, state)
                    continue
                spec = stack.services[action.service]
                for dep, cond in spec.depends_on:
                    self._wait_condition(stack.name, stack.services[dep], cond)
                cname = container_name(stack.name, spec.name)
                if isinstance(action, Start):
                    self.manager.start(cname)
                else:
                    if isinstance(action, Recreate):
                        self._remove(cname)
                        state["services"].pop(spec.name, None)
                        self.save_state(stack.name, state)
                    self.manager.run(self.request(stack.name, spec))
                state["services"][spec.name] = {
                    "container": cname, "hash": hashes[spec.name],
                    "healthcheck": asdict(spec.healthcheck) if spec.healthcheck else None}
                self.save_state(stack.name, state)
            for name in stack.order:
                spec = stack.services[name]
                if spec.healthcheck is not None:
                    self._wait_condition(stack.name, spec, "service_healthy")
            return actions

    def request(self, stack: str, spec: ServiceSpec) -> RunRequest:
        """The service as one container's run request: named `<stack>-<service>`, its named
        volumes and links the stack's own."""
        command = tuple(spec.command or ())
        entrypoint = None
        if spec.entrypoint is not None:
            entrypoint = spec.entrypoint[0] if spec.entrypoint else ""
            command = tuple(spec.entrypoint[1:]) + command
        vols = tuple(VolumeSpec(v.kind, volume_name(stack, v.source), v.destination, v.readonly)
                     if v.kind == "volume" else v for v in spec.volumes)
        return RunRequest(
            image=spec.image, command=command, name=container_name(stack, spec.name), detach=True, ports=spec.ports,
            volumes=vols, env=spec.env, env_files=spec.env_files,
            links=tuple((container_name(stack, t), a) for t, a in spec.links), restart=spec.restart,
            memory=spec.memory, cpu_quota=spec.cpu_quota, user=spec.user, workdir=spec.working_dir,
            entrypoint=entrypoint, hostname=spec.hostname or spec.name,
            insecure_registries=self.insecure_registries, security=spec.security,
            healthcheck=spec.healthcheck, health_flags=HealthFlags(disable=spec.health_disabled),
            cloud_metadata=spec.cloud_metadata)

    def _remove(self, cname: str) -> None:
        if self.manager.records.find(cname) is not None:
            self.manager.rm(cname, force=True, remove_volumes=True)

    # -- health ---------------------------------------------------------------------------------
    @staticmethod
    def wait_budget(spec: ServiceSpec) -> float:
        """How long `up` waits for a service: UP_TIMEOUT, or longer when its healthcheck needs it
        to decide (start period plus retries+1 checks, each an interval and at most a timeout) —
        a slow starter on a small or emulated host is not cut off before its own check could."""
        hc = spec.healthcheck
        if hc is None:
            return UP_TIMEOUT
        return max(UP_TIMEOUT, hc.start_period + (hc.retries + 1) * (hc.interval + hc.timeout))

    def _wait_condition(self, stack: str, spec: ServiceSpec, cond: str) -> None:
        cname = container_name(stack, spec.name)
        budget = self.wait_budget(spec)
        deadline = self.now() + budget
        if cond == "service_started":
            return   # `run` returned once the runtime reported it running
        if cond == "service_completed_successfully":
            while True:
                rec = self.manager.records.get(cname)
                st = self.manager.status(rec)
                if st.state in ("exited", "dead"):
                    if st.exit_code == 0:
                        return
                    raise ContainerError(f"service {spec.name} exited with code {st.exit_code}; its dependents "
                                         "need it to complete successfully")
                if self.now() > deadline:
                    raise ContainerError(f"service {spec.name} did not complete within {budget:g}s")
                self.sleep(0.05)
        hc = spec.healthcheck
        rec = self.manager.records.find(cname)
        if rec is not None:
            # the shim's first check comes one interval after the start (as Docker's); ask for one
            # now, so a service that is ready at once does not hold `up` for its interval
            self.manager.check_health_now(rec)
        while True:
            rec = self.manager.records.find(cname)
            st = self.manager.status(rec) if rec is not None else None
            # while it restarts (its policy), the file still tells of the run before: wait for the next
            health = self.manager.health(rec) if st is not None and st.state == "running" else None
            if health is not None and health.status == "healthy":
                self.progress(f"{spec.name} is healthy")
                return
            if st is None or st.state in ("exited", "dead"):
                code = f" (exit code {st.exit_code})" if st is not None else ""
                raise ContainerError(f"service {spec.name} stopped{code} before it became healthy; "
                                     f"see `provision container logs {cname}`")
            if health is not None and health.status == "unhealthy":
                raise ContainerError(f"service {spec.name} is unhealthy: {hc.retries} checks failed "
                                     f"(last: {health.output.strip()[-120:] or 'no output'})")
            if self.now() > deadline:
                raise ContainerError(f"service {spec.name} did not become healthy within {budget:g}s")
            self.sleep(HEALTH_POLL)

    # -- down / ps ------------------------------------------------------------------------------
    def down(self, stack: Stack, *, remove_volumes: bool = False) -> list[str]:
        _stop_legacy_monitor(self.root, stack.name)
        with self.locked(stack.name):
            state = self.load_state(stack.name)
            names = [container_name(stack.name, s) for s in reversed(stack.order)]
            names += sorted(e["container"] for s, e in state.get("services", {}).items()
                            if e["container"] not in names)
            removed = []
            for cname in names:
                if self.manager.records.find(cname) is not None:
                    self.progress(f"remove {cname}")
                    self.manager.rm(cname, force=True, remove_volumes=True)
                    removed.append(cname)
            if remove_volumes:
                for v in stack.volumes:
                    if self.manager.volumes.exists(volume_name(stack.name, v)):
                        self.manager.volumes.remove(volume_name(stack.name, v))
            self._state_path(stack.name).unlink(missing_ok=True)
            return removed

    def ps(self, stack: Stack) -> list[dict]:
        """Each service's container, its state and its health as its supervisor last checked it
        ("none": no healthcheck; "" for a service without a container)."""
        state = self.load_state(stack.name)
        hashes = self.hashes(stack)
        rows = []
        for name in stack.order:
            spec = stack.services[name]
            cname = container_name(stack.name, name)
            entry = state.get("services", {}).get(name)
            rec = self.manager.records.find(cname)
            row = {"service": name, "container": cname, "state": "missing", "health": "", "pid": None,
                   "ports": [str(m) for m in spec.ports], "up_to_date": None}
            if rec is not None:
                st = self.manager.status(rec)
                row.update(state=st.state, pid=st.pid, restart_count=st.restart_count, exit_code=st.exit_code)
            if entry is not None:
                row["up_to_date"] = entry.get("hash") == hashes[name]
                if spec.healthcheck is None:
                    row["health"] = "none"
                elif rec is not None:
                    health = self.manager.health(rec)
                    row["health"] = health.status if health is not None else "starting"
                    if health is not None:
                        row["health_detail"] = health.to_json()
            rows.append(row)
        return rows


def _stop_legacy_monitor(root: Path, stack: str) -> None:
    """Before the shim ran healthchecks, one Python monitor per stack did (containers.healthmon,
    now gone): stop one still running from then, so it stops probing and writing the state."""
    import os
    import signal

    pid_file = Path(root) / STATE_DIR / f".{stack}.monitor.pid"
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return
    if b"provisioner.containers.healthmon" in cmdline and stack.encode() in cmdline:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    pid_file.unlink(missing_ok=True)
