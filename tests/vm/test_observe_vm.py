"""Observability of a deployed local-cloud host (one VM, pure cgroup v2 under systemd):

1. Debian's prometheus, on this machine, scrapes the host's metrics endpoint through the local
   cloud's forward on 127.0.0.1 (the host firewall opening the port to qemu's gateway only): the
   node_exporter/cAdvisor series present, labelled stack/service/name, and positive, with the
   project's own (boot steps, image arrival);
2. `provision stats` matches the container's v2 cgroup files and netns counters read over SSH;
3. `provision logs STACK --cloud local` merges and prefixes, and the agent (a systemd unit) ships
   the service's lines to an rsyslog on this machine, reached from the VM at qemu's gateway.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time
import urllib.parse
import urllib.request

import pytest

from tests.collectors import Rsyslog
from tests.registry_fixture import docker_registry, free_port

from deployhelpers import deploy, http_get, provision, push_images, ssh_to

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("prometheus", "rsyslogd")),
                                 reason="prometheus and rsyslog are needed (scripts/install.sh)")]
NAME = "obs/mon"
QEMU_GATEWAY = "10.0.2.2"   # where the guest sees this machine, and where forwarded connections come from


@pytest.fixture(scope="module")
def env(vm_root, vm_image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("observe")
    with docker_registry(tmp / "registry") as reg:
        push_images(tmp, reg.address, {"obs/busybox:1": "busybox"})
        web, metrics = free_port(), free_port()
        rsyslog = Rsyslog(tmp, free_port())
        rsyslog.start()
        stack = tmp / "obs.yml"
        stack.write_text(textwrap.dedent(f"""\
            name: obs
            hosts:
              - name: mon
                local: {{style: aws, memory: 1024}}
                services: [web]
                metrics: {{port: {metrics}, allow_from: {QEMU_GATEWAY}/32}}
                logging: {{ship_to: "tcp://{QEMU_GATEWAY}:{rsyslog.port}"}}
                disks:
                  ephemeral: {{mount: /var/lib/provisioner, count: 1}}
            services:
              web:
                image: {reg.address}/obs/busybox:1
                command: [sh, -c, "mkdir -p /tmp/www && echo hello > /tmp/www/index.html && exec httpd -f -v -p 80 -h /tmp/www"]
                ports: ["{web}:80"]
            """))
        e = {"XDG_CONFIG_HOME": str(tmp / "config")}
        try:
            yield {"root": vm_root, "stack": stack, "web": web, "metrics": metrics, "rsyslog": rsyslog, "env": e,
                   "tmp": tmp}
        finally:
            provision(vm_root, "destroy", "obs", "--cloud", "local", "--yes", env=e, check=False)
            rsyslog.stop()


@pytest.fixture(scope="module")
def deployed(env):
    out = deploy(env["root"], env["stack"], env["env"])
    assert out["ok"], out
    for _ in range(5):
        assert http_get(env["web"]).strip() == "hello"
    return out


class Prometheus:
    def __init__(self, tmp, target: str):
        self.port = free_port()
        (tmp / "prometheus.yml").write_text(textwrap.dedent(f"""\
            global: {{scrape_interval: 2s, scrape_timeout: 2s}}
            scrape_configs:
              - job_name: provisioner
                static_configs: [{{targets: ["{target}"]}}]
            """))
        self.proc = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={tmp / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(self, q: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())["data"]["result"]
        except OSError:
            return []   # not up yet

    def wait(self, q: str, timeout: float = 120.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.query(q)
            if got:
                return got
            assert time.monotonic() < deadline, f"prometheus has nothing for {q}"
            time.sleep(1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def test_prometheus_scrapes_the_deployed_hosts_endpoint(env, deployed):
    prom = Prometheus(env["tmp"], f"127.0.0.1:{env['metrics']}")
    try:
        assert prom.wait('up{job="provisioner"} == 1')
        web = '{stack="obs",service="web",name="obs-web"}'
        for series in ("container_cpu_usage_seconds_total", "container_memory_usage_bytes",
                       "container_memory_working_set_bytes", "container_processes"):
            (got,) = prom.wait(f"{series}{web} > 0")
            # the container runs the digest deploy pinned: the image it was made from says which
            assert "/obs/busybox:1@sha256:" in got["metric"]["image"] and got["metric"]["id"]
        assert prom.wait(f'container_network_receive_bytes_total{web[:-1]},interface="eth0"}} > 0')
        assert prom.wait(f"container_spec_memory_limit_bytes{web} == 0")          # no limit, as cAdvisor says
        assert prom.wait("node_memory_MemAvailable_bytes > 0") and prom.wait("node_load1 >= 0")
        assert prom.wait('node_filesystem_avail_bytes{mountpoint="/var/lib/provisioner",fstype="btrfs"} > 0')
        assert prom.wait('rate(node_cpu_seconds_total{mode="idle"}[10s]) > 0')
        steps = {r["metric"]["step"] for r in prom.wait("provisioner_boot_step_duration_seconds")}
        assert {"disks", "firewall", "containers", "agent"} <= steps
        (pull,) = prom.wait("provisioner_image_pull_duration_seconds > 0")
        assert "/obs/busybox:1@sha256:" in pull["metric"]["image"] and pull["metric"]["how"] == "pull"   # pinned
        assert prom.wait(f"provisioner_container_restarts_total{web} == 0")
        (rss,) = prom.wait("process_resident_memory_bytes")
        print(f"\nagent RSS on the VM (metrics and shipping on): {float(rss['value'][1]) / 2**20:.1f} MiB")
    finally:
        prom.stop()


def _direct(ssh, cid: str) -> dict[str, int]:
    d = f"/sys/fs/cgroup/provisioner/{cid}"
    out = ssh.run(["sh", "-c", f"cat {d}/memory.current {d}/pids.current; grep -w inactive_file {d}/memory.stat; "
                               f"grep -w usage_usec {d}/cpu.stat; cat /proc/$(head -1 {d}/cgroup.procs)/net/dev"],
                  sudo=True).stdout.splitlines()
    eth0 = next(ln for ln in out if "eth0:" in ln).split()
    return {"mem": int(out[0]) - int(out[2].split()[1]), "usage": int(out[0]), "pids": int(out[1]),
            "cpu": int(out[3].split()[1]), "rx": int(eth0[1]), "tx": int(eth0[9])}


def test_stats_match_the_cgroup_files_on_pure_v2(env, deployed):
    with ssh_to(env["root"], NAME) as ssh:
        cid = json.loads(ssh.run(["provision", "container", "inspect", "obs-web"], sudo=True).stdout)[0]["id"]
        before = _direct(ssh, cid)
        doc = json.loads(provision(env["root"], "stats", "obs", "--cloud", "local", "--no-stream", "--json",
                                   env=env["env"]).stdout)
        after = _direct(ssh, cid)
    (host,) = doc["hosts"]
    assert host["error"] is None and host["summary"]["cgroup_mode"] == "v2"
    (row,) = host["containers"]
    between = lambda v, k: min(before[k], after[k]) <= v <= max(before[k], after[k])  # noqa: E731
    assert row["name"] == "obs-web" and between(row["mem_usage"], "mem") and between(row["pids"], "pids")
    assert between(row["net_rx"], "rx") and between(row["net_tx"], "tx") and row["net_rx"] > 0
    assert row["mem_limit"] == host["summary"]["mem_total"]            # no limit: the host's memory, as docker
    assert [f["mountpoint"] for f in host["summary"]["filesystems"]] == ["/var/lib/provisioner"]


def test_logs_merged_here_and_shipped_from_there(env, deployed):
    http_get(env["web"])
    deadline = time.monotonic() + 120
    while True:
        r = provision(env["root"], "logs", "obs", "--cloud", "local", "-n", "50", env=env["env"])
        if "response:200" in r.stdout or time.monotonic() > deadline:
            break
        time.sleep(1)
    lines = [ln for ln in r.stdout.splitlines() if "response:200" in ln]
    assert lines and all(ln.startswith("mon/web | ") for ln in lines), r.stdout
    rs = env["rsyslog"]
    deadline = time.monotonic() + 120
    while not [ln for ln in rs.lines("web") if "response:200" in ln]:
        assert time.monotonic() < deadline, rs.out.read_text() if rs.out.exists() else "nothing received"
        time.sleep(1)
    shipped = [ln for ln in rs.lines("web") if "response:200" in ln][0]
    assert shipped.startswith('mon web stderr [provisioner@32473 stack="obs" service="web" container="obs-web" '
                              'stream="stderr"] ')
    assert rs.lines("provisioner-agent") or rs.lines("provisioner-boot")     # the agent's own logs too
