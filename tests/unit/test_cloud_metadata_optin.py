"""The opt-in to the instance metadata service travels from the stack's `cloud_metadata: true` (or
`container run --cloud-metadata`) to the container's network endpoint; nothing else opts in.
(tests/privileged/test_network_attacks.py shows the endpoint's opt-in is what the kernel enforces.)"""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from provisioner.cli.main import cli
from provisioner.compose.engine import Stacks
from provisioner.compose.plan import config_hash
from provisioner.errors import StackError
from provisioner.runspec.request import from_flags
from provisioner.stack import load_stack

STACK = """\
name: s
services:
  agent:
    image: busybox
    cloud_metadata: true
  app:
    image: busybox
"""


def test_the_stack_key_reaches_the_run_request(tmp_path):
    p = tmp_path / "stack.yml"
    p.write_text(STACK)
    stack = load_stack(str(p), hosts_required=False)
    assert stack.services["agent"].cloud_metadata and not stack.services["app"].cloud_metadata
    engine = Stacks.__new__(Stacks)
    engine.insecure_registries = ()
    assert engine.request(stack, stack.services["agent"]).cloud_metadata is True
    assert engine.request(stack, stack.services["app"]).cloud_metadata is False
    # a stack that never asks keeps its services' hashes (no recreation on upgrade): the hash of the
    # fields a service had before cloud_metadata (and compose's later keys) were added
    import dataclasses, hashlib, json
    before = ("name", "image", "command", "entrypoint", "env", "env_files", "ports", "volumes", "links",
              "depends_on", "restart", "healthcheck", "memory", "cpu_quota", "user", "working_dir", "hostname",
              "security")
    full = dataclasses.asdict(stack.services["app"])
    data = {k: full[k] for k in before}
    data["env_file_texts"] = []
    assert config_hash(stack.services["app"], {}) == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    p.write_text(STACK.replace("cloud_metadata: true", "cloud_metadata: yes please"))
    with pytest.raises(StackError, match="cloud_metadata must be true or false"):
        load_stack(str(p), hosts_required=False)


def test_the_run_flag_reaches_the_container_config():
    from provisioner.containers.create import Creating

    req = from_flags("busybox", ("true",), cloud_metadata=True)
    assert Creating().check(req)["cloud_metadata"] is True
    assert "cloud_metadata" not in Creating().check(from_flags("busybox", ("true",)))
    help_text = CliRunner().invoke(cli, ["container", "run", "--help"]).output
    assert "--cloud-metadata" in help_text
