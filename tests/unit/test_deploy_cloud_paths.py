"""`provision deploy` on AWS (moto server) and GCE (the discovery-validating double), up to SSH.

Everything before the first SSH connection runs for real against the emulators: the plan, the
image check in a registry, the launch, host keys read from the console, the host record. The SSH
factory is the seam: it records the target deploy would connect to and stops there.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli.main import cli, main
from provisioner.clouds.base import plan_launch
from provisioner.clouds.launch import Timeouts, launch
from provisioner.deploy import inventory
from provisioner.deploy.pipeline import Deployer
from provisioner.deploy.plan import plan_deploy
from provisioner.errors import CloudError, HostError, ImageError
from provisioner.stack import load_stack
from tests.registry_fixture import FakeRegistry, make_image, serve_image

from test_clouds_aws_moto import aws, moto_url  # noqa: F401  (fixtures)
from test_clouds_gce_double import double, gce  # noqa: F401  (fixtures)

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C8okWi0dh2l9GKJl operator@test"
CONSOLE_EC2 = (Path(__file__).parent.parent / "fixtures" / "clouds" / "console-ec2.txt").read_text()
STACK = """\
name: shop
hosts:
  - name: web
    ssh_cidr: 198.51.100.0/24
    services: [web]
    aws: {instance_type: t3.small, image: ami-1e749f67, zone: us-east-1a}
    gce: {machine_type: e2-small, image: family/ubuntu-cloudinit, zone: us-central1-a}
    disks:
      ephemeral: {mount: /var/lib/provisioner, count: 1}
      volumes:
        - {name: data, mount: /srv/data, size: 1}
services:
  web:
    image: REGISTRY/shop/web:1
    ports: ["80:80"]
"""


class StopAtSsh:
    targets: list = []

    def __init__(self, target):
        StopAtSsh.targets.append(target)
        self.target = target

    def wait_ready(self, timeout):
        raise HostError(f"ssh {self.target.where}: stopped here by the test")

    def close(self):
        pass


@pytest.fixture
def registry():
    with FakeRegistry() as reg:
        serve_image(reg, "shop/web", ["1"], make_image([{"index.html": b"hi"}]))
        yield reg


def up_to_ssh(stack: Path, cloud: str, driver, root: Path, *, preflight: bool = True):
    """`provision deploy` through the real pipeline, stopped at the first SSH connection.
    `preflight=False` skips the registry check (for stacks naming images from Docker Hub)."""
    d = Deployer(plan_deploy(load_stack(stack), cloud), driver, root=root, runner=None, public_key=PUBKEY,
                 private_key=root.parent / "id", timeouts=Timeouts(running=10, host_keys=5, deleted=10, interval=0.05),
                 bundle_builder=lambda runner, host, **_kw: "no agent is delivered without SSH",
                 ssh_factory=StopAtSsh)
    if not preflight:
        d._preflight = lambda: None
    return d.run()


def _deploy(tmp_path, registry, cloud, driver, image="shop/web:1"):
    stack = tmp_path / "stack.yml"
    stack.write_text(STACK.replace("REGISTRY/shop/web:1", f"{registry.address}/{image}"))
    StopAtSsh.targets = []
    return up_to_ssh(stack, cloud, driver, tmp_path / "root")


def test_aws_deploy_path_up_to_ssh(aws, registry, tmp_path, monkeypatch):
    _url, ec2, driver = aws
    monkeypatch.setattr(driver, "console_output", lambda inst: CONSOLE_EC2)  # moto's console has no keys
    result = _deploy(tmp_path, registry, "aws", driver)
    (host,) = result.hosts
    assert host.launched and host.error.startswith("ssh: ") and "stopped here by the test" in host.error
    rec = inventory.find(tmp_path / "root", "shop/web")
    inst = ec2.describe_instances(InstanceIds=[rec.instance_id])["Reservations"][0]["Instances"][0]
    assert (rec.address, rec.port, rec.user) == (inst["PublicIpAddress"], 22, "admin")
    assert rec.fingerprints and all(fp.startswith("SHA256:") for fp in rec.fingerprints)
    assert StopAtSsh.targets[0] == rec.target()
    vol = ec2.describe_volumes(VolumeIds=[rec.volumes["data"]])["Volumes"][0]
    assert vol["Attachments"][0]["InstanceId"] == rec.instance_id
    assert rec.endpoints["80/tcp"] == f"{rec.address}:80"


def test_gce_deploy_path_up_to_ssh(double, gce, registry, tmp_path):
    result = _deploy(tmp_path, registry, "gce", gce)
    (host,) = result.hosts
    assert host.launched and "stopped here by the test" in host.error
    rec = inventory.find(tmp_path / "root", "web")
    nic = double.instances[("us-central1-a", "shop-web")]["networkInterfaces"][0]
    assert rec.address == nic["accessConfigs"][0]["natIP"] and rec.user == "provisioner"
    assert set(rec.fingerprints) == {"SHA256:shop-webEd25519FingerprintAAAAAAAAAAAAAAAAAAAA",
                                     "SHA256:shop-webEcdsaFingerprintAAAAAAAAAAAAAAAAAAAAAA"}
    assert set(rec.volumes) == {"data"}


def test_an_unknown_image_fails_before_anything_is_launched(aws, registry, tmp_path):
    _url, ec2, driver = aws
    with pytest.raises(ImageError, match="shop/nope"):
        _deploy(tmp_path, registry, "aws", driver, image="shop/nope:1")
    running = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
               if i["State"]["Name"] != "terminated"]
    assert running == [] and ec2.describe_volumes()["Volumes"] == []
    assert inventory.records(tmp_path / "root") == []


TWO_HOSTS = STACK.replace("services:\n  web:", """  - name: db
    ssh_cidr: 198.51.100.0/24
    services: [db]
    aws: {instance_type: t3.small, image: ami-1e749f67, zone: us-east-1a}
    disks:
      ephemeral: {mount: /var/lib/provisioner, count: 1}
