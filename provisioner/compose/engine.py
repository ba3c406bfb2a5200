"""`provision up/down/ps`: a stack's services as containers on this host.

Facts: `<root>/stacks/<stack>.json` records, per container, the service it runs (keyed as plan.py
says: the service's name, `<service>#<n>` for a further replica), the container made for it (named
`<stack>-<service>`, `<stack>-<service>-<n>`), the hash of the config it was made from and the
image digest it runs; the container records say whether it runs. `plan.plan()` decides (pure);
`Stacks.up()` makes the networks the services use (`<project>_default` and the file's own), then
carries the actions out through the container Manager in dependency order, waiting before each
service for its depends_on conditions (every replica), then for every healthcheck, and records a
release (releases.py) when it changed something. `down` removes the containers and the networks.
What a service's containers are asked to be is request.py.

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
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Callable, Iterator

from ..containers.lifecycle import Manager
from ..network import conntrack
from ..errors import ConfigError, ContainerError, ProvisionerError, StackError
from ..fsutil import atomic_write, private_dir
from ..images.reference import parse as parse_reference
from ..runspec.request import RunRequest
from ..stack.loader import load_stack
from ..stack.project import ProjectOptions
from ..stack.model import ServiceSpec, Stack
from . import request as requests
from .names import STATE_DIR, container_name, volume_name
from .plan import (  # noqa: F401 (the engine's API: callers and tests import these from here too)
    Create, Current, Recreate, Remove, Start, config_hash, describe, plan, profile_paths, replica_key, service_hashes,
    split_key,
)
from .releases import Releases
from .switch import START_FIRST, grace, next_name, update_order
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
    # the last up's start-first switches: state key -> {"container": new, "seconds": healthy → traffic}
    switched: dict[str, dict] = field(default_factory=dict)

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
        """What exists: the recorded containers, plus any container with a replica's name the state
        does not know (its state file lost): unknown hash, so it is recreated, never duplicated."""
        entries = {n: (e["container"], e.get("hash", "")) for n, e in state.get("services", {}).items()}
        for name, spec in stack.services.items():
            for n, cname in enumerate(requests.container_names(stack.name, spec), 1):
                entries.setdefault(replica_key(name, n), (cname, ""))
        out = {}
        for key, (cname, h) in entries.items():
            rec = self.manager.records.find(cname)
            if rec is None and key not in state.get("services", {}):
                continue
            if rec is not None and (state["services"].get(key) or {}).get("healthcheck") \
                    and not rec.config.get("healthcheck"):
                h = ""   # made before its supervisor ran healthchecks: recreate it so that it does
            out[key] = Current(cname, h, rec is not None, rec is not None and self.manager.is_running(rec))
        return out

    def plan(self, stack: Stack, pins: dict[str, str] | None = None) -> list:
        actions = plan(stack, self.hashes(stack, pins), self.facts(stack, self.load_state(stack.name)))
        self._preflight(stack, actions)
        return actions

    def _preflight(self, stack: Stack, actions: list) -> None:
        """What the containers to be made need from this host, checked before anything is made (and
        by a dry run): their platform, their long-syntax bind sources, the external networks."""
        for name in dict.fromkeys(a.service for a in actions if isinstance(a, (Create, Recreate))):
            spec = stack.services[name]
            try:
                requests.preflight(spec)
            except ConfigError as exc:
                raise StackError(f"services.{name}: {exc.message}", stack.path, spec.line) from None
        for name in requests.external_networks(stack):
            if actions and not self.manager.network_exists(name):
                raise StackError(f"external network {name} does not exist on this host (create it with "
                                 f"`provision network create {name}`)", stack.path)

    # -- up -------------------------------------------------------------------------------------
    def up(self, stack: Stack, *, start_only: bool = False, pins: dict[str, str] | None = None,
           by: str = "up") -> list:
        """Create, recreate, remove and start what the plan says, in dependency order, waiting for
        health; record a release when something was created, recreated or removed. `start_only`:
        only start existing containers that are not running (the boot hook's convergence: it must
        not create or recreate from a stack file whose images may not be here)."""
        pins = dict(pins or {})
        self.switched = {}
        _stop_legacy_monitor(self.root, stack.name)
        with self.locked(stack.name):
            state = self.load_state(stack.name)
            hashes = self.hashes(stack, pins)
            actions = plan(stack, hashes, self.facts(stack, state))
            if start_only:
                actions = [a for a in actions if isinstance(a, Start)]
            self._preflight(stack, actions)
            if any(isinstance(a, (Create, Recreate)) for a in actions):
                self._networks(stack)
            self._retire_leftovers(stack, state)
            retiring: list[tuple[str, str | None, float]] = []
            for action in actions:
                self.progress(describe(action))
                if isinstance(action, Remove):
                    self._remove(action.container)
                    state["services"].pop(action.service, None)
                    self.save_state(stack.name, state)
                    continue
                spec = stack.services[action.service]
                self._wait_for(stack, state, spec)
                key = replica_key(spec.name, action.replica)
                if isinstance(action, Start):
                    self.manager.start(self._current(stack, state, spec.name, action.replica))
                    continue
                if isinstance(action, Recreate) and self._switchable(stack, state, spec, action, by):
                    retiring.append(self._start_first(stack, spec, action.replica, pins, state, hashes[spec.name]))
                    continue
                if isinstance(action, Recreate):
                    self._remove(self._current(stack, state, spec.name, action.replica))
                    state["services"].pop(key, None)
                    self.save_state(stack.name, state)
                req = self.request(stack, spec, action.replica, pins, state)
                self.manager.run(req)
                state["services"][key] = {
                    "container": req.name, "hash": hashes[spec.name], "digest": pins.get(spec.image),
                    "healthcheck": asdict(spec.healthcheck) if spec.healthcheck else None}
                self.save_state(stack.name, state)
            for name in stack.order:
                spec = stack.services[name]
                if spec.healthcheck is not None:
                    for n in range(1, spec.replicas + 1):
                        self._wait_healthy(stack, state, spec, n, again=start_only)
            for old, address, seconds in retiring:
                self._retire(stack, state, old, address, seconds)
            if any(not isinstance(a, Start) for a in actions) or Releases(self.root, stack.name).current() is None:
                self._record(stack, state, hashes, pins, actions, by)
            return actions

    def _wait_healthy(self, stack: Stack, state: dict, spec: ServiceSpec, replica: int, again: bool) -> None:
        """Until the replica is healthy. `again` (the boot hook's convergence): a container whose
        restart policy gave up while what it needs was not ready yet (on-failure:N used up while a
        slow database started after a reboot) is started once more, now that it is."""
        cname = self._current(stack, state, spec.name, replica)
        try:
            self.waits.wait_condition(cname, spec, "service_healthy")
        except ContainerError:
            rec = self.manager.records.find(cname)
            if not again or rec is None or self.manager.is_running(rec):
                raise
            self._wait_for(stack, state, spec)
            self.progress(f"start {cname} again: it stopped before what it depends on was ready")
            self.manager.start(cname)
            self.waits.wait_condition(cname, spec, "service_healthy")

    # -- the start-first switch (switch.py) -------------------------------------------------------
    def _switchable(self, stack: Stack, state: dict, spec: ServiceSpec, action: Recreate, by: str) -> bool:
        """Start-first for this recreate: the service's order says so and its container runs now
        (a stopped one has nothing to keep serving)."""
        order, why = update_order(spec, rollback=by.startswith("rollback"))
        rec = self.manager.records.find(self._current(stack, state, spec.name, action.replica))
        if order != START_FIRST or rec is None or not self.manager.is_running(rec):
            return False
        self.progress(f"{spec.name}: start-first ({why})")
        return True

    def _start_first(self, stack: Stack, spec: ServiceSpec, replica: int, pins: dict[str, str], state: dict,
                     want: str) -> tuple[str, str | None, float]:
        """The new container beside the old, healthy, then the old one's published ports switched
        to it; returns (old container, its address, its grace) for _retire. When the new one does
        not become healthy it is removed and the old one serves on: a StackError with its log tail."""
        key = replica_key(spec.name, replica)
        old = self._current(stack, state, spec.name, replica)
        req = self.request(stack, spec, replica, pins, state)
        req = dc_replace(req, name=next_name(req.name, old), replaces=old)
        self._remove(req.name)     # a leftover of a switch interrupted before it took over
        self.manager.run(req)
        try:
            self.waits.wait_condition(req.name, spec,
                                      "service_healthy" if spec.healthcheck is not None else "service_started",
                                      no_restarts=True)
        except ContainerError as exc:
            tail = self._log_tail(req.name)
            self._remove(req.name)
            raise StackError(f"service {spec.name}: the new container {req.name} did not become ready ({exc}); "
                             f"{old} keeps serving, unchanged"
                             + (f"\n--- last lines of {req.name} ---\n{tail}" if tail else "")) from None
        started = self.now()
        address = self.manager.takeover(req.name, old)
        took = self.now() - started
        self.switched[key] = {"container": req.name, "replaced": old, "seconds": round(took, 4)}
        self.progress(f"{spec.name}: switched to {req.name} in {took:.2f}s (healthy → traffic)")
        state["services"][key] = {
            "container": req.name, "hash": want, "digest": pins.get(spec.image),
            "healthcheck": asdict(spec.healthcheck) if spec.healthcheck else None}
        state.setdefault("retiring", []).append(old)
        self.save_state(stack.name, state)
        return old, address, grace(spec)

    def _retire(self, stack: Stack, state: dict, old: str, address: str | None, seconds: float) -> None:
        """The old container of a switch: its established connections drain (up to its
        stop_grace_period), then it goes."""
        if address is not None:
            left = conntrack.drain(self.manager.runner, address, seconds)
            if left:
                self.progress(f"{old}: {left} connection(s) still open after {seconds:g}s; stopping it")
        self.progress(f"remove {old}")
        self._remove(old)
        state["retiring"] = [c for c in state.get("retiring", []) if c != old]
        self.save_state(stack.name, state)

    def _retire_leftovers(self, stack: Stack, state: dict) -> None:
        """Old containers an interrupted `up` switched away from but did not remove."""
        for old in list(state.get("retiring", [])):
            self._retire(stack, state, old, None, 0)

    def _log_tail(self, name: str, lines: int = 20) -> str:
        try:
            return "".join(line.format() for line in self.manager.logs(name, tail=lines)).rstrip()
        except (ProvisionerError, OSError):
            return ""

    def _wait_for(self, stack: Stack, state: dict, spec: ServiceSpec) -> None:
        """A service's depends_on conditions, met by every replica of what it depends on."""
        for dep, cond in spec.depends_on:
            target = stack.services[dep]
            for n in range(1, target.replicas + 1):
                self.waits.wait_condition(self._current(stack, state, dep, n), target, cond)

    @staticmethod
    def _current(stack: Stack, state: dict, service: str, replica: int = 1) -> str:
        """The container that runs `service`'s `replica` now."""
        entry = state.get("services", {}).get(replica_key(service, replica)) or {}
        if entry.get("container"):
            return entry["container"]
        if service in stack.services:
            return requests.container_names(stack.name, stack.services[service])[replica - 1]
        return container_name(stack.name, service)

    def _networks(self, stack: Stack) -> None:
        """The networks the services join, made before any container."""
        for spec in requests.network_specs(stack):
            self.manager.ensure_network(spec)

    def _record(self, stack: Stack, state: dict, hashes: dict[str, str], pins: dict[str, str], actions: list,
                by: str) -> None:
        specs = service_hashes(stack, portable=True)
        services = {}
        for name, spec in stack.services.items():
            services[name] = {"hash": hashes[name], "spec": specs[name], "image": spec.image,
                              "digest": pins.get(spec.image), "image_name": parse_reference(spec.image).name,
                              "container": self._current(stack, state, name),
                              **({"replicas": spec.replicas} if spec.replicas > 1 else {})}
        rel = Releases(self.root, stack.name).record(stack, services, [describe(a) for a in actions], by)
        self.progress(f"release {rel.number} of {stack.name}")

    def rollback(self, stack_name: str, to: int | None = None) -> tuple[int, Stack, list]:
        """Go back to release `to` (default: the one before the current): its stack file and the
        files it names back in place, its digests pinned, then `up` — only what differs from now is
        recreated. Recorded as a new release ("rollback to N"). Returns (N, its stack, actions).
        The file is read as it was brought up: under the stack's name, from the .env files and with
        the profiles it recorded (privileged services were allowed when it was)."""
        releases = Releases(self.root, stack_name)
        target = releases.get(to) if to is not None else releases.previous()
        cur = releases.current()
        if cur is not None and cur.number == target.number:
            raise StackError(f"release {target.number} of {stack_name} is the current one already")
        path = releases.restore(target)
        project = ProjectOptions(name=stack_name, env_files=target.env_files, profiles=target.profiles)
        stack = load_stack(str(path), hosts_required=False, project=project, allow_privileged=True
                           ).only(set(target.services))
        pins = {s["image"]: s["digest"] for s in target.services.values() if s.get("digest")}
        self.progress(f"{stack_name}: rolling back to release {target.number}")
        return target.number, stack, self.up(stack, pins=pins, by=f"rollback to {target.number}")

    def request(self, stack: Stack, spec: ServiceSpec, replica: int = 1, pins: dict[str, str] | None = None,
                state: dict | None = None) -> RunRequest:
        """The service's `replica`th container as one run request (request.py): its image pinned,
        its links to the containers that run those services now."""
        state = state or {}
        links = tuple((self._current(stack, state, t), a) for t, a in spec.links)
        return requests.request(stack, spec, replica, self.insecure_registries,
                                image=pinned_image(spec.image, pins or {}), links=links)

    def _remove(self, cname: str) -> None:
        if self.manager.records.find(cname) is not None:
            self.manager.rm(cname, force=True, remove_volumes=True)

    # -- down / ps ------------------------------------------------------------------------------
    def down(self, stack: Stack, *, remove_volumes: bool = False) -> list[str]:
        _stop_legacy_monitor(self.root, stack.name)
        with self.locked(stack.name):
            state = self.load_state(stack.name)
            names = [self._current(stack, state, s, n) for s in reversed(stack.order)
                     for n in range(1, stack.services[s].replicas + 1)]
            names += sorted(e["container"] for s, e in state.get("services", {}).items()
                            if e["container"] not in names)
            names += [c for c in state.get("retiring", []) if c not in names]
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
            for name in self.manager.networks_labelled(requests.LABEL + "project", stack.name):
                if self.manager.remove_network_if_unused(name):
                    self.progress(f"remove network {name}")
            self._state_path(stack.name).unlink(missing_ok=True)
            return removed

    def ps(self, stack: Stack) -> list[dict]:
        """Each service's containers, their state and their health as their supervisor last checked
        it ("none": no healthcheck; "" for a service without a container)."""
        state = self.load_state(stack.name)
        # up to date: made from this file, with the digest its last up pinned
        pins = {stack.services[split_key(n)[0]].image: e["digest"] for n, e in state.get("services", {}).items()
                if split_key(n)[0] in stack.services and e.get("digest")}
        hashes = self.hashes(stack, pins)
        rows = []
        for name in stack.order:
            spec = stack.services[name]
            for n in range(1, spec.replicas + 1):
                rows.append(self._row(spec, n, self._current(stack, state, name, n),
                                      state.get("services", {}).get(replica_key(name, n)), hashes[name]))
        return rows

    def _row(self, spec: ServiceSpec, replica: int, cname: str, entry: dict | None, want: str) -> dict:
        rec = self.manager.records.find(cname)
        row = {"service": spec.name, "container": cname, "state": "missing", "health": "", "pid": None,
               "ports": [str(m) for m in spec.ports], "up_to_date": None}
        if spec.replicas > 1:
            row["replica"] = replica
        if rec is not None:
            st = self.manager.status(rec)
            row.update(state=st.state, pid=st.pid, restart_count=st.restart_count, exit_code=st.exit_code)
        if entry is not None:
            row["up_to_date"] = entry.get("hash") == want
            if spec.healthcheck is None:
                row["health"] = "none"
            elif rec is not None:
                health = self.manager.health(rec)
                row["health"] = health.status if health is not None else "starting"
                if health is not None:
                    row["health_detail"] = health.to_json()
        return row


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
