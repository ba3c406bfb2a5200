"""One SSH range per host, whatever decided it (the stack's ssh_cidr, `--ssh-cidr`, or the
operator's address detected from the local route): the cloud firewall and the host's own nftables
firewall (from the host.yml deploy writes) allow exactly that range. Before, the host firewall took
the range only from the stack file, so a host deployed with `--ssh-cidr` or a detected range
accepted SSH from anywhere behind its cloud firewall (the VPC, a neighbour on the LAN)."""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from provisioner.clouds.launch import Timeouts
from provisioner.deploy import inventory
from provisioner.deploy.pipeline import Deployer
from provisioner.deploy.plan import REMOTE_HOST, REMOTE_STACK, plan_deploy
from provisioner.host import config as hostconfig
from provisioner.host.steps import firewall
from provisioner.remote.bundle import AgentBundle
from provisioner.runner import Result
from provisioner.stack import load_stack
from provisioner.testing import FakeRunner
from tests.registry_fixture import FakeRegistry, make_image, serve_image

from test_clouds_gce_double import double, gce  # noqa: F401  (fixtures)
from test_deploy_cloud_paths import PUBKEY

STACK = """\
name: shop
hosts:
  - name: web
    services: [web]
    gce: {machine_type: e2-small, image: family/ubuntu-cloudinit, zone: us-central1-a}
services:
  web:
    image: REGISTRY/shop/web:1
"""

def _agent_bundle(tmp_path: Path) -> AgentBundle:
    wheel = tmp_path / "provisioner-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("provisioner/__init__.py", "")
    return AgentBundle(wheel, (), "3.11")


class HostOverSsh(FakeRunner):
    """A host reached over SSH: records the files deploy writes, answers the agent's commands."""

    def __init__(self, target):
        super().__init__(where=target.where)
        self.files: dict[str, str] = {}
        self.expect([], prefix=True, handler=self.answer)

    def answer(self, argv):
        if list(argv[:2]) == ["sh", "-c"] and "@@provisioner:deployed" in argv[2]:   # deploy's probe: a new host
            return Result(argv, 0, "Python 3.11.2\nglibc 2.36\nx86_64\n-\n\n\n@@provisioner:deployed\n\n"
                                   "@@provisioner:services\n\n@@provisioner:releases\n", "")
        return Result(argv, 0, '{"steps": []}' if "boot" in argv else "[]", "")

    def run(self, argv, **kw):
        if list(argv[:2]) == ["sh", "-c"] and "tar -x" in argv[2]:      # the files, in one round trip
            with tarfile.open(fileobj=io.BytesIO(kw["input"])) as tf:
                self.files.update({f"/etc/provisioner/{m.name}": tf.extractfile(m).read().decode()
                                   for m in tf.getmembers()})
        return super().run(argv, **kw)

    def wait_ready(self, timeout):
        return 0.0

    def close(self):
        pass


def _deploy(tmp_path, gce, registry, **kw):
    stack = tmp_path / "stack.yml"
    stack.write_text(STACK.replace("REGISTRY", registry.address))
    hosts: list[HostOverSsh] = []
    bundle = _agent_bundle(tmp_path)

    def factory(target):
        hosts.append(HostOverSsh(target))
        return hosts[-1]
    d = Deployer(plan_deploy(load_stack(stack), "gce"), gce, root=tmp_path / "root", runner=None, public_key=PUBKEY,
                 private_key=tmp_path / "id", timeouts=Timeouts(running=10, host_keys=5, deleted=10, interval=0.05),
                 bundle_builder=lambda runner, host, **_kw: bundle, deliverer=lambda ssh, bundle, **_kw: None,
                 pusher=lambda ssh, refs, insecure_registries: [], ssh_factory=factory, **kw)
    result = d.run()
    assert result.ok, [h.error for h in result.hosts]
    (host,) = hosts
    return stack, host


def _host_firewall(tmp_path, stack: Path, host: HostOverSsh) -> str:
    """What the host's boot hook makes of the files deploy wrote: its host config, then its rules."""
    etc = tmp_path / "etc-provisioner"
    etc.mkdir()
    (etc / "stack.yml").write_text(host.files[REMOTE_STACK])
    (etc / "host.yml").write_text(host.files[REMOTE_HOST])
    return firewall.render(hostconfig.load(etc / "host.yml"))


@pytest.fixture
def registry():
    with FakeRegistry() as reg:
        serve_image(reg, "shop/web", ["1"], make_image([{"index.html": b"hi"}]))
        yield reg


def test_ssh_cidr_option_reaches_the_cloud_and_the_host_firewall(double, gce, registry, tmp_path):
    stack, host = _deploy(tmp_path, gce, registry, ssh_cidr="203.0.113.0/24")
    assert double.firewalls["provisioner-shop-web-ssh"]["sourceRanges"] == ["203.0.113.0/24"]
    rules = _host_firewall(tmp_path, stack, host)
    assert "ip saddr 203.0.113.0/24 tcp dport 22 accept" in rules
    assert "\n        tcp dport 22 accept" not in rules
    assert inventory.find(tmp_path / "root", "shop/web").ssh_cidr == "203.0.113.0/24"


def test_a_detected_range_reaches_both_firewalls(double, gce, registry, tmp_path):
    stack, host = _deploy(tmp_path, gce, registry, detected_cidr="192.0.2.44/32")
    assert double.firewalls["provisioner-shop-web-ssh"]["sourceRanges"] == ["192.0.2.44/32"]
    assert "ip saddr 192.0.2.44/32 tcp dport 22 accept" in _host_firewall(tmp_path, stack, host)


def test_a_reused_host_keeps_its_range_and_a_different_one_is_refused(double, gce, registry, tmp_path):
    from provisioner.errors import HostError

    _deploy(tmp_path, gce, registry, ssh_cidr="203.0.113.0/24")
    stack, host = _deploy(tmp_path, gce, registry)           # reused: its recorded range again
    assert "ssh_cidr: 203.0.113.0/24" in host.files[REMOTE_HOST]
    with pytest.raises(HostError, match=r"host web was launched with SSH allowed from 203\.0\.113\.0/24; "
                                        r"--ssh-cidr 198\.51\.100\.0/24 differs"):
        _deploy(tmp_path, gce, registry, ssh_cidr="198.51.100.0/24")
