"""Corners of the runtime spec, observed from inside busybox containers under provision-runtime
and, where both are parametrized, runc: root propagation, cgroup namespace, network class and
priorities, masked/read-only paths naming device nodes, and the empty hostname.
"""
from __future__ import annotations

import os
import subprocess

import pytest

import runtime_helpers as h
from runtime_helpers import RT, RUNTIMES, bundle, rootfs, runtime_bin  # noqa: F401  (fixtures are used by name)

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, cgroups, mounts)"),
    pytest.mark.skipif(not os.path.exists(h.BUSYBOX), reason="needs busybox-static (/bin/busybox)"),
]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_rshared_root_inside_a_shared_mount(runtime, runtime_bin, tmp_path):
    """rootfsPropagation rshared with the rootfs on a shared mount (a volume directory, a
    kubelet pod dir): pivot_root(2) refuses a new root whose parent mount is shared, so the
    runtime must make just that parent private first, as runc does.  Inside, provision-runtime
    applies the propagation to the new / as well (runc 1.1 leaves it private)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    subprocess.run(["mount", "--make-shared", str(shared)], check=True)
    try:
        root = h.make_rootfs(shared / "rootfs")

        def config(cfg):
            cfg["linux"]["rootfsPropagation"] = "rshared"
        script = "awk '$5 == \"/\" {print \"root=\" $7}' /proc/self/mountinfo"
        b = bundle(tmp_path, root, args=["sh", "-c", script], config=config)
        r = RT(runtime, runtime_bin, tmp_path / "state")
        proc = r.run(b)
        r.cleanup()
        assert proc.returncode == 0, proc.stderr
        if runtime == "provision-runtime":
            assert h.parse_kv(proc.stdout)["root"].startswith("shared:"), proc.stdout
    finally:
        subprocess.run(["umount", "--recursive", "--lazy", str(shared)], check=False)
