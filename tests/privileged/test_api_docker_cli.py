"""Debian's docker client (20.10, API 1.41; its daemon never started) against `provision host api`:
each everyday command, checked for the fields dockerd would give, on provisioner's own containers —
the same ones `provision container` sees. One server and one root for the module (each test
removes what it made)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from tests.privileged.api_helpers import DOCKER, Terminal, api, volumes  # noqa: F401 (api: fixture)
from tests.privileged.test_container import PAGE, http_get, images, wait_for  # noqa: F401 (fixture)
from tests.registry_fixture import free_port

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not DOCKER or not all(shutil.which(t) for t in ("skopeo", "docker-registry", "nft",
                                                                        "mkfs.btrfs")),
                       reason="docker.io's client, skopeo, docker-registry, nft and btrfs-progs are needed "
                              "(scripts/install.sh)"),
]


@pytest.fixture
def clean(api):
    yield api
    for cid in api.docker("ps", "-aq").stdout.split():
        api.docker("rm", "-f", cid, check=False)


def test_version_and_info_negotiate_api_1_41(api):
    v = api.json("version", "--format", "{{json .}}")
    assert v["Client"]["ApiVersion"] == "1.41"
    assert v["Server"]["ApiVersion"] == "1.41" and v["Server"]["MinAPIVersion"] == "1.12"
    assert v["Server"]["Os"] == "linux" and v["Server"]["Arch"] == "amd64" and v["Server"]["KernelVersion"]
    assert v["Server"]["Components"][0]["Name"] == "Engine"
    info = api.json("info", "--format", "{{json .}}")
    assert info["Driver"] == "btrfs" and info["OSType"] == "linux" and info["LoggingDriver"] == "json-file"
    assert info["DockerRootDir"] == str(api.env.root) and info["NCPU"] >= 1 and info["MemTotal"] > 0
    human = api.docker("info").stdout
    assert "Storage Driver: btrfs" in human and "Server Version:" in human


def test_pull_shows_progress_and_images_lists_it(api):
    ref = api.env.refs["web"]
    out = api.docker("pull", ref).stdout
    assert "Pulling from test/web" in out and "Pull complete" in out
    assert re.search(r"^Digest: sha256:[0-9a-f]{64}$", out, re.M)
    assert out.strip().endswith(ref) and f"Status: Downloaded newer image for {ref}" in out
    again = api.docker("pull", ref).stdout
    assert f"Status: Image is up to date for {ref}" in again and "Already exists" in again
    table = api.docker("images").stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    rows = api.docker("images", "--format", "{{.Repository}}|{{.Tag}}|{{.ID}}|{{.Size}}").stdout.split()
    repo, tag = ref.rsplit(":", 1)
    row = next(r for r in rows if r.startswith(repo + "|"))
    assert row.split("|")[1] == tag and re.fullmatch(r"[0-9a-f]{12}", row.split("|")[2])
    inspect = api.json("image", "inspect", ref)[0]
    assert inspect["RepoTags"] == [ref] and inspect["Config"]["ExposedPorts"] == {"80/tcp": {}}
    assert inspect["RootFS"]["Type"] == "layers" and len(inspect["RootFS"]["Layers"]) == 3
    # a reference nobody serves: the registry's answer, as a one-line error
    bad = api.docker("pull", ref.rsplit(":", 1)[0] + ":nope", check=False)
    assert bad.returncode != 0 and "nope" in bad.stderr


def test_run_detached_with_ports_env_volume_name_and_restart(clean):
    api = clean
    port = free_port()
    cid = api.docker("run", "-d", "-p", f"127.0.0.1:{port}:80", "-e", "GREETING=hi there", "-v", "webdata:/data",
                     "--name", "web", "--restart", "unless-stopped", "--label", "team=ops",
                     api.env.refs["web"]).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    assert wait_for(lambda: http_get(port), what="httpd through -p") == PAGE
    # one model: provisioner's own CLI sees the container the API made
    mine = json.loads(api.env.provision("container", "ps", "--json").stdout)
    assert [(c["id"], c["name"], c["restart"]) for c in mine] == [(cid, "web", "unless-stopped")]
    i = api.json("inspect", "web")[0]
    assert i["Id"] == cid and i["Name"] == "/web" and i["State"]["Status"] == "running" and i["State"]["Pid"] > 0
    assert "GREETING=hi there" in i["Config"]["Env"] and i["Config"]["Labels"]["team"] == "ops"
    assert i["HostConfig"]["RestartPolicy"] == {"Name": "unless-stopped", "MaximumRetryCount": 0}
    assert i["NetworkSettings"]["Ports"]["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert i["NetworkSettings"]["IPAddress"].startswith(api.env.net["subnet"].rsplit(".", 1)[0])
    assert [(m["Type"], m["Name"], m["Destination"]) for m in i["Mounts"]] == [("volume", "webdata", "/data")]
    assert api.docker("port", "web").stdout.strip() == f"80/tcp -> 127.0.0.1:{port}"
    assert api.docker("exec", "web", "sh", "-c", "echo $GREETING; echo x > /data/f; cat /data/f").stdout == \
        "hi there\nx\n"
    # the restart policy is the supervisor's: the process killed (from the host, as a crash) comes back
    pid = i["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: api.json("inspect", "web")[0]["State"]["Pid"] not in (0, pid) and
             api.json("inspect", "web")[0]["RestartCount"] >= 1, what="a restart")


def test_run_rm_passes_the_exit_code_and_both_streams_and_leaves_nothing(clean):
    api = clean
    before = api.records()
    p = api.docker("run", "--rm", api.env.refs["busybox"], "sh", "-c", "echo out; echo err >&2; exit 7",
                   check=False)
    # (the first run pulls the image as the CLI does against dockerd: create → 404 → pull → create)
    assert (p.returncode, p.stdout, p.stderr.splitlines()[-1]) == (7, "out\n", "err")
    assert "Unable to find image" in p.stderr and "Status: Downloaded newer image" in p.stderr
    p = api.docker("run", "--rm", api.env.refs["busybox"], "sh", "-c", "echo out; echo err >&2; exit 7",
                   check=False)
    assert (p.returncode, p.stdout, p.stderr) == (7, "out\n", "err\n")
    wait_for(lambda: api.records() == before, what="the --rm container removed")
    assert api.docker("ps", "-aq").stdout == ""


def test_run_on_the_hosts_network_on_none_or_in_another_containers(clean):
    """--network host: the container listens on this machine's own loopback (published ports are
    dropped, with dockerd's warning); none: only lo; container:NAME: the other one's namespace."""
    api = clean
    busybox, port = api.env.refs["busybox"], free_port()
    run = api.docker("run", "-d", "--name", "onhost", "--network", "host", "-p", "1:2", busybox, "sh", "-c",
                     f"echo on the host > /tmp/index.html && exec httpd -f -p 127.0.0.1:{port} -h /tmp")
    assert "Published ports are discarded when using host network mode" in run.stderr
    assert wait_for(lambda: http_get(port), what="httpd on the host's network") == "on the host\n"
    i = api.json("inspect", "onhost")[0]
    assert i["HostConfig"]["NetworkMode"] == "host" and list(i["NetworkSettings"]["Networks"]) == ["host"]
    assert i["NetworkSettings"]["Ports"] in ({}, None)
    devs = api.docker("run", "--rm", "--network", "none", busybox, "cat", "/proc/net/dev").stdout
    assert [line.split(":")[0].strip() for line in devs.splitlines() if ":" in line] == ["lo"]
    api.docker("run", "-d", "--name", "web", api.env.refs["web"])
    wait_for(lambda: api.json("inspect", "web")[0]["State"]["Running"], what="web running")
    got = wait_for(lambda: api.docker("run", "--rm", "--network", "container:web", busybox, "wget", "-qO-",
                                      "http://127.0.0.1:80/index.html", check=False).stdout,
                   what="web through its namespace")
    assert got == PAGE


def test_ps_all_and_filters(clean):
    api = clean
    api.docker("run", "-d", "--name", "up1", "--label", "tier=a", api.env.refs["busybox"], "sleep", "1000")
    api.docker("run", "-d", "--name", "done1", api.env.refs["busybox"], "true")
    wait_for(lambda: "Exited (0)" in api.docker("ps", "-a", "--filter", "name=done1", "--format",
                                                "{{.Status}}").stdout, what="done1 exited")
    header = api.docker("ps").stdout.splitlines()[0]
    assert re.split(r"\s{2,}", header.strip()) == ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS",
                                                    "NAMES"]
    fmt = "{{.Names}}|{{.Status}}|{{.Image}}|{{.Command}}"
    running = api.docker("ps", "--format", fmt).stdout.splitlines()
    assert len(running) == 1 and running[0].startswith("up1|Up ") and "|\"sleep 1000\"" in running[0]
    names = lambda *a: sorted(api.docker("ps", *a, "--format", "{{.Names}}").stdout.split())  # noqa: E731
    assert names("-a") == ["done1", "up1"]
    assert names("-a", "--filter", "status=exited") == ["done1"]
    assert names("--filter", "label=tier=a") == ["up1"]
    assert names("-a", "--filter", "exited=0") == ["done1"]
    assert names("-a", "--filter", "name=up") == ["up1"]
    assert api.docker("ps", "-aq").stdout.split() == [api.json("inspect", n)[0]["Id"][:12] for n in ("done1", "up1")]


def test_logs_follow_until_the_container_exits(clean):
    api = clean
    api.docker("run", "-d", "--name", "talker", api.env.refs["busybox"], "sh", "-c",
               "for i in 1 2 3; do echo line$i; sleep 0.3; done; echo bye >&2")
    p = subprocess.Popen([DOCKER, "logs", "-f", "-t", "talker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=api.environ, text=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0
    lines = out.splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines] == ["line1", "line2", "line3"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", ln.split(" ", 1)[0]) for ln in lines)
    assert err.split(" ", 1)[1] == "bye\n"
    tail = api.docker("logs", "--tail", "2", "talker")
    assert (tail.stdout, tail.stderr) == ("line3\n", "bye\n")


def test_exec_stop_start_restart_kill_and_rm_f(clean):
    api = clean
    api.docker("run", "-d", "--name", "box", api.env.refs["busybox"], "sleep", "1000")
    p = api.docker("exec", "-e", "X=1", "-w", "/tmp", "box", "sh", "-c", "echo $X $(pwd); exit 3", check=False)
    assert (p.returncode, p.stdout) == (3, "1 /tmp\n")
    assert api.docker("exec", "-i", "box", "cat", input="piped in\n").stdout == "piped in\n"
    status = lambda: api.docker("ps", "-a", "--filter", "name=box", "--format", "{{.Status}}").stdout.strip()  # noqa
    assert api.docker("stop", "-t", "1", "box").stdout.strip() == "box"
    assert status().startswith("Exited (")
    api.docker("start", "box")
    assert status().startswith("Up ")
    started = api.json("inspect", "box")[0]["State"]["StartedAt"]
    api.docker("restart", "-t", "1", "box")
    assert status().startswith("Up ") and api.json("inspect", "box")[0]["State"]["StartedAt"] != started
    api.docker("kill", "box")
    assert status().startswith("Exited (137)")
    api.docker("start", "box")
    top = api.docker("top", "box").stdout
    assert "PID" in top.splitlines()[0] and "sleep 1000" in top
    assert api.docker("rm", "-f", "box").stdout.strip() == "box"
    assert api.docker("ps", "-aq").stdout == "" and api.records() == []


def test_stats_no_stream_has_docker_stats_columns(clean):
    api = clean
    api.docker("run", "-d", "--name", "busy", "-m", "64m", api.env.refs["busybox"], "sleep", "1000")
    out = api.docker("stats", "--no-stream").stdout.splitlines()
    assert re.split(r"\s{2,}", out[0].strip()) == ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %",
                                                    "NET I/O", "BLOCK I/O", "PIDS"]
    row = json.loads(api.docker("stats", "--no-stream", "--format", "{{json .}}", "busy").stdout)
    assert row["Name"] == "busy" and row["CPUPerc"].endswith("%") and row["PIDs"] == "1"
    usage, limit = row["MemUsage"].split(" / ")
    assert limit == "64MiB" and usage.endswith("iB")


def test_volumes_networks_rmi_and_system_df(clean):
    api = clean
    assert api.docker("volume", "create", "--label", "k=v", "vol1").stdout.strip() == "vol1"
    ls = api.docker("volume", "ls", "--format", "{{.Driver}} {{.Name}}").stdout.splitlines()
    assert "local vol1" in ls
    v = api.json("volume", "inspect", "vol1")[0]
    assert v["Driver"] == "local" and v["Labels"] == {"k": "v"} and v["Mountpoint"].endswith("/volumes/vol1")
    api.docker("run", "-d", "--name", "user", "-v", "vol1:/v", api.env.refs["busybox"], "sleep", "1000")
    busy = api.docker("volume", "rm", "vol1", check=False)
    assert busy.returncode != 0 and "volume is in use" in busy.stderr
    api.docker("rm", "-f", "user")
    assert api.docker("volume", "rm", "vol1").stdout.strip() == "vol1" and "vol1" not in volumes(api.env)
    nets = api.docker("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout.splitlines()
    assert "bridge bridge local" in nets
    net = api.json("network", "inspect", "bridge")[0]
    assert net["IPAM"]["Config"][0]["Subnet"] == api.env.net["subnet"]
    df = api.docker("system", "df").stdout.splitlines()
    assert re.split(r"\s{2,}", df[0].strip()) == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [r.split()[0] for r in df[1:]] == ["Images", "Containers", "Local", "Build"]
    ref = api.env.refs["checked"]
    api.docker("pull", ref)
    out = api.docker("rmi", ref).stdout.splitlines()
    assert out[0] == f"Untagged: {ref}" and re.fullmatch(r"Deleted: sha256:[0-9a-f]{64}", out[-1])
    gone = api.docker("image", "inspect", ref, check=False)
    assert gone.returncode != 0 and "No such image" in gone.stderr


def test_bad_input_is_a_docker_style_error_and_makes_nothing(clean):
    api = clean
    before, vols = api.records(), volumes(api.env)
    for args, says in [
        (["run", "--privileged", api.env.refs["busybox"], "true"], "HostConfig.Privileged is not supported"),
        (["run", "--cap-add", "NET_ADMIN", "-v", "newvol:/x", api.env.refs["busybox"], "true"],
         "HostConfig.CapAdd is not supported"),
        (["run", "--log-driver", "syslog", api.env.refs["busybox"], "true"], "HostConfig.LogConfig"),
        (["run", "--network", "container:ghost", api.env.refs["busybox"], "true"], "cannot join ghost's network"),
        (["run", "--network", "container:web", "-p", "8080:80", api.env.refs["busybox"], "true"],
         "conflicting options: port publishing and the container type network mode"),
        (["run", "-p", "1:2:3:4", api.env.refs["busybox"], "true"], ""),
        (["inspect", "ghost"], "No such object: ghost"),
        (["logs", "ghost"], "No such container: ghost"),
        (["stop", "ghost"], "No such container: ghost"),
    ]:
        p = api.docker(*args, check=False)
        assert p.returncode != 0 and says in p.stderr, (args, p.stderr)
        assert "internal error" not in p.stderr and "Traceback" not in api.tail()
    assert api.records() == before and volumes(api.env) == vols
    busy_name = api.docker("run", "-d", "--name", "dup", api.env.refs["busybox"], "sleep", "1000")
    assert busy_name.returncode == 0
    p = api.docker("run", "-d", "--name", "dup", api.env.refs["busybox"], "true", check=False)
    assert p.returncode != 0 and 'The container name "/dup" is already in use' in p.stderr
    assert "Conflict" in p.stderr and len(api.records()) == len(before) + 1


def test_run_it_and_exec_it_in_a_terminal(clean):
    api = clean
    api.docker("pull", api.env.refs["busybox"])
    t = Terminal(api, "run", "-it", "--name", "term", api.env.refs["busybox"], "sh")
    t.read_until(b"/ # ")       # the shell's first prompt
    # API 1.41's client sizes the pty with a resize right after the start: it lands within moments
    deadline = time.monotonic() + 10
    while b"33 99\r\n" not in t.out and time.monotonic() < deadline:
        t.type("stty size 2>/dev/null || echo unsized\n")
        t.read_until(b"/ # ", timeout=5)
        t.out = t.out.replace(b"/ # ", b"/ > ")
    assert b"33 99\r\n" in t.out                          # sized as our terminal
    t.type("tty; echo in-$((6*7))\n")
    out = t.read_until(b"in-42\r\n")
    assert b"/dev/pts/" in out                              # a pty of its own
    assert b"echo in-$((6*7))" in out                      # typed input echoed by the container's pty
    # exec -it beside it, in a second terminal
    e = Terminal(api, "exec", "-it", "term", "sh", "-c", "tty; read x; echo got-$x; exit 4", rows=20, cols=50)
    e.read_until(b"/dev/pts/")
    e.type("abc\n")
    e.read_until(b"got-abc")
    assert e.wait() == 4
    t.type("exit 5\n")
    assert t.wait() == 5
    i = api.json("inspect", "term")[0]
    assert i["Config"]["Tty"] is True and i["Config"]["OpenStdin"] is True and i["State"]["ExitCode"] == 5
    # `docker logs` of a tty container: what its terminal showed
    assert "in-42" in api.docker("logs", "term").stdout


def test_run_i_reads_piped_stdin_until_its_end(clean):
    api = clean
    p = api.docker("run", "-i", "--rm", api.env.refs["busybox"], "sh", "-c", "wc -l; echo done >&2; exit 3",
                   input="a\nb\nc\n", check=False)
    assert (p.returncode, p.stdout.strip(), p.stderr.splitlines()[-1]) == (3, "3", "done")
