"""metrics: the cgroup and /proc readers on trees recorded from real hosts (tests/fixtures/cgroups,
recorded with its record.py), the docker-stats computation, and the exposition they render.

Every expected value is read straight from the recorded files here, by simpler code than the
readers', so the readers are checked against the kernel's own numbers."""
from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from provisioner.containers import supervise
from provisioner.metrics import cgroups, exposition, stats
from provisioner.metrics.collect import Collector
from provisioner.runner import Runner

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cgroups"
TREES = {"v1-hybrid": "hybrid", "v2": "v2"}   # the recorded trees and the layout each was recorded on


def _files(tree: Path) -> dict[str, Path]:
    """The container's directory in each hierarchy of the recorded tree."""
    out = {}
    for d in tree.glob("sys/fs/cgroup/**/provisioner/*"):
        out[d.parent.parent.name if d.parent.parent.name != "cgroup" else ""] = d
    return out


def _flat(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in path.read_text().splitlines())}


@pytest.fixture(params=sorted(TREES))
def tree(request, monkeypatch):
    # the recorded supervisor is not alive on this machine: the state file says what it was
    monkeypatch.setattr(supervise, "_pid_alive", lambda pid: True)
    return request.param, FIXTURES / request.param


def test_layouts_from_mountinfo():
    hybrid = cgroups.parse_layout((FIXTURES / "v1-hybrid/proc/self/mountinfo").read_text(), "/x")
    assert hybrid.mode == "hybrid" and hybrid.unified == Path("/x/sys/fs/cgroup/unified")
    assert hybrid.v1["cpuacct"] == Path("/x/sys/fs/cgroup/cpuacct") and hybrid.v1["memory"].name == "memory"
    # a v1 host with co-mounted controllers (CentOS 7, Ubuntu 18.04)
    v1 = cgroups.parse_layout(
        "25 18 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
        "26 18 0:23 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n"
        "27 18 0:24 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd\n")
    assert v1.mode == "v1" and v1.v1["cpuacct"] == v1.v1["cpu"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert v1.dirs("/provisioner/abc")["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct/provisioner/abc")
    v2 = cgroups.parse_layout("30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    assert v2.mode == "v2" and v2.dirs("/provisioner/abc") == {"": Path("/sys/fs/cgroup/provisioner/abc")}
    assert cgroups.parse_layout("").mode == "none"


def test_cgroup_counters_are_the_files_numbers(tree):
    name, path = tree
    snap = Collector(path / "root", sysroot=path, host="web").snapshot()
    assert snap.cgroup_mode == TREES[name]
    (c,) = snap.containers
    assert (c.name, c.stack, c.service, c.state, c.restarts) == ("shop-web", "shop", "web", "running", 0)
    assert c.image.endswith("/test/web:1") and c.started_at and c.health is None
    d, s = _files(path), c.cgroup
    if name == "v2":
        cpu, mem = _flat(d[""] / "cpu.stat"), _flat(d[""] / "memory.stat")
        assert s.cpu_ns == cpu["usage_usec"] * 1000 and s.cpu_user_ns == cpu["user_usec"] * 1000
        assert s.memory_usage == int((d[""] / "memory.current").read_text())
        assert s.memory_inactive_file == mem["inactive_file"] and s.memory_rss == mem["anon"]
        assert s.memory_limit == int((d[""] / "memory.max").read_text())
        assert s.pids == int((d[""] / "pids.current").read_text())
        wbytes = sum(int(kv.split("=")[1]) for kv in (d[""] / "io.stat").read_text().split() if kv.startswith("wbytes="))
        assert s.io_write == wbytes
    else:
        mem = _flat(d["memory"] / "memory.stat")
        ticks = _flat(d["cpuacct"] / "cpuacct.stat")
        assert s.cpu_ns == int((d["cpuacct"] / "cpuacct.usage").read_text())
        assert (s.cpu_user_ns, s.cpu_system_ns) == (ticks["user"] * 10_000_000, ticks["system"] * 10_000_000)
        assert s.memory_usage == int((d["memory"] / "memory.usage_in_bytes").read_text())
        assert s.memory_limit == int((d["memory"] / "memory.limit_in_bytes").read_text()) == 64 << 20
        assert (s.memory_inactive_file, s.memory_cache) == (mem["total_inactive_file"], mem["total_cache"])
        assert s.pids == int((d["pids"] / "pids.current").read_text())
    pid = int(next(iter(d.values())).joinpath("cgroup.procs").read_text().split()[0])
    eth0 = next(ln for ln in (path / f"proc/{pid}/net/dev").read_text().splitlines() if "eth0:" in ln).split()
    assert set(c.net) == {"eth0"} and (c.net["eth0"].rx_bytes, c.net["eth0"].tx_bytes) == (int(eth0[1]), int(eth0[9]))


def test_docker_stats_columns(tree):
    _, path = tree
    col = Collector(path / "root", sysroot=path, host="web")
    first = col.snapshot()
    (row,) = stats.rows(None, first)
    c = first.containers[0]
    assert row.cpu_percent is None          # one sample: no delta yet ("--")
    assert row.mem_usage == c.cgroup.memory_usage - c.cgroup.memory_inactive_file
    assert row.mem_limit == c.cgroup.memory_limit and row.mem_percent == pytest.approx(
        100.0 * row.mem_usage / row.mem_limit)
    assert (row.net_rx, row.net_tx) == (c.net["eth0"].rx_bytes, c.net["eth0"].tx_bytes)
    # a second sample one second later in which the container used 0.25 s of CPU time on a 2-CPU host
    node2 = replace(first.node, cpu_ticks={k: {**v, "idle": v["idle"] + 100} for k, v in first.node.cpu_ticks.items()})
    c2 = replace(c, cgroup=replace(c.cgroup, cpu_ns=c.cgroup.cpu_ns + 250_000_000))
    second = replace(first, node=node2, containers=(c2,))
    (row2,) = stats.rows(first, second)
    cpus = len(first.node.cpu_ticks)
    assert row2.cpu_percent == pytest.approx(0.25e9 / (cpus * 1e9) * cpus * 100.0) == pytest.approx(25.0)
    cells = stats.cells(row2)
    assert cells[:3] == [c.id[:12], "shop-web", "25.00%"] and " / " in cells[3] and cells[-1] == str(row2.pids)
    host = stats.host_row(second)
    mem = {k: int(v.split()[0]) * 1024 for k, v in (ln.split(":", 1) for ln in
                                                      (path / "proc/meminfo").read_text().splitlines())
           if v.strip().endswith("kB")}
    assert host.mem_total == mem["MemTotal"] and host.mem_used == mem["MemTotal"] - mem["MemAvailable"]
    assert host.load == tuple(float(x) for x in (path / "proc/loadavg").read_text().split()[:3])
    assert stats.host_line(host).startswith("web: load ")


def test_units_as_docker_prints_them():
    assert stats.binary_size(13164544) == "12.55MiB" and stats.binary_size(64 << 20) == "64MiB"
    assert stats.decimal_size(11442) == "11.4kB" and stats.decimal_size(0) == "0B"
    assert stats.decimal_size(1_500_000_000) == "1.5GB"


SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? \S+$')


def test_exposition_names_labels_and_format(tree):
    _, path = tree
    col = Collector(path / "root", sysroot=path, host="web")
    snap = col.snapshot()
    text = exposition.render(exposition.families(snap, col.devices(snap)))
    assert text.endswith("\n")
    seen: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in seen, f"TYPE of {name} twice"
            seen[name] = 1
        elif not line.startswith("# HELP "):
            assert SAMPLE.match(line), line
    c = snap.containers[0]
    labels = f'stack="shop",service="web",name="shop-web",id="{c.id[:12]}",image="{c.image}"'
    assert f"container_cpu_usage_seconds_total{{{labels}}} {c.cgroup.cpu_ns / 1e9!r}" in text
    assert f"container_memory_usage_bytes{{{labels}}} {c.cgroup.memory_usage}" in text
    assert f"container_spec_memory_limit_bytes{{{labels}}} {c.cgroup.memory_limit}" in text
    assert f'container_network_receive_bytes_total{{{labels},interface="eth0"}} {c.net["eth0"].rx_bytes}' in text
    assert f"provisioner_container_restarts_total{{{labels}}} 0" in text
    mem = dict(ln.split(":", 1) for ln in (path / "proc/meminfo").read_text().splitlines())
    assert f"node_memory_MemAvailable_bytes {int(mem['MemAvailable'].split()[0]) * 1024}" in text
    assert re.search(r"^node_load1 [0-9.]+$", text, re.M) and 'node_cpu_seconds_total{cpu="0",mode="idle"}' in text
    for name in ("container_fs_reads_bytes_total", "container_fs_writes_bytes_total"):
        assert (name in text) == bool(c.cgroup.io)


def test_no_environment_value_reaches_the_endpoint(tree, tmp_path):
    """A container's record and bundle hold its environment (secrets, often): none of it goes out."""
    import json

    name, path = tree
    copy = tmp_path / name
    shutil.copytree(path, copy, symlinks=True)
    (rec_path,) = copy.glob("root/containers/*/container.json")
    rec = json.loads(rec_path.read_text())
    rec["config"]["options"] = {"env": [["DB_PASSWORD", "hunter2-secret"]]}
    rec["config"]["image_config"] = {"Env": ["API_TOKEN=tok-secret-123"], "Cmd": ["--password=cmd-secret"]}
    rec_path.write_text(json.dumps(rec))
    bundle = rec_path.parent / "bundle" / "config.json"
    cfg = json.loads(bundle.read_text())
    cfg["process"] = {"env": ["DB_PASSWORD=hunter2-secret"], "args": ["--password=cmd-secret"]}
    bundle.write_text(json.dumps(cfg))
    col = Collector(copy / "root", sysroot=copy, host="web")
    snap = col.snapshot()
    fams = exposition.families(snap, col.devices(snap))
    text = exposition.render(fams) + "\n".join(exposition.graphite_lines(fams, "p", "s", "h", 0))
    assert snap.containers and "container_memory_usage_bytes{" in text
    for secret in ("hunter2", "tok-secret", "cmd-secret", "DB_PASSWORD", "API_TOKEN"):
        assert secret not in text


def test_exposition_escapes_and_the_projects_own_series():
    from provisioner.images.history import Arrival
    from provisioner.metrics.collect import ContainerFacts, Snapshot
    from provisioner.metrics.node import Node

    c = ContainerFacts("ab" * 32, 'we"ird\\name', "img:1", "s", "svc", "running", 3, 1000.5, "unhealthy")
    snap = Snapshot(at=2000.0, host="h", stack="s", cgroup_mode="v2", node=Node(), containers=(c,),
                    boot={"ok": False, "seconds": 12.5, "steps": [{"name": "disks", "status": "ok", "seconds": 3.25},
                                                                  {"name": "firewall", "status": "failed",
                                                                   "seconds": 0.5}]},
                    arrivals=(Arrival("reg/web:1", "load", 4.5, 3, 1, 1999.0),))
    text = exposition.render(exposition.families(snap))
    assert 'name="we\\"ird\\\\name"' in text
    assert 'provisioner_container_health_status{stack="s",service="svc",name="we\\"ird\\\\name",id="abababababab",' \
           'image="img:1",status="unhealthy"} 1' in text
    assert text.count("provisioner_container_health_status{") == 3
    assert 'provisioner_container_restarts_total{' in text and "} 3\n" in text
    assert 'provisioner_boot_step_duration_seconds{step="disks",status="ok"} 3.25' in text
    assert 'provisioner_boot_step_duration_seconds{step="firewall",status="failed"} 0.5' in text
    assert "provisioner_boot_ok 0" in text and "provisioner_boot_duration_seconds 12.5" in text
    assert 'provisioner_image_pull_duration_seconds{image="reg/web:1",how="load"} 4.5' in text
    assert "container_cpu_usage_seconds_total" not in text     # not running in a cgroup: no counters
    lines = exposition.graphite_lines(exposition.families(snap), "ops", "s", "h", 2000.9)
    assert "ops.s.h.provisioner_container_restarts_total.we_ird_name 3 2000" in lines
    assert "ops.s.h.provisioner_boot_step_duration_seconds.disks.ok 3.25 2000" in lines
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+ \S+ 2000", ln) for ln in lines)


def test_promtool_accepts_the_exposition(tree, tmp_path):
    """Prometheus' own linter (Debian's prometheus package ships promtool) on the rendered text."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (scripts/install.sh installs prometheus)")
    _, path = tree
    col = Collector(path / "root", sysroot=path, host="web")
    snap = col.snapshot()
    text = exposition.render(exposition.families(snap, col.devices(snap)))
    res = Runner().run(["promtool", "check", "metrics"], input=text, check=False)
    # it parses the text (a format error is "error while linting") and lints the names: the only
    # complaint allowed is about node_exporter's own spelling (node_memory_MemAvailable_bytes)
    problems = [ln for ln in (res.stdout + res.stderr).splitlines()
                if ln.strip() and "should be written in 'snake_case' not 'camelCase'" not in ln]
    assert problems == [] and res.returncode in (0, 3), res.stdout + res.stderr


def test_container_stats_command(tree, monkeypatch, capsys):
    """`provision container stats --no-stream [--json]` over the recorded tree."""
    import functools
    import json

    from provisioner.cli.app import App
    from provisioner.cli.main import cli
    from provisioner.metrics import collect
    from provisioner.testing import FakeRunner

    _, path = tree
    monkeypatch.setattr(collect, "Collector", functools.partial(Collector, sysroot=path, host="web"))
    monkeypatch.setattr("time.sleep", lambda s: None)
    cli.main(args=["--root", str(path / "root"), "container", "stats", "--no-stream"], standalone_mode=False,
             obj=App(runner=FakeRunner()))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("web: load ") and lines[1].split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"]
    assert lines[2].split()[1:3] == ["shop-web", "0.00%"] and len(lines) == 3
    cli.main(args=["--root", str(path / "root"), "container", "stats", "--no-stream", "--json", "nomatch"],
             standalone_mode=False, obj=App(runner=FakeRunner()))
    doc = json.loads(capsys.readouterr().out)
    assert doc["containers"] == [] and doc["host"]["host"] == "web"
    cli.main(args=["--root", str(path / "root"), "container", "stats", "--no-stream", "--json", "shop-web"],
             standalone_mode=False, obj=App(runner=FakeRunner()))
    (row,) = json.loads(capsys.readouterr().out)["containers"]
    assert row["name"] == "shop-web" and row["mem_usage"] > 0 and row["cpu_percent"] == 0.0


def test_filesystems_are_the_real_ones_not_the_containers_root_binds():
    from provisioner.metrics.node import mounts

    store = "/var/lib/provisioner"
    cid = "a" * 64
    info = "\n".join([
        "22 1 259:1 / / rw,relatime - ext4 /dev/nvme0n1p1 rw",
        f"40 22 0:40 / {store} rw,relatime - btrfs /dev/nvme1n1 rw",
        f"41 40 0:40 /containers/{cid}/rootfs {store}/containers/{cid}/rootfs rw,nosuid - btrfs /dev/nvme1n1 rw",
        "42 22 0:41 / /srv/data rw - btrfs /dev/nvme3n1 rw",
        "43 22 0:5 / /dev rw - devtmpfs udev rw",
        "44 22 0:42 / /var/lib/docker/overlay2/x/merged rw - ext4 /dev/nvme0n1p1 rw"])
    assert [m for _, _, m in mounts(info)] == ["/", store, "/srv/data"]
