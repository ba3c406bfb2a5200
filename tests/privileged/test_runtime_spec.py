"""Corners of the runtime spec, observed from inside busybox containers under provision-runtime
and, where both are parametrized, runc: root propagation, cgroup namespace, network class and
priorities, masked/read-only paths naming device nodes, and the empty hostname.
"""
from __future__ import annotations

import os
import subprocess
import uuid

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


# -- cgroup namespace -------------------------------------------------------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("tree", ["hybrid", "v2"])
@pytest.mark.parametrize("cgroupns", [True, False], ids=["cgroupns", "no-cgroupns"])
def test_cgroup_namespace(runtime, tree, cgroupns, runtime_bin, rootfs, tmp_path):
    """With a cgroup namespace in linux.namespaces the container's cgroup is the root of
    every hierarchy it sees (/proc/self/cgroup: "0::/", "4:memory:/"), for its init and for
    an exec'd process alike; without one it sees its real path.  On this hybrid host and on
    a pure cgroup v2 tree (a private cgroup2 mount on /sys/fs/cgroup)."""
    if tree == "hybrid" and h.V2_MODE:
        pytest.skip("PRT_CGROUP_V2=1 runs every runtime call on a pure v2 tree")
    cgpath = f"/prt-test/cgns-{uuid.uuid4().hex[:8]}"

    def config(cfg):
        if not cgroupns:
            cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "cgroup"]
    b = bundle(tmp_path, rootfs, cgpath=cgpath, args=["sh", "-c", "cat /proc/self/cgroup > /tmp/init; sleep 60"],
               config=config)
    r = RT(runtime, runtime_bin, tmp_path / "state")
    cid = r.new_id()

    wrap = h.V2_WRAP if tree == "v2" and not h.V2_MODE else []

    def call(*args):
        # the init inherits run's stdio: a file, not a pipe that would stay open
        with open(tmp_path / "call.err", "w+") as err:
            detach = args[0] == "run"
            proc = subprocess.run(wrap + r.base + [str(a) for a in args], stdout=subprocess.DEVNULL if detach else
                                  subprocess.PIPE, stderr=err, text=True, timeout=60, stdin=subprocess.DEVNULL)
            err.seek(0)
            assert proc.returncode == 0, f"{args}: {err.read()}"
        return proc.stdout
    try:
        call("run", "--detach", "--bundle", b, cid)
        views = {"init": h.wait_for(lambda: call("exec", cid, "cat", "/tmp/init"), what="the init's view"),
                 "exec": call("exec", cid, "cat", "/proc/self/cgroup")}
    finally:
        call("delete", "--force", cid)
    for who, view in views.items():
        lines = dict(line.split(":", 1)[1].rsplit(":", 1) for line in view.splitlines())
        # the v2 line, or on the hybrid host a v1 controller's (its unified tree has none)
        key = "" if tree == "v2" else "pids"
        assert lines[key] == ("/" if cgroupns else cgpath), f"{runtime} {who}: {view}"
        if cgroupns:
            assert set(lines.values()) == {"/"}, f"{runtime} {who}: {view}"
