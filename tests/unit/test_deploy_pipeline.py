"""The per-host steps of `provision deploy` over a fake SSH: order, idempotence, failures, reuse."""
from __future__ import annotations

import io
import json
import shlex
import tarfile
import zipfile
from dataclasses import dataclass

import pytest

from provisioner.clouds.base import Resource
from provisioner.deploy import inventory
from provisioner.deploy.pipeline import Deployer, breakdown_rows
from provisioner.deploy.plan import plan_deploy, volume_match
from provisioner.remote.bundle import AgentBundle
from provisioner.remote.deliver import bundle_marker
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


def files_of(data: bytes) -> dict[str, str]:
    """What a write_files round trip carried: the tar on its stdin, by name under /etc/provisioner."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read().decode() for m in tf.getmembers()}


class FakeSsh(FakeRunner):
    """The host over SSH, faked as any Runner is: only the commands a deploy runs there answer.
    Class state is the host's: what the last successful deploy left (fingerprint, release)."""

    log: list = []
    fail_boot = False
    deployed = ""                 # /etc/provisioner/deployed
    marker = ""                   # the installed agent's marker
    releases: list = []           # what `provision releases STACK --json` prints
    services = [{"service": "web", "state": "running", "health": "none", "up_to_date": True}]

    def __init__(self, target):
        super().__init__(where=target.where)
        self.expect(["provision", "host", "boot"], prefix=True, handler=self._boot)
        self.expect(["provision", "up"], prefix=True,
                    stdout=json.dumps([{"action": "create", "service": "web", "text": "create web"}]))
        self.expect(["provision", "ps"], prefix=True, handler=lambda argv: Result(argv, 0, json.dumps(FakeSsh.services), ""))
        self.expect(["sh", "-c"], prefix=True, handler=self._sh)
        self.expect(["provision", "--json", "image", "pull", "-q"], prefix=True, handler=self._pull)

    def _sh(self, argv):
        script = argv[2]
        if "@@provisioner:deployed" in script:      # deploy's probe
            same = FakeSsh.deployed and f"= {FakeSsh.deployed} ]" in script
            # the agent deploy expects for Python 3.11 is named; another one is not asked for ps
            stale = "case \"$pv\" in 'Python 3.11.'*)" in script and f"[ \"$mk\" = {shlex.quote(FakeSsh.marker)} ]" not in script
            text = (f"Python 3.11.2\nglibc 2.36\nx86_64\nvenv\n{FakeSsh.marker}\n\n"
                    f"@@provisioner:deployed\n{FakeSsh.deployed}\n"
                    f"@@provisioner:services\n{json.dumps(FakeSsh.services) if same and not stale else ''}\n"
                    f"@@provisioner:releases\n{'' if same else json.dumps(FakeSsh.releases)}\n")
            return Result(argv, 0, text, "")
        if "> /etc/provisioner/deployed" in script:
            FakeSsh.deployed = script.split("printf '%s' ")[1].split(" >")[0]
        return Result(argv, 0, "", "")

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


DIGEST = "sha256:" + "e" * 64


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
    wheel = tmp_path / "provisioner-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("provisioner/__init__.py", "")
    FakeSsh.log, FakeSsh.fail_boot, FakeSsh.deployed, FakeSsh.releases = [], False, "", []
    FakeSsh.marker = ""
    yield stack, root, port, AgentBundle(wheel, (), "3.11")
    listener.close()


def _deployer(setup, driver=None, pushed=None, images="push", digest=DIGEST, dry_run=False):
    stack, root, _port, bundle = setup
    pushes = []

    def push(ssh, refs, insecure_registries=()):
        pushes.extend(refs)
        return [pushed or Pushed(False, [0, 1], []) for _ in refs]

    def deliver(ssh, b, progress, facts):
        FakeSsh.log.append(("deliver", facts.marker))
        FakeSsh.marker = bundle_marker(b)
    d = Deployer(plan_deploy(load_stack(stack), "local"), driver or FakeDriver(), root=root, runner=None, public_key="k",
                 private_key=root / "id", bundle_builder=lambda runner, host, **_kw: bundle, deliverer=deliver,
                 pusher=push, ssh_factory=FakeSsh, images=images, resolver=lambda ref: digest, dry_run=dry_run)
    return d, pushes


def _cmds() -> list[str]:
    return [e if isinstance(e, str) else e[0] for e in FakeSsh.log]


