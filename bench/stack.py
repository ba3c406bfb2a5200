"""`provision up` of a 5-service busybox stack with its images already in the store.

Builds the test images (busybox httpd / busybox) with the project's builder, pushes them to
Debian's docker-registry on loopback, pulls them once (a warm-up up + down), then per run times:
  up (CLI)       `provision up -f stack.yml` as a fresh process: returns once every service with a
                 healthcheck is healthy (3 of 5 have one; two wait on service_healthy)
  re-up (CLI)    `provision up` again, nothing changed (plans nothing, restarts nothing)
  down (CLI)     `provision down`
and, after the last up, each container's supervision RSS: its provision-shim, which also runs the
container's healthcheck (3 of the 5 at 100 ms intervals, so a check is in flight most of the time);
VmRSS sampled every 50 ms for 2 s, the peak kept, and the checks the shims ran meanwhile counted
from their health files (proof they were active). Peer, same run: podman's conmon (Debian 12's
podman + runc, busybox `sleep`, 3 containers, VmRSS of each conmon). conmon runs no healthchecks:
podman schedules them as systemd timers that run a `podman healthcheck run` process each (on this
host, without systemd, podman refuses to schedule them at all), so the peer's figure is supervision
only while ours includes the checks.

Run as root from the repo root:  python3 bench/stack.py --runs 5
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.containers import supervise  # noqa: E402
from provisioner.imagebuild.loopfs import loop_btrfs  # noqa: E402
from provisioner.runner import Runner  # noqa: E402
from tests.privileged.runtime_helpers import build_runtime, make_rootfs  # noqa: E402
from tests.privileged.test_container import Env, build_images  # noqa: E402
from tests.registry_fixture import docker_registry, free_port  # noqa: E402

STACK = """\
name: bench{sfx}
services:
  web:
    image: {web}
    ports: ["127.0.0.1:{port}:80"]
    healthcheck: {{test: ["CMD", "wget", "-q", "-O-", "http://localhost/index.html"], interval: 100ms, retries: 50}}
  api:
    image: {web}
    environment: {{ROLE: api}}
    healthcheck: {{test: ["CMD", "wget", "-q", "-O-", "http://localhost/index.html"], interval: 100ms, retries: 50}}
  cache:
    image: {busybox}
    command: sleep 100000
    healthcheck: {{test: ["CMD", "true"], interval: 100ms}}
  front:
    image: {busybox}
    command: sleep 100000
    links: ["api:backend", web]
    depends_on: {{web: {{condition: service_healthy}}, api: {{condition: service_healthy}}}}
  worker:
    image: {busybox}
    command: sleep 100000
    depends_on: {{cache: {{condition: service_healthy}}}}
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def shim_rss_under_checks(sup: Path, window: float = 2.0) -> tuple[dict[str, int], dict[str, int]]:
    """Peak VmRSS of each live shim over `window` seconds, and how many checks each ran meanwhile."""
    pids = {p.name[: -len(".pid")]: int(p.read_text()) for p in sup.glob("*.pid") if not p.name.endswith("health.pid")}
    before = {cid: (supervise.health(cid, sup) or supervise.Health("none")).checks for cid in pids}
    peak = dict.fromkeys(pids, 0)
    end = time.monotonic() + window
    while time.monotonic() < end:
        for cid, pid in pids.items():
            peak[cid] = max(peak[cid], rss_kib(pid))
        time.sleep(0.05)
    checks = {cid: (supervise.health(cid, sup) or supervise.Health("none")).checks - before[cid] for cid in pids}
    return peak, checks