services:
  db:
    image: REGISTRY/shop/web:1
  web:""")


def test_aws_replacing_one_host_leaves_the_others_running(aws, registry, tmp_path, monkeypatch, capsys):
    """destroy --host web --keep-volumes, then deploy: web is launched again with its volume
    reattached; db, its instance, record and the stack's key pair are reused as they are."""
    url, ec2, driver = aws
    monkeypatch.setattr(driver, "console_output", lambda inst: CONSOLE_EC2)
    stack = tmp_path / "stack.yml"
    stack.write_text(TWO_HOSTS.replace("REGISTRY/shop/web:1", f"{registry.address}/shop/web:1"))
    root = tmp_path / "root"

    def deploy():
        return up_to_ssh(stack, "aws", driver, root)

    def live():
        return {i["InstanceId"]: i["State"]["Name"]
                for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}

    first = {h.host: h.launched for h in deploy().hosts}
    assert first == {"web": True, "db": True}
    web, db = inventory.find(root, "shop/web"), inventory.find(root, "shop/db")
    ec2.stop_instances(InstanceIds=[web.instance_id])                    # the failure

    with pytest.raises(HostError, match=rf"host web's instance {web.instance_id} is stopped; to replace a host: "
                                         r"'provision destroy shop --cloud aws --host NAME --keep-volumes'"):
        deploy()
    r = CliRunner().invoke(cli, ["--root", str(root), "destroy", "shop", "--cloud", "aws", "--host", "web",
                                 "--keep-volumes", "--yes", "--endpoint", url])
    assert r.exit_code == 0, r.output
    assert live()[web.instance_id] == "terminated" and live()[db.instance_id] == "running"
    assert [rec.host for rec in inventory.records(root, "shop")] == ["db"]
    assert ec2.describe_volumes(VolumeIds=[web.volumes["data"]])["Volumes"][0]["State"] == "available"

    second = deploy()
    assert {h.host: h.launched for h in second.hosts} == {"web": True, "db": False}
    new_web = inventory.find(root, "shop/web")
    assert new_web.instance_id != web.instance_id and live()[new_web.instance_id] == "running"
    assert inventory.find(root, "shop/db") == db and live()[db.instance_id] == "running"
    vol = ec2.describe_volumes(VolumeIds=[web.volumes["data"]])["Volumes"][0]
    assert new_web.volumes == web.volumes and vol["Attachments"][0]["InstanceId"] == new_web.instance_id
    assert len(ec2.describe_key_pairs()["KeyPairs"]) == 1
    assert StopAtSsh.targets[-2:] in ([new_web.target(), db.target()], [db.target(), new_web.target()])

    # launching a host next to the others while its own instance is still there: refused
    lp = plan_launch(load_stack(stack), "aws", PUBKEY)
    with pytest.raises(CloudError, match=r"^aws: stack 'shop' already has resources for host\(s\) web; "):
        launch(replace(lp, hosts=tuple(h for h in lp.hosts if h.host == "web")), driver, alongside=True)

    # the cloud terminating db by itself (a reclaimed spot VM) leaves its security group: named
    ec2.terminate_instances(InstanceIds=[db.instance_id])
    with pytest.raises(HostError, match=r"^aws: stack 'shop': host db has no instance but still has its firewall "
                                         r"provisioner-shop-db; to replace a host: "):
        deploy()

    with pytest.raises(SystemExit):   # no --yes: an unknown host fails before the prompt
        main(["--root", str(root), "destroy", "shop", "--cloud", "aws", "--host", "wbe", "--endpoint", url])
    assert capsys.readouterr().err == ("error: aws: stack 'shop' has nothing for host(s) wbe "
                                       "(hosts with resources: db, web)\n")
