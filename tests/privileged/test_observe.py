"""The agent against the real collectors, on loopback, with real containers (this host's hybrid
cgroups, the runtime, shim and network; fixtures shared with test_container.py):

- Debian's rsyslog (imtcp) receives every container line as RFC 5424 with the service's name,
  and across a 15 s outage of rsyslog a container writing a numbered line every 200 ms loses
  none and none arrive out of order;
- Debian's graphite-carbon (carbon-cache) stores the series the agent pushes;
- `container stats` and the endpoint match the cgroup files and netns counters read directly,
  and promtool accepts the live endpoint.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from provisioner.host.steps import agent as agent_step
from provisioner.runner import Runner
from tests.collectors import Carbon, Rsyslog
from tests.privileged.test_container import Env, images, wait_for  # noqa: F401
from tests.registry_fixture import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("rsyslogd", "carbon-cache", "whisper-fetch", "skopeo",
                                                         "docker-registry", "nft", "mkfs.btrfs")),
                       reason="rsyslog, graphite-carbon and the container tools are needed (scripts/install.sh)"),
]
OUTAGE = 15.0


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def series(text: str, metric: str, labels: dict | None = None) -> float:
    want = [f'{k}="{v}"' for k, v in (labels or {}).items()]
    for line in text.splitlines():
        head = line.rsplit(" ", 1)[0]
        if (line.startswith(metric + "{") and all(w in head for w in want)) or (not labels and line.startswith(metric + " ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {metric} with {labels} in the scrape")


STACK = """\
name: obs
services:
  counter:
    image: {busybox}
    command: ["sh", "-c", "i=0; while true; do i=$$((i+1)); echo n=$$i; sleep 0.2; done"]
  idle:
    image: {busybox}
    command: ["sh", "-c", "dd if=/dev/zero of=/tmp/fill bs=1k count=2048 2>/dev/null; echo ready; exec sleep 100000"]
    mem_limit: 64m
