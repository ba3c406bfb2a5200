"""`provision deploy`: launch (or reuse) the stack's hosts, then bring each one up, concurrently.

Per host, timed like the RightScale boot-time table (launch and boot, SSH ready, agent install,
host preparation, image pulls, container starts, total):

1. every image reference resolved to its manifest digest in its registry (the release pins
   them), before any VM is launched for it;
2. launch through the cloud driver (or reuse running instances recorded by an earlier deploy);
   the SSH host keys come from the console, so SSH never trusts on first use;
3. the rest, per host and concurrently, in hoststeps.py: one probe, the change plan, then agent,
   files and boot hook, images by digest, `up`, health and port checks — or nothing at all when
   the probe says nothing changed.

`--dry-run` launches nothing and changes nothing: it prints each host's change plan.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .. import hostos
from ..clouds.base import host_ssh_cidr, plan_launch
from ..clouds.launch import HostResult, Timeouts, launch
from ..errors import ConfigError, HostError
from ..images.reference import parse as parse_reference
from ..images.registry import Registry
from ..remote.bundle import AgentBundles, HostPython, build_bundle
from ..remote.deliver import deliver
from ..remote.imagepush import push_images
from ..remote.ssh import SshClient
from . import inventory
from .changes import ServiceChange
from .hoststeps import HostOutcome, HostSteps
from .images import MODES
from .plan import DeployPlan

PHASES = (("launch", "launch and boot"), ("ssh", "SSH ready"), ("agent", "agent install"),
          ("prepare", "host preparation (disks)"), ("images", "image pulls"), ("containers", "container starts"),
          ("total", "total"))
DEFAULT_USER = {"aws": "admin", "gce": "provisioner"}  # AWS: Debian AMIs; GCE: the ssh-keys metadata user


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
                 detected_cidr: str | None = None, dry_run: bool = False, resolver=None):
        if images not in MODES:
            raise ConfigError(f"--images must be one of {', '.join(MODES)}, not {images!r}")
        self.plan = plan
        self.driver = driver
        self.root = Path(root)
        self.runner = runner
        self.public_key = public_key
        self.private_key = Path(private_key)
        self.user = user
        self.insecure = tuple(insecure_registries)
        self.timeouts = timeouts or Timeouts()
        self.progress = progress
        self.ssh_cidr = ssh_cidr            # --ssh-cidr (beats the stack's, which beats detection)
        self.detected_cidr = detected_cidr
        self.dry_run = dry_run
        # seams for tests; the real ones by default
        self.resolve = resolver or (lambda ref: Registry(parse_reference(ref), insecure_hosts=self.insecure)
                                    .resolve().manifest_digest)
        self.bundles = AgentBundles(runner, progress=progress, build=bundle_builder or build_bundle)
        self._lock = threading.Lock()
        self.steps = HostSteps(plan, {}, self.bundles, deliverer or deliver, pusher or push_images, images,
                               self.insecure, getattr(driver, "registry_seen_as", lambda registry: registry),
                               self._say, ssh_factory or SshClient, ssh_timeout, dry_run,
                               expected_python=self._expected_python)

    # -- the whole deploy ----------------------------------------------------------------------
    def run(self) -> DeployResult:
        stack = self.plan.stack
        self.steps.started = time.monotonic()
        self.steps.pins = self._preflight()
        records, missing = self._reuse()
        launch_plan = None
        if missing:
            launch_plan = plan_launch(stack, self.plan.cloud, self.public_key, ssh_cidr=self.ssh_cidr,
                                      detected_cidr=self.detected_cidr)
            launch_plan = replace(launch_plan, hosts=tuple(h for h in launch_plan.hosts if h.host in missing))
            self.driver.check(launch_plan)   # VM image, zones, types, ports: before anything exists
        outcomes = [HostOutcome(hp.host, launched=hp.host in missing) for hp in self.plan.hosts]
        if self.dry_run:
            for hp, out in zip(self.plan.hosts, outcomes):
                if hp.host in missing:
                    out.changes = [ServiceChange(s, "create", ("the host is launched",)) for s in hp.services]
                    self._say(hp.host, "plan: launch the host; create " + ", ".join(hp.services))
            self._hosts(records, [(hp, out) for hp, out in zip(self.plan.hosts, outcomes) if hp.host in records])
            return DeployResult(stack.name, self.plan.cloud, outcomes)
        with ThreadPoolExecutor(max_workers=1) as pool:
            # the agent's wheels are made while the VMs boot, for the Python their OS is expected to
            # run (delivery asks the host, and makes another set if it runs something else)
            for expected in self._expected_pythons():
                pool.submit(self.bundles.for_host, expected)
            launched: dict[str, float] = {}
            if launch_plan is not None:
                new, launched = self._launch(launch_plan, alongside=bool(records))
                records.update(new)
            self._hosts(records, list(zip(self.plan.hosts, outcomes)))
        for out in outcomes:
            out.seconds = {"launch": launched.get(out.host, 0.0), **out.seconds}
        return DeployResult(stack.name, self.plan.cloud, outcomes)

    def _hosts(self, records: dict[str, inventory.HostRecord], work: list) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(work))) as hosts_pool:
            for f in [hosts_pool.submit(self.steps.run, hp, records[hp.host], out) for hp, out in work]:
                f.result()

    def _say(self, host: str, msg: str) -> None:
        with self._lock:
            self.progress(f"{host}: {msg}")

    def _preflight(self) -> dict[str, str]:
        """Every image resolves in its registry before a VM is launched for it; the digests are
        the release's pins (what every host runs, whatever the tag says by then)."""
        pins = {}
        for ref in self.plan.images:
            self.progress(f"image {ref}: checking the registry")
            pins[ref] = self.resolve(ref)
        return pins

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
    def _expected_python(self, host: str) -> HostPython:
        """The interpreter `host`'s OS (the stack's `os:` for this cloud) is known to run."""
        system = hostos.host_os(self.plan.stack.host(host).clouds[self.plan.cloud].options.get("os", hostos.DEFAULT))
        return HostPython(system.python, system.glibc, HostPython.local().machine)

    def _expected_pythons(self) -> list:
        return sorted({self._expected_python(hp.host) for hp in self.plan.hosts}, key=lambda p: (p.version, p.glibc))
