"""One host's part of a deploy, once it runs and answers SSH (pipeline.py launches or reuses it).

1. SSH ready (the host key verified against the console's).
2. One probe (changes.py): the agent delivery facts, the fingerprint of what the last successful
   deploy delivered, and either the services' state (same fingerprint) or the host's releases. If
   the agent, the fingerprint and every service's health say nothing changed, the host is done:
   one round trip, then the published ports are checked from here. Otherwise the change plan
   (per service: create, recreate and why, remove, keep) is printed — and `--dry-run` stops there.
3. The agent, when its wheels changed (remote/deliver.py, with the probe's facts).
4. Everything the host reads, in one round trip: the stack file and the files it names (env files,
   secrets, configs), the variables it was interpolated with here (.provision.env), host.yml,
   the pinned digests, the registries configuration and credentials (root's alone); the old
   fingerprint goes first, so a deploy interrupted from here on is never taken for done. Then the
   boot hook, which runs no step when its inputs are those of its last good run.
5. The images, by digest: pulled by the host, or pushed from here (`--images push`).
6. `provision up --pins` (dependency order, health waits, a release recorded), every service
   checked running and healthy, the new fingerprint written, and each published TCP port checked
   from here — the path clients use (the local cloud's forward, the cloud's public address).
"""
from __future__ import annotations

import io
import json
import shlex
import socket
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..compose.plan import service_hashes
from ..errors import HostError, ProvisionerError
from ..images.cloudauth import encode_auths
from ..images.reference import parse as parse_reference
from ..images.sources import AUTH_FILE, CONF_FILE, SETTINGS_DIR
from ..remote.deliver import REMOTE_VENV, bundle_marker
from ..runner import Runner
from ..stack.placement import for_host
from . import inventory
from .changes import (DEPLOYED, PINS, ServiceChange, current_release, fingerprint, healthy, parse_probe_output,
                      plan_changes, probe_command, unchanged_plan)
from .images import host_conf, host_credentials, pull_on_host
from .plan import REMOTE_DIR, REMOTE_ENV, REMOTE_HOST, REMOTE_STACK, DeployPlan, HostDeployPlan, host_yaml, volume_match

PROVISION = ("provision",)                         # the agent on the host (/usr/local/bin, via sudo)


@dataclass
class HostOutcome:
    host: str
    launched: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    changes: list[ServiceChange] = field(default_factory=list)   # the change plan
    unchanged: bool = False                               # nothing to do: the probe said so
    boot: list[dict] = field(default_factory=list)        # the boot hook's steps
    images: list[dict] = field(default_factory=list)      # {"ref", "digest", "delivery": pull|push, ...} per image
    actions: list[dict] = field(default_factory=list)     # what `up` did
    services: list[dict] = field(default_factory=list)    # `ps` rows
    endpoints: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict:
        return {"host": self.host, "launched": self.launched, "seconds": self.seconds,
                "changes": [c.to_json() for c in self.changes], "unchanged": self.unchanged, "boot": self.boot,
                "images": self.images, "actions": self.actions, "services": self.services,
                "endpoints": self.endpoints, "error": self.error}


# -- remote helpers -----------------------------------------------------------------------------------
def remote_json(ssh: Runner, args: list[str], timeout: float = 600.0):
    """`provision ARGS` on the host as root; its JSON output, or one error with its last lines."""
    res = ssh.run([*PROVISION, *args], sudo=True, check=False, timeout=timeout)
    if res.returncode != 0:
        lines = (res.stderr.strip() or res.stdout.strip()).splitlines()
        # the one error it printed (with what it shows under it: a new container's log tail, say)
        start = max((i for i, ln in enumerate(lines) if ln.startswith("error: ")), default=len(lines) - 2)
        tail = "\n".join(lines[max(0, start):][:25]).removeprefix("error: ")
        raise HostError(f"`provision {shlex.join(args)}` failed on the host (exit {res.returncode}): {tail}")
    try:
        return json.loads(res.stdout or "null")
    except ValueError:
        raise HostError(f"`provision {shlex.join(args)}` printed no JSON: {res.stdout[:200]!r}") from None