"""


@pytest.fixture(scope="module")
def observed(images, tmp_path_factory):  # noqa: F811
    work, mnt, refs, _ = images
    tmp = tmp_path_factory.mktemp("observe")
    env = Env(work, mnt, refs)
    rsyslog, carbon = Rsyslog(tmp, free_port()), Carbon(tmp, free_port())
    rsyslog.start()
    metrics_port = free_port()
    conf = tmp / "agent.json"
    conf.write_text(json.dumps({
        "host": "obs-host", "stack": "obs", "root": str(env.root), "boot_result": None,
        "metrics": {"port": metrics_port, "address": "127.0.0.1", "graphite": ["127.0.0.1", carbon.port], "interval": 1, "prefix": "ptest"},
        "logging": {"scheme": "tcp", "host": "127.0.0.1", "port": rsyslog.port, "buffer_bytes": 64 << 20,
                    "ca": None}}))
    pid_file = tmp / "agent.pid"
    stack = tmp / "obs.yml"
    stack.write_text(STACK.format(busybox=refs["busybox"]))
    try:
        env.provision("up", "-f", str(stack))
        Runner().run([sys.executable, "-m", "provisioner.host.agent", "--config", str(conf), "--daemon",
                      "--pid-file", str(pid_file)], env={"PYTHONPATH": str(REPO)}, timeout=60)
        yield {"env": env, "rsyslog": rsyslog, "carbon": carbon, "port": metrics_port, "stack": stack}
    finally:
        pid = agent_step.running_pid(pid_file)
        if pid is not None:
            agent_step.stop_agent(pid, pid_file)
        env.provision("down", "-f", str(stack), check=False)
        env.cleanup()
        rsyslog.stop()
        carbon.stop()


def numbers(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for ln in lines if (m := re.search(r"\] n=(\d+)$", ln))]


def test_rsyslog_gets_every_numbered_line_in_order_across_a_15s_outage(observed):
    rs, env = observed["rsyslog"], observed["env"]
    first = wait_for(lambda: rs.lines("counter"), timeout=60, what="the first shipped lines")
    assert first[0].startswith('obs-host counter stdout [provisioner@32473 stack="obs" service="counter" '
                               'container="obs-counter" stream="stdout"] n=')
    wait_for(lambda: len(numbers(rs.lines("counter"))) >= 10, timeout=30, what="ten lines")
    rs.stop()                                   # the collector goes away ...
    gone = time.monotonic()
    text = wait_for(lambda: (t := scrape(observed["port"])) and series(t, "provisioner_logship_buffer_bytes") > 0
                    and "provisioner_logship_connected 0" in t and t, what="lines waiting in the buffer")
    assert series(text, "provisioner_logship_dropped_lines_total") == 0
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - gone)))   # the outage itself: 15 s of lines to keep
    rs.start()                                  # ... and comes back
    env.provision("container", "stop", "obs-counter")
    logged = [ln for ln in env.provision("container", "logs", "obs-counter").stdout.splitlines()
              if ln.startswith("n=")]
    last = int(logged[-1][2:])
    assert last >= 10 + OUTAGE / 0.2 * 0.8      # it really wrote through the outage
    got = wait_for(lambda: (n := numbers(rs.lines("counter"))) and n[-1] == last and n, timeout=60,
                   what=f"line n={last} at rsyslog")
    assert got == list(range(1, last + 1))      # none lost, none repeated, none out of order


def test_graphite_carbon_stores_the_pushed_series(observed):
    carbon = observed["carbon"]
    path = "ptest.obs.obs-host"
    mem = wait_for(lambda: carbon.values(f"{path}.container_memory_usage_bytes.obs-idle"), timeout=60,
                   what="the idle container's memory in whisper")
    assert all(v > 0 for v in mem)
    assert wait_for(lambda: carbon.values(f"{path}.node_memory_MemAvailable_bytes"), what="a node series")[-1] > 0
    restarts = wait_for(lambda: carbon.values(f"{path}.provisioner_container_restarts_total.obs-idle"),
                        what="the project's own series")
    assert restarts[-1] == 0


def _cgroup(cid: str) -> dict[str, Path]:
    return {c: Path(f"/sys/fs/cgroup/{c}/provisioner/{cid}") for c in ("memory", "cpuacct", "pids")}


def _direct(cid: str) -> dict[str, int]:
    d = _cgroup(cid)
    stat = dict(ln.split() for ln in (d["memory"] / "memory.stat").read_text().splitlines())
    pid = (d["memory"] / "cgroup.procs").read_text().split()[0]
    eth0 = next(ln for ln in Path(f"/proc/{pid}/net/dev").read_text().splitlines() if "eth0:" in ln).split()
    return {"usage": int((d["memory"] / "memory.usage_in_bytes").read_text()),
            "mem": int((d["memory"] / "memory.usage_in_bytes").read_text()) - int(stat["total_inactive_file"]),
            "limit": int((d["memory"] / "memory.limit_in_bytes").read_text()),
            "cpu": int((d["cpuacct"] / "cpuacct.usage").read_text()),
            "pids": int((d["pids"] / "pids.current").read_text()), "rx": int(eth0[1]), "tx": int(eth0[9])}


def _between(value, a, b) -> bool:
    return min(a, b) <= value <= max(a, b)


def test_stats_and_the_endpoint_match_the_cgroup_files_on_this_hybrid_host(observed):
    from provisioner.sysinfo import cgroup_mode

    env = observed["env"]
    assert cgroup_mode() == "hybrid"
    cid = env.inspect("obs-idle")["id"]
    wait_for(lambda: "ready" in env.provision("container", "logs", "obs-idle").stdout, what="the idle container")
    before = _direct(cid)
    doc = json.loads(env.provision("--json", "container", "stats", "--no-stream", "obs-idle").stdout)
    text = scrape(observed["port"])
    after = _direct(cid)
    (row,) = doc["containers"]
    assert row["name"] == "obs-idle" and row["mem_limit"] == before["limit"] == 64 << 20
    assert _between(row["mem_usage"], before["mem"], after["mem"]) and row["pids"] == before["pids"] == after["pids"]
    assert _between(row["net_rx"], before["rx"], after["rx"]) and _between(row["net_tx"], before["tx"], after["tx"])
    assert doc["host"]["cgroup_mode"] == "hybrid"
    lab = {"stack": "obs", "service": "idle", "name": "obs-idle"}
    assert _between(series(text, "container_memory_usage_bytes", lab), before["usage"], after["usage"])
    assert _between(series(text, "container_cpu_usage_seconds_total", lab), before["cpu"] / 1e9, after["cpu"] / 1e9)
    assert series(text, "container_spec_memory_limit_bytes", lab) == 64 << 20
    assert _between(series(text, "container_network_receive_bytes_total", {**lab, "interface": "eth0"}),
                    before["rx"], after["rx"])
    assert series(text, "container_processes", lab) == before["pids"]


def test_promtool_accepts_the_live_endpoint(observed):
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (the prometheus package)")
    res = Runner().run(["promtool", "check", "metrics"], input=scrape(observed["port"]), check=False)
    problems = [ln for ln in (res.stdout + res.stderr).splitlines()
                if ln.strip() and "should be written in 'snake_case' not 'camelCase'" not in ln]
    assert problems == [], res.stdout + res.stderr
