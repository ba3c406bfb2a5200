"""Which healthcheck a container gets: the image's, changed by --health-* flags, replaced by a
stack's own, turned off by --no-healthcheck or a stack's disable."""
from __future__ import annotations

import pytest

from provisioner.runspec.health import HealthFlags, resolve
from provisioner.errors import ConfigError

IMAGE = {"Healthcheck": {"Test": ["CMD", "redis-cli", "ping"], "Interval": 5_000_000_000, "Timeout": 0,
                         "StartPeriod": 1_500_000_000, "Retries": 0}}


def test_the_images_check_with_docker_defaults_for_zero_fields():
    assert resolve(HealthFlags(), IMAGE) == {"test": ["redis-cli", "ping"], "interval": 5.0, "timeout": 30.0,
                                             "retries": 3, "start_period": 1.5}
    shell = {"Healthcheck": {"Test": ["CMD-SHELL", "curl -f localhost"]}}
    assert resolve(HealthFlags(), shell)["test"] == ["/bin/sh", "-c", "curl -f localhost"]
    assert resolve(HealthFlags(), {"Healthcheck": {"Test": ["NONE"]}}) is None
    assert resolve(HealthFlags(), {}) is None


def test_flags_change_single_fields_and_disable_wins():
    got = resolve(HealthFlags(cmd="true", retries=7, timeout="2s"), IMAGE)
    assert got == {"test": ["/bin/sh", "-c", "true"], "interval": 5.0, "timeout": 2.0, "retries": 7,
                   "start_period": 1.5}
    assert resolve(HealthFlags(interval="1m30s"), IMAGE)["interval"] == 90.0
    assert resolve(HealthFlags(disable=True), IMAGE) is None
    stack = {"test": ["x"], "interval": 1.0, "timeout": 1.0, "retries": 1, "start_period": 0.0}
    assert resolve(HealthFlags(), IMAGE, stack) == stack
    assert resolve(HealthFlags(disable=True), IMAGE, stack) is None


@pytest.mark.parametrize("flags,image,msg", [
    (HealthFlags(interval="later"), IMAGE, "--health-interval: 'later' is not a duration"),
    (HealthFlags(interval="0s"), IMAGE, "--health-interval must be more than 0"),
    (HealthFlags(retries=-2), IMAGE, "--health-retries cannot be negative"),
    (HealthFlags(cmd="  "), IMAGE, "--health-cmd is empty"),
    (HealthFlags(disable=True, cmd="true"), IMAGE, "--no-healthcheck conflicts with --health-cmd"),
    (HealthFlags(retries=2), {}, "--health-retries without --health-cmd: the image has no HEALTHCHECK"),
])
def test_bad_flags_are_one_line(flags, image, msg):
    with pytest.raises(ConfigError) as e:
        resolve(flags, image)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_a_stack_disable_is_kept_and_only_it_changes_the_service_hash(tmp_path):
    from provisioner.compose.plan import config_hash
    from provisioner.stack import load_stack

    f = tmp_path / "s.yml"
    f.write_text("name: s\nservices:\n  a:\n    image: x:1\n  b:\n    image: x:1\n    healthcheck: {disable: true}\n"
                 "  c:\n    image: x:1\n    healthcheck: {test: [NONE]}\n")
    specs = load_stack(f, hosts_required=False).services
    assert [specs[n].health_disabled for n in "abc"] == [False, True, True]
    from dataclasses import replace
    assert config_hash(specs["a"], {}) != config_hash(replace(specs["a"], health_disabled=True), {})
