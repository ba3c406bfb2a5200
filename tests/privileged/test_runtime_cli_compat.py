"""The runc command line as containerd's runc shim (io.containerd.runc.v2, through go-runc)
uses it, call by call, under provision-runtime and runc alike: what each call prints and
when it succeeds.  test_runtime_containerd.py drives the same calls through containerd.
"""
from __future__ import annotations

import json
import os
import re
import uuid

import pytest

import runtime_helpers as h
from runtime_helpers import RT, RUNTIMES, bundle, prt, rootfs, runtime_bin  # noqa: F401  (fixtures are used by name)

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


def _exited(r, tmp_path, rootfs, name="b", **kw):
    """A created-and-started container whose init has exited (state: stopped)."""
    cid = shim_id()
    r.ids.append(cid)
    r.cli("create", "--bundle", bundle(tmp_path, rootfs, name, args=["true"], **kw), cid)
    r.cli("start", cid)
    h.wait_for(lambda: r.state(cid)["status"] == "stopped", what="the init to exit")
    return cid


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_kill_after_the_init_exited(runtime, runtime_bin, rootfs, tmp_path):
    """containerd's shim sends `kill --all ID SIGKILL` once the init of a container in a
    pod's pid namespace has exited: that succeeds (nothing is left to signal).  A plain
    `kill` of a stopped container fails with runc's words, "container not running", which
    the shim takes as "already gone"."""
    r = RT(runtime, runtime_bin, tmp_path / "state")
    try:
        cid = _exited(r, tmp_path, rootfs)
        assert r.cli("kill", "--all", cid, "SIGKILL", check=False).returncode == 0
        assert r.cli("kill", "--all", cid, "9", check=False).returncode == 0
        proc = r.cli("kill", cid, "SIGKILL", check=False)
        assert proc.returncode == 1
        assert "container not running" in proc.stderr
        assert r.cli("delete", cid, check=False).returncode == 0
        proc = r.cli("kill", "--all", cid, "SIGKILL", check=False)
        assert proc.returncode == 1 and "does not exist" in proc.stderr
    finally:
        r.cleanup()


def test_sigkill_reaches_every_process_without_a_pid_namespace(prt, rootfs, tmp_path):
    """Without a pid namespace of its own the init's death takes nobody along: SIGKILL goes
    to every process of the container's cgroup (runc >= 1.2 does the same; 1.1 signals the
    init only)."""
    def config(cfg):
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "pid"]
    cgpath = f"/prt-test/kill-{uuid.uuid4().hex[:8]}"
    cid = prt.new_id()
    prt.cli("create", "--bundle", bundle(tmp_path, rootfs, cgpath=cgpath, config=config,
                                         args=["sh", "-c", "sleep 300 & sleep 300 & wait"]), cid)
    prt.cli("start", cid)
    procs = h.procs_file(cgpath)
    h.wait_for(lambda: len(procs.read_text().split()) == 3, what="the init and its two children")
    prt.cli("kill", cid, "KILL")
    h.wait_for(lambda: not procs.exists() or procs.read_text().split() == [], what="every process to die")
    assert prt.state(cid)["status"] == "stopped"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_systemd_cgroup_flag(runtime, runtime_bin, rootfs, tmp_path):
    """containerd's shim passes --systemd-cgroup to every call when SystemdCgroup = true.
    runc accepts it everywhere; only create/run use it: they want a "slice:prefix:name"
    cgroupsPath, then a running systemd, and fail without leaving anything otherwise."""
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs here: runc would use it, this runtime has no systemd driver")
    r = RT(runtime, runtime_bin, tmp_path / "state")
    try:
        cid = shim_id()
        r.ids.append(cid)
        r.cli("create", "--bundle", bundle(tmp_path, rootfs, args=["sleep", "60"]), cid)
        sd = RT(runtime, runtime_bin, r.root)
        sd.base = r.argv_with("--systemd-cgroup")
        assert sd.state(cid)["status"] == "created"
        sd.cli("start", cid)
        sd.cli("kill", cid, "KILL")
        h.wait_for(lambda: sd.state(cid)["status"] == "stopped", what="the container to stop")
        sd.cli("delete", cid)
        for path, message in (("/prt-test/plain", 'slice:prefix:name'),
                              ("system.slice:prt:x", "systemd not running on this host")):
            cid = shim_id()
            b = bundle(tmp_path, rootfs, f"b-{path[:3]}", cgpath=path, args=["true"])
            proc = sd.cli("create", "--bundle", b, cid, check=False)
            assert proc.returncode == 1 and message in proc.stderr, proc.stderr
            assert not (r.root / cid).exists()
    finally:
        r.cleanup()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_state_and_log_as_runc_writes_them(runtime, runtime_bin, rootfs, tmp_path):
    """go-runc decodes `state` (id, pid, status, bundle, rootfs, created in RFC 3339 to the
    nanosecond, owner; annotations only when there are any) and, when a call fails, reads
    the --log file's last JSON line of level "error" for the reason."""
    r = RT(runtime, runtime_bin, tmp_path / "state")
    log = tmp_path / "log.json"
    r.base = r.argv_with("--log", log, "--log-format", "json")
    try:
        cid = shim_id()
        r.ids.append(cid)
        r.cli("create", "--bundle", bundle(tmp_path, rootfs, args=["sleep", "60"]), cid)
        st = r.state(cid)
        assert set(st) == {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}, st
        assert st["id"] == cid and st["status"] == "created" and st["pid"] > 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}Z", st["created"]), st["created"]
        assert r.cli("kill", "no-such-container", "9", check=False).returncode == 1
        last = json.loads(log.read_text().splitlines()[-1])
        assert set(last) == {"level", "msg", "time"} and last["level"] == "error"
        assert "does not exist" in last["msg"]
    finally:
        r.cleanup()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_delete_force(runtime, runtime_bin, rootfs, tmp_path):
    """containerd's shim follows `delete` with `delete --force`: for a container that does
    not exist that succeeds (a plain delete says "does not exist").  And --force kills
    what is left in a stopped container's cgroup: without a pid namespace of its own, the
    init's children outlive it."""
    r = RT(runtime, runtime_bin, tmp_path / "state")
    try:
        gone = shim_id()
        assert r.cli("delete", "--force", gone, check=False).returncode == 0
        proc = r.cli("delete", gone, check=False)
        assert proc.returncode == 1 and "does not exist" in proc.stderr

        def config(cfg):
            cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "pid"]
        cgpath = f"/prt-test/del-{uuid.uuid4().hex[:8]}"
        cid = shim_id()
        r.ids.append(cid)
        r.cli("create", "--bundle", bundle(tmp_path, rootfs, cgpath=cgpath, config=config,
                                           args=["sh", "-c", "sleep 300 & echo $! > /tmp/left; exit 0"]), cid)
        r.cli("start", cid)
        procs = h.procs_file(cgpath)
        h.wait_for(lambda: r.state(cid)["status"] == "stopped", what="the init to exit")
        left = [int(p) for p in procs.read_text().split()]
        assert len(left) == 1, "the background sleep outlives the init"
        r.cli("delete", "--force", cid)
        h.wait_for(lambda: not os.path.exists(f"/proc/{left[0]}") or
                   open(f"/proc/{left[0]}/stat").read().split()[2] == "Z", what="the leftover to die")
        assert h.cgroup_dirs(cgpath) == []
    finally:
        r.cleanup()
