"""`provision deploy`: launch (or reuse) the stack's hosts, then bring each one up, concurrently.

Per host, timed like the RightScale boot-time table (launch and boot, SSH ready, agent install,
host preparation, image pulls, container starts, total):

1. launch through the cloud driver (or reuse running instances recorded by an earlier deploy);
   the SSH host keys come from the console, so SSH never trusts on first use;
2. wait for SSH; deliver the agent (wheels over SFTP, offline install; skipped when unchanged);
3. push the stack file and /etc/provisioner/host.yml (which disk each volume is), run the boot
   hook `provision host boot` (disks, users, sysctl, logs, firewall, time, containers);
4. the images the host's services use: pulled by the host itself from their registries (default;
   the registries configuration and exactly the credentials needed delivered over SSH, see
   images.py), or pushed from here layer by layer (`--images push`), only what the host lacks;
5. `provision up --host H` on the host (dependency order, waits for health), then check each
   service is running and healthy and each published TCP port answers from here.

Deploying again an unchanged stack changes nothing: every step is idempotent and says so.
"""
from __future__ import annotations

import json
import shlex
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .. import hostos
from ..clouds.base import host_ssh_cidr, plan_launch
from ..clouds.launch import HostResult, Timeouts, launch
from ..errors import ConfigError, HostError, ProvisionerError
from . import inventory
from .images import MODES, host_conf, host_credentials, pull_on_host, write_settings
from .plan import REMOTE_ENV, REMOTE_HOST, REMOTE_STACK, DeployPlan, HostDeployPlan, host_yaml, volume_match

PHASES = (("launch", "launch and boot"), ("ssh", "SSH ready"), ("agent", "agent install"),
          ("prepare", "host preparation (disks)"), ("images", "image pulls"), ("containers", "container starts"),
          ("total", "total"))
DEFAULT_USER = {"aws": "admin", "gce": "provisioner"}  # AWS: Debian AMIs; GCE: the ssh-keys metadata user
PROVISION = ("provision",)                         # the agent on the host (/usr/local/bin, via sudo)


@dataclass
class HostOutcome:
    host: str
    launched: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    boot: list[dict] = field(default_factory=list)        # the boot hook's steps
    images: list[dict] = field(default_factory=list)      # {"ref", "digest", "delivery": pull|push, ...} per image
    actions: list[dict] = field(default_factory=list)     # what `up` did
    services: list[dict] = field(default_factory=list)    # `ps` rows
    endpoints: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict:
        return {"host": self.host, "launched": self.launched, "seconds": self.seconds, "boot": self.boot,
                "images": self.images, "actions": self.actions, "services": self.services,
                "endpoints": self.endpoints, "error": self.error}


