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
from provisioner.errors import CommandError
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
        except (OSError, subprocess.SubprocessError, AssertionError, ValueError, CommandError) as exc:
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
        # the web page with the image's own HEALTHCHECK (Docker's config shape: nanoseconds)
        "checked": (busybox_layers(runner) + [Layer((D("www"), F("www/index.html", PAGE)))],
                    {"Cmd": ["httpd", "-f", "-p", "80", "-h", "/www"], "Env": [PATH_ENV],
                     "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1/"],
                                     "Interval": 200_000_000, "Timeout": 2_000_000_000, "Retries": 2}}),
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
                    "table": f"pc{self.sfx}", "netns_prefix": f"pc{self.sfx}-", "veth_prefix": f"c{self.sfx}",
                    # user-defined networks (compose's): /27 blocks of a /24 of their own
                    "pool": f"10.{random.randint(200, 249)}.{random.randint(0, 255)}.0/24", "pool_prefixlen": 27}
        (self.root / "containers").mkdir(parents=True)
        (self.root / "containers" / "network.json").write_text(json.dumps(self.net))

    def provision(self, *args, check=True, timeout=120, input=None):
        proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(self.root), *args],
                              capture_output=True, text=True, timeout=timeout, input=input,
                              stdin=subprocess.DEVNULL if input is None else None)
        if check and proc.returncode != 0:
            raise AssertionError(f"provision {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def run(self, *args) -> str:
        return self.provision("container", "run", "-d", *args).stdout.strip()

    def spare_subnet(self) -> str:
        """A block of this test's pool that automatic allocation reaches last."""
        import ipaddress

        return str(list(ipaddress.IPv4Network(self.net["pool"]).subnets(new_prefix=27))[-1])

    def tables(self) -> list[str]:
        out = json.loads(Runner().run(["nft", "-j", "list", "tables"]).stdout)["nftables"]
        return sorted(t["table"]["name"] for t in out if "table" in t and t["table"]["name"].startswith(
            self.net["table"]))

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
        rules = []
        for name in self.tables():
            table = Runner().run(["nft", "-j", "list", "table", "ip", name], check=False)
            rules += [i["rule"] for i in json.loads(table.stdout)["nftables"] if "rule" in i
                      and "prov:" in json.dumps(i["rule"])] if table.returncode == 0 else []
        subvols = Runner().run(["btrfs", "subvolume", "list", "-o", str(self.root)], check=False).stdout
        snapshots = [ln.split(" path ", 1)[1] for ln in subvols.splitlines() if "/containers/" in ln]
        mounts = [ln for ln in Path("/proc/mounts").read_text().splitlines() if str(self.root) in ln]
        shims = []
        sup = self.root / "containers" / ".supervise"
        for pidfile in sup.glob("*.pid") if sup.is_dir() else []:
            pid = int(pidfile.read_text().strip() or 0)
            if pid and Path(f"/proc/{pid}").exists():
                shims.append(pid)
        records = [p.name for p in (self.root / "containers").iterdir() if len(p.name) == 64]
        orphans = sorted(p.name for p in sup.iterdir() if p.name.split(".")[0] not in records) \
            if sup.is_dir() else []
        return {"links": links, "netns": netns, "rules": rules, "snapshots": snapshots, "mounts": mounts,
                "shims": shims, "records": records, "supervisor_files": orphans, "tables": self.tables()}

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
        for name in self.tables():
            r.run(["nft", "delete", "table", "ip", name], check=False)


NOTHING = {"links": [], "netns": [], "rules": [], "snapshots": [], "mounts": [], "shims": [], "records": [],
           "supervisor_files": [], "tables": []}


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


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a slow pid 1 to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


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
    pid = env.container_pid(cid)
    env.provision("container", "rm", "-f", "web")
    assert env.leftovers() == NOTHING
    assert not Path(f"/run/provision-runtime/{cid}").exists()
    wait_for(lambda: not alive(pid), timeout=5, what=f"container process {pid} gone")
    assert cgroup_dirs(f"/provisioner/{cid}") == []
    assert Runner().run(["/bin/busybox", "wget", "-q", "-O-", f"http://127.0.0.1:{port}/"], check=False,
                        timeout=10).returncode != 0


def test_one_container_reaches_another_by_its_link_alias(env):
    env.run("--name", "backend", env.refs["web"])
    env.run("--name", "front", "--link", "backend:api", env.refs["busybox"], "sleep", "1000")
    hosts = env.provision("container", "exec", "front", "cat", "/etc/hosts").stdout
    assert f"{env.address('backend')}\tapi backend" in hosts
    got = wait_for(lambda: env.provision("container", "exec", "front", "wget", "-q", "-O-",
                                         "http://api/index.html").stdout, what="wget http://api/")
    assert got == PAGE
    envvars = env.provision("container", "exec", "front", "env").stdout.split()
    assert f"API_PORT_80_TCP_ADDR={env.address('backend')}" in envvars
    assert "API_PORT=tcp://" + env.address("backend") + ":80" in envvars
    assert "API_ENV_ROLE=web" in envvars and "API_NAME=/front/api" in envvars
    # the hosts line follows the linked container when it restarts
    env.provision("container", "restart", "-t", "1", "backend")
    assert f"{env.address('backend')}\tapi backend" in env.provision("container", "exec", "front", "cat",
                                                                     "/etc/hosts").stdout
    assert wait_for(lambda: env.provision("container", "exec", "front", "wget", "-q", "-O-",
                                          "http://api/index.html").stdout, timeout=10, what="wget after restart") == PAGE


def test_named_volume_survives_rm_and_rerun(env):
    out = env.provision("container", "run", "--name", "w1", "-v", "keep:/store", env.refs["busybox"],
                        "sh", "-c", "echo persisted > /store/file; echo written")
    assert out.returncode == 0 and out.stdout == "written\n"
    env.provision("container", "rm", "w1")
    assert (env.root / "volumes" / "keep" / "file").read_text() == "persisted\n"
    out = env.provision("container", "run", "--rm", "--name", "w2", "-v", "keep:/store:ro", env.refs["busybox"],
                        "sh", "-c", "cat /store/file; touch /store/x || echo read-only")
    assert out.stdout.splitlines()[0] == "persisted" and "read-only" in out.stdout
    assert env.provision("container", "ps", "-a", "--json").stdout.strip() == "[]"  # --rm removed it
    assert env.leftovers() == NOTHING


def test_attached_run_returns_the_exit_code(env):
    out = env.provision("container", "run", "--rm", env.refs["busybox"], "sh", "-c", "echo out; echo err >&2; exit 3",
                        check=False)
    assert (out.returncode, out.stdout) == (3, "out\n") and "err" in out.stderr


def test_kill9_restarts_per_policy_counted_and_logs_show_both_runs(env):
    cid = env.run("--name", "flaky", "--restart", "on-failure:3", env.refs["busybox"],
                  "sh", "-c", "echo started; exec sleep 1000")
    wait_for(lambda: env.provision("container", "logs", "flaky").stdout.count("started") == 1, what="first run")
    first = env.container_pid(cid)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: env.inspect("flaky")["status"]["restart_count"] == 1 and
             env.inspect("flaky")["status"]["state"] == "running", what="restart")
    wait_for(lambda: env.provision("container", "logs", "flaky").stdout.count("started") == 2, what="second run")
    assert env.container_pid(cid) != first
    ps = json.loads(env.provision("container", "ps", "--json").stdout)
    assert ps[0]["status"]["restart_count"] == 1
    logs = env.provision("container", "logs", "--timestamps", "--tail", "1", "flaky").stdout
    assert logs.split(" ", 1)[1] == "started\n" and logs[:4].isdigit()
    # a user stop is not restarted
    env.provision("container", "stop", "-t", "1", "flaky")
    assert env.inspect("flaky")["status"]["state"] == "exited"