def write_files(ssh: Runner, files: dict[str, bytes], remove: tuple[str, ...] = (), base: str = REMOTE_DIR) -> None:
    """Files under `base` on the host (remote path -> bytes), root's alone (0600 in a 0700
    directory: the stack's environment, env files and secret files are the services' secrets), in one round
    trip: a tar on root's stdin unpacked beside them, then each renamed into place; `remove`
    first. A reader sees each file old or new, never half-written."""
    q = shlex.quote
    names = []
    for path in files:
        if not path.startswith(base + "/"):
            raise HostError(f"deploy writes under {base} only, not {path}")
        names.append(path[len(base) + 1:])
    lines = ["set -e", "umask 077", f"mkdir -p {q(base)}", f"chmod 0700 {q(base)}",
             *(f"rm -f {q(p)}" for p in remove),
             f"t=$(mktemp -d {q(base)}/.incoming.XXXXXXXX)",
             "tar -x -C \"$t\" --no-same-owner --no-same-permissions"]
    for rel in names:
        dest = f"{base}/{rel}"
        lines += [f"mkdir -p {q(dest.rsplit('/', 1)[0])}", f"mv -f \"$t\"/{q(rel)} {q(dest)}"]
    lines.append("rm -rf \"$t\"")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for rel, data in zip(names, files.values()):
            ti = tarfile.TarInfo(rel)
            ti.size, ti.mode, ti.mtime = len(data), 0o600, 0
            tf.addfile(ti, io.BytesIO(data))
    ssh.run(["sh", "-c", "\n".join(lines)], sudo=True, input=buf.getvalue(), timeout=300)


