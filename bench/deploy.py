"""`provision deploy --cloud local` of the all-in-one stack: the boot-time breakdown, measured.

The peer is the published RightScale table (2014, Docker on a cloud VM): launch and boot 53 s,
prepare VM environment 36 s, install and launch five off-the-shelf containers 4m57s, custom
apps 2m23s, total 8m50s. Same rows here, per host, from `provision deploy --json`. The images
(Debian-package redis, nginx, mariadb, a python3 app, busybox stand-ins) are built by the
project's builder (cached under /var/tmp) and served by Debian's docker-registry on loopback.

Run as root from the repo root:  python3 bench/deploy.py [--keep]
It deploys once to a fresh VM (cold: launch + everything), again unchanged (warm), and destroys.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.deploy.pipeline import PHASES, fmt_seconds  # noqa: E402
from provisioner.imagebuild.recipes import build, push  # noqa: E402
from provisioner.runner import Runner  # noqa: E402
from tests.registry_fixture import docker_registry, free_port  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "allinone-stack.yml"
IMAGES = {"zookeeper": "debian-zookeeper", "redis": "debian-redis", "nginx": "debian-nginx", "mariadb": "debian-mariadb",
          "python-app": "debian-python-app", "busybox": "busybox"}
RIGHTSCALE = {"launch": 53, "prepare": 36, "containers": 4 * 60 + 57 + 2 * 60 + 23, "total": 8 * 60 + 50}


def provision(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=3600)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", action="store_true", help="leave the VM running")
    args = ap.parse_args()
    runner = Runner()
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        env = {"XDG_CONFIG_HOME": str(tmp / "config")}
        with docker_registry(tmp / "registry") as reg:
            t = time.monotonic()
            for name, recipe in IMAGES.items():
                build(recipe, tmp / recipe, runner)
                push(tmp / recipe, f"{reg.address}/allinone/{name}:1", runner=runner)
            print(f"images built and pushed in {time.monotonic() - t:.0f}s", file=sys.stderr)
            port = free_port()
            stack = tmp / "allinone.yml"
            stack.write_text(EXAMPLE.read_text().replace("127.0.0.1:5000/", f"{reg.address}/")
                             .replace('"8000:80"', f'"{port}:80"'))
            runs = []
            try:
                for label in ("cold", "warm"):
                    proc = provision(root, env, "deploy", "--cloud", "local", "-f", str(stack), "--json")
                    sys.stderr.write(proc.stderr[-4000:])
                    if proc.returncode != 0:
                        print(f"deploy ({label}) failed", file=sys.stderr)
                        return 1
                    (host,) = json.loads(proc.stdout)["hosts"]
                    runs.append((label, host))
            finally:
                if not args.keep:
                    provision(root, env, "destroy", "allinone", "--cloud", "local", "--yes")
    print("| phase | RightScale 2014 | cold deploy | deploy again (unchanged) |")
    print("|---|---|---|---|")
    for key, label in PHASES:
        peer = fmt_seconds(RIGHTSCALE[key]) if key in RIGHTSCALE else "-"
        cells = [("reused" if key == "launch" and not h["launched"] else fmt_seconds(h["seconds"].get(key)))
                 for _, h in runs]
        print(f"| {label} | {peer} | {' | '.join(cells)} |")
    cold = runs[0][1]["seconds"]
    print(f"\nall healthy after boot: {cold['total'] - cold['launch']:.0f}s "
          f"(target: <= 30s after the VM booted); services: "
          + ", ".join(f"{s['service']} {s['health']}" for s in runs[0][1]["services"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
