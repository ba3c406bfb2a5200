"""Another local account against the host: a real unprivileged user (made with useradd here,
removed after) attacks a real store and running containers, through the paths a host really has
(the store lives under a world-traversable directory, as /var/lib/provisioner does). Each test is
one attack; every one must fail:

- a setuid-root binary an image brings, run straight from the layer store or a container's rootfs;
- a 0666 block device node an image brings (pointing at a disk holding a secret), opened from there;
- a container's `-e` secret, read from anything under the root (bundle, record, a linker's bundle) or
  from /etc/provisioner/stack.yml as deploy writes it;
- a wheel planted where the agent's delivery installs from (tests/privileged/test_wheel_delivery.py);
- the ~/.ssh symlink race against the boot hook's users step, to chown a root-owned directory.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.imagebuild.layout import Layer, LayoutWriter
from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.imagebuild.recipes import PATH_ENV, busybox_layers, push
from provisioner.imagebuild.tarbuild import B, D, F
from provisioner.runner import Runner
from tests.privileged.runtime_helpers import build_runtime
from tests.registry_fixture import docker_registry

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("skopeo", "docker-registry", "nft", "mkfs.btrfs", "setpriv",
                                                          "useradd", "gcc")),
                       reason="skopeo, docker-registry, nft, btrfs-progs, setpriv, useradd and gcc are needed"),
]

SECRET_ENV = "API_TOKEN=tok-" + secrets.token_hex(8)
DISK_SECRET = b"TOPSECRET-DISK-" + secrets.token_hex(4).encode()
# what a setuid-root helper does once it runs: become root for real, then run what it is told
SUID_C = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (setresgid(0, 0, 0) || setresuid(0, 0, 0)) { perror("setresuid"); return 1; }
    if (argc > 1) { execv(argv[1], argv + 1); perror("execv"); return 127; }
    return 0;
}
"""


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path


def sh(*argv, check=True, **kw):
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120, **kw)


def as_user(user: User, *argv, check=False) -> subprocess.CompletedProcess:
    """`argv` as `user`: its uid, gid and groups, a clean environment, no capabilities. A shell
    running as the user execs it (setpriv's own exec of its command resolves the path with the
    caller's rights: here it found binaries under a 0700 directory the user cannot search)."""
    return sh("setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--reset-env", "--",
              "/bin/sh", "-c", 'exec "$@"', "sh", *argv, check=check, cwd="/")


@pytest.fixture(scope="module")
def attacker():
    name = f"patk{secrets.token_hex(3)}"
    sh("useradd", "--create-home", "--shell", "/bin/sh", name)
    pw = pwd.getpwnam(name)
    try:
        yield User(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))
    finally:
        sh("userdel", "--remove", name, check=False)


