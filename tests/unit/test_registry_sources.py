"""Where images come from: registries.conf remaps and mirrors (containers-registries.conf(5)),
a stack host's `registries:`, the settings a host reads, and the clouds' own registries reached
with the instance's identity (ECR through IMDSv2 + a SigV4-signed GetAuthorizationToken against
moto; Artifact Registry through a fake metadata server)."""
from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from provisioner.errors import ConfigError, RegistryError, StackError
from provisioner.images import cloudauth
from provisioner.images.auth import Credentials
from provisioner.images.reference import parse
from provisioner.images.registryconf import parse_conf
from provisioner.images.sources import PullSettings, open_image
from provisioner.stack import load_stack
from tests.registry_fixture import FakeRegistry, QuietServer, make_image

CONF = """
[[registry]]
prefix = "127.0.0.1:5000"
location = "10.0.2.2:5000"
insecure = true

[[registry]]
prefix = "docker.io/library"
location = "docker.io/library"
[[registry.mirror]]
location = "mirror.internal:5000/hub"

[[registry]]
prefix = "quay.io/evil"
blocked = true
"""


def test_endpoints_follow_the_longest_prefix_mirrors_first_then_the_location():
    conf = parse_conf(CONF)
    assert [(str(r), i) for r, i in conf.endpoints(parse("127.0.0.1:5000/shop/web:1"))] == [
        ("10.0.2.2:5000/shop/web:1", True)]
    assert [str(r) for r, _ in conf.endpoints(parse("redis:7"))] == [
        "mirror.internal:5000/hub/redis:7", "docker.io/library/redis:7"]
    digest = "sha256:" + "a" * 64
    assert [str(r) for r, _ in conf.endpoints(parse(f"busybox@{digest}"))][0] == f"mirror.internal:5000/hub/busybox@{digest}"
    assert [str(r) for r, _ in conf.endpoints(parse("quay.io/other/x:1"))] == ["quay.io/other/x:1"]
    with pytest.raises(ConfigError, match="blocked"):
        conf.endpoints(parse("quay.io/evil/x:1"))
    assert parse_conf(conf.to_toml()) == conf   # what deploy writes reads back the same


@pytest.mark.parametrize("text, message", [
    ("[[registry]\n", "invalid TOML"),
    ("[[registry]]\nlocation = 'a b'\n", "is not a registry location"),
    ("[[registry]]\nlocation = 'x:1'\ncolour = 'red'\n", "unknown key"),
    ("registry = 3\n", "array of tables"),
])
def test_bad_registries_conf_is_one_error(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_conf(text, "/etc/provisioner/registries/registries.conf")


STACK = """\
name: shop
hosts:
  - name: web
    services: [web]
    registries:
      - prefix: registry.internal
        location: 10.1.2.3:5000
        insecure: true
        mirrors: [cache.internal:5000, {location: other.internal, insecure: true}]
    aws: {instance_type: t3.small, image: ami-1e749f67, zone: us-east-1a, instance_profile: pull-from-ecr}
    gce: {machine_type: e2-small, image: debian-12, zone: us-central1-a, service_account: puller@p.iam.gserviceaccount.com}
services:
  web: {image: registry.internal/shop/web:1}
"""


def test_a_stack_host_says_where_it_pulls_from_and_which_identity_it_gets(tmp_path):
    p = tmp_path / "stack.yml"
    p.write_text(STACK)
    host = load_stack(p).host("web")
    (rule,) = host.registries.rules
    assert (rule.prefix, rule.location, rule.insecure) == ("registry.internal", "10.1.2.3:5000", True)
    assert [(m.location, m.insecure) for m in rule.mirrors] == [("cache.internal:5000", False), ("other.internal", True)]
    assert host.clouds["aws"].identity == {"instance_profile": "pull-from-ecr"}
    assert host.clouds["gce"].identity == {"service_account": "puller@p.iam.gserviceaccount.com",
                                           "scopes": ["https://www.googleapis.com/auth/devstorage.read_only"]}
    p.write_text(STACK.replace("location: 10.1.2.3:5000", "location: 'not a place'"))
    with pytest.raises(StackError, match=rf"{p}:7: hosts.web.registries\[0\].location: 'not a place' is not a registry"):
        load_stack(p)
    p.write_text(STACK.replace("mirrors: [", "colour: red\n        mirrors: ["))
    with pytest.raises(StackError, match=rf"{p}:9: unknown key 'colour' in hosts.web.registries\[0\]"):
        load_stack(p)


def _served(reg: FakeRegistry, repo: str, tag: str) -> str:
    img = make_image([{"hello.txt": b"hi"}])
    for b in img["blobs"].values():
        reg.add_blob(b)
    return reg.add_manifest(repo, [tag], img["media_type"], img["manifest"])


def test_open_image_passes_over_a_mirror_that_lacks_it_and_uses_the_location():
    with FakeRegistry() as mirror, FakeRegistry() as origin:
        digest = _served(origin, "shop/web", "1")
        conf = parse_conf(f"""
            [[registry]]
            prefix = "registry.example"
            location = "{origin.address}"
            [[registry.mirror]]
            location = "{mirror.address}"
        """.replace("\n            ", "\n"))
        reg, image = open_image(parse("registry.example/shop/web:1"), PullSettings(conf=conf))
        assert image.manifest_digest == digest and reg.ref.domain == origin.address
        assert any("/v2/shop/web/manifests/1" in r["path"] for r in mirror.requests)   # asked first
        _served(mirror, "shop/web", "1")
        reg, _ = open_image(parse("registry.example/shop/web:1"), PullSettings(conf=conf))
        assert reg.ref.domain == mirror.address


def test_host_settings_read_what_deploy_wrote(tmp_path):
    (tmp_path / "registries.conf").write_text(CONF)
    (tmp_path / "auth.json").write_text(cloudauth.encode_auths({"10.0.2.2:5000": Credentials("shop", "pw")}))
    settings = PullSettings.on_host(tmp_path)
    assert settings.credentials("10.0.2.2:5000") == Credentials("shop", "pw")
    assert settings.credentials("quay.io") is None
    assert PullSettings.here(directory=tmp_path / "absent").auth_file is None


# ---- the clouds' registries, with the instance's identity -------------------------------------------

class _Metadata:
    """IMDSv2 (token PUT, role credentials) and GCE's token endpoint, on loopback, counting calls."""

    def __init__(self):
        self.calls: list[str] = []
        self.gce_token = "ya29.first"
        meta = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, body, ctype="text/plain"):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                meta.calls.append("PUT " + self.path)
                if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self._send(200, "imds-session-token")
                else:
                    self._send(400, "bad")

            def do_GET(self):
                meta.calls.append("GET " + self.path)
                if self.path.startswith("/latest/") and self.headers.get("X-aws-ec2-metadata-token") != \
                        "imds-session-token":
                    return self._send(401, "IMDSv2 token required")   # IMDSv1 is refused, as hop limit 1 hosts do
                if self.path == "/latest/meta-data/iam/security-credentials/":
                    return self._send(200, "pull-role")
                if self.path == "/latest/meta-data/iam/security-credentials/pull-role":
                    return self._send(200, json.dumps({"AccessKeyId": "ASIAFAKE", "SecretAccessKey": "s3cr3t",
                                                       "Token": "session", "Expiration": "2099-01-01T00:00:00Z"}),
                                      "application/json")
                if self.path == "/computeMetadata/v1/instance/service-accounts/default/token" and \
                        self.headers.get("Metadata-Flavor") == "Google":
                    return self._send(200, json.dumps({"access_token": meta.gce_token, "expires_in": 3599,
                                                       "token_type": "Bearer"}), "application/json")
                self._send(404, "not found")

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metadata():
    m = _Metadata()
    yield m
    m.close()


