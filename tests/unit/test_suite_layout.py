"""The suite's own shape: pytest imports test modules by basename (rootdir-relative, no packages
under tests/), so two test files with the same name in different tiers stop collection of the
whole suite — which only shows when every tier is collected together, as .ci/run does."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique_across_tiers():
    where = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        if "__pycache__" in path.parts:
            continue
        where[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert clashes == {}
    assert len(where) > 100  # the walk really saw the suite
