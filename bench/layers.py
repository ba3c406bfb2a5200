"""Layer application speed: the store vs umoci vs GNU tar on a real Debian rootfs image.

Builds (or reuses) the `debian-redis` test image (mmdebstrap, cached), then, on a fresh
loop-backed btrfs each run, times:
  store      Store.add_layer for every layer (btrfs snapshots + apply_layer + diff_id checks)
  apply      apply_layer for every layer into one plain directory (no btrfs subvolumes)
  umoci      `umoci unpack` of the same OCI layout (Go, the reference)
  tar        `tar -xzf` of every layer blob in order (GNU tar + gzip; no whiteouts/hashing)

Run as root from the repo root:  python3 bench/layers.py --runs 3
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.images.layers import apply_layer  # noqa: E402
from provisioner.images.store import Store  # noqa: E402
from provisioner.imagebuild.layout import read_image  # noqa: E402
from provisioner.imagebuild.load import load_layout  # noqa: E402
from provisioner.imagebuild.loopfs import loop_btrfs  # noqa: E402
from provisioner.imagebuild.recipes import build  # noqa: E402
from provisioner.runner import Runner  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--recipe", default="debian-redis")
    args = ap.parse_args()
    runner = Runner()
    work = Path(tempfile.mkdtemp(prefix="bench-layers-"))
    try:
        layout = work / "layout"
        build(args.recipe, layout, runner)
        manifest, config, _ = read_image(layout, "latest")
        blobs = [layout / "blobs/sha256" / d["digest"].split(":", 1)[1] for d in manifest["layers"]]
        compressed = sum(b.stat().st_size for b in blobs)
        entries = size = 0
        times: dict[str, list[float]] = {k: [] for k in ("store", "apply", "umoci", "tar")}
        for run in range(args.runs):
            with loop_btrfs(work / f"fs{run}", runner, size="3G") as mnt:
                t = time.monotonic()
                load_layout(Store(mnt / "root", runner), layout, "latest")
                times["store"].append(time.monotonic() - t)

                t = time.monotonic()
                entries = size = 0
                for d, b in zip(manifest["layers"], blobs):
                    with open(b, "rb") as f:
                        r = apply_layer(f, d["mediaType"], mnt / "apply")
                    entries += r.entries
                    size += r.size
                times["apply"].append(time.monotonic() - t)

                t = time.monotonic()
                runner.run(["umoci", "unpack", "--image", f"{layout}:latest", str(mnt / "umoci")])
                times["umoci"].append(time.monotonic() - t)

                (mnt / "tar").mkdir()
                t = time.monotonic()
                for b in blobs:
                    runner.run(["tar", "-xzf", str(b), "-C", str(mnt / "tar")])
                times["tar"].append(time.monotonic() - t)
        print(f"{args.recipe}: {len(blobs)} layers, {entries} tar entries, {size / 1e6:.0f} MB uncompressed, "
              f"{compressed / 1e6:.0f} MB compressed; {args.runs} runs on fresh loop-backed btrfs; "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"{'method':<8}{'median':>9}{'min':>9}{'entries/s':>11}{'MB/s':>8}  (rates from the median)")
        for k, v in times.items():
            med = statistics.median(v)
            print(f"{k:<8}{med:>8.2f}s{min(v):>8.2f}s{entries / med:>11.0f}{size / med / 1e6:>8.0f}")
        print(f"store / umoci = {statistics.median(times['store']) / statistics.median(times['umoci']):.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
