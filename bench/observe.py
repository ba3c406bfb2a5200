"""The agent (`python -m provisioner.host.agent`, issue 14): its memory with the metrics endpoint
and log shipping both on, and the cost of one scrape with 20 containers, against
prometheus-node-exporter (Debian's, default collectors) in the same run.

Set-up: the test images pushed to Debian's docker-registry on loopback, a loop-backed btrfs root,
a 20-service busybox stack brought up with `provision up` (each service prints a line every
second, so the shipper always has work), Debian's rsyslog on loopback as the collector, and the
agent started as the boot hook starts it without systemd (`--daemon`). Then:

  scrape      N sequential GET /metrics of each exporter from this process: wall time per scrape
              (median, p90) and the exporter's CPU time per scrape (utime+stime of its process over
              the N scrapes, minus what it used in an equally long idle stretch just before: the
              shipper's polling is not the scrape's cost); series and bytes per scrape
  memory      VmRSS and VmHWM of each exporter after the scrapes (the agent by then has shipped
              every line the containers wrote)

Run as root from the repo root:  python3 bench/observe.py --scrapes 200
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.host.steps import agent as agent_step  # noqa: E402
from provisioner.imagebuild.loopfs import loop_btrfs  # noqa: E402
from provisioner.runner import Runner  # noqa: E402
from tests.collectors import Rsyslog  # noqa: E402
from tests.privileged.runtime_helpers import build_runtime  # noqa: E402
from tests.privileged.test_container import Env, build_images  # noqa: E402
from tests.registry_fixture import docker_registry, free_port, wait_until  # noqa: E402

CONTAINERS = 20
REPO = Path(__file__).resolve().parents[1]
CLK = os.sysconf("SC_CLK_TCK")


def status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def get(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        return r.read()


def measure(pid: int, port: int, scrapes: int) -> dict:
    get(port)                                        # warm-up (caches, first imports)
    idle_t0, idle_c0 = time.monotonic(), cpu_seconds(pid)
    time.sleep(max(2.0, scrapes * 0.01))
    idle_rate = (cpu_seconds(pid) - idle_c0) / (time.monotonic() - idle_t0)
    walls, size = [], 0
    t0, c0 = time.monotonic(), cpu_seconds(pid)
    for _ in range(scrapes):
        s = time.monotonic()
        body = get(port)
        walls.append(time.monotonic() - s)
        size = len(body)
    took, cpu = time.monotonic() - t0, cpu_seconds(pid) - c0
    series = sum(1 for ln in body.decode().splitlines() if ln and not ln.startswith("#"))
    walls.sort()
    return {"wall_median_ms": statistics.median(walls) * 1e3, "wall_p90_ms": walls[int(len(walls) * 0.9)] * 1e3,
            "cpu_ms": max(0.0, cpu - idle_rate * took) / scrapes * 1e3, "idle_cpu_pct": idle_rate * 100,
            "series": series, "bytes": size, "rss_kib": status(pid, "VmRSS"), "hwm_kib": status(pid, "VmHWM")}


STACK_HEAD = "name: bench{sfx}\nservices:\n"
SERVICE = """\
  s{i:02d}:
    image: {busybox}
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo s{i:02d} line $i; sleep 1; done"]
"""


def node_exporter() -> tuple[subprocess.Popen, int] | None:
    exe = shutil.which("prometheus-node-exporter")
    if exe is None:
        return None
    port = free_port()
    proc = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_until(lambda: _answers(port), what="node_exporter")
    return proc, port


def _answers(port: int) -> bool:
    try:
        get(port)
        return True
    except OSError:
        return False


def run_bench(work: Path, scrapes: int) -> None:
    with docker_registry(work / "registry") as reg, loop_btrfs(work / "fs", Runner(), size="2G") as mnt:
        refs = build_images(work, reg.address)
        env = Env(work, mnt, refs)
        stack = work / "stack.yml"
        stack.write_text(STACK_HEAD.format(sfx=env.sfx) + "".join(SERVICE.format(i=i, busybox=refs["busybox"])
                                                                  for i in range(CONTAINERS)))
        rsyslog = Rsyslog(work, free_port())
        rsyslog.start()
        pid_file, port = work / "agent.pid", free_port()
        (work / "agent.json").write_text(json.dumps({
            "host": "bench", "stack": f"bench{env.sfx}", "root": str(env.root), "boot_result": None,
            "metrics": {"port": port, "address": "127.0.0.1", "graphite": None, "interval": 10, "prefix": "provisioner"},
            "logging": {"scheme": "tcp", "host": "127.0.0.1", "port": rsyslog.port, "buffer_bytes": 64 << 20,
                        "ca": None}}))
        peer = None
        try:
            env.provision("up", "-f", str(stack), timeout=600)
            Runner().run([sys.executable, "-m", "provisioner.host.agent", "--config", str(work / "agent.json"),
                          "--daemon", "--pid-file", str(pid_file)], env={"PYTHONPATH": str(REPO)}, timeout=60)
            agent = agent_step.running_pid(pid_file)
            wait_until(lambda: len(rsyslog.lines("s19")) >= 3, timeout=60, what="lines shipped from every service")
            ours = measure(agent, port, scrapes)
            shipped = sum(len(rsyslog.lines(f"s{i:02d}")) for i in range(CONTAINERS))
            running = len(json.loads(env.provision("container", "ps", "--json").stdout))
            peer = node_exporter()
            theirs = measure(peer[0].pid, peer[1], scrapes) if peer else None
            ver = Runner().run(["prometheus-node-exporter", "--version"], check=False) if peer else None
            version = (ver.stdout + ver.stderr).split("\n")[0] if ver else ""
            print(f"agent: metrics endpoint + log shipping (tcp to rsyslog on loopback), {running} running "
                  f"containers, {shipped} lines shipped by the end; {scrapes} sequential scrapes each")
            print(f"{'exporter':<28}{'wall med':>10}{'wall p90':>10}{'CPU/scrape':>12}{'series':>8}{'bytes':>9}"
                  f"{'RSS':>10}{'peak RSS':>10}")
            rows = [("provisioner agent", ours)] + ([(f"node_exporter ({version.split()[2] if version else '?'})",
                                                      theirs)] if theirs else [])
            for name, m in rows:
                print(f"{name:<28}{m['wall_median_ms']:>8.1f}ms{m['wall_p90_ms']:>8.1f}ms{m['cpu_ms']:>10.2f}ms"
                      f"{m['series']:>8}{m['bytes']:>9}{m['rss_kib'] / 1024:>7.1f}MiB{m['hwm_kib'] / 1024:>7.1f}MiB")
            print(f"agent idle CPU (shipper polling {CONTAINERS + 2} files every 0.2 s): {ours['idle_cpu_pct']:.2f}% "
                  "of one CPU")
            if theirs:
                print(f"ratio agent / node_exporter: wall {ours['wall_median_ms'] / theirs['wall_median_ms']:.2f}, "
                      f"CPU per scrape {ours['cpu_ms'] / max(theirs['cpu_ms'], 1e-6):.2f}, "
                      f"RSS {ours['rss_kib'] / theirs['rss_kib']:.2f}")
            print(f"target: whole agent <= 30 MB RSS -> {'met' if ours['hwm_kib'] <= 30 * 1024 else 'NOT met'} "
                  f"(peak {ours['hwm_kib'] / 1024:.1f} MiB)")
        finally:
            if peer:
                peer[0].terminate()
                peer[0].wait(30)
            pid = agent_step.running_pid(pid_file)
            if pid is not None:
                agent_step.stop_agent(pid, pid_file)
            env.provision("down", "-f", str(stack), check=False, timeout=600)
            env.cleanup()
            rsyslog.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scrapes", type=int, default=200)
    args = ap.parse_args()
    build_runtime()
    work = Path(tempfile.mkdtemp(prefix="bench-observe-"))
    try:
        run_bench(work, args.scrapes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
