"""`provision deploy --cloud local` of the all-in-one stack: the boot-time breakdown, measured.

The peer is the published RightScale table (2014, Docker on a cloud VM): launch and boot 53 s,
prepare VM environment 36 s, install and launch five off-the-shelf containers 4m57s, custom
apps 2m23s, total 8m50s. Same rows here, per host, from `provision deploy --json`. The images
(Debian-package redis, nginx, mariadb, a python3 app, busybox stand-ins) are built by the
project's builder (cached under /var/tmp) and served by Debian's docker-registry on loopback.

Run as root from the repo root:  python3 bench/deploy.py [--example hello|allinone] [--images pull|push]
                                                    [--agent-change] [--switch] [--keep]
It deploys once to a fresh VM (cold: launch + everything), again unchanged (warm), with
--agent-change once more after changing the agent (a comment added to a copy of the package, so
the host gets a new agent wheel: the "agent install" of a new version on a reused host), and
destroys. The agent is deployed from a copy of this checkout, so the checkout is never touched.
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

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "allinone": (REPO / "examples" / "allinone-stack.yml", "allinone", '"8000:80"',
                 {"zookeeper": "debian-zookeeper", "redis": "debian-redis", "nginx": "debian-nginx",
                  "mariadb": "debian-mariadb", "python-app": "debian-python-app", "busybox": "busybox"}),
    "hello": (REPO / "examples" / "hello.yml", "hello", '"8080:80"', {"busybox": "busybox"}),
}
RIGHTSCALE = {"launch": 53, "prepare": 36, "containers": 4 * 60 + 57 + 2 * 60 + 23, "total": 8 * 60 + 50}


def provision(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    # run from the code's own folder: `python -m` puts the working directory first on the path
    return subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=3600,
                          cwd=env.get("PYTHONPATH"))


def _copy_of_this_checkout(dest: Path) -> Path:
    """The package and native binaries as they are here, in `dest` (what the agent is made from)."""
    import shutil

    shutil.copytree(REPO / "provisioner", dest / "provisioner", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "templates", dest / "templates")
    for d in ("native/build", "native/shim/build"):
        shutil.copytree(REPO / d, dest / d)
    return dest


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--example", choices=sorted(EXAMPLES), default="allinone")
    ap.add_argument("--images", choices=["pull", "push"], default=None, help="deploy's --images (default: deploy's)")
    ap.add_argument("--code", type=Path, default=None,
                    help="deploy with the provisioner in this checkout instead (e.g. an older commit's worktree, "
                         "its native/ built); default: a copy of this one")
    ap.add_argument("--agent-change", action="store_true", help="then deploy a changed agent to the same host")
    ap.add_argument("--switch", action="store_true",
                    help="then change the web service's environment and deploy: the start-first switch's time "
                         "from healthy to traffic (hello)")
    ap.add_argument("--keep", action="store_true", help="leave the VM running")
    args = ap.parse_args()
    example, name, published, images = EXAMPLES[args.example]
    runner = Runner()
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        code = args.code.resolve() if args.code else _copy_of_this_checkout(tmp / "code")
        env = {"XDG_CONFIG_HOME": str(tmp / "config"), "PYTHONPATH": str(code)}
        with docker_registry(tmp / "registry") as reg:
            t = time.monotonic()
            for image, recipe in images.items():
                build(recipe, tmp / recipe, runner)
                push(tmp / recipe, f"{reg.address}/{name}/{image}:1", runner=runner)
            print(f"images built and pushed in {time.monotonic() - t:.0f}s", file=sys.stderr)
            port = free_port()
            stack = tmp / f"{name}.yml"
            stack.write_text(example.read_text().replace("127.0.0.1:5000/", f"{reg.address}/")
                             .replace(published, f'"{port}:80"'))
            runs = []
            labels = ["cold", "warm"] + (["new agent"] if args.agent_change else []) + \
                (["changed env"] if args.switch else [])
            try:
                for label in labels:
                    if label == "new agent":
                        init = code / "provisioner" / "__init__.py"
                        init.write_text(init.read_text() + f"# bench: a changed agent {time.time()}\n")
                    if label == "changed env":
                        text = stack.read_text()
                        stack.write_text(text.replace("    restart: always\n",
                                                      f"    restart: always\n    environment: {{BENCH: '{time.time()}'}}\n"))
                    mode = ["--images", args.images] if args.images else []
                    proc = provision(root, env, "deploy", "--cloud", "local", "-f", str(stack), *mode, "--json")
                    sys.stderr.write(proc.stderr[-4000:])
                    if proc.returncode != 0:
                        print(f"deploy ({label}) failed", file=sys.stderr)
                        return 1
                    (host,) = json.loads(proc.stdout)["hosts"]
                    runs.append((label, host))
            finally:
                if not args.keep:
                    provision(root, env, "destroy", name, "--cloud", "local", "--yes")
    print(f"{args.example}, --images {args.images or '(default)'}, code: {args.code or 'this checkout'}")
    print(f"| phase | RightScale 2014 | {' | '.join(label for label, _ in runs)} |")
    print("|---|---|" + "---|" * len(runs))
    for key, label in PHASES:
        peer = fmt_seconds(RIGHTSCALE[key]) if key in RIGHTSCALE else "-"
        cells = [("reused" if key == "launch" and not h["launched"] else fmt_seconds(h["seconds"].get(key)))
                 for _, h in runs]
        print(f"| {label} | {peer} | {' | '.join(cells)} |")
    for label, h in runs:
        if label == "warm":
            print(f"\nunchanged re-deploy: {h['seconds']['total']:.1f}s"
                  f"{' (one round trip: nothing changed)' if h.get('unchanged') else ''}")
        for a in h.get("actions") or []:
            if "switch" in a:
                sw = a["switch"]
                print(f"{label}: {a['service']} switched {sw['replaced']} -> {sw['container']} in "
                      f"{sw['seconds'] * 1000:.0f} ms (healthy -> traffic); deploy total {h['seconds']['total']:.1f}s")
    cold = runs[0][1]["seconds"]
    print(f"\nall healthy after boot: {cold['total'] - cold['launch']:.0f}s "
          f"(target: <= 30s after the VM booted); services: "
          + ", ".join(f"{s['service']} {s['health']}" for s in runs[0][1]["services"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
