"""GCE driver against the local compute v1 double, which validates every request body against
Google's published discovery document (tests/gce_double.py)."""
from __future__ import annotations

import json
from pathlib import Path
import os

import pytest
from click.testing import CliRunner

from cloudtest import assert_valid_cloud_config
from gce_discovery import load_discovery, validate
from gce_double import GceDouble
from provisioner.cli.main import cli
from provisioner.clouds.base import plan_launch
from provisioner.clouds.errors import CloudAuthError, CloudInvalid, CloudNotFound, provider_call
from provisioner.clouds.gce import GceCloud
from provisioner.clouds.launch import Timeouts, destroy, launch, status_of
from provisioner.errors import CloudError
from provisioner.stack import load_stack

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "clouds", "stack.yml")
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C8okWi0dh2l9GKJl operator@test"
FAST = Timeouts(running=5, host_keys=5, deleted=5, interval=0.01)
MUTATIONS = (".insert", ".delete", ".attachDisk", ".setLabels")


@pytest.fixture
def double():
    dbl = GceDouble(project="test-project")
    dbl.base_url = dbl.start()
    yield dbl
    dbl.stop()
    assert dbl.violations == [], "requests that break the compute v1 discovery document"


@pytest.fixture
def gce(double, monkeypatch):
    for var in ("PROVISION_GCE_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS", "PROVISION_GCE_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return GceCloud("test-project", endpoint=double.base_url, token=double.token, sleep=lambda s: None,
                    poll_interval=0.01)


def _plan(path=FIXTURE):
    return plan_launch(load_stack(path), "gce", PUBKEY)


def _mutations(double):
    return [r for r in double.requests if r[0].endswith(MUTATIONS)]


