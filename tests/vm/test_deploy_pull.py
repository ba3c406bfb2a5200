"""Hosts pull their own images, on a Debian 13 host, deployed from a plain install — one VM for all:

1. from a venv with `pip install .` (no checkout in reach), `provision deploy --cloud local
   --images pull` of a stack whose image is in a password-protected registry (docker-registry
   with htpasswd) on the operator's loopback: the VM pulls it itself (the local cloud remaps the
   loopback registry to 10.0.2.2), the service answers; the password is on the host only in a
   root-only 0600 file, and nowhere in the local cloud's seed/user-data, console log, any
   operator-side state file, or deploy's output;
2. the same stack with `--images push` still works;
3. a host that cannot reach the registry (a registries: rule pointing at a closed port) is one
   clear error naming the registry and suggesting --images push;
4. `provision status --cloud local` with no stack lists every local stack.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.imagebuild.recipes import build as build_image
from provisioner.runner import Runner
from provisioner.vmimage import ImageSpec, default_cache_dir
from provisioner.vmimage.build import build
from tests.registry_fixture import docker_registry, free_port

from deployhelpers import EXAMPLES, http_get, ssh_to

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "pw-9f3c-never-printed"
NAME = "pulled/web"


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """provisioner installed the way a user installs a tool: a plain `pip install .`."""
    venv = tmp_path_factory.mktemp("plain") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(REPO)],
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def trixie(vm_image):
    """The Debian 13 base image (built once per machine, cached like the Debian 12 one)."""
    image, _built = build(ImageSpec(os="debian-13"), runner=Runner(), cache=default_cache_dir(), progress=print)
    return image


def _provision(venv: Path, root: Path, *args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(venv / "bin" / "provision"), "--root", str(root), *args], capture_output=True,
                          text=True, timeout=2400, stdin=subprocess.DEVNULL, cwd=root.parent, env={**clean, **env})
    sys.stderr.write(proc.stderr)
    if check:
        assert proc.returncode == 0, f"provision {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def env(venv, trixie, vm_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pull")
    with docker_registry(tmp / "registry", users={"shop": PASSWORD}) as reg:
        layout = tmp / "busybox"
        build_image("busybox", layout, Runner())
        Runner().run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", f"shop:{PASSWORD}",
                      f"oci:{layout}:latest", f"docker://{reg.address}/pulled/busybox:1"], timeout=600)
        docker = tmp / "docker"
        docker.mkdir()
        (docker / "config.json").write_text(json.dumps({"auths": {reg.address: {
            "auth": base64.b64encode(f"shop:{PASSWORD}".encode()).decode()}}}))
        port = free_port()
        text = (EXAMPLES / "hello.yml").read_text().replace("name: hello", "name: pulled")
        text = text.replace("127.0.0.1:5000/hello/busybox:1", f"{reg.address}/pulled/busybox:1")
        text = text.replace('"8080:80"', f'"{port}:80"').replace("local: {style: aws, memory: 1024}",
                                                                  "local: {style: aws, memory: 1024, os: debian-13}")
        stack = tmp / "pulled.yml"
        stack.write_text(text)
        e = {"XDG_CONFIG_HOME": str(tmp / "config"), "DOCKER_CONFIG": str(docker)}
        yield {"root": vm_root, "stack": stack, "port": port, "env": e, "registry": reg, "tmp": tmp}
        _provision(venv, vm_root, "destroy", "pulled", "--cloud", "local", "--yes", env=e, check=False)


@pytest.fixture(scope="module")
def pulled(venv, env):
    proc = _provision(venv, env["root"], "deploy", "--cloud", "local", "-f", str(env["stack"]), "--images", "pull",
                      "--json", env=env["env"])
    return proc


def test_a_debian_13_host_pulls_from_a_password_protected_registry(pulled, env):
    result = json.loads(pulled.stdout)
    (host,) = result["hosts"]
    assert host["error"] is None
    (image,) = host["images"]
    assert image["delivery"] == "pull" and image["ref"].endswith("/pulled/busybox:1")
    assert image["digest"].startswith("sha256:")
    assert "hello from provisioner" in http_get(env["port"])
    with ssh_to(env["root"], NAME) as ssh:
        assert ssh.run(["sh", "-c", ". /etc/os-release; echo $VERSION_ID"]).stdout.strip() == "13"
        assert ssh.run(["python3", "-c", "import sys; print(sys.version_info[:2])"]).stdout.strip() == "(3, 13)"
        mode = ssh.run(["stat", "-c", "%a %U %G", "/etc/provisioner/registries/auth.json"], sudo=True).stdout
        assert mode.split() == ["600", "root", "root"]
        as_user = ssh.run(["cat", "/etc/provisioner/registries/auth.json"], check=False)
        assert as_user.returncode != 0 and PASSWORD not in as_user.stdout
        assert "10.0.2.2:" in ssh.run(["cat", "/etc/provisioner/registries/registries.conf"], sudo=True).stdout
        # and nowhere on the host outside that file: not in the journal, cloud-init's data, the agent's state
        # (the patterns on stdin: in the command line, sudo's own log line in the journal would hold
        # them). auth.json holds it as docker's config.json does, base64 of user:password; neither
        # form is anywhere else
        import base64
        encoded = base64.b64encode(f"shop:{PASSWORD}".encode()).decode()
        found = ssh.run(["sh", "-c", "grep -rlF -f - /etc /var/lib/cloud /var/log 2>/dev/null || true"],
                        sudo=True, input=f"{PASSWORD}\n{encoded}\n").stdout.split()
        assert found == ["/etc/provisioner/registries/auth.json"]
        assert encoded in ssh.run(["cat", "/etc/provisioner/registries/auth.json"], sudo=True).stdout


def test_the_password_is_in_no_operator_side_file_nor_deploys_output(pulled, env):
    assert PASSWORD not in pulled.stdout and PASSWORD not in pulled.stderr
    leaks = []
    for path in Path(env["root"]).rglob("*"):
        if path.is_file() and path.suffix not in (".qcow2", ".raw") and path.stat().st_size < 64 << 20:
            if PASSWORD.encode() in path.read_bytes():
                leaks.append(str(path))
    assert leaks == []   # seed ISO and user-data, console.log, inventory records, caches
    console = next(Path(env["root"]).glob("local/pulled/web/console.log"))
    assert console.stat().st_size > 0


def test_the_same_stack_deploys_with_push(venv, pulled, env):
    proc = _provision(venv, env["root"], "deploy", "--cloud", "local", "-f", str(env["stack"]), "--images", "push",
                      "--insecure-registry", env["registry"].address, "--json", env=env["env"])
    (host,) = json.loads(proc.stdout)["hosts"]
    assert host["error"] is None and [i["delivery"] for i in host["images"]] == ["push"]
    assert "hello from provisioner" in http_get(env["port"])


def test_a_host_that_cannot_reach_the_registry_is_told_to_use_push(venv, pulled, env):
    reg = env["registry"].address
    closed = free_port()
    text = env["stack"].read_text().replace("    services: [web]\n", "    services: [web]\n    registries:\n"
                                            f"      - {{prefix: '{reg}', location: '10.0.2.2:{closed}', "
                                            "insecure: true}\n", 1)
    stack = env["tmp"] / "unreachable.yml"
    stack.write_text(text)
    proc = _provision(venv, env["root"], "deploy", "--cloud", "local", "-f", str(stack), "--images", "pull",
                      env=env["env"], check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert f"cannot reach registry 10.0.2.2:{closed}" in last and "--images push" in last, last
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr


def test_status_without_a_stack_lists_every_local_stack(venv, pulled, env):
    proc = _provision(venv, env["root"], "--json", "status", "--cloud", "local", env=env["env"])
    stacks = {r["extra"]["tags"]["provisioner-stack"] for r in json.loads(proc.stdout)["resources"]
              if r["kind"] == "instance"}
    assert "pulled" in stacks