def _writes() -> dict[str, str]:
    (data,) = [e[1] for e in FakeSsh.log if isinstance(e, tuple) and "tar -x" in e[0]]
    return files_of(data)


def test_reuse_runs_the_host_steps_in_order(setup):
    stack, root, port, _ = setup
    d, pushes = _deployer(setup)
    result = d.run()
    (host,) = result.hosts
    assert result.ok and not host.launched and host.error is None
    cmds = _cmds()
    order = ["probe" if "@@provisioner:" in c else "files" if "tar -x" in c else "fingerprint"
             if "/etc/provisioner/deployed" in c and "printf" in c else c.split(" -")[0]
             for c in cmds if c in ("wait_ready", "deliver") or c.startswith(("provision", "sh -c"))]
    assert order == ["wait_ready", "probe", "deliver", "files", "provision host boot", "provision up",
                     "provision ps", "fingerprint"]
    # one round trip for every file; the old fingerprint goes first
    files_cmd = next(c for c in cmds if "tar -x" in c)
    assert "rm -f /etc/provisioner/deployed" in files_cmd and "umask 077" in files_cmd
    files = _writes()
    assert sorted(files) == [".provision.env", "host.yml", "pins.json", "stack.yml", "web.env"]
    assert files[".provision.env"] == 'COMPOSE_PROJECT_NAME="shop"\n'
    assert files["web.env"] == "A=1\n"
    assert "data: {aws_volume_id: 'vol0123456789abcdef0'}" in files["host.yml"]
    assert json.loads(files["pins.json"]) == {"127.0.0.1:5000/shop/web:1": DIGEST}
    # the image by digest, `up` with the pins, a release made by deploy
    assert pushes == [f"127.0.0.1:5000/shop/web:1@{DIGEST}"]
    up = next(c for c in cmds if c.startswith("provision up"))
    assert up == ("provision up -f /etc/provisioner/stack.yml --host web --pins /etc/provisioner/pins.json "
                  "--by deploy --json")
    assert next(c for c in cmds if c.startswith("provision host boot")).startswith(
        "provision host boot --json --skip-unchanged ")
    assert [(i["ref"], i["digest"], i["delivery"]) for i in host.images] == [
        ("127.0.0.1:5000/shop/web:1", "sha256:" + "e" * 64, "push")]
    assert [c.describe() for c in host.changes] == ["create web (no release on the host yet)"]
    assert host.endpoints == {f"{port}/tcp": f"127.0.0.1:{port}"}
    rows = breakdown_rows(result)
    assert [r[0] for r in rows] == ["launch and boot", "SSH ready", "agent install", "host preparation (disks)",
                                    "image pulls", "container starts", "total"]
    assert rows[0][1] == "reused"


def _released(spec_of_web: str, digest: str = DIGEST) -> list[dict]:
    return [{"number": 1, "current": True, "services": {"web": {
        "spec": spec_of_web, "image": "127.0.0.1:5000/shop/web:1", "digest": digest}}}]


def _spec_of_web(stack) -> str:
    from provisioner.compose.plan import service_hashes
    return service_hashes(load_stack(stack), portable=True)["web"]


def test_an_unchanged_redeploy_is_one_round_trip(setup):
    """Same agent, same files and digests, every service healthy: the probe and nothing else."""
    stack, root, port, _ = setup
    d, _ = _deployer(setup)
    assert d.run().ok
    FakeSsh.log = []
    d, pushes = _deployer(setup)
    result = d.run()
    (host,) = result.hosts
    assert result.ok and host.unchanged and host.changes == []
    assert [c for c in _cmds() if c != "wait_ready"] == [next(c for c in _cmds() if "@@provisioner:" in c)]
    assert pushes == [] and host.endpoints == {f"{port}/tcp": f"127.0.0.1:{port}"}
    # …but not when a service is down: then everything runs (and `up` starts it)
    FakeSsh.log, FakeSsh.services = [], [{"service": "web", "state": "exited", "health": "none"}]
    try:
        d, _ = _deployer(setup)
        (host,) = d.run().hosts
    finally:
        FakeSsh.services = [{"service": "web", "state": "running", "health": "none", "up_to_date": True}]
    assert any(c.startswith("provision up") for c in _cmds())
    assert [c.describe() for c in host.changes] == ["check web (exited)"]


