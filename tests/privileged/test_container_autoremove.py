"""`run -d --rm`: the supervisor's exit command removes the container when it exits — record,
snapshot, netns/veth, rules, supervisor files and anonymous volumes — with no further CLI call
(only the system is polled here until the end); `stop` of such a container removes it too, as
Docker's; `restart` does not."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.privileged.test_container import NOTHING, Env, env, images, wait_for  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("skopeo", "docker-registry", "nft", "mkfs.btrfs")),
                       reason="skopeo, docker-registry, nft and btrfs-progs are needed (scripts/install.sh)"),
]


def volumes(env: Env) -> list[str]:
    d = env.root / "volumes"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def autoremovers(cid: str) -> list[int]:
    """Exit commands still running for this container (not the shim, whose argv names it)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"autoremove" in cmd and cid.encode() in cmd and not cmd[0].endswith(b"provision-shim"):
                out.append(int(p.name))
    return out


def test_detached_rm_is_removed_when_it_exits_without_another_cli_call(env):
    cid = env.run("--rm", "--name", "oneshot", "-v", "/scratch", env.refs["busybox"], "sh", "-c",
                  "echo x > /scratch/f; sleep 0.5")
    assert len(cid) == 64
    # no CLI call from here on: only the system is looked at
    wait_for(lambda: env.leftovers() == NOTHING and volumes(env) == [], timeout=20,
             what="container, snapshot, network, supervisor files and anonymous volume gone")
    assert not (env.root / "containers" / cid).exists()
    assert env.provision("container", "ps", "-a", "--json").stdout.strip() == "[]"


def test_stop_removes_a_detached_rm_container_and_restart_keeps_it(env):
    cid = env.run("--rm", "--name", "svc", env.refs["busybox"], "sleep", "1000")
    env.provision("container", "restart", "-t", "1", "svc")
    wait_for(lambda: not autoremovers(cid), what="the exit command of the restart's stop to finish")
    info = env.inspect("svc")
    assert info["status"]["state"] == "running" and info["id"] == cid
    env.provision("container", "stop", "-t", "1", "svc")
    wait_for(lambda: env.leftovers() == NOTHING, timeout=20, what="stopped --rm container removed")
    assert env.provision("container", "ps", "-a", "--json").stdout.strip() == "[]"


def test_attached_rm_is_still_removed_by_the_cli_with_its_exit_code(env):
    out = env.provision("container", "run", "--rm", env.refs["busybox"], "sh", "-c", "echo hi; exit 7", check=False)
    assert (out.returncode, out.stdout) == (7, "hi\n"), out.stderr
    assert env.leftovers() == NOTHING
