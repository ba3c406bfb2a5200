"""`provision docker-env`: a local unix socket forwarded to a host's Engine API over the verified SSH
session — here an in-process paramiko SSH server on loopback (its exec requests run `sh -c` on this
machine) in front of an API server on a socket of the test's own; each client connection is one
session channel running dial-stdio. docker-py and Debian's docker client work through it, the
socket is the user's alone, --stop ends the forwarder, and a host without an API is a clear error."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import docker
import pytest
from click.testing import CliRunner

from provisioner.api.app import make_server
from provisioner.cli.main import cli
from provisioner.errors import HostError
from provisioner.remote import dockerenv
from provisioner.runner import Runner
from tests.unit.test_imagepush_ssh import server  # noqa: F401 (fixture)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def api_sock(tmp_path):
    path = tmp_path / "docker.sock"
    srv = make_server(tmp_path / "root", Runner(), socket_path=str(path))
    srv.start()
    try:
        yield str(path)
    finally:
        srv.close()


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    d = tmp_path / "xdg"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
    return d


def remote(sock: str) -> tuple[str, ...]:
    # what `sudo -n provision host dial-stdio` runs on a host, pointed at the test's API socket
    return ("env", f"PYTHONPATH={REPO}", sys.executable, "-m", "provisioner.api.dialstdio", f"--host=unix://{sock}")


def test_docker_clients_reach_the_hosts_api_through_the_forwarded_socket(server, api_sock, runtime_dir):
    sock = dockerenv.start(server, "shop", "web", remote=remote(api_sock), probe=("test", "-S", api_sock))
    try:
        assert sock == runtime_dir / "provision" / "docker-shop-web.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        # started again: the same forwarder answers
        assert dockerenv.start(server, "shop", "web", remote=remote(api_sock)) == sock
        client = docker.DockerClient(base_url=f"unix://{sock}", version="auto")
        assert client.api.api_version == "1.41" and client.ping() is True
        assert client.info()["Driver"] == "btrfs"
        assert [n["Name"] for n in client.api.networks()] == ["bridge"]
        with pytest.raises(docker.errors.NotFound, match="No such container: ghost"):
            client.containers.get("ghost")
        client.close()
        if shutil.which("/usr/bin/docker"):
            out = subprocess.run(["/usr/bin/docker", "version", "--format", "{{.Server.APIVersion}}"],
                                 capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "DOCKER_HOST": f"unix://{sock}",
                                      "DOCKER_CONFIG": str(runtime_dir / ".docker")})
            assert out.returncode == 0 and out.stdout.strip() == "1.41", out.stderr
    finally:
        assert dockerenv.stop("shop", "web") is True
    assert not sock.exists() and not dockerenv.answering(sock)
    assert dockerenv.stop("shop", "web") is False


def test_a_host_without_the_api_is_a_clear_error_and_leaves_no_forwarder(server, tmp_path, runtime_dir):
    with pytest.raises(HostError, match="has no Engine API socket"):
        dockerenv.start(server, "shop", "db", remote=remote(str(tmp_path / "none.sock")),
                        probe=("test", "-S", str(tmp_path / "none.sock")))
    sock, pid_file = dockerenv.paths("shop", "db")
    assert not sock.exists() and dockerenv.pidfile_holder(pid_file) is None


def test_a_shared_socket_directory_is_refused(tmp_path, monkeypatch):
    d = tmp_path / "xdg"
    (d / "provision").mkdir(parents=True)
    os.chmod(d / "provision", 0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
    with pytest.raises(HostError, match="not this user's own private directory"):
        dockerenv.socket_dir()


def test_the_command_names_an_unknown_host(tmp_path):
    res = CliRunner().invoke(cli, ["--root", str(tmp_path), "docker-env", "shop/ghost"])
    assert res.exit_code != 0 and "unknown host 'shop/ghost'" in str(res.exception)