def test_a_new_agent_over_the_same_files_is_installed_without_asking_the_old_one(setup, tmp_path):
    """Same files and digests, a new agent: the probe names the agent deploy brings, so the old
    one is not started for `ps`; the plan says why each service is checked; the agent is delivered."""
    stack, root, port, bundle = setup
    d, _ = _deployer(setup)
    assert d.run().ok
    newer = tmp_path / "new" / bundle.project_wheel.name
    newer.parent.mkdir()
    with zipfile.ZipFile(newer, "w") as z:
        z.writestr("provisioner/__init__.py", "# changed\n")
    FakeSsh.log = []
    d, _ = _deployer((stack, root, port, AgentBundle(newer, (), "3.11")))
    (host,) = d.run().hosts
    probe = next(c for c in _cmds() if "@@provisioner:" in c)
    assert bundle_marker(AgentBundle(newer, (), "3.11")) in probe
    assert host.error is None and not host.unchanged
    assert [c.describe() for c in host.changes] == ["check web (the host's agent is replaced first)"]
    assert ("deliver", bundle_marker(bundle)) in FakeSsh.log
    assert any(c.startswith("provision up") for c in _cmds())


def test_a_changed_env_file_or_digest_is_planned_and_redeployed(setup):
    stack, root, _port, _ = setup
    d, _ = _deployer(setup)
    assert d.run().ok
    FakeSsh.releases = _released(_spec_of_web(stack))
    (stack.parent / "web.env").write_text("A=2\n")
    FakeSsh.log = []
    d, _ = _deployer(setup)
    (host,) = d.run().hosts
    assert not host.unchanged and [c.describe() for c in host.changes] == ["recreate web (configuration changed)"]
    assert _writes()["web.env"] == "A=2\n"
    assert "deliver" not in _cmds()       # the agent is the same: its delivery is not even asked for
    # the same tag, a new digest in the registry: the fingerprint changes, the plan says why
    FakeSsh.releases = _released(_spec_of_web(stack))
    FakeSsh.log = []
    d, pushes = _deployer(setup, digest="sha256:" + "f" * 64)
    (host,) = d.run().hosts
    assert [c.describe() for c in host.changes] == [
        "recreate web (image 127.0.0.1:5000/shop/web:1: new digest ffffffffffff (was eeeeeeeeeeee))"]
    assert pushes == ["127.0.0.1:5000/shop/web:1@sha256:" + "f" * 64]


def test_dry_run_prints_the_plan_and_changes_nothing(setup):
    stack, root, _port, _ = setup
    FakeSsh.releases = _released(_spec_of_web(stack))
    (stack.parent / "web.env").write_text("A=3\n")
    said = []
    d, pushes = _deployer(setup, dry_run=True)
    d.progress = said.append
    (host,) = d.run().hosts
    assert [c.describe() for c in host.changes] == ["recreate web (configuration changed)"]
    assert "web: plan: recreate web (configuration changed)" in said
    assert [c for c in _cmds() if c != "wait_ready"] == [next(c for c in _cmds() if "@@provisioner:" in c)]
    assert pushes == []


def test_pull_mode_delivers_exactly_the_needed_credentials_and_the_host_pulls(setup, tmp_path, monkeypatch):
    """The default: the host pulls. Its registries.conf remaps the operator's loopback registry to
    the address a local VM reaches it by, and the operator's credentials for that registry (and no
    other) go to the root-only file through stdin, keyed by the address the host uses."""
    import base64

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
    d, pushes = _deployer(setup, driver=driver, images="pull")
    d.progress = said.append
    result = d.run()
    (host,) = result.hosts
    assert result.ok, host.error
    assert pushes == []
    assert host.images == [{"ref": "127.0.0.1:5000/shop/web:1", "digest": "sha256:" + "d" * 64, "delivery": "pull",
                            "fetched_layers": 2, "bytes": 1000, "seconds": 0.5}]
    files = _writes()
    conf = files["registries/registries.conf"]
    assert 'prefix = "127.0.0.1:5000"' in conf and 'location = "10.0.2.2:5000"' in conf and "insecure = true" in conf
    auths = json.loads(files["registries/auth.json"])["auths"]
    assert list(auths) == ["10.0.2.2:5000"]
    assert base64.b64decode(auths["10.0.2.2:5000"]["auth"]) == b"shop:s3cret-pw"
    # the secret is only ever on stdin: not in any command line, not in what deploy said or returned
    assert not any("s3cret" in c for c in _cmds())
    assert not any("s3cret" in line for line in said) and "s3cret" not in json.dumps(result.to_json(), default=str)
    pull = next(c for c in _cmds() if c.startswith("provision --json image pull"))
    assert pull == f"provision --json image pull -q 127.0.0.1:5000/shop/web:1@{DIGEST}"
    # no credentials needed any more: the file goes
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    FakeSsh.log = []
    d, _ = _deployer(setup, driver=driver, images="pull")
    assert d.run().ok
    assert "rm -f /etc/provisioner/registries/auth.json" in next(c for c in _cmds() if "tar -x" in c)
    assert "registries/auth.json" not in _writes()


