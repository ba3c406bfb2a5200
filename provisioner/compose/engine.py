"""`provision up/down/ps`: a stack's services as containers on this host.

Facts: `<root>/stacks/<stack>.json` records, per service, the container made for it (named
`<stack>-<service>`), the hash of the config it was made from and the image digest it runs; the
container records say whether it runs. `plan.plan()` decides (pure); `Stacks.up()` carries the
actions out through the container Manager in dependency order, waiting before each service for its
depends_on conditions, then for every healthcheck, and records a release (releases.py) when it
changed something.

Pins: deploy resolves every image reference to a manifest digest and the host runs exactly that
(`pins`: reference → digest). A pinned service's container is made from `<reference>@<digest>`
and its hash covers the digest, so a new digest under the same tag recreates it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..containers.lifecycle import Manager
from ..errors import StackError
from ..fsutil import atomic_write, private_dir
from ..images.reference import parse as parse_reference
from ..runspec.health import HealthFlags
from ..runspec.mounts import VolumeSpec
from ..runspec.request import RunRequest
from ..stack.loader import load_stack
from ..stack.model import ServiceSpec, Stack
from .names import STATE_DIR, container_name, volume_name
from .plan import Current, Recreate, Remove, Start, describe, plan, service_hashes
from .releases import Releases
from .waits import Waits

log = logging.getLogger(__name__)



def pinned_image(image: str, pins: dict[str, str]) -> str:
    """`image` as the container is made from it: with its pinned digest when there is one."""
    digest = pins.get(image)
    if not digest:
        return image
    ref = parse_reference(image)
    return str(ref.with_digest(digest))


# ---- acting -------------------------------------------------------------------------------------

@dataclass
class Stacks:
    manager: Manager
    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    insecure_registries: tuple[str, ...] = ()
    progress: Callable[[str], None] = field(default=lambda msg: None)

    @property
    def waits(self) -> Waits:
        return Waits(self.manager, self.now, self.sleep, self.progress)

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

    def hashes(self, stack: Stack, pins: dict[str, str] | None = None) -> dict[str, str]:
        return service_hashes(stack, pins)

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

    def plan(self, stack: Stack, pins: dict[str, str] | None = None) -> list:
        return plan(stack, self.hashes(stack, pins), self.facts(stack, self.load_state(stack.name)))

    # -- up -------------------------------------------------------------------------------------
    def up(self, stack: Stack, *, start_only: bool = False, pins: dict[str, str] | None = None,
           by: str = "up") -> list:
        """Create, recreate, remove and start what the plan says, in dependency order, waiting for
        health; record a release when something was created, recreated or removed. `start_only`:
        only start existing containers that are not running (the boot hook's convergence: it must
        not create or recreate from a stack file whose images may not be here)."""
        pins = dict(pins or {})
        _stop_legacy_monitor(self.root, stack.name)
        with self.locked(stack.name):
            state = self.load_state(stack.name)
            hashes = self.hashes(stack, pins)
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
                    self.waits.wait_condition(self._current(stack.name, state, dep), stack.services[dep], cond)
                cname = container_name(stack.name, spec.name)
                if isinstance(action, Start):
                    self.manager.start(self._current(stack.name, state, spec.name))
                    continue
                if isinstance(action, Recreate):
                    self._remove(self._current(stack.name, state, spec.name))
                    state["services"].pop(spec.name, None)
                    self.save_state(stack.name, state)
                self.manager.run(self.request(stack.name, spec, pins, state))
                state["services"][spec.name] = {
                    "container": cname, "hash": hashes[spec.name], "digest": pins.get(spec.image),
                    "healthcheck": asdict(spec.healthcheck) if spec.healthcheck else None}
                self.save_state(stack.name, state)
            for name in stack.order:
                spec = stack.services[name]
                if spec.healthcheck is not None:
                    self.waits.wait_condition(self._current(stack.name, state, name), spec, "service_healthy")
            if any(not isinstance(a, Start) for a in actions) or Releases(self.root, stack.name).current() is None:
                self._record(stack, state, hashes, pins, actions, by)
            return actions

    @staticmethod
    def _current(stack: str, state: dict, service: str) -> str:
        """The container that runs `service` now."""
        return (state.get("services", {}).get(service) or {}).get("container") or container_name(stack, service)

    def _record(self, stack: Stack, state: dict, hashes: dict[str, str], pins: dict[str, str], actions: list,
                by: str) -> None:
        specs = service_hashes(stack, portable=True)
        services = {}
        for name, spec in stack.services.items():
            services[name] = {"hash": hashes[name], "spec": specs[name], "image": spec.image,
                              "digest": pins.get(spec.image), "image_name": parse_reference(spec.image).name,
                              "container": self._current(stack.name, state, name)}
        rel = Releases(self.root, stack.name).record(stack, services, [describe(a) for a in actions], by)
        self.progress(f"release {rel.number} of {stack.name}")

    def rollback(self, stack_name: str, to: int | None = None) -> tuple[int, Stack, list]:
        """Go back to release `to` (default: the one before the current): its stack file and the
        files it names back in place, its digests pinned, then `up` — only what differs from now is
        recreated. Recorded as a new release ("rollback to N"). Returns (N, its stack, actions)."""
        releases = Releases(self.root, stack_name)
        target = releases.get(to) if to is not None else releases.previous()
        cur = releases.current()
        if cur is not None and cur.number == target.number:
            raise StackError(f"release {target.number} of {stack_name} is the current one already")
        path = releases.restore(target)
        stack = load_stack(str(path), hosts_required=False).only(set(target.services))
        pins = {s["image"]: s["digest"] for s in target.services.values() if s.get("digest")}
        self.progress(f"{stack_name}: rolling back to release {target.number}")
        return target.number, stack, self.up(stack, pins=pins, by=f"rollback to {target.number}")

    def request(self, stack: str, spec: ServiceSpec, pins: dict[str, str] | None = None,
                state: dict | None = None) -> RunRequest:
        """The service as one container's run request: named `<stack>-<service>`, its image pinned,
        its named volumes the stack's own, its links to the containers that run those services now."""
        state = state or {}
        command = tuple(spec.command or ())
        entrypoint = None
        if spec.entrypoint is not None:
            entrypoint = spec.entrypoint[0] if spec.entrypoint else ""
            command = tuple(spec.entrypoint[1:]) + command
        vols = tuple(VolumeSpec(v.kind, volume_name(stack, v.source), v.destination, v.readonly)
                     if v.kind == "volume" else v for v in spec.volumes)
        return RunRequest(
            image=pinned_image(spec.image, pins or {}), command=command, name=container_name(stack, spec.name),
            detach=True, ports=spec.ports, volumes=vols, env=spec.env, env_files=spec.env_files,
            links=tuple((self._current(stack, state, t), a) for t, a in spec.links), restart=spec.restart,
            memory=spec.memory, cpu_quota=spec.cpu_quota, user=spec.user, workdir=spec.working_dir,
            entrypoint=entrypoint, hostname=spec.hostname or spec.name,
            insecure_registries=self.insecure_registries, security=spec.security,
            healthcheck=spec.healthcheck, health_flags=HealthFlags(disable=spec.health_disabled),
            cloud_metadata=spec.cloud_metadata)

    def _remove(self, cname: str) -> None:
        if self.manager.records.find(cname) is not None:
            self.manager.rm(cname, force=True, remove_volumes=True)

    # -- down / ps ------------------------------------------------------------------------------
    def down(self, stack: Stack, *, remove_volumes: bool = False) -> list[str]:
        _stop_legacy_monitor(self.root, stack.name)
        with self.locked(stack.name):
            state = self.load_state(stack.name)
            names = [self._current(stack.name, state, s) for s in reversed(stack.order)]
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
        # up to date: made from this file, with the digest its last up pinned
        pins = {stack.services[n].image: e["digest"] for n, e in state.get("services", {}).items()
                if n in stack.services and e.get("digest")}
        hashes = self.hashes(stack, pins)
        rows = []
        for name in stack.order:
            spec = stack.services[name]
            cname = self._current(stack.name, state, name)
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
