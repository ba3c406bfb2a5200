"""The per-host steps of `provision deploy` over a fake SSH: order, idempotence, failures, reuse."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from provisioner.clouds.base import Resource
from provisioner.deploy import inventory
from provisioner.deploy.pipeline import Deployer, breakdown_rows
from provisioner.deploy.plan import plan_deploy, volume_match
from provisioner.errors import HostError
from provisioner.stack import load_stack
from provisioner.runner import Result
from provisioner.testing import FakeRunner

STACK = """\
name: shop
hosts:
  - name: web
    services: [web]
    disks:
      ephemeral: {mount: /var/lib/provisioner, count: 2}
      volumes:
        - {name: data, mount: /srv/data, size: 1}
services:
  web:
    image: 127.0.0.1:5000/shop/web:1
    env_file: web.env
    ports: ["PORT:80"]
"""


class FakeDriver:
    name = "local"

    def __init__(self, state="running"):
        self.state = state
        self.extra = []

    def find(self, stack):
        return [Resource("instance", "i-1", "shop-web", "web", self.state, {}), *self.extra]


@dataclass
class Pushed:
    up_to_date: bool
    sent: list
    skipped: list
    bytes_sent: int = 0
    manifest_digest: str = "sha256:" + "e" * 64

    def to_json(self):
        return {"up_to_date": self.up_to_date, "sent": self.sent}


class FakeSsh(FakeRunner):
    """The host over SSH, faked as any Runner is: only the commands a deploy runs there answer."""

    log: list = []
    fail_boot = False

    def __init__(self, target):
        super().__init__(where=target.where)
        self.expect(["provision", "host", "boot"], prefix=True, handler=self._boot)
        self.expect(["provision", "up"], prefix=True,
                    stdout=json.dumps([{"action": "create", "service": "web", "text": "create web"}]))
        self.expect(["provision", "ps"], prefix=True,
                    stdout=json.dumps([{"service": "web", "state": "running", "health": "none"}]))
        self.expect(["sh", "-c"], prefix=True)   # file writes
        self.expect(["rm", "-f", "/etc/provisioner/registries/auth.json"])
        self.expect(["provision", "--json", "image", "pull", "-q"], prefix=True, handler=self._pull)

    def _boot(self, argv):
        steps = [{"name": "disks", "status": "failed" if self.fail_boot else "ok", "seconds": 0.1,
                  "message": "no disk matches" if self.fail_boot else ""}]
        return Result(argv, 1 if self.fail_boot else 0, json.dumps({"steps": steps}), "")

    def _pull(self, argv):
        refs = argv[5:]
        return Result(argv, 0, json.dumps([{"manifest_digest": "sha256:" + "d" * 64, "fetched_layers": 2,
                                            "bytes": 1000, "seconds": 0.5} for _ in refs]), "")

    def wait_ready(self, timeout):
        FakeSsh.log.append("wait_ready")

    def close(self):
        pass

    def run(self, argv, **kw):
        FakeSsh.log.append((" ".join(argv), kw.get("input")))
        return super().run(argv, **kw)


@pytest.fixture
def setup(tmp_path):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    (tmp_path / "web.env").write_text("A=1\n")
    stack = tmp_path / "stack.yml"
    stack.write_text(STACK.replace("PORT", str(port)))
    root = tmp_path / "root"
    inventory.save(root, inventory.HostRecord(
        stack="shop", host="web", cloud="local", address="127.0.0.1", port=2222, user="debian", key_file="/k",
        fingerprints=("SHA256:x",), volumes={"data": "vol0123456789abcdef0"},
        endpoints={f"{port}/tcp": f"127.0.0.1:{port}"}, style="aws"))
    FakeSsh.log, FakeSsh.fail_boot = [], False
    yield stack, root, port
    listener.close()


def _deployer(stack, root, driver=None, pushed=None, images="push"):
    pushes = []

    def push(ssh, refs, insecure_registries=()):
        pushes.extend(refs)
        return [pushed or Pushed(False, [0, 1], []) for _ in refs]
    d = Deployer(plan_deploy(load_stack(stack), "local"), driver or FakeDriver(), root=root, runner=None, public_key="k",
                 private_key=root / "id", bundle_builder=lambda runner, host, **_kw: "bundle",
                 deliverer=lambda ssh, bundles, progress: FakeSsh.log.append(("deliver", bundles.for_host(None))),
                 pusher=push, ssh_factory=FakeSsh, images=images)
    d._preflight = lambda: None   # the registry check is covered by the cloud-path tests
    return d, pushes


def test_reuse_runs_the_host_steps_in_order(setup):
    stack, root, port = setup
    d, pushes = _deployer(stack, root)
    result = d.run()
    (host,) = result.hosts
    assert result.ok and not host.launched and host.error is None
    cmds = [e if isinstance(e, str) else e[0] for e in FakeSsh.log]
    order = [c for c in cmds if c in ("wait_ready", "deliver") or c.startswith(("provision", "sh -c"))]
    assert order[:2] == ["wait_ready", "deliver"]
    writes = [e for e in FakeSsh.log if isinstance(e, tuple) and e[0].startswith("sh -c")]
    assert [w[0].split("cat > ")[1].split(".new")[0] for w in writes] == [
        "/etc/provisioner/stack.yml", "/etc/provisioner/.provision.env", "/etc/provisioner/web.env",
        "/etc/provisioner/host.yml"]
    assert all(w[0].startswith("sh -c umask 077 && ") for w in writes)   # root's alone, content on stdin
    assert writes[1][1] == 'COMPOSE_PROJECT_NAME="shop"\n'
    assert writes[2][1] == "A=1\n"
    assert "data: {aws_volume_id: 'vol0123456789abcdef0'}" in writes[3][1]
    assert [c.split(" -f")[0] for c in cmds if c.startswith("provision")] == [
        "provision host boot --json", "provision up", "provision ps"]
    assert pushes == ["127.0.0.1:5000/shop/web:1"]
    assert [(i["ref"], i["digest"], i["delivery"]) for i in host.images] == [
        ("127.0.0.1:5000/shop/web:1", "sha256:" + "e" * 64, "push")]
    assert host.endpoints == {f"{port}/tcp": f"127.0.0.1:{port}"}
    rows = breakdown_rows(result)
    assert [r[0] for r in rows] == ["launch and boot", "SSH ready", "agent install", "host preparation (disks)",
                                    "image pulls", "container starts", "total"]
    assert rows[0][1] == "reused"


def test_pull_mode_delivers_exactly_the_needed_credentials_and_the_host_pulls(setup, tmp_path, monkeypatch):
    """The default: the host pulls. Its registries.conf remaps the operator's loopback registry to
    the address a local VM reaches it by, and the operator's credentials for that registry (and no
    other) go to the root-only file through stdin, keyed by the address the host uses."""
    import base64

    stack, root, _port = setup
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps({"auths": {
        "127.0.0.1:5000": {"auth": base64.b64encode(b"shop:s3cret-pw").decode()},
        "other.example:443": {"auth": base64.b64encode(b"x:unrelated").decode()}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))

    class Seen:
        @staticmethod
        def registry_seen_as(registry):
            return "10.0.2.2:5000" if registry == "127.0.0.1:5000" else registry

    driver = FakeDriver()
    driver.registry_seen_as = Seen.registry_seen_as
    said = []
    d, pushes = _deployer(stack, root, driver=driver, images="pull")
    d.progress = said.append
    result = d.run()
    (host,) = result.hosts
    assert result.ok, host.error
    assert pushes == []
    assert host.images == [{"ref": "127.0.0.1:5000/shop/web:1", "digest": "sha256:" + "d" * 64, "delivery": "pull",
                            "fetched_layers": 2, "bytes": 1000, "seconds": 0.5}]
    writes = {e[0]: e[1] for e in FakeSsh.log if isinstance(e, tuple) and e[0].startswith("sh -c")}
    conf = next(v for k, v in writes.items() if "registries.conf.new" in k)
    assert 'prefix = "127.0.0.1:5000"' in conf and 'location = "10.0.2.2:5000"' in conf and "insecure = true" in conf
    auth_cmd = next(k for k in writes if "auth.json.new" in k)
    assert "chmod 600" in auth_cmd and "umask 077" in auth_cmd
    auths = json.loads(writes[auth_cmd])["auths"]
    assert list(auths) == ["10.0.2.2:5000"]
    assert base64.b64decode(auths["10.0.2.2:5000"]["auth"]) == b"shop:s3cret-pw"
    # the secret is only ever on stdin: not in any command line, not in what deploy said or returned
    assert not any("s3cret" in (e if isinstance(e, str) else e[0]) for e in FakeSsh.log)
    assert not any("s3cret" in line for line in said) and "s3cret" not in json.dumps(result.to_json(), default=str)
    pull = next(e[0] for e in FakeSsh.log if isinstance(e, tuple) and e[0].startswith("provision --json image pull"))
    assert pull == "provision --json image pull -q 127.0.0.1:5000/shop/web:1"


def test_a_host_that_cannot_reach_the_registry_is_told_to_use_push(setup):
    stack, root, _port = setup

    def unreachable(self, argv):
        return Result(argv, 1, "", "error: 127.0.0.1:5000/shop/web:1: cannot reach registry 10.0.2.2:5000: "
                                   "connection refused")

    FakeSsh._pull, original = unreachable, FakeSsh._pull
    try:
        d, _ = _deployer(stack, root, images="pull")
        (host,) = d.run().hosts
    finally:
        FakeSsh._pull = original
    assert host.error == ("images: host web cannot reach registry 127.0.0.1:5000 (127.0.0.1:5000/shop/web:1: cannot "
                          "reach registry 10.0.2.2:5000: connection refused); deploy with --images push to send the "
                          "images from this machine over SSH instead")


def test_a_failed_boot_hook_stops_that_host_and_names_the_step(setup):
    stack, root, _port = setup
    FakeSsh.fail_boot = True
    d, pushes = _deployer(stack, root)
    (host,) = d.run().hosts
    assert host.error.startswith("prepare: the boot hook failed on web: disks: no disk matches")
    assert pushes == []   # nothing after the failed phase


def test_a_stopped_unrecorded_or_dropped_host_is_one_error_naming_each(setup):
    stack, root, _port = setup
    d, _ = _deployer(stack, root, driver=FakeDriver(state="stopped"))
    with pytest.raises(HostError, match=r"^local: stack 'shop': host web's instance i-1 is stopped; to replace a "
                                         r"host: 'provision destroy shop --cloud local --host NAME --keep-volumes', "
                                         r"then deploy again$"):
        d.run()
    inventory.forget(root, "shop", "web")
    driver = FakeDriver()
    driver.extra = [Resource("instance", "i-2", "shop-old", "old", "running", {})]
    d, _ = _deployer(stack, root, driver=driver)
    with pytest.raises(HostError, match=rf"host web runs \(i-1\) but {root} has no record of it; host old \(i-2\) "
                                         rf"is not in {stack} any more; to replace"):
        d.run()
    assert FakeSsh.log == []   # nothing was touched


def test_host_yaml_and_volume_matches():
    assert volume_match("aws", "aws", "data", "vol-1") == {"aws_volume_id": "vol-1"}
    assert volume_match("local", "gce", "data", "data") == {"gce_device_name": "data"}
    assert volume_match("gce", "gce", "data", "x") == {"gce_device_name": "data"}


def test_the_collectors_ca_goes_to_the_host_next_to_the_stack(setup, tmp_path):
    stack, root, _port = setup
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    stack.write_text(stack.read_text().replace("    services: [web]\n", "    services: [web]\n    logging: {ship_to: "
                                               "\"tls://logs.example:6514\", ca: ca.pem}\n", 1))
    d, _ = _deployer(stack, root)
    assert d.plan.hosts[0].files[-1] == (str(tmp_path / "ca.pem"), "/etc/provisioner/ca.pem")
    assert d.run().ok
    writes = [e for e in FakeSsh.log if isinstance(e, tuple) and e[0].startswith("sh -c")]
    assert ("/etc/provisioner/ca.pem", "-----BEGIN CERTIFICATE-----\n") in [
        (w[0].split("cat > ")[1].split(".new")[0], w[1]) for w in writes]
    outside = tmp_path.parent / f"{tmp_path.name}-ca.pem"     # beside the stack's directory, not in it
    outside.write_text("x")
    stack.write_text(stack.read_text().replace("ca: ca.pem", f"ca: ../{outside.name}"))
    from provisioner.errors import StackError
    with pytest.raises(StackError, match="hosts.web.logging.ca .* is outside the stack file's directory"):
        plan_deploy(load_stack(stack), "local")
