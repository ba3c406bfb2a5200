"""Cloud layer units: planning, templates, console parsing, error translation, retry, keys, and the
launch orchestration (replace once, rollback) against an in-memory driver."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from cloudtest import assert_valid_cloud_config
from provisioner.clouds.aws import instance_store_mappings
from provisioner.clouds.base import Resource, firewall_rules, plan_launch
from provisioner.clouds.console import parse_host_keys
from provisioner.clouds.errors import (CloudAuthError, CloudInvalid, CloudNotFound, CloudQuotaError,
                                       CloudThrottled, translate)
from provisioner.clouds.gce import image_url
from provisioner.clouds.keys import operator_key, read_public_key
from provisioner.clouds.launch import Timeouts, destroy, launch
from provisioner.clouds.operator import detect_operator_cidr
from provisioner.clouds.retry import poll, retry, retry_consistent
from provisioner.clouds.userdata import render_user_data
from provisioner.errors import CloudError, ConfigError
from provisioner.runner import Result
from provisioner.runspec.ports import PublishedPort
from provisioner.stack import load_stack
from provisioner.testing import FakeRunner

FIXTURES = Path(__file__).parent.parent / "fixtures" / "clouds"
STACK = FIXTURES / "stack.yml"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C8okWi0dh2l9GKJl operator@test"


# -- planning ---------------------------------------------------------------------------------------
def test_plan_rules_tags_volumes():
    plan = plan_launch(load_stack(STACK), "aws", PUBKEY)
    web = plan.hosts[0]
    assert [str(r) for r in web.rules] == ["22/tcp from 198.51.100.0/24", "80/tcp from 0.0.0.0/0",
                                           "443/tcp from 0.0.0.0/0", "8080-8081/tcp from 0.0.0.0/0",
                                           "5353/udp from 0.0.0.0/0"]
    assert web.tags == {"team": "shop", "provisioner:stack": "shop", "provisioner:host": "web", "Name": "shop-web"}
    assert [(v.name, v.device, v.encrypted, v.tags["provisioner:keep"]) for v in web.volumes] == [
        ("data", "/dev/sdf", True, "false"), ("logs", "/dev/sdg", True, "true")]
    gce = plan_launch(load_stack(STACK), "gce", PUBKEY)
    assert gce.hosts[0].tags == {"team": "shop", "provisioner-stack": "shop", "provisioner-host": "web"}
    assert [v.device for v in gce.hosts[0].volumes] == ["data", "logs"]
    assert gce.hosts[1].ephemeral_count == 1 and gce.hosts[1].ephemeral_interface == "scsi"


def test_ssh_cidr_precedence_and_detection(tmp_path):
    stack = load_stack(STACK)
    assert set(plan_launch(stack, "aws", PUBKEY, ssh_cidr="192.0.2.0/28").ssh_cidr.values()) == {"192.0.2.0/28"}
    plan = plan_launch(stack, "aws", PUBKEY, detected_cidr="10.1.2.3/32")
    assert plan.ssh_cidr == {"web": "198.51.100.0/24", "db": "198.51.100.0/24"}
    assert plan.ssh_cidr_source["web"] == "stack file"
    nocidr = tmp_path / "s.yml"
    nocidr.write_text(STACK.read_text().replace("    ssh_cidr: 198.51.100.0/24\n", ""))
    plan = plan_launch(load_stack(nocidr), "aws", PUBKEY, detected_cidr="10.1.2.3/32")
    assert plan.ssh_cidr["web"] == "10.1.2.3/32" and "detected" in plan.ssh_cidr_source["web"]
    with pytest.raises(ConfigError, match="no ssh_cidr"):
        plan_launch(load_stack(nocidr), "aws", PUBKEY)
    with pytest.raises(ConfigError, match="open it to everyone"):
        plan_launch(stack, "aws", PUBKEY, ssh_cidr="0.0.0.0/0")


def test_plan_refuses_unknown_cloud_missing_settings_and_foreign_volume_types(tmp_path):
    stack = load_stack(STACK)
    with pytest.raises(ConfigError, match="unknown cloud 'azure'"):
        plan_launch(stack, "azure", PUBKEY)
    only_aws = tmp_path / "a.yml"
    text = STACK.read_text()
    start = text.index("    gce:\n      machine_type: e2-medium")
    only_aws.write_text(text[:start] + text[text.index("    disks:\n      ephemeral: {mount: /var/lib/provisioner, count: 1"):])
    with pytest.raises(ConfigError, match="host 'db' has no 'gce:' settings"):
        plan_launch(load_stack(only_aws), "gce", PUBKEY)
    gp3 = tmp_path / "b.yml"
    gp3.write_text(text.replace("          size: 5\n", "          size: 5\n          type: gp3\n"))
    plan_launch(load_stack(gp3), "aws", PUBKEY)
    with pytest.raises(ConfigError, match="'gp3' is not a gce volume type"):
        plan_launch(load_stack(gp3), "gce", PUBKEY)


def test_names_must_fit_gce_limits(tmp_path):
    long = tmp_path / "l.yml"
    long.write_text(STACK.read_text().replace("name: shop", "name: " + "s" * 30, 1)
                    .replace("  - name: web", "  - name: " + "w" * 20, 1))
    with pytest.raises(ConfigError, match="longer than 45 characters"):
        plan_launch(load_stack(long), "gce", PUBKEY)


def test_firewall_rules_dedupe():
    rules = firewall_rules([PublishedPort("tcp", 80, 80), PublishedPort("tcp", 80, 80)], "10.0.0.0/8")
    assert [str(r) for r in rules] == ["22/tcp from 10.0.0.0/8", "80/tcp from 0.0.0.0/0"]


def test_the_metrics_port_is_opened_to_its_range_only(tmp_path):
    from provisioner.stack import MetricsSpec

    assert [str(r) for r in firewall_rules([], "10.0.0.0/8", MetricsSpec(port=9100))] == ["22/tcp from 10.0.0.0/8"]
    rules = firewall_rules([PublishedPort("tcp", 80, 80)], "10.0.0.0/8", MetricsSpec(9100, "192.0.2.0/24"))
    assert [str(r) for r in rules] == ["22/tcp from 10.0.0.0/8", "80/tcp from 0.0.0.0/0", "9100/tcp from 192.0.2.0/24"]
    stack = tmp_path / "s.yml"
    stack.write_text(STACK.read_text().replace("    ssh_cidr: 198.51.100.0/24\n",
                                               "    ssh_cidr: 198.51.100.0/24\n    metrics: {allow_from: 203.0.113.0/24}\n", 1))
    for cloud in ("aws", "gce"):
        web = plan_launch(load_stack(stack), cloud, PUBKEY).hosts[0]
        assert "9100/tcp from 203.0.113.0/24" in [str(r) for r in web.rules]


def test_instance_store_mappings_only_for_xen_families():
    assert instance_store_mappings("t3.small", 2) == []
    assert instance_store_mappings("m3.medium", 2) == [("/dev/sdb", "ephemeral0"), ("/dev/sdc", "ephemeral1")]


def test_gce_image_references():
    api = "https://www.googleapis.com/compute/v1"
    assert image_url("family/x", "p") == f"{api}/projects/p/global/images/family/x"
    assert image_url("img", "p") == f"{api}/projects/p/global/images/img"
    assert image_url("projects/debian-cloud/global/images/family/debian-12", "p") == (
        f"{api}/projects/debian-cloud/global/images/family/debian-12")


# -- templates ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cloud", ["aws", "gce"])
def test_rendered_user_data_is_valid_cloud_config(cloud, tmp_path):
    for hp in plan_launch(load_stack(STACK), cloud, PUBKEY).hosts:
        doc = yaml.safe_load(hp.user_data)
        assert doc["ssh_authorized_keys"] == [PUBKEY]
        hook = [f for f in doc["write_files"] if f["path"].startswith("/var/lib/cloud/scripts/per-boot/")]
        assert hook and hook[0]["permissions"] == "0755" and "host boot" in hook[0]["content"]
        assert f'"cloud": "{cloud}"' in [f for f in doc["write_files"] if f["path"].endswith("host.json")][0]["content"]
        assert_valid_cloud_config(hp.user_data, tmp_path)
        # skipped, not run: locale failed outright on images without the distro's default locale
        assert doc["locale"] == "false" and doc["grub_dpkg"] == {"enabled": False}
        assert doc["ssh_genkeytypes"] == ["ed25519", "ecdsa"]


def test_templates_are_strict_and_injection_safe(tmp_path):
    (tmp_path / "t.j2").write_text("#cloud-config\na: {{ missing }}\n")
    with pytest.raises(ConfigError, match="'missing' is undefined"):
        render_user_data({}, tmp_path, "t.j2")
    (tmp_path / "q.j2").write_text("#cloud-config\na: {{ v | q }}\n")
    evil = 'x"\nruncmd: [reboot]\n#'
    assert yaml.safe_load(render_user_data({"v": evil}, tmp_path, "q.j2")) == {"a": evil}
    (tmp_path / "s.j2").write_text("#cloud-config\na: {{ ''.__class__.__mro__ }}\n")
    with pytest.raises(Exception):
        render_user_data({}, tmp_path, "s.j2")


# -- console -------------------------------------------------------------------------------------------
def test_host_keys_from_ec2_console():
    keys = parse_host_keys((FIXTURES / "console-ec2.txt").read_text())
    assert keys.fingerprints == {"ECDSA": "SHA256:Zz1xQ0f3q6h2m0GqEXAMPLEecdsaFINGERPRINTaaaaaa",
                                 "ED25519": "SHA256:Vt9b2mR3kq1bEXAMPLEed25519FINGERPRINTbbbbbbb",
                                 "RSA": "SHA256:Qp4n8sK2dEXAMPLErsaFINGERPRINTccccccccccccccc"}
    assert keys.keys == ["ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBExampleEcdsaKey=",
                         "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleEd25519HostKeyForTests"]


def test_host_keys_prefixed_lines_incomplete_and_last_boot_wins():
    first = ("ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\r\nec2: 256 SHA256:old root@h (ED25519)\r\n"
             "ec2: -----END SSH HOST KEY FINGERPRINTS-----\r\n")
    second = first.replace("SHA256:old", "SHA256:new")
    assert parse_host_keys(first + second).fingerprints == {"ED25519": "SHA256:new"}
    assert parse_host_keys("booting...\n-----BEGIN SSH HOST KEY FINGERPRINTS-----\n256 SHA256:x r (ED25519)\n") is None
    assert parse_host_keys("") is None


# -- errors ------------------------------------------------------------------------------------------
def test_error_translation_is_one_line_and_classified():
    from libcloud.common.exceptions import BaseHTTPError
    from libcloud.common.google import GoogleBaseError
    from libcloud.common.types import InvalidCredsError

    cases = [
        (BaseHTTPError(503, "RequestLimitExceeded: Request limit exceeded."), "aws", CloudThrottled),
        (BaseHTTPError(400, "InvalidInstanceID.NotFound: The instance ID 'i-1' does not exist"), "aws", CloudNotFound),
        (BaseHTTPError(400, "InvalidAMIID.Malformed: bad\nid"), "aws", CloudNotFound),
        (BaseHTTPError(400, "InstanceLimitExceeded: too many"), "aws", CloudQuotaError),
        (BaseHTTPError(400, "VcpuLimitExceeded: too many"), "aws", CloudQuotaError),
        (BaseHTTPError(400, "InvalidParameterValue: bad"), "aws", CloudError),
        (InvalidCredsError("AuthFailure: AWS was not able to validate the provided access credentials"), "aws",
         CloudAuthError),
        (GoogleBaseError("Rate Limit Exceeded", 403, "rateLimitExceeded"), "gce", CloudThrottled),
        (GoogleBaseError("Quota 'CPUS' exceeded", 403, "QUOTA_EXCEEDED"), "gce", CloudQuotaError),
        (GoogleBaseError("Invalid Credentials", 401, "authError"), "gce", CloudAuthError),
        (GoogleBaseError("The resource was not found", 404, "notFound"), "gce", CloudNotFound),
        (ConnectionRefusedError(111, "Connection refused"), "gce", CloudError),
    ]
    for exc, cloud, cls in cases:
        err = translate(exc, cloud, "do thing")
        assert type(err) is cls, (exc, err)
        assert str(err).startswith(f"{cloud}: do thing: ") and "\n" not in str(err)


# -- retry -------------------------------------------------------------------------------------------
def test_retry_backs_off_on_throttling_only():
    sleeps, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise CloudThrottled("slow down")
        return "ok"
    assert retry(flaky, sleep=sleeps.append, jitter=lambda: 1.0) == "ok"
    assert sleeps == [0.5, 1.0]
    with pytest.raises(CloudNotFound):
        retry(lambda: (_ for _ in ()).throw(CloudNotFound("gone")), sleep=sleeps.append)
    calls.clear()

    def eventually():
        calls.append(1)
        if len(calls) < 2:
            raise CloudNotFound("InvalidInstanceID.NotFound")
        return "seen"
    assert retry_consistent(eventually, sleep=lambda s: None) == "seen"
    with pytest.raises(CloudThrottled):
        retry(lambda: (_ for _ in ()).throw(CloudThrottled("x")), attempts=3, sleep=lambda s: None)


def test_poll_times_out_with_none():
    now = [0.0]
    assert poll(lambda: None, timeout=1, interval=0.5, sleep=lambda s: now.__setitem__(0, now[0] + s),
                clock=lambda: now[0]) is None
    assert now[0] >= 1


# -- keys / operator ---------------------------------------------------------------------------------
def test_operator_key_created_once_per_stack(tmp_path):
    def keygen(argv):
        path = Path(argv[argv.index("-f") + 1])
        path.write_text("PRIVATE")
        path.with_suffix(".pub").write_text(PUBKEY + "\n")
        return Result(argv, 0, "", "")
    runner = FakeRunner().expect(["ssh-keygen"], prefix=True, handler=keygen, times=1)
    k = operator_key("shop", runner, base=tmp_path)
    assert k.created and k.public_key == PUBKEY and k.private_key == tmp_path / "keys" / "shop" / "id_ed25519"
    assert oct(k.private_key.stat().st_mode & 0o777) == "0o600"
    again = operator_key("shop", runner, base=tmp_path)   # FakeRunner would refuse a second ssh-keygen
    assert not again.created and again.public_key == PUBKEY
    assert len(runner.commands("ssh-keygen")) == 1


def test_operator_key_given_and_invalid(tmp_path):
    pub = tmp_path / "k.pub"
    pub.write_text(PUBKEY + "\n")
    assert operator_key("shop", FakeRunner(), pub).public_key == PUBKEY
    pub.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="not an OpenSSH public key"):
        read_public_key(pub)


def test_detect_operator_cidr():
    r = FakeRunner().expect(["ip", "-o", "route", "get", "192.0.2.1"],
                            stdout="192.0.2.1 via 10.0.2.2 dev eth0 src 10.0.2.15 uid 0 \\    cache \n")
    assert detect_operator_cidr(r) == "10.0.2.15/32"
    r = FakeRunner().expect(["ip", "-o", "route", "get", "192.0.2.1"], returncode=2, stderr="unreachable")
    assert detect_operator_cidr(r) is None


# -- orchestration against an in-memory driver -------------------------------------------------------
class MemoryDriver:
    """Keeps resources in a dict; `stuck` instance names never reach running; `fail_on` raises."""

    name = "aws"

    def __init__(self, stuck=(), fail_on=None, console="-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
                 "256 SHA256:abc r (ED25519)\n-----END SSH HOST KEY FINGERPRINTS-----\n"):
        self.live: dict[str, Resource] = {}
        self.stuck, self.fail_on, self.console = set(stuck), fail_on, console
        self.n = 0
        self.log = []

    def _new(self, kind, name, host=None, **extra):
        if self.fail_on == kind:
            raise CloudError(f"aws: create {kind}: simulated")
        self.n += 1
        r = Resource(kind, f"{kind}-{self.n}", name, host, "pending" if kind == "instance" else None, extra)
        self.live[r.id] = r
        self.log.append(("create", r.id))
        return r

    def check(self, plan):
        if plan.hosts[0].settings.instance_type == "bad.type":
            raise CloudInvalid("aws: unknown instance type")

    def import_key(self, plan):
        return self._new("key", plan.key_name)

    def create_firewall(self, hp):
        return self._new("firewall", hp.resource_name, hp.host)

    def create_instance(self, hp, key, fw):
        return self._new("instance", hp.resource_name, hp.host, zone="z")

    def instance_state(self, inst):
        cur = self.live[inst.id]
        if cur.name not in self.stuck:
            cur.state = "running"
        return cur

    def create_volume(self, hp, vp, inst):
        return self._new("volume", vp.name, hp.host, tags=vp.tags)

    def attach_volume(self, inst, vol, vp):
        if self.fail_on == "attach":
            raise CloudError("aws: attach: simulated")

    def console_output(self, inst):
        return self.console

    def find(self, stack):
        return list(self.live.values())

    def delete(self, res):
        self.log.append(("delete", res.id))
        self.live.pop(res.id, None)

    def wait_deleted(self, res, timeout):
        return True


T = Timeouts(running=0.05, host_keys=0.05, deleted=1, interval=0.01)


def test_launch_happy_path_returns_host_keys():
    d = MemoryDriver()
    result = launch(plan_launch(load_stack(STACK), "aws", PUBKEY), d, timeouts=T)
    assert [h.host for h in result.hosts] == ["web", "db"]
    assert result.hosts[0].host_keys.fingerprints == {"ED25519": "SHA256:abc"}
    assert sorted(r.kind for r in d.live.values()) == ["firewall", "firewall", "instance", "instance", "key",
                                                      "volume", "volume"]
    with pytest.raises(CloudError, match="already has resources"):
        launch(plan_launch(load_stack(STACK), "aws", PUBKEY), d, timeouts=T)


def test_stuck_instance_is_replaced_once_then_reported_and_everything_rolled_back():
    d = MemoryDriver(stuck={"shop-db"})
    with pytest.raises(CloudError, match=r"host db: .* never reached 'running' \(replaced once"):
        launch(plan_launch(load_stack(STACK), "aws", PUBKEY), d, timeouts=T)
    assert d.live == {}
    assert [x for x in d.log if x[0] == "create" and x[1].startswith("instance")].__len__() == 3


@pytest.mark.parametrize("fail_on", ["firewall", "instance", "volume", "attach"])
def test_any_failure_removes_everything_created(fail_on):
    d = MemoryDriver(fail_on=fail_on)
    with pytest.raises(CloudError, match="simulated"):
        launch(plan_launch(load_stack(STACK), "aws", PUBKEY), d, timeouts=T)
    assert d.live == {}


def test_invalid_settings_create_nothing():
    d = MemoryDriver()
    stack = load_stack(STACK)
    plan = plan_launch(stack, "aws", PUBKEY)
    bad = plan.__class__(**{**plan.__dict__, "hosts": (plan.hosts[0].__class__(**{
        **plan.hosts[0].__dict__, "settings": plan.hosts[0].settings.__class__(**{
            **plan.hosts[0].settings.__dict__, "instance_type": "bad.type"})}),)})
    with pytest.raises(CloudInvalid):
        launch(bad, d, timeouts=T)
    assert d.log == []


def test_destroy_keeps_keep_volumes_and_honours_keep_volumes():
    d = MemoryDriver()
    launch(plan_launch(load_stack(STACK), "aws", PUBKEY), d, timeouts=T)
    removed, kept = destroy(d, "shop", timeouts=T)
    assert [v.name for v in kept] == ["logs"] and [r.kind for r in d.live.values()] == ["volume"]
    d2 = MemoryDriver()
    launch(plan_launch(load_stack(STACK), "aws", PUBKEY), d2, timeouts=T)
    removed, kept = destroy(d2, "shop", keep_volumes=True, timeouts=T)
    assert sorted(v.name for v in kept) == ["data", "logs"]
    assert {r.kind for r in removed} == {"instance", "firewall", "key"}


# -- CLI without a cloud ---------------------------------------------------------------------------
def _provision(*args, env=None):
    import subprocess
    import sys
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PROVISION_", "GOOGLE_"))}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", "from provisioner.cli.main import main; main()", *args],
                          capture_output=True, text=True, timeout=60, env=full_env)


def test_cli_dry_run_prints_the_plan_and_creates_nothing(tmp_path):
    pub = tmp_path / "k.pub"
    pub.write_text(PUBKEY + "\n")
    res = _provision("launch", "--cloud", "aws", "-f", str(STACK), "--ssh-key", str(pub), "--dry-run",
                     env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert "web: t3.small ami-1e749f67 in us-east-1a (spot/preemptible, on-demand fallback)" in res.stdout
    assert "allow 22/tcp from 198.51.100.0/24" in res.stdout
    assert "volume data: 10 GiB default encrypted as /dev/sdf" in res.stdout
    assert "web: SSH allowed from 198.51.100.0/24 (stack file)" in res.stderr
    assert not (tmp_path / "provisioner").exists()


def test_cli_missing_credentials_is_one_line(tmp_path):
    pub = tmp_path / "k.pub"
    pub.write_text(PUBKEY + "\n")
    for cloud, expected in (("aws", "error: aws: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
                            ("gce", "error: gce: no credentials: set PROVISION_GCE_TOKEN")):
        res = _provision("launch", "--cloud", cloud, "-f", str(STACK), "--ssh-key", str(pub),
                         env={"GOOGLE_CLOUD_PROJECT": "p", "XDG_CONFIG_HOME": str(tmp_path)})
        assert res.returncode == 1
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith(expected), res.stderr


def test_cli_stack_error_points_at_the_line(tmp_path):
    bad = tmp_path / "s.yml"
    bad.write_text(STACK.read_text().replace("instance_type: t3.medium", "instance_typo: t3.medium"))
    res = _provision("launch", "--cloud", "aws", "-f", str(bad), "--dry-run")
    assert res.returncode == 2
    assert res.stderr.strip() == (f"error: {bad}:36: unknown key 'instance_typo' in hosts.db.aws (expected one of: "
                                  "image, instance_profile, instance_type, region, root_disk, spot, subnet, tags, zone)")
