"""SSH host key verification (no TOFU) and agent delivery decisions, without a network."""
from __future__ import annotations

import subprocess
from pathlib import Path

import paramiko
import pytest

from provisioner.errors import HostError
from provisioner.remote import bundle as b
from provisioner.remote import deliver as d
from provisioner.remote.bundle import file_sha256
from provisioner.runner import Result
from provisioner.testing import FakeRunner
from provisioner.remote.hostkeys import HostKeyMismatch, Target, VerifyFingerprints, sha256_fingerprint
from provisioner.remote.ssh import SshClient


@pytest.fixture
def host_key(tmp_path) -> Path:
    path = tmp_path / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def test_fingerprint_matches_ssh_keygen(host_key):
    key = paramiko.Ed25519Key.from_private_key_file(str(host_key))
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(host_key) + ".pub"], capture_output=True, text=True,
                         check=True).stdout
    assert out.split()[1] == sha256_fingerprint(key)


def test_policy_accepts_only_console_fingerprints(host_key):
    key = paramiko.Ed25519Key.from_private_key_file(str(host_key))
    client = paramiko.SSHClient()
    VerifyFingerprints({sha256_fingerprint(key)}, "h").missing_host_key(client, "[127.0.0.1]:2222", key)
    assert client.get_host_keys().lookup("[127.0.0.1]:2222")
    with pytest.raises(HostKeyMismatch, match="not among the fingerprints"):
        VerifyFingerprints({"SHA256:other"}, "h").missing_host_key(paramiko.SSHClient(), "x", key)


def test_client_refuses_to_run_without_fingerprints(tmp_path):
    with pytest.raises(HostError, match="no host key fingerprints"):
        SshClient(Target("127.0.0.1", 22, "u", tmp_path / "k", ()))


class FakeSsh(FakeRunner):
    """Stands in for SshClient as any Runner does: records commands and puts, answers python3,
    the staging script (as the host's wheelstage would, from `have`: name -> sha256 staged) and
    mktemp (every command answers; what each prints depends on it)."""

    def __init__(self, python="3.11", have=None, marker=""):
        super().__init__(where="provision@127.0.0.1:2222")
        self.python, self.have, self.commands, self.puts = python, dict(have or {}), [], []
        self.marker, self.by_command, self.uploaded = marker, {}, {}
        self.expect([], prefix=True, handler=self.answer)

    def answer(self, argv) -> Result:
        cmd = " ".join(argv)
        if list(argv[:2]) == ["python3", "-"]:           # wheelstage STAGING UPLOAD NAME=SHA...
            wanted = dict(p.split("=", 1) for p in argv[4:])
            for name, sha in wanted.items():
                if argv[3] != "-" and name in self.uploaded:
                    self.have[name] = sha
            return Result(argv, 0, "".join(f"{n}\n" for n, h in wanted.items() if self.have.get(n) != h), "")
        out = (self.python if cmd.startswith("python3 -c") else "provision, version 0.1.0" if "--version" in cmd
               else self.marker if cmd.startswith("cat ") else "/var/tmp/provisioner-upload.abc"
               if argv[0] == "mktemp" else "")
        return Result(argv, 0, out, "")

    def run(self, argv, **kw):
        cmd = " ".join(argv)
        self.commands.append(cmd)
        self.by_command[cmd] = kw.get("input")
        return super().run(argv, **kw)

    def put(self, local, remote, mode=None):
        self.puts.append(Path(local).name)
        self.uploaded[Path(local).name] = remote


def _bundle(tmp_path, content=b"print('agent')\n") -> b.AgentBundle:
    import zipfile

    wheels = []
    for name in ("provisioner-0.1.0-py3-none-any.whl", "click-8.1-py3-none-any.whl", "pyyaml-6-cp311.whl"):
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            z.writestr("mod.py", content if name.startswith("provisioner") else b"x")
        wheels.append(tmp_path / name)
    return b.AgentBundle(wheels[0], tuple(wheels[1:]), "3.11")


def test_deliver_sends_only_wheels_the_host_lacks_by_hash(tmp_path):
    b = _bundle(tmp_path)
    ssh = FakeSsh(have={"click-8.1-py3-none-any.whl": file_sha256(b.wheels[1]),
                        "pyyaml-6-cp311.whl": "0" * 64,                      # same name, other content
                        "provisioner-0.1.0-py3-none-any.whl": "1" * 64})     # an older build of the agent
    report = d.deliver(ssh, _bundle(tmp_path))
    assert ssh.puts == ["provisioner-0.1.0-py3-none-any.whl", "pyyaml-6-cp311.whl"]
    assert report.skipped == ["click-8.1-py3-none-any.whl"]
    # staged as root through wheelstage, with the hashes from here, from the login user's private upload dir
    stages = [c for c in ssh.commands if c.startswith("python3 - /opt/provisioner/wheels ")]
    assert [c.split()[3] for c in stages] == ["-", "/var/tmp/provisioner-upload.abc"]
    assert ssh.by_command[stages[0]] == Path(d.wheelstage.__file__).read_text()
    assert "mktemp -d /var/tmp/provisioner-upload.XXXXXXXX" in ssh.commands
    assert ssh.commands[-1] != "rm -rf /var/tmp/provisioner-upload.abc" and \
        "rm -rf /var/tmp/provisioner-upload.abc" in ssh.commands
    installs = [c for c in ssh.commands if " install " in c]
    assert len(installs) == 1 and "--python /opt/provisioner/venv/bin/python" in installs[0]
    assert "--no-index" in installs[0] and "--no-deps" not in installs[0]
    # then the agent's own wheel over the installed one (same version, new code): wheelinstall
    own = "/opt/provisioner/venv/bin/python - /opt/provisioner/wheels/provisioner-0.1.0-py3-none-any.whl"
    assert ssh.commands.index(own) > ssh.commands.index(installs[0])
    assert ssh.by_command[own] == Path(d.wheelinstall.__file__).read_text()
    assert report.version == "provision, version 0.1.0"