def test_a_host_that_cannot_reach_the_registry_is_told_to_use_push(setup):
    def unreachable(self, argv):
        return Result(argv, 1, "", "error: 127.0.0.1:5000/shop/web:1: cannot reach registry 10.0.2.2:5000: "
                                   "connection refused")

    FakeSsh._pull, original = unreachable, FakeSsh._pull
    try:
        d, _ = _deployer(setup, images="pull")
        (host,) = d.run().hosts
    finally:
        FakeSsh._pull = original
    assert host.error == ("images: host web cannot reach registry 127.0.0.1:5000 (127.0.0.1:5000/shop/web:1: cannot "
                          "reach registry 10.0.2.2:5000: connection refused); deploy with --images push to send the "
                          "images from this machine over SSH instead")
    assert FakeSsh.deployed == ""      # never taken for done


def test_a_failed_boot_hook_stops_that_host_and_names_the_step(setup):
    FakeSsh.fail_boot = True
    d, pushes = _deployer(setup)
    (host,) = d.run().hosts
    assert host.error.startswith("prepare: the boot hook failed on web: disks: no disk matches")
    assert pushes == []   # nothing after the failed phase


def test_a_stopped_unrecorded_or_dropped_host_is_one_error_naming_each(setup):
    stack, root, _port, _ = setup
    d, _ = _deployer(setup, driver=FakeDriver(state="stopped"))
    with pytest.raises(HostError, match=r"^local: stack 'shop': host web's instance i-1 is stopped; to replace a "
                                         r"host: 'provision destroy shop --cloud local --host NAME --keep-volumes', "
                                         r"then deploy again$"):
        d.run()
    inventory.forget(root, "shop", "web")
    driver = FakeDriver()
    driver.extra = [Resource("instance", "i-2", "shop-old", "old", "running", {})]
    d, _ = _deployer(setup, driver=driver)
    with pytest.raises(HostError, match=rf"host web runs \(i-1\) but {root} has no record of it; host old \(i-2\) "
                                         rf"is not in {stack} any more; to replace"):
        d.run()
    assert FakeSsh.log == []   # nothing was touched


def test_host_yaml_and_volume_matches():
    assert volume_match("aws", "aws", "data", "vol-1") == {"aws_volume_id": "vol-1"}
    assert volume_match("local", "gce", "data", "data") == {"gce_device_name": "data"}
    assert volume_match("gce", "gce", "data", "x") == {"gce_device_name": "data"}


def test_the_collectors_ca_goes_to_the_host_next_to_the_stack(setup, tmp_path):
    stack, root, _port, _ = setup
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    stack.write_text(stack.read_text().replace("    services: [web]\n", "    services: [web]\n    logging: {ship_to: "
                                               "\"tls://logs.example:6514\", ca: ca.pem}\n", 1))
    d, _ = _deployer(setup)
    assert d.plan.hosts[0].files[-1] == (str(tmp_path / "ca.pem"), "/etc/provisioner/ca.pem")
    assert d.run().ok
    assert _writes()["ca.pem"] == "-----BEGIN CERTIFICATE-----\n"
    outside = tmp_path.parent / f"{tmp_path.name}-ca.pem"     # beside the stack's directory, not in it
    outside.write_text("x")
    stack.write_text(stack.read_text().replace("ca: ca.pem", f"ca: ../{outside.name}"))
    from provisioner.errors import StackError
    with pytest.raises(StackError, match="hosts.web.logging.ca .* is outside the stack file's directory"):
        plan_deploy(load_stack(stack), "local")
