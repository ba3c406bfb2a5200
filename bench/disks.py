#!/usr/bin/env python3
"""Benchmark: how long `provision host disks` takes to prepare a host's disks.

Four sparse loop devices (3 striped as the ephemeral btrfs raid0 + 1 volume, the README demo's
layout). Each run starts from blank disks (wipefs -a), then times discover (udev + blkid
probes + mountinfo), plan (pure) and apply (mkfs, mounts, fstab). Also timed: a converged
re-run (what every boot after the first pays) and a "reboot" (unmounted, ours → mount only).
Prints medians over --runs. Needs root; touches only the loop devices it creates.

    sudo python3 bench/disks.py --runs 7

The CLI row runs `python3 -m provisioner.cli.main host disks apply` as a new process each time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.disks.apply import apply  # noqa: E402
from provisioner.disks.config import parse_config  # noqa: E402
from provisioner.disks.discover import gather  # noqa: E402
from provisioner.disks.plan import plan  # noqa: E402
from provisioner.runner import Runner  # noqa: E402
from provisioner import yamlutil  # noqa: E402


def sh(*argv, check=True):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(map(str, argv))} failed: {r.stderr.strip()}")
    return r


def attach(path: Path) -> str:
    for _ in range(20):
        r = sh("losetup", "--find", "--show", path, check=False)
        if r.returncode == 0:
            return r.stdout.strip()
        time.sleep(0.1)
    raise SystemExit(f"bench: cannot attach {path}: {r.stderr.strip()}")


def wipe(dev: str, timeout: float = 15.0) -> None:
    """wipefs -a, polling while the device is busy: on a shared machine another process's new
    mount namespace can hold a copy of our mount for a moment after we unmount."""
    deadline = time.monotonic() + timeout
    while True:
        r = sh("wipefs", "-a", dev, check=False)
        if r.returncode == 0:
            return
        if "busy" not in r.stderr or time.monotonic() > deadline:
            raise SystemExit(f"bench: wipefs -a {dev}: {r.stderr.strip()}")
        time.sleep(0.1)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def one_pass(runner, cfg, fstab):
    facts, t_discover = timed(lambda: gather(runner, cfg.mountpoints(), fstab_path=str(fstab)))
    p, t_plan = timed(lambda: plan(facts, cfg))
    _, t_apply = timed(lambda: apply(p, runner, fstab_path=str(fstab)))
    return p, t_discover, t_plan, t_apply


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--size-mib", type=int, default=300)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-disks."))
    loops: list[str] = []
    mnt = work / "mnt"
    fstab = work / "fstab"
    runner = Runner()
    rows = {"fresh: discover": [], "fresh: plan": [], "fresh: apply": [], "fresh: total": [],
            "converged re-run (discover+plan)": [], "reboot: total (mount only)": [],
            "fresh via CLI (incl. python start)": []}
    try:
        for i in range(4):
            f = work / f"d{i}.img"
            with open(f, "wb") as fh:
                fh.truncate(args.size_mib * 2**20)
            loops.append(attach(f))
        text = (f"ephemeral:\n  mount: {mnt}/eph\n  devices: [{', '.join(loops[:3])}]\n"
                f"volumes:\n  - name: data\n    match: {{device: {loops[3]}}}\n    mount: {mnt}/data\n")
        cfg = parse_config(yamlutil.loads(text, "bench.yaml"), "bench.yaml")

        (work / "disks.yaml").write_text(text)

        def unmount():
            for m in (mnt / "data", mnt / "eph"):
                if os.path.ismount(m):
                    sh("umount", m)

        def blank():
            unmount()
            for d in loops:
                sh("btrfs", "device", "scan", "--forget", d, check=False)
                wipe(d)
            fstab.write_text("")

        for _ in range(args.runs):
            blank()
            p, t_d, t_p, t_a = one_pass(runner, cfg, fstab)
            assert any(type(a).__name__ == "Mkfs" for a in p.actions)
            rows["fresh: discover"].append(t_d)
            rows["fresh: plan"].append(t_p)
            rows["fresh: apply"].append(t_a)
            rows["fresh: total"].append(t_d + t_p + t_a)

            p, t_d, t_p, t_a = one_pass(runner, cfg, fstab)
            assert p.empty, p.describe()
            rows["converged re-run (discover+plan)"].append(t_d + t_p)

            unmount()
            p, t_d, t_p, t_a = one_pass(runner, cfg, fstab)
            assert [type(a).__name__ for a in p.actions] == ["DeviceScan", "Mount", "Mount"], p.describe()
            rows["reboot: total (mount only)"].append(t_d + t_p + t_a)

            blank()
            cmd = [sys.executable, "-m", "provisioner.cli.main", "host", "disks", "apply",
                   "--config", str(work / "disks.yaml"), "--fstab", str(fstab)]
            r, t = timed(lambda: subprocess.run(cmd, capture_output=True, text=True))
            if r.returncode != 0:
                raise SystemExit(f"bench: CLI apply failed: {r.stderr.strip()}")
            rows["fresh via CLI (incl. python start)"].append(t)
    finally:
        for m in (mnt / "data", mnt / "eph"):
            sh("umount", m, check=False)
        for d in loops:
            sh("btrfs", "device", "scan", "--forget", d, check=False)
            sh("losetup", "-d", d, check=False)
        sh("rm", "-rf", work, check=False)

    print(f"provision host disks: 4 loop devices x {args.size_mib} MiB (3 ephemeral raid0 + 1 volume), "
          f"{args.runs} runs")
    print(f"{'phase':<36} {'median':>9} {'min':>9} {'max':>9}")
    for name, vals in rows.items():
        print(f"{name:<36} {statistics.median(vals):>8.3f}s {min(vals):>8.3f}s {max(vals):>8.3f}s")
    target = 3.0
    med = statistics.median(rows["fresh: total"])
    print(f"target: fresh total <= {target:.1f}s -> {'met' if med <= target else 'MISSED'} ({med:.3f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