def check_ports(tcp_ports, endpoints: dict[str, str], timeout: float = 30.0) -> dict[str, str]:
    """Each published TCP port answers from the operator machine (through the cloud's firewall
    or the local cloud's forward) — what a user of the service would see."""
    out = {}
    for port in tcp_ports:
        where = endpoints.get(f"{port}/tcp")
        if where is None:
            continue
        addr, p = where.rsplit(":", 1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((addr, int(p)), timeout=3.0):
                    break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise HostError(f"published port {port}/tcp does not answer at {where} ({exc})") from None
                time.sleep(0.5)
        out[f"{port}/tcp"] = where
    return out


def pinned(ref: str, pins: dict[str, str]) -> str:
    """`ref` with its pinned digest (`repo:tag@sha256:…`: the host stores both names)."""
    digest = pins.get(ref)
    return str(parse_reference(ref).with_digest(digest)) if digest else ref


# -- one host -----------------------------------------------------------------------------------------
@dataclass
class HostSteps:
    """What every host's deploy shares: the plan, the pinned digests, the agent and image seams."""

    plan: DeployPlan
    pins: dict[str, str]                       # image reference -> manifest digest (preflight's)
    bundles: object                            # remote.bundle.AgentBundles
    deliver: Callable
    push_images: Callable
    images_mode: str = "pull"
    insecure: tuple[str, ...] = ()
    seen_as: Callable[[str], str] = lambda registry: registry
    say: Callable[[str, str], None] = lambda host, msg: None
    ssh_factory: Callable = None
    ssh_timeout: float = 300.0
    dry_run: bool = False
    expected_python: Callable[[str], object] | None = None   # host -> the HostPython its OS runs
    started: float = field(default_factory=time.monotonic)

    def run(self, hp: HostDeployPlan, rec: inventory.HostRecord, out: HostOutcome) -> None:
        ssh = self.ssh_factory(rec.target())
        phase, t = "ssh", time.monotonic()

        def lap(name: str) -> None:
            nonlocal phase, t
            now = time.monotonic()
            out.seconds[phase] = round(now - t, 1)
            phase, t = name, now
        try:
            ssh.wait_ready(timeout=self.ssh_timeout)
            self.say(hp.host, f"SSH ready at {rec.target().where} (host key verified)")
            lap("agent")
            files, conf_creds = self.files(hp, rec)
            fp = fingerprint(files, {"images": self.images_mode})
            expect = None
            if self.expected_python:   # the agent made for it (pipeline started it early) tells the probe
                py = self.expected_python(hp.host)
                try:
                    expect = (py.version, bundle_marker(self.bundles.for_host(py)))
                except ProvisionerError:   # none for the expected Python: the host's own is asked below
                    expect = None
            probe = parse_probe_output(ssh.run(probe_command(REMOTE_VENV, fp, self.plan.stack.name, REMOTE_STACK,
                                                             hp.host, agent=expect), sudo=True, timeout=120).stdout,
                                       ssh.where)
            bundle = self.bundles.for_host(probe.facts.python)
            same_agent = probe.facts.marker == bundle_marker(bundle)
            if same_agent and probe.deployed == fp and healthy(probe.services, hp.services):
                out.unchanged, out.services = True, probe.services
                self.say(hp.host, "unchanged since the last deploy (agent, files, digests; every service healthy)")
                lap("done")
                out.endpoints = check_ports(hp.tcp_ports, rec.endpoints)
                return
            out.changes = self.changes(hp, probe, fp, agent_replaced=not same_agent)
            for c in out.changes:
                if c.action != "keep":
                    self.say(hp.host, f"plan: {c.describe()}")
            if self.dry_run:
                return
            if same_agent:
                self.say(hp.host, "agent: already installed from the same wheels")
            else:
                self.deliver(ssh, bundle, progress=lambda m: self.say(hp.host, m), facts=probe.facts)
            lap("prepare")
            conf, creds = conf_creds
            write_files(ssh, files, remove=(DEPLOYED,) + ((f"{SETTINGS_DIR}/{AUTH_FILE}",)
                                                          if self.images_mode == "pull" and not creds else ()))
            out.boot = self.boot(ssh, hp, bundle_marker(bundle))
            lap("images")
            out.images = self.images(ssh, hp, conf)
            lap("containers")
            privileged = ["--allow-privileged"] if any(self.plan.stack.services[s].privileges.privileged
                                                       for s in hp.services) else []
            out.actions = remote_json(ssh, ["up", "-f", REMOTE_STACK, "--host", hp.host, *privileged, "--pins", PINS,
                                            "--by", "deploy", "--json"], 1800)
            self.say(hp.host, "; ".join(a.get("text", "") for a in out.actions) or "services up to date")
            out.services = self.check_services(ssh, hp)
            ssh.run(["sh", "-c", f"umask 077 && printf '%s' {shlex.quote(fp)} > {DEPLOYED}"], sudo=True)
            out.endpoints = check_ports(hp.tcp_ports, rec.endpoints)
            lap("done")
        except ProvisionerError as exc:
            out.seconds[phase] = round(time.monotonic() - t, 1)
            out.error = f"{phase}: {exc}"
            self.say(hp.host, f"failed during {phase}: {exc}")
        finally:
            out.seconds["total"] = round(time.monotonic() - self.started, 1)
            ssh.close()

    # -- what the host is sent ------------------------------------------------------------------
    def files(self, hp: HostDeployPlan, rec: inventory.HostRecord) -> tuple[dict[str, bytes], tuple]:
        """Every file this deploy writes on the host (remote path -> bytes), and the registries
        configuration and credentials among them (pull mode)."""
        stack = self.plan.stack
        host = stack.host(hp.host)
        matches = {v.name: volume_match(self.plan.cloud, rec.style, v.name, rec.volumes[v.name])
                   for v in host.volumes if v.name in rec.volumes}
        files = {REMOTE_STACK: Path(stack.path).read_bytes(), REMOTE_ENV: hp.project_env.encode()}
        for local, remote in hp.files:
            try:
                files[remote] = Path(local).read_bytes()
            except OSError as exc:
                raise HostError(f"cannot read {local} (a file the stack names for {hp.host}): {exc.strerror}") from None
        files[REMOTE_HOST] = host_yaml(stack, self.plan.cloud, hp.host, matches, rec.ssh_cidr).encode()
        files[PINS] = (json.dumps({ref: self.pins[ref] for ref in hp.images if ref in self.pins}, indent=2,
                                  sort_keys=True) + "\n").encode()
        conf = creds = None
        if self.images_mode == "pull":
            conf = host_conf(host.registries, hp.images, self.seen_as)
            creds = host_credentials(conf, hp.images)
            files[f"{SETTINGS_DIR}/{CONF_FILE}"] = conf.to_toml().encode()
            if creds:
                files[f"{SETTINGS_DIR}/{AUTH_FILE}"] = encode_auths(creds).encode()
        return files, (conf, creds)

    def changes(self, hp: HostDeployPlan, probe, fp: str, *, agent_replaced: bool) -> list[ServiceChange]:
        stack = for_host(self.plan.stack, hp.host)
        if probe.deployed == fp:   # what the last good deploy delivered: its release is what runs
            return unchanged_plan(stack, probe.services, agent_replaced=agent_replaced)
        return plan_changes(stack, service_hashes(stack, portable=True), self.pins, current_release(probe.releases))

    # -- the steps on the host ------------------------------------------------------------------
    def boot(self, ssh: Runner, hp: HostDeployPlan, marker: str) -> list[dict]:
        res = ssh.run([*PROVISION, "host", "boot", "--json", "--skip-unchanged", marker], sudo=True, check=False,
                      timeout=1800)
        try:
            data = json.loads(res.stdout)
        except ValueError:
            data = {}
        steps = data.get("steps", [])
        if data.get("unchanged"):
            self.say(hp.host, f"prepare: host config unchanged since {data.get('started_at')}: no boot step runs")
        else:
            for s in steps:
                self.say(hp.host, f"prepare: {s.get('name')}: {s.get('status')} ({s.get('seconds', 0):.1f}s)"
                                  f"{' ' + s['message'] if s.get('message') else ''}")
        if res.returncode != 0:
            failed = [f"{s.get('name')}: {s.get('message')}" for s in steps if s.get("status") == "failed"]
            tail = "; ".join(failed) or " ".join(res.stderr.strip().splitlines()[-2:])
            raise HostError(f"the boot hook failed on {hp.host}: {tail} (details: `provision ssh "
                            f"{self.plan.stack.name}/{hp.host} -- sudo provision host status`)")
        return steps

    def images(self, ssh: Runner, hp: HostDeployPlan, conf) -> list[dict]:
        refs = [pinned(r, self.pins) for r in hp.images]
        if self.images_mode == "pull":
            self.say(hp.host, f"pulling {len(refs)} image(s) on the host")
            pulled = pull_on_host(ssh, hp.host, refs, conf)
            for ref, p in zip(hp.images, pulled):
                p["ref"] = ref
                what = "already there" if not p["fetched_layers"] else \
                    f"{p['fetched_layers']} layer(s), {p['bytes'] / 1e6:.1f} MB in {p['seconds']:.1f}s"
                self.say(hp.host, f"image {ref}: pulled by the host ({what})")
            return pulled
        out = []
        # one batch per host: a layer two images share travels once
        for ref, pushed in zip(hp.images, self.push_images(ssh, refs, insecure_registries=self.insecure)):
            out.append({**pushed.to_json(), "ref": ref, "digest": pushed.manifest_digest, "delivery": "push"})
            what = "already there" if pushed.up_to_date else \
                f"{len(pushed.sent)} layer(s) sent, {pushed.bytes_sent / 1e6:.1f} MB, {len(pushed.skipped)} there"
            self.say(hp.host, f"image {ref}: {what}")
        return out

    def check_services(self, ssh: Runner, hp: HostDeployPlan) -> list[dict]:
        rows = remote_json(ssh, ["ps", "-f", REMOTE_STACK, "--host", hp.host, "--json"])
        bad = [f"{r['service']} is {r['state']}{'/' + r['health'] if r.get('health') not in (None, 'none') else ''}"
               for r in rows if r.get("state") != "running" or r.get("health") not in (None, "none", "healthy")]
        if bad:
            raise HostError("services not healthy: " + ", ".join(bad))
        return rows