def test_memory_and_cpus_are_in_the_containers_cgroup(env):
    cid = env.run("--name", "limited", "--memory", "64m", "--cpus", "0.5", env.refs["busybox"], "sleep", "1000")
    dirs = cgroup_dirs(f"/provisioner/{cid}")
    mem = [Path(d) / "memory.limit_in_bytes" for d in dirs if (Path(d) / "memory.limit_in_bytes").exists()]
    mem += [Path(d) / "memory.max" for d in dirs if (Path(d) / "memory.max").exists()]
    assert mem and mem[0].read_text().strip() == str(64 << 20)
    quota = [Path(d) / "cpu.cfs_quota_us" for d in dirs if (Path(d) / "cpu.cfs_quota_us").exists()]
    period = [Path(d) / "cpu.cfs_period_us" for d in dirs if (Path(d) / "cpu.cfs_period_us").exists()]
    cpumax = [Path(d) / "cpu.max" for d in dirs if (Path(d) / "cpu.max").exists()]
    if quota:
        assert (quota[0].read_text().strip(), period[0].read_text().strip()) == ("50000", "100000")
    else:
        assert cpumax[0].read_text().split() == ["50000", "100000"]
    pid = env.container_pid(cid)
    assert any(f"/provisioner/{cid}" in line for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    env.provision("container", "rm", "-f", "limited")
    assert cgroup_dirs(f"/provisioner/{cid}") == []


def test_image_user_volume_workdir_and_stop_signal(env):
    cid = env.run("--name", "data", env.refs["data"])
    out = wait_for(lambda: (o := env.provision("container", "logs", "data").stdout).count("seeded") and o,
                   what="data output")
    # the image's User by name, its supplementary groups from /etc/group (moby's GetExecUser)
    assert "uid=1000(app) gid=1000(app)" in out and "2000(extra)" in out and "HOME=/home/app" in out
    spec = json.loads((env.root / "containers" / cid / "bundle" / "config.json").read_text())
    anon = [m for m in env.inspect("data")["mounts"] if m["destination"] == "/data"]
    assert anon and anon[0]["kind"] == "anonymous"
    assert any(m["destination"] == "/data" and m["type"] == "bind" for m in spec["mounts"])
    spec_shim = json.loads((env.root / "containers" / ".supervise" / f"{cid}.spec.json").read_text())
    assert spec_shim["stop_signal"] == "SIGUSR1"
    env.provision("container", "rm", "-f", "-v", "data")
    assert not (env.root / "volumes" / anon[0]["source"]).exists()


def test_stop_start_restart_keep_the_address_and_serve_again(env):
    port = free_port()
    env.run("--name", "web", "-p", f"127.0.0.1:{port}:80", env.refs["web"])
    addr = env.address("web")
    wait_for(lambda: http_get(port) == PAGE, what="httpd")
    env.provision("container", "stop", "web")
    assert env.inspect("web")["status"]["state"] == "exited"
    assert env.provision("container", "ps").stdout.count("web") == 0
    env.provision("container", "start", "web")
    assert env.address("web") == addr
    wait_for(lambda: http_get(port) == PAGE, what="httpd after start")
    env.provision("container", "restart", "-t", "1", "web")
    wait_for(lambda: http_get(port) == PAGE, what="httpd after restart")


def _one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_bad_input_is_one_line_and_nothing_half_created(env):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        err = _one_error_line(env.provision("container", "run", "-d", "--name", "xx", "-p", f"127.0.0.1:{taken}:80",
                                            env.refs["web"], check=False))
        assert f"port {taken}/tcp is already in use" in err
    assert env.leftovers() == NOTHING
    registry = env.refs["web"].split("/")[0]
    err = _one_error_line(env.provision("container", "run", "-d", f"{registry}/no/such:image", check=False))
    assert "no/such" in err
    assert env.leftovers() == NOTHING
    env.run("--name", "taken", env.refs["busybox"], "sleep", "1000")
    before = env.leftovers()
    err = _one_error_line(env.provision("container", "run", "-d", "--name", "taken", env.refs["busybox"],
                                        check=False))
    assert "name 'taken' is already in use" in err
    assert env.leftovers() == before
    err = _one_error_line(env.provision("container", "run", "-d", env.refs["busybox"], "/no/such/binary",
                                        check=False))
    assert "/no/such/binary" in err
    err = _one_error_line(env.provision("container", "run", "-d", "-v", "rel/dir:/x", env.refs["busybox"],
                                        check=False))
    assert "not a valid volume name" in err
    assert env.leftovers() == before
    err = _one_error_line(env.provision("container", "rm", "taken", check=False))
    assert "is running" in err
    port = free_port()
    env.run("--name", "owner", "-p", f"{port}:80", env.refs["web"])
    before = env.leftovers()
    err = _one_error_line(env.provision("container", "run", "-d", "-p", f"127.0.0.1:{port}:80", env.refs["web"],
                                        check=False))
    assert f"port {port}/tcp is already published by container owner" in err
    assert env.leftovers() == before


def test_run_flags_env_file_entrypoint_user_workdir_hostname(env, tmp_path):
    envfile = tmp_path / "app.env"
    envfile.write_text("# settings\nFROM_FILE=yes\nOVERRIDE=file\n")
    out = env.provision("container", "run", "--rm", "--env-file", str(envfile), "-e", "OVERRIDE=flag",
                        "--entrypoint", "sh", "--user", "65534:65534", "--workdir", "/made/here", "--hostname", "box1",
                        env.refs["busybox"], "-c", "echo $FROM_FILE $OVERRIDE; id -u; id -g; pwd; hostname; "
                        "cat /etc/hostname").stdout.split()
    assert out == ["yes", "flag", "65534", "65534", "/made/here", "box1", "box1"]


def test_detached_rm_container_is_removed_once_it_exits(env):
    env.run("--rm", "--name", "oneshot", env.refs["busybox"], "true")
    # the supervisor's exit command removes it (test_container_autoremove.py); ps would sweep it too
    wait_for(lambda: env.leftovers() == NOTHING, what="removal")
    assert env.provision("container", "ps", "-a", "--json").stdout.strip() == "[]"


def test_exec_user_workdir_and_exit_code(env):
    env.run("--name", "box", env.refs["data"])
    wait_for(lambda: "seeded" in env.provision("container", "logs", "box").stdout, what="start")
    assert env.provision("container", "exec", "-u", "root", "-w", "/data", "box", "sh", "-c",
                         "id -u; pwd").stdout.split() == ["0", "/data"]
    assert env.provision("container", "exec", "box", "id", "-u").stdout.strip() == "1000"
    assert env.provision("container", "exec", "-e", "X=1", "box", "sh", "-c", "exit $((X+41))",
                         check=False).returncode == 42
    # stdin is the caller's (docker exec -i)
    assert env.provision("container", "exec", "box", "sh", "-c", "tr a-z A-Z", input="piped\n").stdout == "PIPED\n"


def test_containers_come_back_after_a_simulated_reboot_per_policy(env):
    """What a reboot does to us, done by hand: supervisors and containers killed, /run (netns,
    runtime state) and the network (bridge, veths, nft table) gone; then the host agent's
    restore brings back `always` and `unless-stopped` (not user-stopped) containers, same
    address and ports, and leaves `no` and the user-stopped one alone."""
    from provisioner.host.steps.containers import restore

    port = free_port()
    env.run("--name", "web", "--restart", "always", "-p", f"127.0.0.1:{port}:80", env.refs["web"])
    env.run("--name", "keep", "--restart", "unless-stopped", env.refs["busybox"], "sleep", "1000")
    env.run("--name", "once", env.refs["busybox"], "sleep", "1000")
    env.run("--name", "parked", "--restart", "unless-stopped", env.refs["busybox"], "sleep", "1000")
    env.provision("container", "stop", "-t", "0", "parked")
    wait_for(lambda: http_get(port) == PAGE, what="httpd")
    addr = env.address("web")
    runtime = str(build_runtime())
    for name in ("web", "keep", "once"):
        info = env.inspect(name)
        shim = int((env.root / "containers" / ".supervise" / f"{info['id']}.pid").read_text())
        os.kill(shim, signal.SIGKILL)
        Runner().run([runtime, "kill", "--all", info["id"], "KILL"], check=False)
        Runner().run([runtime, "delete", "--force", info["id"]], check=False)
    r = Runner()
    for n in os.listdir("/run/netns"):
        if n.startswith(f"pc{env.sfx}-"):
            r.run(["ip", "netns", "del", n])
    r.run(["ip", "link", "del", env.net["bridge"]])
    r.run(["nft", "delete", "table", "ip", env.net["table"]])
    assert Runner().run(["/bin/busybox", "wget", "-q", "-O-", f"http://127.0.0.1:{port}/"], check=False,
                        timeout=10).returncode != 0
    started = restore(env.root, env.root / "containers" / ".supervise", Runner())
    assert sorted(started) == ["keep", "web"]
    assert wait_for(lambda: http_get(port), what="httpd after the reboot") == PAGE
    assert env.address("web") == addr
    states = {c["name"]: c["status"]["state"] for c in json.loads(env.provision("container", "ps", "-a", "--json").stdout)}
    assert states["web"] == "running" and states["keep"] == "running"
    assert states["once"] != "running" and states["parked"] == "exited"
    # what restore left alone starts by hand (or by the boot hook's stack convergence) although
    # its netns vanished with the "reboot": the recorded endpoint comes back first
    env.provision("container", "start", "once")   # died in the "reboot" with its endpoint recorded
    info = env.inspect("once")
    assert info["status"]["state"] == "running", info