def conmon_peer(work: Path, n: int = 3) -> list[int]:
    """VmRSS of podman's conmon supervising n busybox `sleep`s under runc ([] without podman)."""
    if not (shutil.which("podman") and shutil.which("conmon") and shutil.which("runc")):
        return []
    tar = work / "pm-bb.tar"
    with tarfile.open(tar, "w") as t:
        t.add(make_rootfs(work / "pm-rootfs"), arcname=".")
    runroot = tempfile.mkdtemp(prefix="bench-pm-", dir="/run")   # podman wants a short runroot
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    base = ["podman", "--root", str(work / "pm-storage"), "--runroot", runroot, "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc"]

    def pm(*args):
        return subprocess.run(base + list(args), capture_output=True, text=True, timeout=120, check=True).stdout

    try:
        pm("import", str(tar), "localhost/bench-bb:latest")
        names = [f"bench-peer-{i}" for i in range(n)]
        for name in names:   # (ulimits: this VM refuses podman's defaults, as it does runc's)
            pm("run", "-d", "--name", name, "--net", "none", "--ulimit", f"nofile={nofile}:{nofile}",
               "--ulimit", "nproc=4096:4096", "localhost/bench-bb", "sleep", "100000")
        return [rss_kib(int(pm("inspect", "--format", "{{.State.ConmonPid}}", name).strip())) for name in names]
    finally:
        subprocess.run(base + ["rm", "-f", "-t", "0", "-a"], capture_output=True, timeout=120)
        subprocess.run(base + ["rmi", "-f", "-a"], capture_output=True, timeout=120)
        shutil.rmtree(runroot, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    build_runtime()
    work = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    try:
        run_bench(work, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_bench(work: Path, runs: int) -> None:
    with docker_registry(work / "registry") as reg, loop_btrfs(work / "fs", Runner(), size="1G") as mnt:
        refs = build_images(work, reg.address)
        env = Env(work, mnt, refs)
        path = work / "stack.yml"
        path.write_text(STACK.format(sfx=env.sfx, web=refs["web"], busybox=refs["busybox"], port=free_port()))
        try:
            env.provision("up", "-f", str(path))      # warm-up: pulls the images into the store
            env.provision("down", "-f", str(path))
            times: dict[str, list[float]] = {"up": [], "re-up": [], "down": []}
            peak: dict[str, int] = {}
            checks: dict[str, int] = {}
            names: dict[str, str] = {}
            for run in range(runs):
                for phase, argv in (("up", ["up"]), ("re-up", ["up"]), ("down", ["down"])):
                    if phase == "down" and run == runs - 1:
                        sup = env.root / "containers" / ".supervise"
                        peak, checks = shim_rss_under_checks(sup)
                        for c in json.loads(env.provision("container", "ps", "--json").stdout):
                            names[c["id"]] = c["name"].removeprefix(f"bench{env.sfx}-")
                    t = time.monotonic()
                    env.provision(*argv, "-f", str(path))
                    times[phase].append(time.monotonic() - t)
            print(f"provision up: 5 busybox services (3 healthchecks, 2 service_healthy waits), images present, "
                  f"{runs} runs")
            print(f"{'phase':<40}{'median':>10}{'min':>10}{'max':>10}")
            for k, v in times.items():
                label = {"up": "up until all healthy (CLI)", "re-up": "re-up, nothing changed (CLI)",
                         "down": "down (CLI)"}[k]
                print(f"{label:<40}{statistics.median(v):>9.3f}s{min(v):>9.3f}s{max(v):>9.3f}s")
            print("supervision RSS per container, peak over 2 s (provision-shim, health checks included):")
            for cid in sorted(peak, key=lambda c: names.get(c, c)):
                active = f"{checks[cid]} checks in the window" if checks[cid] else "no healthcheck"
                print(f"  {names.get(cid, cid[:12]):<8}{peak[cid]:>6} KiB   ({active})")
            peer = conmon_peer(env.work)
            rss = list(peak.values())
            if peer:
                print(f"peer, podman's conmon (supervision only, no checks), {len(peer)} containers: "
                      f"{', '.join(f'{r} KiB' for r in peer)}")
                print(f"ratio provision-shim / conmon (medians): "
                      f"{statistics.median(rss) / statistics.median(peer):.2f}")
            print("separate health monitor processes: none (the shims run the checks)")
            med = statistics.median(times["up"])
            print(f"target: all healthy <= 3.0s -> {'met' if med <= 3.0 else 'NOT met'} ({med:.3f}s); "
                  f"shim RSS <= 2 MB -> {'met' if rss and max(rss) <= 2048 else 'NOT met'}")
        finally:
            env.provision("down", "-f", str(path), check=False)
            env.cleanup()


if __name__ == "__main__":
    main()
