"""Shared test setup: tiers, and skipping the privileged/vm tiers where they cannot run."""
from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    not_root = os.geteuid() != 0
    for item in items:
        if not_root and ("privileged" in item.keywords or "vm" in item.keywords):
            item.add_marker(pytest.mark.skip(reason="needs root (privileged tier)"))
