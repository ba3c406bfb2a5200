"""`python -m provisioner.host.restore --root ROOT`: what provisioner-containers.service runs at
boot. The same as `provision host restore-containers`, without importing the whole CLI (every
cloud driver, the registry client...): on a small or emulated host that import is most of the
time the unit takes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ProvisionerError
from ..runner import Runner
from .steps.containers import STATE_SUBDIR, restore

DEFAULT_ROOT = "/var/lib/provisioner"  # as provisioner.cli.app.DEFAULT_ROOT


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m provisioner.host.restore",
                                 description="Start again every container whose restart policy says so.")
    ap.add_argument("--root", type=Path, default=Path(DEFAULT_ROOT))
    ap.add_argument("--state-dir", type=Path, help=f"default: <root>/{STATE_SUBDIR}")
    args = ap.parse_args(argv)
    try:
        started = restore(args.root, args.state_dir or args.root / STATE_SUBDIR, Runner())
    except ProvisionerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"started: {', '.join(started)}" if started else "nothing to start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
