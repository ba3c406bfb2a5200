"""What a deploy changes on a host, decided on the operator before anything is touched (pure).

- The *fingerprint* of everything deploy delivers to a host (the stack file and the files it names,
  host.yml, the pinned digests, the registries configuration and credentials, the images mode).
  A deploy that succeeded leaves it on the host, root's alone (`DEPLOYED`); the next deploy's
  probe compares it, and when it is the same, the agent is the same and every service runs
  healthy, the deploy of that host stops there — one SSH round trip.
- The *change plan*: per service, what the new release changes against the host's current one
  (its release record, read by the same probe): created, removed, recreated and why — its
  configuration, its image's digest, a linked service recreated. Compared by portable config
  hashes (compose.plan.config_hash with the stack's folder as base), so the operator's copy of the
  stack and the host's compare alike.
- The probe itself: one `sudo sh -c` that prints the agent delivery facts, the fingerprint the
  host holds, then either the services' state (fingerprint unchanged) or the releases (changed).
"""
from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass

from ..errors import HostError
from ..remote.deliver import AGENT, HostFacts, parse_probe, probe_script
from ..stack.model import Stack
from .plan import REMOTE_DIR

DEPLOYED = f"{REMOTE_DIR}/deployed"   # the fingerprint of what the last successful deploy delivered
PINS = f"{REMOTE_DIR}/pins.json"      # image reference -> manifest digest, what `up --pins` runs
_MARK = "@@provisioner:"


def fingerprint(files: dict[str, bytes], extra: dict[str, str]) -> str:
    """sha256 over the delivered files (remote path -> bytes) and the settings in `extra`."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(f"file {path} {len(files[path])}\n".encode())
        h.update(files[path])
    for key in sorted(extra):
        h.update(f"\n{key}={extra[key]}".encode())
    return h.hexdigest()


# -- the probe --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    facts: HostFacts             # for agent delivery
    deployed: str                # the fingerprint the host holds ("" when none)
    services: list[dict] | None  # `ps` rows, when the fingerprint matched and the agent answered
    releases: list[dict] | None  # the kept releases, when it did not


def probe_command(venv: str, fp: str, stack: str, stack_file: str, host: str,
                  agent: tuple[str, str] | None = None) -> list[str]:
    """`agent`: (Python major.minor, marker) of the agent this deploy expects to install there.
    A host on that Python whose agent is another one gets it replaced before anything else, so
    asking its old agent for the services' state (a Python start on the host) would be wasted."""
    q = shlex.quote
    same = f"[ -x {AGENT} ] && [ \"$(cat {DEPLOYED} 2>/dev/null)\" = {q(fp)} ]"
    stale = "stale=0"
    if agent:
        stale += f"; case \"$pv\" in {q('Python ' + agent[0] + '.')}*) [ \"$mk\" = {q(agent[1])} ] || stale=1;; esac"
    script = "; ".join([
        probe_script(venv), stale,
        f"echo {_MARK}deployed", f"cat {DEPLOYED} 2>/dev/null", "echo",
        f"echo {_MARK}services",
        f"if {same} && [ $stale = 0 ]; then {AGENT} ps -f {q(stack_file)} --host {q(host)} --json 2>/dev/null; fi",
        "echo",
        f"echo {_MARK}releases",
        f"if [ -x {AGENT} ] && ! {{ {same}; }}; then {AGENT} releases {q(stack)} --json 2>/dev/null; fi", "true"])
    return ["sh", "-c", script]


def parse_probe_output(text: str, where: str) -> Probe:
    head, *sections = text.split(_MARK)
    parts = {}
    for sec in sections:
        name, _, body = sec.partition("\n")
        parts[name.strip()] = body.strip()
    if set(parts) != {"deployed", "services", "releases"}:
        raise HostError(f"deploy probe of {where}: unexpected answer from the host: {text.strip()[:200]!r}")

    def as_json(key: str):
        try:
            return json.loads(parts[key]) if parts[key] else None
        except ValueError:   # an older agent without the command, say: as if nothing were known
            return None
    services, releases = as_json("services"), as_json("releases")
    return Probe(parse_probe(head, where), parts["deployed"], services if isinstance(services, list) else None,
                 releases if isinstance(releases, list) else None)