@dataclass
class DeployResult:
    stack: str
    cloud: str
    hosts: list[HostOutcome]

    @property
    def ok(self) -> bool:
        return all(h.error is None for h in self.hosts)

    def to_json(self) -> dict:
        return {"stack": self.stack, "cloud": self.cloud, "ok": self.ok, "hosts": self.hosts}


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    s = round(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def breakdown_rows(result: DeployResult) -> list[list[str]]:
    """Rows: the phases; columns: one per host (the published table's shape)."""
    def cell(h: HostOutcome, key: str) -> str:
        if key == "launch" and not h.launched:
            return "reused"
        return fmt_seconds(h.seconds.get(key))
    return [[label] + [cell(h, key) for h in result.hosts] for key, label in PHASES]


class Deployer:
    def __init__(self, plan: DeployPlan, driver, *, root: Path, runner, public_key: str, private_key: Path,
                 user: str | None = None, insecure_registries: tuple[str, ...] = (),
                 timeouts: Timeouts | None = None, ssh_timeout: float = 300.0,
                 progress: Callable[[str], None] = lambda _m: None, bundle_builder=None, deliverer=None,
                 pusher=None, ssh_factory=None, images: str = "pull", ssh_cidr: str | None = None,
                 detected_cidr: str | None = None):
        self.plan = plan
        self.driver = driver
        self.root = Path(root)
        self.runner = runner
        self.public_key = public_key
        self.private_key = Path(private_key)
        self.user = user
        self.insecure = tuple(insecure_registries)
        self.timeouts = timeouts or Timeouts()
        self.ssh_timeout = ssh_timeout
        self.progress = progress
        self.ssh_cidr = ssh_cidr            # --ssh-cidr (beats the stack's, which beats detection)
        self.detected_cidr = detected_cidr
        # seams for tests; the real ones by default
        from ..remote.bundle import AgentBundles, build_bundle
        from ..remote.deliver import deliver
        from ..remote.imagepush import push_images
        from ..remote.ssh import SshClient

        self.bundles = AgentBundles(runner, progress=progress, build=bundle_builder or build_bundle)
        self.deliver = deliverer or deliver
        self.push_images = pusher or push_images
        if images not in MODES:
            raise ConfigError(f"--images must be one of {', '.join(MODES)}, not {images!r}")
        self.images_mode = images
        self.ssh_factory = ssh_factory or SshClient
        self._lock = threading.Lock()

    # -- the whole deploy ----------------------------------------------------------------------
    def run(self) -> DeployResult:
        stack = self.plan.stack
        self._start = time.monotonic()
        self._preflight()
        records, missing = self._reuse()
        launch_plan = None
        if missing:
            launch_plan = plan_launch(stack, self.plan.cloud, self.public_key, ssh_cidr=self.ssh_cidr,
                                      detected_cidr=self.detected_cidr)
            launch_plan = replace(launch_plan, hosts=tuple(h for h in launch_plan.hosts if h.host in missing))
            self.driver.check(launch_plan)   # VM image, zones, types, ports: before anything exists
        with ThreadPoolExecutor(max_workers=1) as pool:
            # the agent's wheels are made while the VMs boot, for the Python their OS is expected to
            # run (delivery asks the host, and makes another set if it runs something else)
            for expected in self._expected_pythons():
                pool.submit(self.bundles.for_host, expected)
            launched: dict[str, float] = {}
            if launch_plan is not None:
                new, launched = self._launch(launch_plan, alongside=bool(records))
                records.update(new)
            launch_seconds = dict(launched)
            outcomes = [HostOutcome(hp.host, launched=hp.host in launched) for hp in self.plan.hosts]
            with ThreadPoolExecutor(max_workers=max(1, len(outcomes))) as hosts_pool:
                futures = [hosts_pool.submit(self._deploy_host, hp, records[hp.host], out)
                           for hp, out in zip(self.plan.hosts, outcomes)]
                for f in futures:
                    f.result()
        for out in outcomes:
            out.seconds = {"launch": launch_seconds.get(out.host, 0.0), **out.seconds}
        return DeployResult(stack.name, self.plan.cloud, outcomes)

    def _say(self, host: str, msg: str) -> None:
        with self._lock:
            self.progress(f"{host}: {msg}")

    def _preflight(self) -> None:
        """Every image must resolve in its registry before a VM is launched for it."""
        from ..images.reference import parse
        from ..images.registry import Registry

        for ref in self.plan.images:
            self.progress(f"image {ref}: checking the registry")
            Registry(parse(ref), insecure_hosts=self.insecure).resolve()

    # -- launch or reuse -----------------------------------------------------------------------
    def _reuse(self) -> tuple[dict[str, inventory.HostRecord], list[str]]:
        """The running, recorded hosts to reuse, and the hosts to launch: those the cloud has no
        instance for (a first deploy, or a host replaced with `destroy --host`). Anything else —
        a stopped instance, one this machine has no record of, a host the stack file dropped — is
        one error naming each, before anything changes."""
        stack, cloud = self.plan.stack, self.plan.cloud
        found = self.driver.find(stack.name)
        instances = {r.host: r for r in found if r.kind == "instance"}
        known = {r.host: r for r in inventory.records(self.root, stack.name)}
        names = [h.host for h in self.plan.hosts]
        reuse, missing, problems = {}, [], []
        for name in names:
            inst = instances.get(name)
            if inst is None:
                # an instance the cloud terminated by itself (a reclaimed spot VM) leaves its firewall
                left = sorted({f"firewall {r.name}" for r in found if r.host == name and r.kind == "firewall"})
                if left:
                    problems.append(f"host {name} has no instance but still has its {', '.join(left)}")
                else:
                    missing.append(name)
            elif inst.state != "running":
                problems.append(f"host {name}'s instance {inst.id} is {inst.state or 'not running'}")
            elif name not in known:
                problems.append(f"host {name} runs ({inst.id}) but {self.root} has no record of it")
            elif self.ssh_cidr and known[name].ssh_cidr and cloud != "local" and known[name].ssh_cidr != self.ssh_cidr:
                problems.append(f"host {name} was launched with SSH allowed from {known[name].ssh_cidr}; "
                                f"--ssh-cidr {self.ssh_cidr} differs from its cloud firewall")
            else:
                reuse[name] = known[name]
        problems += [f"host {h} ({instances[h].id}) is not in {stack.path} any more"
                     for h in sorted(set(instances) - set(names))]
        if problems:
            raise HostError(f"{cloud}: stack {stack.name!r}: {'; '.join(problems)}; to replace a host: "
                            f"'provision destroy {stack.name} --cloud {cloud} --host NAME --keep-volumes', "
                            "then deploy again")
        if reuse:
            self.progress(f"{stack.name}: reusing running hosts {', '.join(reuse)}"
                          + (f"; launching {', '.join(missing)}" if missing else ""))
        return reuse, missing

    def _launch(self, lp, alongside: bool = False) -> tuple[dict[str, inventory.HostRecord], dict[str, float]]:
        started = time.monotonic()
        result = launch(lp, self.driver, timeouts=self.timeouts, status=self.progress, alongside=alongside)
        took = time.monotonic() - started
        records, seconds = {}, {}
        for hr in result.hosts:
            records[hr.host] = self._record(hr)
            inventory.save(self.root, records[hr.host])
            seconds[hr.host] = round(hr.ready_seconds if hr.ready_seconds is not None else took, 1)
        return records, seconds

    def _record(self, hr: HostResult) -> inventory.HostRecord:
        stack, cloud = self.plan.stack, self.plan.cloud
        inst = hr.instance
        if hr.host_keys is None:
            raise HostError(f"{cloud}: host {hr.host}: the console never showed its SSH host keys, so its identity "
                            f"cannot be verified; see the console output, then destroy and deploy again")
        if cloud == "local":
            address, port = inst.extra["ssh"].rsplit(":", 1)
            user = inst.extra.get("user") or "debian"
            style = inst.extra.get("style", "aws")
            endpoints = {f"{p['guest_port']}/{p['proto']}": f"127.0.0.1:{p['host_port']}"
                         for p in inst.extra.get("ports", [])}
            endpoints["22/tcp"] = inst.extra["ssh"]
        else:
            address, port = inst.extra.get("public_ip") or "", "22"
            if not address:
                raise HostError(f"{cloud}: host {hr.host}: instance {inst.id} has no public address to SSH to")
            user, style = DEFAULT_USER[cloud], cloud
            endpoints = {}
        host = stack.host(hr.host)
        for p in stack.published_ports(host):
            for n in range(p.first, p.last + 1):
                endpoints.setdefault(f"{n}/{p.protocol}", f"{address}:{n}")
        if host.metrics is not None and host.metrics.allow_from:   # where to scrape it from
            endpoints.setdefault(f"{host.metrics.port}/tcp", f"{address}:{host.metrics.port}")
        # launch attaches them in the order the host's disks: section lists them
        volumes = {spec.name: res.id for spec, res in zip(host.volumes, hr.volumes)}
        return inventory.HostRecord(
            stack=stack.name, host=hr.host, cloud=cloud, address=address, port=int(port), user=self.user or user,
            key_file=str(self.private_key), fingerprints=tuple(hr.host_keys.fingerprints.values()),
            instance_id=inst.id, volumes=volumes, endpoints=endpoints, stack_file=str(Path(stack.path).resolve()),
            style=style, ssh_cidr=host_ssh_cidr(cloud, hr.ssh_cidr))

    # -- one host ------------------------------------------------------------------------------
    def _expected_pythons(self) -> list:
        from ..remote.bundle import HostPython

        systems = {h.clouds[self.plan.cloud].options.get("os", hostos.DEFAULT) for h in self.plan.stack.hosts
                   if h.name in {hp.host for hp in self.plan.hosts}}
        machine = HostPython.local().machine
        return [HostPython(hostos.host_os(s).python, hostos.host_os(s).glibc, machine) for s in sorted(systems)]

    def _deploy_host(self, hp: HostDeployPlan, rec: inventory.HostRecord, out: HostOutcome) -> None:
        ssh = self.ssh_factory(rec.target())
        phase, t = "ssh", time.monotonic()

        def lap(name: str) -> None:
            nonlocal phase, t
            now = time.monotonic()
            out.seconds[phase] = round(now - t, 1)
            phase, t = name, now
        try:
            ssh.wait_ready(timeout=self.ssh_timeout)
            self._say(hp.host, f"SSH ready at {rec.target().where} (host key verified)")
            lap("agent")
            self.deliver(ssh, self.bundles, progress=lambda m: self._say(hp.host, m))
            lap("prepare")
            out.boot = self._prepare(ssh, hp, rec)
            lap("images")
            out.images = self._images(ssh, hp)
            lap("containers")
            privileged = ["--allow-privileged"] if any(self.plan.stack.services[s].privileges.privileged
                                                       for s in hp.services) else []
            out.actions = self._remote_json(ssh, ["up", "-f", REMOTE_STACK, "--host", hp.host, *privileged, "--json"],
                                            1800)
            self._say(hp.host, "; ".join(a.get("text", "") for a in out.actions) or "services up to date")
            out.services = self._check_services(ssh, hp)
            out.endpoints = self._check_ports(hp, rec)
            lap("done")
        except ProvisionerError as exc:
            out.seconds[phase] = round(time.monotonic() - t, 1)
            out.error = f"{phase}: {exc}"
            self._say(hp.host, f"failed during {phase}: {exc}")
        finally:
            out.seconds["total"] = round(time.monotonic() - self._start, 1)
            ssh.close()

    def _images(self, ssh, hp: HostDeployPlan) -> list[dict]:
        if self.images_mode == "pull":
            seen_as = getattr(self.driver, "registry_seen_as", lambda registry: registry)
            conf = host_conf(self.plan.stack.host(hp.host).registries, hp.images, seen_as)
            write_settings(ssh, conf, host_credentials(conf, hp.images))
            self._say(hp.host, f"pulling {len(hp.images)} image(s) on the host")
            pulled = pull_on_host(ssh, hp.host, list(hp.images), conf)
            for p in pulled:
                what = "already there" if not p["fetched_layers"] else \
                    f"{p['fetched_layers']} layer(s), {p['bytes'] / 1e6:.1f} MB in {p['seconds']:.1f}s"
                self._say(hp.host, f"image {p['ref']}: pulled by the host ({what})")
            return pulled
        out = []
        # one batch per host: a layer two images share travels once
        for ref, pushed in zip(hp.images, self.push_images(ssh, list(hp.images), insecure_registries=self.insecure)):
            out.append({**pushed.to_json(), "ref": ref, "digest": pushed.manifest_digest, "delivery": "push"})
            what = "already there" if pushed.up_to_date else \
                f"{len(pushed.sent)} layer(s) sent, {pushed.bytes_sent / 1e6:.1f} MB, {len(pushed.skipped)} there"
            self._say(hp.host, f"image {ref}: {what}")
        return out

    def _remote_json(self, ssh, args: list[str], timeout: float = 600.0):
        res = ssh.run([*PROVISION, *args], sudo=True, check=False, timeout=timeout)
        if res.returncode != 0:
            tail = " ".join((res.stderr.strip() or res.stdout.strip()).splitlines()[-2:])
            raise HostError(f"`provision {shlex.join(args)}` failed on the host (exit {res.returncode}): {tail}")
        try:
            return json.loads(res.stdout or "null")
        except ValueError:
            raise HostError(f"`provision {shlex.join(args)}` printed no JSON: {res.stdout[:200]!r}") from None

    def _write(self, ssh, path: str, text: str) -> None:
        """`text` into `path` on the host, root's alone (0600 in a 0700 directory): the stack's
        environment, env files and secret files are the services' secrets. The content goes over
        the session's stdin, never in a command line."""
        d = shlex.quote(path.rsplit("/", 1)[0])
        script = f"umask 077 && mkdir -p {d} && chmod go= {d} && cat > {shlex.quote(path)}.new && " \
                 f"mv -f {shlex.quote(path)}.new {shlex.quote(path)}"
        ssh.run(["sh", "-c", script], sudo=True, input=text)

    def _prepare(self, ssh, hp: HostDeployPlan, rec: inventory.HostRecord) -> list[dict]:
        stack = self.plan.stack
        host = stack.host(hp.host)
        matches = {v.name: volume_match(self.plan.cloud, rec.style, v.name, rec.volumes[v.name])
                   for v in host.volumes if v.name in rec.volumes}
        self._write(ssh, REMOTE_STACK, Path(stack.path).read_text())
        self._write(ssh, REMOTE_ENV, hp.project_env)
        for local, remote in hp.files:
            try:
                self._write(ssh, remote, Path(local).read_text())
            except OSError as exc:
                raise HostError(f"cannot read {local} (a file the stack names for {hp.host}): {exc.strerror}") from None
        self._write(ssh, REMOTE_HOST, host_yaml(stack, self.plan.cloud, hp.host, matches, rec.ssh_cidr))
        res = ssh.run([*PROVISION, "host", "boot", "--json"], sudo=True, check=False, timeout=1800)
        try:
            steps = json.loads(res.stdout).get("steps", [])
        except ValueError:
            steps = []
        for s in steps:
            self._say(hp.host, f"prepare: {s.get('name')}: {s.get('status')} ({s.get('seconds', 0):.1f}s)"
                               f"{' ' + s['message'] if s.get('message') else ''}")
        if res.returncode != 0:
            failed = [f"{s.get('name')}: {s.get('message')}" for s in steps if s.get("status") == "failed"]
            tail = "; ".join(failed) or " ".join(res.stderr.strip().splitlines()[-2:])
            raise HostError(f"the boot hook failed on {hp.host}: {tail} (details: `provision ssh "
                            f"{stack.name}/{hp.host} -- sudo provision host status`)")
        return steps

    def _check_services(self, ssh, hp: HostDeployPlan) -> list[dict]:
        rows = self._remote_json(ssh, ["ps", "-f", REMOTE_STACK, "--host", hp.host, "--json"])
        bad = [f"{r['service']} is {r['state']}{'/' + r['health'] if r.get('health') not in (None, 'none') else ''}"
               for r in rows if r.get("state") != "running" or r.get("health") not in (None, "none", "healthy")]
        if bad:
            raise HostError("services not healthy: " + ", ".join(bad))
        return rows

    def _check_ports(self, hp: HostDeployPlan, rec: inventory.HostRecord, timeout: float = 30.0) -> dict[str, str]:
        """Each published TCP port answers from the operator machine (through the cloud's firewall
        or the local cloud's forward) — what a user of the service would see."""
        out = {}
        for port in hp.tcp_ports:
            where = rec.endpoints.get(f"{port}/tcp")
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