@pytest.fixture(scope="module")
def moto_ecr():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}/"
    server.stop()


def test_ecr_credentials_come_from_the_instance_role_through_imdsv2(metadata, moto_ecr):
    clock = [1_000_000.0]
    cc = cloudauth.CloudCredentials(clock=lambda: clock[0], env={"PROVISION_IMDS_ENDPOINT": metadata.url,
                                                                  "PROVISION_ECR_ENDPOINT": moto_ecr})
    host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    creds = cc.for_host(host)
    assert creds.username == "AWS" and creds.password
    assert metadata.calls[0] == "PUT /latest/api/token"      # IMDSv2: the session token first
    assert cc.for_host("quay.io") is None and cc.for_host("docker.io") is None
    n = len(metadata.calls)
    assert cc.for_host(host) == creds and len(metadata.calls) == n   # kept while valid
    clock[0] = 10 ** 11                                              # past its expiry: fetched again
    cc.for_host(host)
    assert len(metadata.calls) > n


def test_sigv4_matches_botocore(monkeypatch):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    now = dt.datetime(2026, 12, 6, 12, 0, 0, tzinfo=dt.timezone.utc)
    url, body = "https://api.ecr.eu-west-1.amazonaws.com/", b"{}"
    headers = {"Content-Type": "application/x-amz-json-1.1",
               "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"}
    ours = cloudauth.sigv4_headers("POST", url, body, region="eu-west-1", service="ecr",
                                   keys=cloudauth.AwsKeys("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", "tok"),
                                   headers=headers, now=now)
    req = AWSRequest(method="POST", url=url, data=body, headers=headers)
    import botocore.auth
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    SigV4Auth(BotoCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", "tok"), "ecr", "eu-west-1").add_auth(req)
    assert ours["Authorization"] == req.headers["Authorization"]


def test_artifact_registry_token_comes_from_the_metadata_server_and_is_refreshed(metadata):
    clock = [0.0]
    cc = cloudauth.CloudCredentials(clock=lambda: clock[0], env={"PROVISION_GCE_METADATA_ENDPOINT": metadata.url})
    assert cc.for_host("europe-docker.pkg.dev") == Credentials("oauth2accesstoken", "ya29.first")
    metadata.gce_token = "ya29.second"
    clock[0] = 3000.0   # still valid (3599 s, renewed 300 s early)
    assert cc.for_host("europe-docker.pkg.dev").password == "ya29.first"
    clock[0] = 3400.0
    assert cc.for_host("europe-docker.pkg.dev").password == "ya29.second"
    assert cc.for_host("gcr.io").password == "ya29.second"


def test_no_identity_on_the_instance_is_one_clear_error_and_settings_fall_back_to_anonymous(metadata):
    cc = cloudauth.CloudCredentials(env={"PROVISION_IMDS_ENDPOINT": metadata.url + "/nothing-here"})
    with pytest.raises(RegistryError, match="no credentials from the instance role .* instance_profile"):
        cc.for_host("123456789012.dkr.ecr.us-east-1.amazonaws.com")
    assert PullSettings(cloud=cc, auth_file=Path("/nonexistent")).credentials(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com") is None
