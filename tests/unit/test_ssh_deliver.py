"""SSH host key verification (no TOFU) and agent delivery decisions, without a network."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import paramiko
import pytest

from provisioner.errors import HostError
from provisioner.remote import bundle as b
from provisioner.remote import deliver as d
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
    """A host, faked as any Runner is: answers the delivery's probe (python3, C library, machine,
    the venv's state) and records the install script and what was streamed to it."""

    def __init__(self, python="Python 3.11.2", libc="glibc 2.36", venv=True, marker="", deps=()):
        super().__init__(where="provision@127.0.0.1:2222")
        probe = "\n".join([python, libc, "x86_64", "venv" if venv else "-", marker, *deps]) + "\n"
        self.expect(["sh", "-c"], prefix=True, handler=lambda argv: self._answer_sh(argv, probe))
        self.scripts: list[str] = []

    def _answer_sh(self, argv, probe) -> Result:
        if argv[2].startswith("pv=$(python3 -V"):
            return Result(argv, 0, probe, "")
        self.scripts.append(argv[2])
        return Result(argv, 0, "", "")

    def streamed(self) -> dict[str, bytes]:
        """The files of the last streamed tar."""
        import io
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(self.inputs[-1])) as tf:
            return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}


def _bundle(tmp_path, content=b"print('agent')\n") -> b.AgentBundle:
    import zipfile

    tmp_path.mkdir(parents=True, exist_ok=True)
    wheels = []
    for name in ("provisioner-0.1.0-py3-none-linux_x86_64.whl", "click-8.1-py3-none-any.whl",
                 "pyyaml-6-cp311-cp311-manylinux_2_17_x86_64.whl"):
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            zi = zipfile.ZipInfo("mod.py", date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(zi, content if name.startswith("provisioner") else b"x")
        wheels.append(tmp_path / name)
    return b.AgentBundle(wheels[0], tuple(wheels[1:]), "3.11")


def _marker(bundle) -> str:
    return b.content_digest(bundle.project_wheel) + " " + ",".join(sorted(w.name for w in bundle.dependency_wheels))


def test_probe_answers_parse_into_the_hosts_python_and_venv_state():
    facts = d.parse_probe("Python 3.13.5\nglibc 2.41\nx86_64\nvenv\nabc d1,d2\nd1.whl\nd2.whl\n", "h")
    assert facts.python == b.HostPython("3.13", "2.41", "x86_64") and facts.venv
    assert facts.marker == "abc d1,d2" and facts.deps == ("d1.whl", "d2.whl")
    with pytest.raises(HostError, match="the host has Python 3.9; the agent needs 3.11 or newer"):
        d.parse_probe("Python 3.9.2\nglibc 2.31\nx86_64\n-\n\n", "h")
    with pytest.raises(HostError, match="no python3 on the host"):
        d.parse_probe("sh: 1: python3: not found\nglibc 2.36\nx86_64\n-\n\n", "h")
    with pytest.raises(HostError, match="not glibc"):
        d.parse_probe("Python 3.12.1\nmusl\nx86_64\n-\n\n", "h")


def test_an_unchanged_agent_costs_one_round_trip(tmp_path):
    bundle = _bundle(tmp_path)
    ssh = FakeSsh(marker=_marker(bundle), deps=sorted(w.name for w in bundle.dependency_wheels))
    report = d.deliver(ssh, bundle)
    assert len(ssh.calls) == 1 and ssh.scripts == [] and report.sent == [] and len(report.skipped) == 3


def test_a_new_agent_over_the_same_dependencies_sends_only_its_wheel(tmp_path):
    bundle = _bundle(tmp_path)
    ssh = FakeSsh(marker="old,deps", deps=sorted(w.name for w in bundle.dependency_wheels))
    report = d.deliver(ssh, bundle)
    (script,) = ssh.scripts
    assert report.sent == [bundle.project_wheel.name] and len(ssh.calls) == 2
    files = ssh.streamed()
    assert sorted(files) == sorted(["SHA256SUMS", bundle.project_wheel.name, "wheelinstall.py"])
    assert files["wheelinstall.py"] == Path(d.wheelinstall.__file__).read_bytes()
    assert f"{hashlib.sha256(files[bundle.project_wheel.name]).hexdigest()}  {bundle.project_wheel.name}" \
        in files["SHA256SUMS"].decode()
    assert " pip " not in script and "venv --without-pip" not in script   # no pip start-up: wheelinstall only
    assert "sha256sum --quiet --strict -c SHA256SUMS" in script
    assert script.index("sha256sum") < script.index("wheelinstall.py /opt/provisioner/wheels/provisioner-")
    assert script.rstrip().endswith(f"printf '%s\\n' '{_marker(bundle)}' > /opt/provisioner/venv.installed")


def test_a_first_delivery_makes_the_venv_and_installs_exactly_the_bundles_dependencies(tmp_path):
    bundle = _bundle(tmp_path)
    ssh = FakeSsh(venv=False)
    report = d.deliver(ssh, bundle)
    (script,) = ssh.scripts
    assert sorted(report.sent) == sorted(w.name for w in bundle.wheels)
    assert "python3 -m venv --without-pip /opt/provisioner/venv" in script
    pip = next(line for line in script.splitlines() if " -m pip " in line)
    assert "--no-index --find-links /opt/provisioner/wheels" in pip
    assert all(f"/opt/provisioner/wheels/{w.name}" in pip for w in bundle.dependency_wheels)
    assert "install -d -m 0700 -o root -g root /opt/provisioner /opt/provisioner/wheels" in script


def test_a_host_with_another_python_gets_the_bundle_for_its_own(tmp_path):
    asked = []

    class Bundles:
        def for_host(self, host):
            asked.append(host)
            return _bundle(tmp_path)

    d.deliver(FakeSsh(python="Python 3.13.5", libc="glibc 2.41", venv=False), Bundles())
    assert asked == [b.HostPython("3.13", "2.41", "x86_64")]


def test_same_agent_contents_give_the_same_marker(tmp_path):
    first, second = _bundle(tmp_path / "a"), _bundle(tmp_path / "b")
    assert b.content_digest(first.project_wheel) == b.content_digest(second.project_wheel)
    changed = _bundle(tmp_path / "c", b"print('v2')\n")
    assert b.content_digest(changed.project_wheel) != b.content_digest(first.project_wheel)


def test_manylinux_platforms_cover_every_tag_the_hosts_glibc_loads():
    tags = b.manylinux_platforms("2.36", "x86_64")
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags and tags[-1] == "manylinux1_x86_64"
    assert "manylinux2014_x86_64" in tags and "manylinux_2_37_x86_64" not in tags


def test_the_agent_wheel_is_this_install_with_its_binaries_and_no_operator_dependency(tmp_path):
    import zipfile

    wheel = b.agent_wheel(b.HostPython.local(), cache=tmp_path)
    again = b.agent_wheel(b.HostPython.local(), cache=tmp_path)
    assert again == wheel   # made once
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read("provisioner-0.1.0.dist-info/METADATA").decode()
        runtime = z.getinfo("provisioner/_bin/provision-runtime")
    assert "provisioner/cli/main.py" in names and "provisioner/_bin/provision-shim" in names
    assert (runtime.external_attr >> 16) & 0o111
    assert any(n.endswith(".pyc") for n in names)   # same Python here: byte code made here
    assert "Requires-Dist: click" in meta and "paramiko" not in meta and "libcloud" not in meta
    other = b.agent_wheel(b.HostPython("3.13", "2.41", b.HostPython.local().machine), cache=tmp_path)
    with zipfile.ZipFile(other) as z:
        assert not any(n.endswith(".pyc") for n in z.namelist())   # another Python compiles its own
