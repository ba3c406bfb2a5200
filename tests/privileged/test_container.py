"""`provision container …` end to end: images made by the project's builder pushed to Debian's
docker-registry on loopback, a loop-backed btrfs root, the real runtime, shim and network.

Every network name carries a random suffix (NetworkConfig in <root>/containers/network.json),
and the fixture sweeps anything with it at the end, even after a failure. Only 127.0.0.1 and
addresses inside namespaces made here are contacted.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.imagebuild.layout import Layer, LayoutWriter
from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.imagebuild.recipes import PATH_ENV, busybox_layers, push
from provisioner.imagebuild.tarbuild import D, F
from provisioner.runner import Runner
from tests.privileged.runtime_helpers import build_runtime, cgroup_dirs
from tests.registry_fixture import docker_registry, free_port

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("skopeo", "docker-registry", "nft", "mkfs.btrfs")),
                       reason="skopeo, docker-registry, nft and btrfs-progs are needed (scripts/install.sh)"),
]

PAGE = "hello from a container\n"


def wait_for(cond, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except (OSError, subprocess.SubprocessError, AssertionError, ValueError) as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


def build_images(work: Path, registry: str) -> dict[str, str]:
    runner = Runner()
    refs = {}
    images = {
        "busybox": (busybox_layers(runner), {"Cmd": ["sh"], "Env": [PATH_ENV], "WorkingDir": "/"}),
        "web": (busybox_layers(runner) + [Layer((D("www"), F("www/index.html", PAGE)))],
                {"Cmd": ["httpd", "-f", "-v", "-p", "80", "-h", "/www"], "Env": [PATH_ENV, "ROLE=web"],
                 "ExposedPorts": {"80/tcp": {}}, "WorkingDir": "/www"}),
        # an image VOLUME with content, a named user and a stop signal
        "data": (busybox_layers(runner) + [Layer((D("data"), F("data/seed", "seeded\n"),
                                                  F("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
                                                    "app:x:1000:1000:app:/home/app:/bin/sh\n"),
                                                  F("etc/group", "root:x:0:\napp:x:1000:\nextra:x:2000:app\n")))],
                 {"Cmd": ["sh", "-c", "id; echo HOME=$HOME; cat /data/seed; sleep 1000"], "Env": [PATH_ENV],
                  "User": "app", "Volumes": {"/data": {}}, "StopSignal": "SIGUSR1"}),
    }
    for name, (layers, config) in images.items():
        w = LayoutWriter(work / f"layout-{name}")
        w.tag(w.image(layers, config), "latest")
        ref = f"{registry}/test/{name}:1"
        push(work / f"layout-{name}", ref, runner=runner)
        refs[name] = ref
    return refs


class Env:
    def __init__(self, work: Path, mnt: Path, refs: dict[str, str]):
        self.sfx = secrets.token_hex(2)
        self.work = work
        self.root = mnt / f"root-{self.sfx}"
        self.refs = refs
        self.net = {"bridge": f"pc{self.sfx}", "subnet": f"10.{random.randint(200, 249)}.{random.randint(0, 255)}.0/24",
                    "table": f"pc{self.sfx}", "netns_prefix": f"pc{self.sfx}-", "veth_prefix": f"c{self.sfx}"}
        (self.root / "containers").mkdir(parents=True)
        (self.root / "containers" / "network.json").write_text(json.dumps(self.net))

    def provision(self, *args, check=True, timeout=120):
        proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(self.root), *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"provision {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def run(self, *args) -> str:
        return self.provision("container", "run", "-d", *args).stdout.strip()

    def inspect(self, name) -> dict:
        return json.loads(self.provision("container", "inspect", name).stdout)[0]

    def address(self, name) -> str:
        return self.inspect(name)["address"]

    def pid_of(self, name) -> int:
        return self.inspect(name)["status"]["pid"]

    def container_pid(self, cid) -> int:
        """The container's init pid (the runtime's state)."""
        state = json.loads(Runner().run([str(build_runtime()), "state", cid]).stdout)
        return int(state["pid"])

    # -- what is left on the system ---------------------------------------------------------
    def leftovers(self) -> dict:
        links = [link["ifname"] for link in json.loads(Runner().run(["ip", "-j", "link", "show"]).stdout)
                 if self.sfx in link["ifname"]]
        netns = [n for n in os.listdir("/run/netns") if n.startswith(f"pc{self.sfx}-")] \
            if os.path.isdir("/run/netns") else []
        table = Runner().run(["nft", "-j", "list", "table", "ip", self.net["table"]], check=False)
        rules = [i["rule"] for i in json.loads(table.stdout)["nftables"] if "rule" in i
                 and "prov:" in json.dumps(i["rule"])] if table.returncode == 0 else []
        subvols = Runner().run(["btrfs", "subvolume", "list", "-o", str(self.root)], check=False).stdout
        snapshots = [ln for ln in subvols.splitlines() if "/containers/" in ln]
        mounts = [ln for ln in Path("/proc/mounts").read_text().splitlines() if str(self.root) in ln]
        shims = []
        sup = self.root / "containers" / ".supervise"
        for pidfile in sup.glob("*.pid") if sup.is_dir() else []:
            pid = int(pidfile.read_text().strip() or 0)
            if pid and Path(f"/proc/{pid}").exists():
                shims.append(pid)
        records = [p.name for p in (self.root / "containers").iterdir() if len(p.name) == 64]
        return {"links": links, "netns": netns, "rules": rules, "snapshots": snapshots, "mounts": mounts,
                "shims": shims, "records": records}

    def cleanup(self):
        ps = self.provision("container", "ps", "-a", "--json", check=False)
        if ps.returncode == 0:
            for c in json.loads(ps.stdout):
                self.provision("container", "rm", "-f", c["id"], check=False)
        r = Runner()
        for link in json.loads(r.run(["ip", "-j", "link", "show"]).stdout):
            if self.sfx in link["ifname"]:
                r.run(["ip", "link", "del", link["ifname"]], check=False)
        if os.path.isdir("/run/netns"):
            for n in os.listdir("/run/netns"):
                if n.startswith(f"pc{self.sfx}-"):
                    r.run(["ip", "netns", "del", n], check=False)
        r.run(["nft", "delete", "table", "ip", self.net["table"]], check=False)


NOTHING = {"links": [], "netns": [], "rules": [], "snapshots": [], "mounts": [], "shims": [], "records": []}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    build_runtime()
    work = tmp_path_factory.mktemp("containers")
    with docker_registry(work / "registry") as reg, loop_btrfs(work / "fs", Runner(), size="1G") as mnt:
        yield work, mnt, build_images(work, reg.address), reg.address


@pytest.fixture
def env(images):
    work, mnt, refs, _ = images
    e = Env(work, mnt, refs)
    try:
        yield e
    finally:
        e.cleanup()


def http_get(port: int, path: str = "/index.html") -> str:
    return Runner().run(["/bin/busybox", "wget", "-q", "-O-", f"http://127.0.0.1:{port}{path}"], timeout=10).stdout


def test_httpd_serves_a_file_through_a_published_port_and_rm_f_leaves_nothing(env):
    port = free_port()
    cid = env.run("--name", "web", "-p", f"127.0.0.1:{port}:80", env.refs["web"])
    assert wait_for(lambda: http_get(port), what="httpd through -p") == PAGE
    ps = json.loads(env.provision("container", "ps", "--json").stdout)
    assert [(c["name"], c["status"]["state"], c["id"]) for c in ps] == [("web", "running", cid)]
    assert ps[0]["ports"] == [f"127.0.0.1:{port}:80/tcp"]
    assert env.provision("container", "exec", "web", "cat", "/www/index.html").stdout == PAGE
    assert env.provision("container", "exec", "web", "sh", "-c", "echo $ROLE $HOSTNAME").stdout.split()[0] == "web"
    env.provision("container", "rm", "-f", "web")
    assert env.leftovers() == NOTHING
    assert not Path(f"/run/provision-runtime/{cid}").exists()
