"""The runc command line as containerd's runc shim (io.containerd.runc.v2, through go-runc)
uses it, call by call, under provision-runtime and runc alike: what each call prints and
when it succeeds.  test_runtime_containerd.py drives the same calls through containerd.
"""
from __future__ import annotations

import os
import uuid

import pytest

import runtime_helpers as h
from runtime_helpers import RT, RUNTIMES, bundle, rootfs, runtime_bin  # noqa: F401  (fixtures are used by name)

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, cgroups, mounts)"),
    pytest.mark.skipif(not os.path.exists(h.BUSYBOX), reason="needs busybox-static (/bin/busybox)"),
]


def shim_id() -> str:
    """Container ids as containerd makes them: 64 hex digits."""
    return uuid.uuid4().hex + uuid.uuid4().hex


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_deep_root_and_long_ids(runtime, runtime_bin, rootfs, tmp_path):
    """containerd puts the state under <Root>/<namespace>/<64-hex id>: deeper than the 107
    bytes a unix socket path may have, so create's start socket must not need a short path."""
    root = tmp_path / ("deep-" * 12) / "k8s.io"
    root.parent.mkdir()
    r = RT(runtime, runtime_bin, root)
    cid = shim_id()
    r.ids.append(cid)
    assert len(str(root / cid / "start.sock")) > 107
    try:
        r.cli("create", "--bundle", bundle(tmp_path, rootfs, args=["sleep", "60"]), cid)
        assert r.state(cid)["status"] == "created"
        r.cli("start", cid)
        assert r.state(cid)["status"] == "running"
    finally:
        r.cleanup()
