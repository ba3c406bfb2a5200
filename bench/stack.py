"""`provision up` of a 5-service busybox stack with its images already in the store.

Builds the test images (busybox httpd / busybox) with the project's builder, pushes them to
Debian's docker-registry on loopback, pulls them once (a warm-up up + down), then per run times:
  up (CLI)       `provision up -f stack.yml` as a fresh process: returns once every service with a
                 healthcheck is healthy (3 of 5 have one; two wait on service_healthy)
  re-up (CLI)    `provision up` again, nothing changed (plans nothing, restarts nothing)
  down (CLI)     `provision down`
and, after the last up, each container's supervision RSS (the provision-shim process) and the
stack's health monitor's RSS.

Run as root from the repo root:  python3 bench/stack.py --runs 5
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.containers import healthmon  # noqa: E402
from provisioner.imagebuild.loopfs import loop_btrfs  # noqa: E402
from provisioner.runner import Runner  # noqa: E402
from tests.privileged.runtime_helpers import build_runtime  # noqa: E402
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
            rss: list[int] = []
            mon_rss = 0
            for run in range(runs):
                for phase, argv in (("up", ["up"]), ("re-up", ["up"]), ("down", ["down"])):
                    if phase == "down" and run == runs - 1:
                        sup = env.root / "containers" / ".supervise"
                        rss = [rss_kib(int(p.read_text())) for p in sup.glob("*.pid")]
                        mon = healthmon.running_pid(env.root, f"bench{env.sfx}")
                        mon_rss = rss_kib(mon) if mon else 0
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
            print(f"supervision RSS per container (provision-shim): {', '.join(f'{r} KiB' for r in sorted(rss))}")
            print(f"the stack's health monitor (one python process per stack): {mon_rss} KiB RSS")
            med = statistics.median(times["up"])
            print(f"target: all healthy <= 3.0s -> {'met' if med <= 3.0 else 'NOT met'} ({med:.3f}s); "
                  f"shim RSS <= 2 MB -> {'met' if rss and max(rss) <= 2048 else 'NOT met'}")
        finally:
            env.provision("down", "-f", str(path), check=False)
            env.cleanup()


if __name__ == "__main__":
    main()