@pytest.fixture(scope="module")
def public_dir():
    """A directory any account may traverse, like /var/lib (pytest's own tmp dirs are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="prov-attacks-", dir="/var/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def secret_disk(public_dir):
    """A loop device over a root-only file holding DISK_SECRET: what a device node can reach."""
    backing = public_dir / "secret.img"
    backing.write_bytes(DISK_SECRET.ljust(1 << 20, b"\0"))
    backing.chmod(0o600)
    dev = sh("losetup", "-f", "--show", str(backing)).stdout.strip()
    try:
        yield dev
    finally:
        sh("losetup", "-d", dev, check=False)


def build_hostile_image(work: Path, registry: str, disk: str) -> str:
    runner = Runner()
    src, exe = work / "suid.c", work / "suid"
    src.write_text(SUID_C)
    sh("gcc", "-static", "-O2", "-o", str(exe), str(src))
    rdev = os.stat(disk).st_rdev
    layers = busybox_layers(runner) + [Layer((D("opt"), F("opt/suid", exe.read_bytes(), mode=0o4755),
                                              B("opt/disk", os.major(rdev), os.minor(rdev), mode=0o666)))]
    w = LayoutWriter(work / "layout")
    w.tag(w.image(layers, {"Cmd": ["sleep", "1000"], "Env": [PATH_ENV]}), "latest")
    ref = f"{registry}/test/hostile:1"
    push(work / "layout", ref, runner=runner)
    return ref


@pytest.fixture(scope="module")
def host(public_dir, secret_disk):
    """A store on a loop-backed btrfs under `public_dir` with a running container holding a secret
    in its environment, and a second one linked to it (its endpoint holds the first's env)."""
    from tests.privileged.test_container import Env

    build_runtime()
    work = Path(tempfile.mkdtemp(prefix="work-", dir=public_dir))
    with docker_registry(work / "registry") as reg, loop_btrfs(public_dir / "fs", Runner(), size="1G") as mnt:
        mnt.chmod(0o755)
        ref = build_hostile_image(work, reg.address, secret_disk)
        env = Env(work, mnt, {"hostile": ref})
        try:
            cid = env.run("--name", "vault", "-e", SECRET_ENV, ref)
            env.run("--name", "app", "--link", "vault:db", ref)
            yield env, cid
        finally:
            env.cleanup()


def _layer_and_rootfs(env, cid: str, rel: str) -> list[Path]:
    from provisioner.images.store import Store

    image = Store(env.root, Runner()).get_image(env.refs["hostile"])
    return [Store(env.root, Runner()).layer_path(image.top_chain) / rel, env.root / "containers" / cid / "rootfs" / rel]


def test_a_setuid_binary_from_the_store_gives_no_root(host, attacker):
    env, cid = host
    for path in _layer_and_rootfs(env, cid, "opt/suid"):
        assert path.exists() and path.stat().st_mode & 0o4000 and path.stat().st_uid == 0
        got = as_user(attacker, str(path), "/usr/bin/id", "-u")
        assert got.stdout.strip() != "0", f"{path}: root for {attacker.name}"
        assert got.returncode != 0
    # nothing setuid-root under the root is even reachable for the account
    found = as_user(attacker, "find", str(env.root), "-perm", "-4000", "-user", "root", "-print")
    assert found.stdout == ""


def test_a_device_node_from_the_store_reaches_no_disk(host, attacker):
    env, cid = host
    for path in _layer_and_rootfs(env, cid, "opt/disk"):
        assert path.exists()
        got = as_user(attacker, "head", "-c", str(len(DISK_SECRET)), str(path))
        assert DISK_SECRET.decode() not in got.stdout, f"{path}: the disk read by {attacker.name}"
    found = as_user(attacker, "find", str(env.root), "(", "-type", "b", "-o", "-type", "c", ")", "-print")
    assert found.stdout == ""


def test_a_containers_env_secret_is_unreadable(host, attacker):
    env, cid = host
    spec = env.root / "containers" / cid / "bundle" / "config.json"
    assert SECRET_ENV in spec.read_text()                          # it is there, for root
    linker = env.root / "containers" / env.inspect("app")["id"] / "bundle" / "config.json"   # DB_ENV_API_TOKEN
    for path in (spec, env.root / "containers" / cid / "container.json", linker):
        assert SECRET_ENV.split("=")[1] in path.read_text(), path
        got = as_user(attacker, "cat", str(path))
        assert SECRET_ENV.split("=")[1] not in got.stdout, f"{path} readable by {attacker.name}"
    found = as_user(attacker, "grep", "-r", "-l", SECRET_ENV.split("=")[1], str(env.root))
    assert found.stdout == ""


class _LocalHost:
    """What deploy's SSH does on a host, here: run the command as root (sudo) with its input."""

    where = "localhost"

    def run(self, argv, *, sudo=False, input=None, check=True, timeout=None):
        return Runner().run(list(argv), input=input, check=check)


def test_the_stack_file_deploy_writes_is_unreadable(public_dir, attacker):
    """/etc/provisioner/stack.yml holds the services' `environment:` (and env files sit next to
    it); deploy writes them with root's umask, under a directory others can traverse (/etc)."""
    from provisioner.deploy.hoststeps import write_files

    etc = Path(tempfile.mkdtemp(prefix="etc-", dir=public_dir))
    etc.chmod(0o755)
    target = etc / "provisioner" / "stack.yml"
    text = f"name: s\nservices:\n  api:\n    image: x\n    environment: [{SECRET_ENV}]\n"
    base = str(target.parent)
    write_files(_LocalHost(), {str(target): text.encode()}, base=base)
    write_files(_LocalHost(), {str(target): text.encode()}, base=base)   # and replacing it
    assert target.read_text() == text
    got = as_user(attacker, "cat", str(target))
    assert SECRET_ENV not in got.stdout


def test_the_ssh_symlink_race_chowns_nothing(public_dir, attacker):
    """The boot hook writes ~user/.ssh/authorized_keys as root, in a directory the user owns. The
    user swaps ~/.ssh (and authorized_keys) for symlinks to a root-owned directory (and file) as
    fast as it can while the hook runs again and again: root must never chown or chmod anything but
    the user's own files."""
    from provisioner.host.config import HostConfig, User as CfgUser
    from provisioner.host.steps import StepContext, users

    victim = Path(tempfile.mkdtemp(prefix="victim-", dir=public_dir))   # stands for /etc
    victim.chmod(0o755)
    (victim / "shadow").write_text("root:$6$...\n")
    (victim / "shadow").chmod(0o600)
    before = {p: (p.stat().st_uid, p.stat().st_mode) for p in (victim, victim / "shadow")}
    racer = (f"cd {attacker.home}; end=$(( $(date +%s) + 60 )); "
             f"while [ ! -e {attacker.home}/stop ] && [ $(date +%s) -lt $end ]; do "
             f"rm -rf .ssh; ln -s {victim} .ssh; rm -f .ssh; mkdir .ssh 2>/dev/null; "
             f"ln -sf {victim}/shadow .ssh/authorized_keys; rm -rf .ssh; ln -s {victim} .ssh; done")
    proc = subprocess.Popen(["setpriv", f"--reuid={attacker.uid}", f"--regid={attacker.gid}", "--init-groups",
                             "--reset-env", "--", "/bin/sh", "-c", racer], cwd="/")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C8okWi0dh2l9GKJl op@test"
    errors: list[str] = []
    try:
        for i in range(300):
            ctx = StepContext(config=HostConfig(host="h", users=(CfgUser(attacker.name, (f"{key} {i}",)),)),
                              runner=Runner(), root=public_dir / "state")
            try:
                users.run(ctx)
            except Exception as exc:                 # refusing is fine; following the link is not
                errors.append(type(exc).__name__)
            changed = {p: (p.stat().st_uid, p.stat().st_mode) for p in before if
                       (p.stat().st_uid, p.stat().st_mode) != before[p]}
            assert not changed, f"round {i}: root changed {changed} for {attacker.name}"
            assert (victim / "shadow").read_text() == "root:$6$...\n", f"round {i}: shadow replaced"
    finally:
        (attacker.home / "stop").touch()
        proc.wait(timeout=30)
    assert not set(errors) - {"HostError"}, errors
