"""AWS driver against a real EC2 emulator (moto server on loopback); assertions on moto's state."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest
import requests
from click.testing import CliRunner

from provisioner.cli.main import cli
from provisioner.clouds.aws import AwsCloud
from provisioner.clouds.base import plan_launch
from provisioner.clouds.errors import CloudAuthError, CloudInvalid, CloudNotFound
from provisioner.clouds.launch import Timeouts, destroy, launch, status_of
from provisioner.errors import CloudError
from provisioner.stack import load_stack
from cloudtest import assert_valid_cloud_config, free_port, wait_for_port

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "clouds", "stack.yml")
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C8okWi0dh2l9GKJl operator@test"
FAST = Timeouts(running=10, host_keys=0, deleted=10, interval=0.05)


@pytest.fixture(scope="module")
def moto_url():
    exe = shutil.which("moto_server")
    assert exe, "moto_server not installed (pip install -e .[test])"
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def aws(moto_url, monkeypatch):
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for var in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "PROVISION_AWS_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    return moto_url, ec2, AwsCloud("us-east-1", endpoint=moto_url, sleep=lambda s: None)


def _snapshot(ec2):
    """Everything moto holds that a launch could create."""
    inst = sorted(i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                  if i["State"]["Name"] != "terminated")
    return {"instances": inst,
            "groups": sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]),
            "volumes": sorted(v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]),
            "keys": sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"])}


def _tags(obj):
    return {t["Key"]: t["Value"] for t in obj.get("Tags", [])}


def _rules(group):
    out = set()
    for p in group["IpPermissions"]:
        for r in p.get("IpRanges", []):
            out.add((p["IpProtocol"], p["FromPort"], p["ToPort"], r["CidrIp"]))
    return out


def test_launch_records_exactly_the_declared_state(aws, tmp_path):
    url, ec2, driver = aws
    stack = load_stack(FIXTURE)
    plan = plan_launch(stack, "aws", PUBKEY)
    result = launch(plan, driver, timeouts=FAST)

    by_host = {h.host: h for h in result.hosts}
    groups = {g["GroupName"]: g for g in ec2.describe_security_groups()["SecurityGroups"]}
    # exactly the published ports of the services placed on each host, plus SSH from the stack's CIDR;
    # api's "127.0.0.1:9000:9000" (loopback) and "3000" (no host port) open nothing
    assert _rules(groups["provisioner-shop-web"]) == {
        ("tcp", 22, 22, "198.51.100.0/24"), ("tcp", 80, 80, "0.0.0.0/0"), ("tcp", 443, 443, "0.0.0.0/0"),
        ("tcp", 8080, 8081, "0.0.0.0/0"), ("udp", 5353, 5353, "0.0.0.0/0")}
    assert _rules(groups["provisioner-shop-db"]) == {("tcp", 22, 22, "198.51.100.0/24"),
                                                     ("tcp", 5432, 5432, "0.0.0.0/0")}
    assert _tags(groups["provisioner-shop-web"])["provisioner:stack"] == "shop"

    instances = {i["InstanceId"]: i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    web = instances[by_host["web"].instance.id]
    assert _tags(web) == {"Name": "shop-web", "provisioner:stack": "shop", "provisioner:host": "web",
                          "provisioner:market": "spot", "team": "shop"}
    assert web["InstanceType"] == "t3.small" and web["Placement"]["AvailabilityZone"] == "us-east-1a"
    assert web["KeyName"] == "provisioner-shop"
    assert [g["GroupId"] for g in web["SecurityGroups"]] == [groups["provisioner-shop-web"]["GroupId"]]

    vols = {_tags(v).get("provisioner:volume"): v for v in ec2.describe_volumes()["Volumes"]
            if "provisioner:volume" in _tags(v)}
    assert set(vols) == {"data", "logs"}
    for name, device, size, keep in (("data", "/dev/sdf", 10, "false"), ("logs", "/dev/sdg", 5, "true")):
        v = vols[name]
        assert v["Encrypted"] is True and v["Size"] == size
        assert [(a["InstanceId"], a["Device"]) for a in v["Attachments"]] == [(web["InstanceId"], device)]
        assert _tags(v)["provisioner:stack"] == "shop" and _tags(v)["provisioner:host"] == "web"
        assert _tags(v)["provisioner:keep"] == keep
    assert vols["data"]["VolumeType"] == "gp3"

    keys = ec2.describe_key_pairs(KeyNames=["provisioner-shop"])["KeyPairs"]
    assert _tags(keys[0]) == {"provisioner:stack": "shop"}

    attr = ec2.describe_instance_attribute(InstanceId=web["InstanceId"], Attribute="userData")
    user_data = base64.b64decode(attr["UserData"]["Value"]).decode()
    assert user_data.startswith("#cloud-config\n") and PUBKEY in user_data
    assert_valid_cloud_config(user_data, tmp_path)

    # status finds it all by tag
    kinds = sorted((r.kind, r.host or "") for r in status_of(driver, "shop"))
    assert kinds == [("firewall", "db"), ("firewall", "web"), ("instance", "db"), ("instance", "web"),
                     ("key", ""), ("volume", "web"), ("volume", "web")]


def test_destroy_removes_what_it_created_and_nothing_else(aws):
    url, ec2, driver = aws
    # pre-existing, untagged resources that must survive
    other_group = ec2.create_security_group(GroupName="someone-else", Description="not ours")["GroupId"]
    other_vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    ec2.create_key_pair(KeyName="someone-else")
    other_inst = ec2.run_instances(ImageId="ami-1e749f67", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    # and another stack's resources
    other_stack = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, TagSpecifications=[{
        "ResourceType": "volume", "Tags": [{"Key": "provisioner:stack", "Value": "other"},
                                           {"Key": "provisioner:volume", "Value": "x"}]}])["VolumeId"]
    before = _snapshot(ec2)

    launch(plan_launch(load_stack(FIXTURE), "aws", PUBKEY), driver, timeouts=FAST)
    removed, kept = destroy(driver, "shop", timeouts=FAST)

    assert [v.name for v in kept] == ["shop-web-logs"]  # keep: true in the stack
    after = _snapshot(ec2)
    assert after["instances"] == before["instances"] == [other_inst]
    assert after["groups"] == before["groups"] and other_group in after["groups"]
    assert after["keys"] == before["keys"] == ["someone-else"]
    assert set(after["volumes"]) == set(before["volumes"]) | {kept[0].id}
    assert {other_vol, other_stack} <= set(after["volumes"])
    assert {r.kind for r in removed} == {"instance", "volume", "firewall", "key"}
    # the kept volume is all that remains of the stack
    assert [(r.kind, r.name) for r in status_of(driver, "shop")] == [("volume", "shop-web-logs")]
    # and --keep-volumes style: nothing else to destroy now
    removed2, kept2 = destroy(driver, "shop", keep_volumes=True, timeouts=FAST)
    assert removed2 == [] and [v.id for v in kept2] == [kept[0].id]


@pytest.mark.parametrize("edit, error, message", [
    ("t3.small", "t9.bogus", "unknown instance type 't9.bogus'"),
    ("zone: us-east-1a", "zone: us-east-1z", "unknown availability zone 'us-east-1z'"),
    ("image: ami-1e749f67\n      zone", "image: ami-00000000\n      zone", "unknown image (AMI) 'ami-00000000'"),
])
def test_bad_settings_fail_cleanly_and_create_nothing(aws, tmp_path, edit, error, message):
    url, ec2, driver = aws
    text = open(FIXTURE).read()
    assert edit in text
    path = tmp_path / "stack.yml"
    path.write_text(text.replace(edit, error, 1))
    before = _snapshot(ec2)
    with pytest.raises((CloudInvalid, CloudNotFound)) as info:
        launch(plan_launch(load_stack(path), "aws", PUBKEY), driver, timeouts=FAST)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert _snapshot(ec2) == before


def test_failed_launch_removes_what_it_created(aws):
    url, ec2, driver = aws
    before = _snapshot(ec2)

    class Broken(AwsCloud):
        def attach_volume(self, inst, vol, vp):
            raise CloudError("aws: attach: simulated failure")

    broken = Broken("us-east-1", endpoint=url, sleep=lambda s: None)
    with pytest.raises(CloudError, match="simulated failure"):
        launch(plan_launch(load_stack(FIXTURE), "aws", PUBKEY), broken, timeouts=FAST)
    assert _snapshot(ec2) == before
    assert status_of(driver, "shop") == []


def test_missing_and_rejected_credentials(aws, monkeypatch):
    url, ec2, driver = aws
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(CloudAuthError, match="no credentials"):
        AwsCloud("us-east-1", endpoint=url)


def test_cli_launch_status_destroy_with_a_created_key(aws, tmp_path, monkeypatch):
    url, ec2, driver = aws
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PROVISION_AWS_ENDPOINT", url)   # the env override, no --endpoint
    runner = CliRunner()
    res = runner.invoke(cli, ["launch", "--cloud", "aws", "-f", FIXTURE, "--timeout", "10", "--host-key-timeout", "0",
                              "--json"])
    assert res.exit_code == 0, res.output
    created = json.loads(res.stdout)["operator_key"]
    assert created["created"] and created["private_key"] == str(tmp_path / "config/provisioner/keys/shop/id_ed25519")
    imported = ec2.describe_key_pairs(KeyNames=["provisioner-shop"])["KeyPairs"][0]
    assert imported["KeyType"] == "ed25519"
    assert (tmp_path / "config/provisioner/keys/shop/id_ed25519.pub").read_text().split()[:2] == \
        created["public_key"].split()[:2]
    res = runner.invoke(cli, ["status", "shop", "--cloud", "aws", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert sorted({r["kind"] for r in data["resources"]}) == ["firewall", "instance", "key", "volume"]
    res = runner.invoke(cli, ["status", "--cloud", "aws"])   # every stack
    assert res.exit_code == 0 and "shop-web-data" in res.stdout
    res = runner.invoke(cli, ["destroy", "shop", "--cloud", "aws", "--endpoint", url, "--yes", "--keep-volumes"])
    assert res.exit_code == 0, res.output
    assert "kept 2 volume(s)" in res.stdout
    assert {r.kind for r in status_of(driver, "shop")} == {"volume"}


def test_cli_unknown_cloud_is_one_clear_error(tmp_path):
    proc = subprocess.run(["python3", "-c", "from provisioner.cli.main import main; main()", "launch",
                           "--cloud", "azure", "-f", FIXTURE, "--ssh-cidr", "10.0.0.0/8"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown cloud 'azure' (expected one of: aws, gce, local)"


def test_throttling_and_eventual_consistency_are_retried(aws, monkeypatch):
    url, ec2, driver = aws
    from libcloud.common.exceptions import BaseHTTPError

    real = driver.driver.connection.request
    faults = {"RunInstances": ["RequestLimitExceeded: Request limit exceeded."] * 2,
              "DescribeInstances": ["InvalidInstanceID.NotFound: The instance ID does not exist"] * 2}
    seen = []

    def flaky(path, params=None, **kw):
        action = (params or {}).get("Action")
        seen.append(action)
        right_after_launch = action != "DescribeInstances" or "InstanceId.1" in params
        if faults.get(action) and right_after_launch:
            raise BaseHTTPError(400, faults[action].pop(0))
        return real(path, params=params, **kw)
    monkeypatch.setattr(driver.driver.connection, "request", flaky)
    launch(plan_launch(load_stack(FIXTURE), "aws", PUBKEY), driver, timeouts=FAST)
    assert seen.count("RunInstances") == 2 + 2 and faults == {"RunInstances": [], "DescribeInstances": []}
    assert len(status_of(driver, "shop")) == 7


def test_spot_capacity_falls_back_to_on_demand(aws, monkeypatch):
    url, ec2, driver = aws
    from libcloud.common.exceptions import BaseHTTPError

    real = driver.driver.connection.request

    def no_spot(path, params=None, **kw):
        if (params or {}).get("InstanceMarketOptions.MarketType") == "spot":
            raise BaseHTTPError(400, "InsufficientInstanceCapacity: no spot capacity")
        return real(path, params=params, **kw)
    monkeypatch.setattr(driver.driver.connection, "request", no_spot)
    result = launch(plan_launch(load_stack(FIXTURE), "aws", PUBKEY), driver, timeouts=FAST)
    web = ec2.describe_instances(InstanceIds=[result.hosts[0].instance.id])["Reservations"][0]["Instances"][0]
    assert _tags(web)["provisioner:market"] == "on-demand" and "InstanceLifecycle" not in web


def test_relaunch_reattaches_kept_volumes(aws):
    url, ec2, driver = aws
    first = launch(plan_launch(load_stack(FIXTURE), "aws", PUBKEY), driver, timeouts=FAST)
    logs_id = {v.name: v.id for v in first.hosts[0].volumes}["shop-web-logs"]
    destroy(driver, "shop", timeouts=FAST)
    second = launch(plan_launch(load_stack(FIXTURE), "aws", PUBKEY), driver, timeouts=FAST)
    web = second.hosts[0]
    assert {v.name: v.id for v in web.volumes}["shop-web-logs"] == logs_id
    vol = ec2.describe_volumes(VolumeIds=[logs_id])["Volumes"][0]
    assert [(a["InstanceId"], a["Device"]) for a in vol["Attachments"]] == [(web.instance.id, "/dev/sdg")]
    logs = [v for v in ec2.describe_volumes()["Volumes"] if _tags(v).get("provisioner:volume") == "logs"]
    assert len(logs) == 1


def test_an_instance_profile_is_attached_at_launch(aws, tmp_path):
    """`aws: {instance_profile: NAME}`: the host pulls from ECR with the role's credentials."""
    url, ec2, driver = aws
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    iam.create_instance_profile(InstanceProfileName="pull-from-ecr")
    text = Path(FIXTURE).read_text().replace("instance_type: t3.small", "instance_type: t3.small\n      "
                                             "instance_profile: pull-from-ecr", 1)
    stack_file = tmp_path / "stack.yml"
    stack_file.write_text(text)
    for f in Path(FIXTURE).parent.glob("*.env"):
        (tmp_path / f.name).write_text(f.read_text())
    result = launch(plan_launch(load_stack(stack_file), "aws", PUBKEY), driver, timeouts=FAST)
    by_host = {h.host: h for h in result.hosts}
    instances = {i["InstanceId"]: i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    web, db = instances[by_host["web"].instance.id], instances[by_host["db"].instance.id]
    assert web["IamInstanceProfile"]["Arn"].endswith("instance-profile/pull-from-ecr")
    assert "IamInstanceProfile" not in db


def test_every_instance_requires_imdsv2_with_hop_limit_1_and_every_volume_is_encrypted(aws):
    """The instance metadata service answers only IMDSv2 (a token from a PUT whose response
    cannot cross a NAT hop: a container behind the host's masquerade never gets one), and no
    volume — the root one included, which the stack gives no size for on host db — is
    unencrypted."""
    url, ec2, driver = aws
    result = launch(plan_launch(load_stack(FIXTURE), "aws", PUBKEY), driver, timeouts=FAST)
    ids = [h.instance.id for h in result.hosts]
    instances = [i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
    assert len(instances) == 2
    for inst in instances:
        md = inst["MetadataOptions"]
        assert (md["HttpTokens"], md["HttpPutResponseHopLimit"], md["HttpEndpoint"]) == ("required", 1, "enabled")
        roots = [m for m in inst["BlockDeviceMappings"] if m["DeviceName"] == inst["RootDeviceName"]]
        assert roots, f"{inst['InstanceId']} has no root volume mapping"
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": ids}])["Volumes"]
    assert len(volumes) == 4     # two roots, data and logs
    assert [v["VolumeId"] for v in volumes if not v["Encrypted"]] == []


def test_root_disk_encryption_can_be_turned_off_or_given_a_kms_key(aws, tmp_path):
    url, ec2, driver = aws
    text = open(FIXTURE).read()
    text = text.replace("root_disk: {size: 20, type: gp3}", "root_disk: {size: 20, type: gp3, kms_key: alias/shop}")
    text = text.replace("      region: us-east-1\n", "      region: us-east-1\n      root_disk: {encrypted: false}\n")
    path = tmp_path / "stack.yml"
    path.write_text(text)
    plan = plan_launch(load_stack(str(path)), "aws", PUBKEY)
    params = {h.host: driver._run_params(h, None, type("F", (), {"id": "sg-1"})(), False) for h in plan.hosts}
    web, db = params["web"], params["db"]
    assert (web["BlockDeviceMapping.1.Ebs.Encrypted"], web["BlockDeviceMapping.1.Ebs.KmsKeyId"]) == ("true", "alias/shop")
    assert db["BlockDeviceMapping.1.Ebs.Encrypted"] == "false" and "BlockDeviceMapping.1.Ebs.KmsKeyId" not in db