def test_deliver_refuses_a_python_mismatch_before_sending(tmp_path):
    ssh = FakeSsh(python="3.13")
    with pytest.raises(HostError, match="host has Python 3.13, the wheels were built for 3.11"):
        d.deliver(ssh, _bundle(tmp_path))
    assert ssh.puts == []


def test_runtime_requirements_leave_out_test_extras_and_operator_libraries():
    reqs = b.runtime_requirements()
    assert any(r.startswith("click") for r in reqs) and any(r.startswith("PyYAML") for r in reqs)
    assert not any("pytest" in r or "moto" in r for r in reqs)
    assert not any(r.lower().startswith(("paramiko", "apache-libcloud", "jinja2")) for r in reqs)


def test_first_delivery_makes_a_venv_without_pip_and_installs_once(tmp_path):
    class Fresh(FakeSsh):
        def answer(self, argv):
            out = super().answer(argv)
            return Result(argv, 1, "", "") if list(argv[:2]) == ["test", "-x"] else out

    ssh = Fresh()
    d.deliver(ssh, _bundle(tmp_path))
    assert "python3 -m venv --without-pip /opt/provisioner/venv" in ssh.commands
    installs = [c for c in ssh.commands if " install " in c]
    assert len(installs) == 1 and "--no-index" in installs[0] and "--force-reinstall" not in installs[0]
    assert any(c.startswith("sh -c ln -sfn /opt/provisioner/venv/bin/provision /usr/local/bin/provision && ")
               for c in ssh.commands)
    assert "tee /opt/provisioner/venv.deps" in ssh.commands   # the next delivery knows the deps are there


def test_dependencies_already_in_the_venv_mean_no_pip_run(tmp_path):
    bundle = _bundle(tmp_path)

    class Baked(FakeSsh):   # like the local cloud's VM image: venv and its .deps list baked in
        def answer(self, argv):
            if " ".join(argv) == "cat /opt/provisioner/venv.deps":
                return Result(argv, 0, "\n".join(sorted(w.name for w in bundle.dependency_wheels)) + "\n", "")
            return super().answer(argv)

    ssh = Baked(have={w.name: file_sha256(w) for w in bundle.dependency_wheels})
    d.deliver(ssh, bundle)
    assert not [c for c in ssh.commands if " pip " in c]
    assert "/opt/provisioner/venv/bin/python - /opt/provisioner/wheels/provisioner-0.1.0-py3-none-any.whl" \
        in ssh.commands
    assert ssh.puts == ["provisioner-0.1.0-py3-none-any.whl"]


def test_same_agent_contents_are_not_reinstalled(tmp_path):
    first = _bundle(tmp_path / "a" if (tmp_path / "a").mkdir() is None else tmp_path)
    second = _bundle(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path)  # rebuilt: new zip times
    assert b.content_digest(first.project_wheel) == b.content_digest(second.project_wheel)
    marker = b.content_digest(first.project_wheel) + " " + ",".join(w.name for w in first.dependency_wheels)
    ssh = FakeSsh(marker=marker)
    report = d.deliver(ssh, second)
    assert ssh.puts == [] and report.sent == [] and len(report.skipped) == 3
    assert not [c for c in ssh.commands if " install " in c]
    changed = _bundle(tmp_path / "c" if (tmp_path / "c").mkdir() is None else tmp_path, b"print('v2')\n")
    d.deliver(FakeSsh(marker=marker), changed)  # different contents: installed
    assert b.content_digest(changed.project_wheel) != b.content_digest(first.project_wheel)


def test_source_digest_follows_what_goes_into_the_wheel(tmp_path):
    from provisioner.remote.bundle import source_digest

    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    pkg = tmp_path / "provisioner"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "a.py").write_text("A = 1\n")
    first = source_digest(tmp_path)
    (pkg / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")   # byte code: not the source
    (tmp_path / "native" / "build").mkdir(parents=True)
    (tmp_path / "native" / "build" / "provision-runtime").write_bytes(b"\0")
    assert source_digest(tmp_path) == first
    (pkg / "a.py").write_text("A = 2\n")
    assert source_digest(tmp_path) != first