def healthy(rows: list[dict] | None, services: tuple[str, ...]) -> bool:
    """Every service of the host runs, and is healthy where it has a check."""
    if rows is None:
        return False
    by = {r.get("service"): r for r in rows}
    return all(s in by and by[s].get("state") == "running" and by[s].get("health") in ("none", "healthy")
               and by[s].get("up_to_date") is not False for s in services)


# -- the change plan --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceChange:
    service: str
    action: str                  # create | recreate | remove | keep | check
    why: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.action} {self.service}" + (f" ({'; '.join(self.why)})" if self.why else "")

    def to_json(self) -> dict:
        return {"service": self.service, "action": self.action, "why": list(self.why)}


def short(digest: str | None) -> str:
    return digest.split(":", 1)[-1][:12] if digest else "unpinned"


def current_release(releases: list[dict] | None) -> dict | None:
    return next((r for r in releases or () if r.get("current")), None)


def unchanged_plan(stack: Stack, rows: list[dict] | None, *, agent_replaced: bool) -> list[ServiceChange]:
    """The plan when the host holds exactly what this deploy delivers (the same fingerprint):
    nothing is recreated for the stack's sake. A service not running healthy (or not up to date
    with its spec) is checked: `up` on the host decides. `rows` None: the host's agent was not
    asked (it is replaced first) or did not answer, and every service is checked."""
    by = {r.get("service"): r for r in rows or ()}
    out = []
    for name in stack.order:
        row = by.get(name)
        if rows is None:
            why = "the host's agent is replaced first" if agent_replaced else "the host's agent did not report it"
            out.append(ServiceChange(name, "check", (why,)))
        elif healthy(rows, (name,)):
            out.append(ServiceChange(name, "keep"))
        elif row is None:
            out.append(ServiceChange(name, "check", ("not on the host",)))
        elif row.get("up_to_date") is False:
            out.append(ServiceChange(name, "check", ("not up to date with its spec",)))
        else:
            health = row.get("health")
            out.append(ServiceChange(name, "check", (f"{row.get('state')}"
                                                     f"{'' if health in (None, 'none') else ', ' + health}",)))
    return out


def plan_changes(stack: Stack, specs: dict[str, str], pins: dict[str, str], current: dict | None
                 ) -> list[ServiceChange]:
    """`stack`: the host's services (placement applied); `specs`: their portable config hashes
    without digests; `current`: the host's current release record (None: none known — a new host,
    or one no deploy has recorded a release on: everything is created or checked)."""
    if current is None:
        return [ServiceChange(s, "create", ("no release on the host yet",)) for s in stack.order]
    had = current.get("services") or {}
    out = [ServiceChange(s, "remove", ("no longer in the stack",)) for s in sorted(set(had) - set(stack.services))]
    recreated: set[str] = set()
    for name in stack.order:
        spec, old = stack.services[name], had.get(name)
        if old is None:
            out.append(ServiceChange(name, "create"))
            recreated.add(name)
            continue
        why = []
        if "spec" not in old:     # recorded by an agent before change plans: `up` decides on the host
            out.append(ServiceChange(name, "check", ("the host's release does not say",)))
            continue
        if old.get("spec") != specs[name]:
            why.append("configuration changed" if old.get("image") == spec.image
                       else f"image {old.get('image')} -> {spec.image}")
        new_digest = pins.get(spec.image)
        if old.get("image") == spec.image and new_digest and old.get("digest") != new_digest:
            why.append(f"image {spec.image}: new digest {short(new_digest)} (was {short(old.get('digest'))})")
        if not why and any(t in recreated for t, _ in spec.links):
            why.append("a linked service is recreated")
        if why:
            out.append(ServiceChange(name, "recreate", tuple(why)))
            recreated.add(name)
        else:
            out.append(ServiceChange(name, "keep"))
    return out
