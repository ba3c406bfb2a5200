"""Shared test setup: tiers, and skipping the privileged/vm tiers where they cannot run."""
from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    not_root = os.geteuid() != 0
    for item in items:
        if not_root and ("privileged" in item.keywords or "vm" in item.keywords):
            item.add_marker(pytest.mark.skip(reason="needs root (privileged tier)"))


def pytest_sessionstart(session):
    """The native binaries as the checkout's sources are now: the product never builds them at
    run time (scripts/install.sh and the wheel's build do), so a test run after editing C sources
    rebuilds them here first (make does nothing when they are current)."""
    import subprocess
    from pathlib import Path

    top = Path(__file__).resolve().parent.parent
    for d in (top / "native", top / "native" / "shim"):
        if (d / "Makefile").is_file():
            subprocess.run(["make", "-s", "-C", str(d)], check=True)