def test_launch_creates_labelled_instances_firewalls_and_disks(double, gce, tmp_path):
    result = launch(_plan(), gce, timeouts=FAST)

    web = double.instances[("us-central1-a", "shop-web")]
    assert web["labels"] == {"team": "shop", "provisioner-stack": "shop", "provisioner-host": "web",
                             "provisioner-market": "spot"}
    assert web["tags"] == {"items": ["shop-web"]}
    assert web["machineType"].endswith("/zones/us-central1-a/machineTypes/e2-small")
    assert web["scheduling"] == {"preemptible": True, "automaticRestart": False, "onHostMaintenance": "TERMINATE"}
    meta = {i["key"]: i["value"] for i in web["metadata"]["items"]}
    assert meta["ssh-keys"] == f"provisioner:{PUBKEY}"
    assert_valid_cloud_config(meta["user-data"], tmp_path)

    boot, *scratch = [d for d in web["disks"] if d.get("boot") or d.get("type") == "SCRATCH"]
    assert boot["initializeParams"]["diskSizeGb"] == "20"
    assert boot["initializeParams"]["diskType"].endswith("/diskTypes/pd-balanced")
    assert boot["initializeParams"]["sourceImage"].endswith(
        "/projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64")
    assert [(d["interface"], d["deviceName"], d["initializeParams"]["diskType"].rsplit("/", 1)[-1])
            for d in scratch] == [("NVME", "local-ssd-0", "local-ssd"), ("NVME", "local-ssd-1", "local-ssd")]
    db = double.instances[("us-central1-a", "shop-db")]
    assert [d["interface"] for d in db["disks"] if d.get("type") == "SCRATCH"] == ["SCSI"]
    assert "scheduling" in db and db["scheduling"]["onHostMaintenance"] == "MIGRATE"  # local SSD, not preemptible

    # PDs: created with labels, attached under their device names
    attached = {d["deviceName"]: d for d in web["disks"] if not d.get("boot") and d.get("type") != "SCRATCH"}
    assert set(attached) == {"data", "logs"}
    data = double.disks[("us-central1-a", "shop-web-data")]
    assert data["sizeGb"] == "10" and data["type"].endswith("/zones/us-central1-a/diskTypes/pd-balanced")
    assert data["labels"]["provisioner-volume"] == "data" and data["labels"]["provisioner-keep"] == "false"
    assert double.disks[("us-central1-a", "shop-web-logs")]["labels"]["provisioner-keep"] == "true"
    assert attached["data"]["source"].endswith("/zones/us-central1-a/disks/shop-web-data")

    fws = {n: f for n, f in double.firewalls.items() if n not in double.default_firewalls}
    assert set(fws) == {"provisioner-shop-web-ssh", "provisioner-shop-web-ports", "provisioner-shop-db-ssh",
                        "provisioner-shop-db-ports"}
    assert fws["provisioner-shop-web-ssh"]["sourceRanges"] == ["198.51.100.0/24"]
    assert fws["provisioner-shop-web-ssh"]["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert fws["provisioner-shop-web-ports"]["sourceRanges"] == ["0.0.0.0/0"]
    assert fws["provisioner-shop-web-ports"]["allowed"] == [
        {"IPProtocol": "tcp", "ports": ["80", "443", "8080-8081"]}, {"IPProtocol": "udp", "ports": ["5353"]}]
    assert fws["provisioner-shop-db-ports"]["allowed"] == [{"IPProtocol": "tcp", "ports": ["5432"]}]
    assert all(f["targetTags"] == [f["name"].rsplit("-", 1)[0].replace("provisioner-", "", 1)]
               for f in fws.values())

    # host keys read from the serial console
    keys = {h.host: h.host_keys for h in result.hosts}
    assert keys["web"].fingerprints["ED25519"].startswith("SHA256:shop-web")
    assert keys["db"].keys == ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTestsOnlyAAAAAAAAAAAAAAAAAAAA"]


def test_destroy_removes_only_the_stacks_resources(double, gce):
    # someone else's resources, created straight through the API
    with provider_call("gce", "seed"):
        conn = gce.driver.connection
        conn.async_request("/global/firewalls", method="POST", data={
            "name": "allow-internal", "network": "global/networks/default", "sourceRanges": ["10.0.0.0/8"],
            "allowed": [{"IPProtocol": "tcp"}]})
        conn.async_request("/zones/us-central1-a/disks", method="POST", data={
            "name": "other-disk", "sizeGb": "1", "labels": {"provisioner-stack": "other", "provisioner-volume": "x"}})
    launch(_plan(), gce, timeouts=FAST)
    removed, kept = destroy(gce, "shop", timeouts=FAST)
    assert [v.name for v in kept] == ["shop-web-logs"]
    assert set(double.firewalls) - double.default_firewalls == {"allow-internal"}
    assert double.instances == {}
    assert set(double.disks) == {("us-central1-a", "other-disk"), ("us-central1-a", "shop-web-logs")}
    assert double.disks[("us-central1-a", "shop-web-logs")]["users"] == []
    assert [(r.kind, r.name) for r in status_of(gce, "shop")] == [("volume", "shop-web-logs")]
    assert {r.extra["tags"]["provisioner-stack"] for r in status_of(gce, None)} == {"shop", "other"}


@pytest.mark.parametrize("edit, error, message", [
    ("machine_type: e2-small", "machine_type: e2-bogus", "unknown machine type 'e2-bogus'"),
    ("zone: us-central1-a\n      preemptible", "zone: us-central1-f\n      preemptible", "unknown zone 'us-central1-f'"),
    ("family/ubuntu-cloudinit", "family/nope", "unknown image 'family/nope'"),
])
def test_bad_settings_create_nothing(double, gce, tmp_path, edit, error, message):
    text = open(FIXTURE).read()
    assert edit in text
    path = tmp_path / "stack.yml"
    path.write_text(text.replace(edit, error, 1))
    with pytest.raises((CloudInvalid, CloudNotFound)) as info:
        launch(_plan(path), gce, timeouts=FAST)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert _mutations(double) == []


def test_the_double_rejects_bodies_that_break_the_discovery_document(double, gce):
    with pytest.raises(CloudInvalid, match="unknown field 'colour'"):
        gce._mutate("POST", "/global/firewalls", "bad", {"name": "x", "colour": "red"})
    with pytest.raises(CloudInvalid, match="not one of"):
        gce._mutate("POST", "/global/firewalls", "bad", {"name": "y", "direction": "SIDEWAYS"})
    with pytest.raises(CloudInvalid, match="expected an integer"):
        gce._mutate("POST", "/global/firewalls", "bad", {"name": "z", "priority": "high"})
    assert len(double.violations) == 3 and set(double.firewalls) == double.default_firewalls
    double.violations.clear()  # expected here; the fixture asserts none elsewhere


def test_validator_resolves_refs_and_nested_types():
    doc = load_discovery()
    schemas = doc["schemas"]
    ok = {"name": "vm", "disks": [{"boot": True, "interface": "NVME", "initializeParams": {"diskSizeGb": "10"}}],
          "labels": {"a": "b"}, "scheduling": {"preemptible": True}}
    assert validate(ok, {"$ref": "Instance"}, schemas, "Instance") == []
    bad = {"disks": [{"interface": "IDE", "initializeParams": {"diskSizeGb": "ten"}}], "labels": {"a": 1},
           "scheduling": {"preemptible": "yes"}}
    errs = validate(bad, {"$ref": "Instance"}, schemas, "Instance")
    assert len(errs) == 4, errs


def test_throttling_is_retried_and_preemptible_falls_back(double, gce):
    double.inject("compute.instances.insert", 403, "rateLimitExceeded", times=2)
    double.inject("compute.instances.insert", 403, "quotaExceeded", times=1)
    launch(_plan(), gce, timeouts=FAST)
    inserts = [r for r in double.requests if r[0] == "compute.instances.insert"]
    assert len(inserts) == 2 + 1 + 1 + 1  # 2 throttled, 1 over quota (preemptible), web fallback, db
    web = double.instances[("us-central1-a", "shop-web")]
    assert "scheduling" not in web or not web["scheduling"].get("preemptible")
    assert web["labels"]["provisioner-market"] == "on-demand"


def test_instance_that_never_runs_is_replaced_once_then_reported_and_rolled_back(double, gce):
    double.never_running.add("shop-db")
    with pytest.raises(CloudError, match=r"host db: instance shop-db never reached 'running' \(replaced once"):
        launch(_plan(), gce, timeouts=Timeouts(running=0.2, host_keys=1, deleted=5, interval=0.01))
    inserts = [r[2]["name"] for r in double.requests if r[0] == "compute.instances.insert"]
    assert inserts == ["shop-web", "shop-db", "shop-db"]
    assert double.instances == {} and double.disks == {} and set(double.firewalls) == double.default_firewalls


def test_credentials(double, monkeypatch):
    for var in ("PROVISION_GCE_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CloudAuthError, match="no credentials"):
        GceCloud("test-project", endpoint=double.base_url)
    wrong = GceCloud("test-project", endpoint=double.base_url, token="stolen", sleep=lambda s: None)
    with pytest.raises(CloudAuthError, match="credentials rejected"):
        launch(_plan(), wrong, timeouts=FAST)
    assert double.requests == []


def test_cli_launch_status_destroy(double, tmp_path, monkeypatch):
    monkeypatch.setenv("PROVISION_GCE_TOKEN", double.token)
    monkeypatch.setenv("PROVISION_GCE_ENDPOINT", double.base_url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    pub = tmp_path / "op.pub"
    pub.write_text(PUBKEY + "\n")
    runner = CliRunner()
    res = runner.invoke(cli, ["launch", "--cloud", "gce", "-f", FIXTURE, "--ssh-key", str(pub), "--timeout", "5",
                              "--host-key-timeout", "5", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    fps = {h["host"]: h["host_keys"]["fingerprints"]["ED25519"] for h in out["hosts"]}
    assert fps["web"].startswith("SHA256:shop-webEd25519") and fps["db"].startswith("SHA256:shop-dbEd25519")
    res = runner.invoke(cli, ["status", "shop", "--cloud", "gce"])
    assert res.exit_code == 0 and "shop-web-data" in res.stdout
    res = runner.invoke(cli, ["destroy", "shop", "--cloud", "gce", "--yes"])
    assert res.exit_code == 0, res.output
    assert double.instances == {} and set(double.firewalls) == double.default_firewalls


def test_relaunch_reattaches_kept_disk(double, gce):
    launch(_plan(), gce, timeouts=FAST)
    destroy(gce, "shop", timeouts=FAST)
    launch(_plan(), gce, timeouts=FAST)
    logs = double.disks[("us-central1-a", "shop-web-logs")]
    assert logs["users"] == [double.instances[("us-central1-a", "shop-web")]["selfLink"]]
    inserts = [r[2]["name"] for r in double.requests if r[0] == "compute.disks.insert"]
    assert inserts == ["shop-web-data", "shop-web-logs", "shop-web-data"]


def _service_account(tmp_path, double, register=True):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    email = "provisioner@test-project.iam.gserviceaccount.com"
    if register:
        double.add_service_account(email, key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"type": "service_account", "project_id": "test-project", "client_email": email,
                                "private_key": key.private_bytes(serialization.Encoding.PEM,
                                                                 serialization.PrivateFormat.PKCS8,
                                                                 serialization.NoEncryption()).decode()}))
    return path


def test_service_account_credentials_get_a_token_from_the_endpoint(double, tmp_path, monkeypatch):
    monkeypatch.delenv("PROVISION_GCE_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(_service_account(tmp_path, double)))
    cloud = GceCloud("test-project", endpoint=double.base_url, sleep=lambda s: None, poll_interval=0.01)
    assert status_of(cloud, "shop") == []
    assert double.token_grants == 1
    assert (tmp_path / "config/provisioner/gce/token-test-project.json").exists()


def test_unknown_service_account_is_rejected(double, tmp_path, monkeypatch):
    monkeypatch.delenv("PROVISION_GCE_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(_service_account(tmp_path, double, register=False)))
    with pytest.raises(CloudAuthError) as info:
        GceCloud("test-project", endpoint=double.base_url, sleep=lambda s: None)
    assert str(info.value).startswith("gce: authenticate: credentials rejected") and "\n" not in str(info.value)


def test_a_service_account_is_attached_at_launch(double, gce, tmp_path):
    """`gce: {service_account: EMAIL}`: the host pulls from Artifact Registry with its token,
    with the storage read-only scope unless the stack names others."""
    text = Path(FIXTURE).read_text().replace("machine_type: e2-small", "machine_type: e2-small\n      "
                                             "service_account: puller@test-project.iam.gserviceaccount.com", 1)
    stack_file = tmp_path / "stack.yml"
    stack_file.write_text(text)
    for f in Path(FIXTURE).parent.glob("*.env"):
        (tmp_path / f.name).write_text(f.read_text())
    launch(_plan(stack_file), gce, timeouts=FAST)
    web = double.instances[("us-central1-a", "shop-web")]
    assert web["serviceAccounts"] == [{"email": "puller@test-project.iam.gserviceaccount.com",
                                       "scopes": ["https://www.googleapis.com/auth/devstorage.read_only"]}]
    assert "serviceAccounts" not in double.instances[("us-central1-a", "shop-db")]


def _ssh_open_to_all(rule: dict) -> bool:
    def covers_22(ports):
        return not ports or any(p == "22" or ("-" in p and int(p.split("-")[0]) <= 22 <= int(p.split("-")[1]))
                                for p in ports)
    return "0.0.0.0/0" in rule.get("sourceRanges", []) and any(
        a["IPProtocol"] in ("tcp", "all") and covers_22(a.get("ports")) for a in rule.get("allowed", []))


def test_instances_are_on_the_stacks_own_network_and_nothing_opens_ssh_to_everyone(double, gce):
    """The project's default network comes with default-allow-ssh (0.0.0.0/0 on 22), which would
    make the stack's SSH range meaningless: every instance is on a network the stack owns, whose
    only rules are the stack's, and no rule that applies to an instance opens port 22 to all."""
    launch(_plan(), gce, timeouts=FAST)
    assert set(double.instances) == {("us-central1-a", "shop-web"), ("us-central1-a", "shop-db")}
    for inst in double.instances.values():
        open_ssh = [f["name"] for f in double.effective_ingress(inst) if _ssh_open_to_all(f)]
        assert open_ssh == [], f"{inst['name']}: {open_ssh}"
        (nic,) = inst["networkInterfaces"]
        assert nic["network"].endswith("/global/networks/provisioner-shop")
        assert {f["name"] for f in double.effective_ingress(inst)} == {
            f"provisioner-{inst['name']}-ssh", f"provisioner-{inst['name']}-ports"}
    net = double.networks["provisioner-shop"]
    assert net["autoCreateSubnetworks"] is True and net["description"] == "provisioner stack=shop"
    # destroy takes the network too, after what uses it
    destroy(gce, "shop", timeouts=FAST)
    assert "provisioner-shop" not in double.networks and set(double.networks) == {"default"}


def test_default_network_only_when_named_and_a_named_network_is_used_as_is(double, gce, tmp_path):
    text = open(FIXTURE).read().replace("zone: us-central1-a\n      preemptible", "zone: us-central1-a\n      "
                                        "network: default\n      preemptible")
    path = tmp_path / "stack.yml"
    path.write_text(text)
    launch(_plan(path), gce, timeouts=FAST)
    web = double.instances[("us-central1-a", "shop-web")]
    assert web["networkInterfaces"][0]["network"].endswith("/global/networks/default")
    db = double.instances[("us-central1-a", "shop-db")]
    assert db["networkInterfaces"][0]["network"].endswith("/global/networks/provisioner-shop")


def test_customer_managed_keys(double, gce, tmp_path):
    key = "projects/p/locations/us/keyRings/r/cryptoKeys/k"
    text = open(FIXTURE).read().replace("root_disk: {size: 20, type: pd-balanced}",
                                        f"root_disk: {{size: 20, type: pd-balanced, kms_key: {key}}}")
    text = text.replace("          size: 10\n", f"          size: 10\n          kms_key: {key}\n")
    path = tmp_path / "stack.yml"
    path.write_text(text)
    launch(_plan(path), gce, timeouts=FAST)
    web = double.instances[("us-central1-a", "shop-web")]
    boot = next(d for d in web["disks"] if d.get("boot"))
    assert boot["diskEncryptionKey"] == {"kmsKeyName": key}
    assert double.disks[("us-central1-a", "shop-web-data")]["diskEncryptionKey"] == {"kmsKeyName": key}
    assert "diskEncryptionKey" not in double.disks[("us-central1-a", "shop-web-logs")]
