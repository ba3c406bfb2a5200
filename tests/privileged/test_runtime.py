"""provision-runtime observed from inside busybox containers, and the same bundles under runc.

Each test runs real containers and asserts on what the process inside sees (or on what is
left on the host afterwards). Tests parametrized over RUNTIMES run the identical bundle
under both provision-runtime and runc. Errors, cgroup v2 and device rules are in
test_runtime_limits.py.

With PRT_CGROUP_V2=1 every runtime call runs in a mount namespace whose /sys/fs/cgroup is a
cgroup2 mount, which is what a pure-v2 host looks like to a runtime;
test_runtime_limits.py::test_both_modules_on_pure_cgroup_v2 runs both modules that way (limits
the v2 tree cannot enforce on a hybrid host, where v1 owns the controllers, are left out).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runtime_helpers as h
from runtime_helpers import (  # noqa: F401  (fixtures are used by name)
    RT, RUNTIMES, USERNS_MAP, V2_MODE, bundle, prt, rootfs, rt, runtime_bin, v2_has, wait_for)

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, cgroups, mounts)"),
    pytest.mark.skipif(not os.path.exists(h.BUSYBOX), reason="needs busybox-static (/bin/busybox)"),
]

OBSERVE = r"""
echo pid=$$
echo host=$(hostname)
echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G)
echo cwd=$(pwd)
echo foo=$FOO
echo umask=$(umask)
grep -E '^(Cap|NoNewPrivs)' /proc/self/status | sed 's/:[[:space:]]*/=/'
echo oom=$(cat /proc/self/oom_score_adj)
echo nofile=$(ulimit -n); echo nofile_hard=$(ulimit -Hn)
echo masked=$(stat -c %t,%T /proc/timer_list)
echo procsys=$(grep ' /proc/sys ' /proc/self/mounts | cut -d' ' -f4 | cut -d, -f1)
echo rootfs=$(grep ' / ' /proc/self/mounts | head -1 | cut -d' ' -f4 | cut -d, -f1)
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  echo mem=$(cat /sys/fs/cgroup/memory.max); echo pids=$(cat /sys/fs/cgroup/pids.max)
else
  echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
  echo pids=$(cat /sys/fs/cgroup/pids/pids.max)
  echo shares=$(cat /sys/fs/cgroup/cpu/cpu.shares)
  echo quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
  echo cpus=$(cat /sys/fs/cgroup/cpuset/cpuset.cpus)
  echo bps=$(cat /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device)
fi
echo mkdir=$(mkdir /tmp/x 2>&1)
echo mounts=$(awk '{print $2":"$3}' /proc/self/mounts | sort | tr '\n' ' ')
echo devs=$(ls /dev | tr '\n' ' ')
"""

CAP_NBS = 1 << 10
CAP_KILL = 1 << 5
CAP_CHOWN = 1 << 0


ROOT_DEV = (os.major(os.stat("/").st_dev), os.minor(os.stat("/").st_dev))  # a real block device to throttle


def _observe_config(cfg):
    p = cfg["process"]
    p["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [2000, 3000], "umask": 0o027}
    p["cwd"] = "/data"
    p["env"].append("FOO=bar")
    p["capabilities"] = {
        "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
        "effective": ["CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    }
    p["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 768}]
    p["oomScoreAdj"] = 100
    if not V2_MODE or v2_has("memory", "pids", "cpu", "cpuset"):
        cfg["linux"]["resources"].update({
            "memory": {"limit": 64 << 20},
            "pids": {"limit": 64},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
        })
    if not V2_MODE:
        cfg["linux"]["resources"]["blockIO"] = {
            "throttleReadBpsDevice": [{"major": ROOT_DEV[0], "minor": ROOT_DEV[1], "rate": 1 << 20}]}
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18}],
    }


# -- the big observation, both runtimes -------------------------------------------------
EXPECTED = {
    "pid": "1", "host": "box", "uid": "1000", "gid": "1000", "groups": "1000 2000 3000",
    "cwd": "/data", "foo": "bar", "umask": "0027",
    "CapInh": f"{CAP_NBS:016x}", "CapPrm": f"{CAP_NBS:016x}", "CapEff": f"{CAP_NBS:016x}",
    "CapBnd": f"{CAP_NBS | CAP_KILL | CAP_CHOWN:016x}", "CapAmb": f"{CAP_NBS:016x}",
    "NoNewPrivs": "1", "oom": "100", "nofile": "512", "nofile_hard": "768",
    "masked": "1,3", "procsys": "ro", "rootfs": "ro",
    "mem": str(64 << 20), "pids": "64",
    "mkdir": "mkdir: can't create directory '/tmp/x': Invalid cross-device link",
}
if V2_MODE:
    if not v2_has("memory", "pids", "cpu", "cpuset"):
        # This hybrid host's v2 tree has no controllers (v1 holds them): no limits to read.
        del EXPECTED["mem"], EXPECTED["pids"]
else:
    EXPECTED.update({"shares": "512", "quota": "50000", "cpus": "0", "bps": f"{ROOT_DEV[0]}:{ROOT_DEV[1]} 1048576"})


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_process_view_matches_config(runtime, runtime_bin, rootfs, tmp_path):
    """hostname, ids, groups, cwd, env, umask, all five capability sets, no_new_privs,
    oom_score_adj, rlimits, masked and read-only paths, read-only root, cgroup limits read
    back inside, a seccomp-denied mkdir failing with the configured errno (EXDEV), default
    devices and mounts."""
    r = RT(runtime, runtime_bin, tmp_path / "state")
    b = bundle(tmp_path, rootfs, args=["sh", "-c", OBSERVE], config=_observe_config)
    proc = r.run(b)
    r.cleanup()
    assert proc.returncode == 0, proc.stderr
    seen = h.parse_kv(proc.stdout)
    for k, v in EXPECTED.items():
        assert seen.get(k) == v, f"{runtime}: {k}: {seen.get(k)!r} != {v!r}\n{proc.stdout}"
    mounts = set(seen["mounts"].split())
    for m in ("/:", "/proc:proc", "/dev:tmpfs", "/dev/pts:devpts", "/dev/shm:tmpfs",
              "/dev/mqueue:mqueue", "/sys:sysfs", "/tmp:tmpfs"):
        assert any(x.startswith(m) for x in mounts), f"{runtime}: no {m} in {mounts}"
    devs = set(seen["devs"].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue"} <= devs


def test_both_runtimes_agree(runtime_bin, rootfs, tmp_path):
    """The identical bundle gives identical observations under provision-runtime and runc."""
    if shutil.which("runc") is None:
        pytest.skip("runc not installed")
    b = bundle(tmp_path, rootfs, args=["sh", "-c", OBSERVE], config=_observe_config)
    views = {}
    for name in ("provision-runtime", "runc"):
        r = RT(name, runtime_bin, tmp_path / f"state-{name}")
        proc = r.run(b)
        r.cleanup()
        assert proc.returncode == 0, proc.stderr
        views[name] = h.parse_kv(proc.stdout)
    skip = {"mounts", "devs"}  # runc adds /dev/console-less extras in a different order
    ours = {k: v for k, v in views["provision-runtime"].items() if k not in skip}
    theirs = {k: v for k, v in views["runc"].items() if k not in skip}
    assert ours == theirs


# -- exit codes, signals, lifecycle -----------------------------------------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exit_codes(runtime, runtime_bin, rootfs, tmp_path):
    r = RT(runtime, runtime_bin, tmp_path / "state")
    assert r.run(bundle(tmp_path, rootfs, "a", args=["sh", "-c", "exit 7"])).returncode == 7
    # pid 1 of a pid namespace cannot SIGKILL itself, so this one shares the host's
    def no_pidns(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "pid"]
    assert r.run(bundle(tmp_path, rootfs, "b", args=["sh", "-c", "kill -9 $$"], config=no_pidns)).returncode == 137
    assert r.run(bundle(tmp_path, rootfs, "c", args=["true"])).returncode == 0
    r.cleanup()


def _lifecycle_bundle(tmp_path, rootfs, name="life"):
    out = tmp_path / f"{name}-out"
    out.mkdir()
    script = "trap 'echo got-TERM > /out/sig; exit 3' TERM; echo started > /out/started; " \
             "while true; do sleep 0.05; done"

    def cfg(c):
        c["mounts"].append({"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind"]})
        c["root"]["readonly"] = False
        c["annotations"] = {"org.example.test": "yes"}
    return bundle(tmp_path, rootfs, name, args=["sh", "-c", script], config=cfg), out


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_create_start_state_kill_delete(runtime, runtime_bin, rootfs, tmp_path):
    r = RT(runtime, runtime_bin, tmp_path / "state")
    b, out = _lifecycle_bundle(tmp_path, rootfs)
    cid = r.new_id()
    pidfile = tmp_path / "pid"
    try:
        r.cli("create", "--bundle", b, "--pid-file", pidfile, cid)
        st = r.state(cid)
        assert st["status"] == "created"
        assert st["id"] == cid and st["bundle"] == str(b) and st["ociVersion"].startswith("1.")
        assert st["pid"] == int(pidfile.read_text()) > 0
        assert st["annotations"] == {"org.example.test": "yes"}
        assert not (out / "started").exists()  # create does not run the process
        r.cli("start", cid)
        wait_for(lambda: (out / "started").exists(), what="process start")
        assert r.state(cid)["status"] == "running"
        # deleting a running container without --force fails and changes nothing
        bad = r.cli("delete", cid, check=False)
        assert bad.returncode != 0 and bad.stderr.strip()
        assert r.state(cid)["status"] == "running"
        r.cli("kill", cid, "SIGTERM")
        wait_for(lambda: (out / "sig").exists(), what="TERM trap")
        assert (out / "sig").read_text().strip() == "got-TERM"
        wait_for(lambda: r.state(cid)["status"] == "stopped", what="stopped")
        r.cli("delete", cid)
        gone = r.cli("state", cid, check=False)
        assert gone.returncode != 0 and "not exist" in gone.stderr
    finally:
        r.cleanup()


@pytest.mark.parametrize("sig,name", [("KILL", "SIGKILL"), ("9", "number"), ("SIGINT", "name with SIG")])
def test_kill_signal_spellings(sig, name, prt, rootfs, tmp_path):
    # INT is handled by the trap below (pid 1 ignores signals it has no handler for);
    # KILL cannot be caught.
    out = tmp_path / "out"
    out.mkdir()
    script = "trap 'exit 0' INT; touch /out/ready; while true; do sleep 0.05; done"

    def cfg(c):
        c["mounts"].append({"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind"]})
    b = bundle(tmp_path, rootfs, args=["sh", "-c", script], config=cfg)
    cid = prt.new_id()
    prt.cli("create", "--bundle", b, cid)
    prt.cli("start", cid)
    wait_for(lambda: (out / "ready").exists(), what="trap installed")
    prt.cli("kill", cid, sig)
    wait_for(lambda: prt.state(cid)["status"] == "stopped", what=f"stop after {name}")
    prt.cli("delete", cid)


def test_delete_force_and_created(prt, rootfs, tmp_path):
    b = bundle(tmp_path, rootfs, cgpath="/prt-test/forced", args=["sleep", "100"])
    cid = prt.new_id()
    prt.cli("create", "--bundle", b, cid)
    pid = prt.state(cid)["pid"]
    prt.cli("start", cid)
    assert prt.cli("delete", cid, check=False).returncode == 1
    prt.cli("delete", "--force", cid)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    assert h.cgroup_dirs("/prt-test/forced") == []
    assert list(prt.root.iterdir()) == []
    # a created (never started) container is deleted without --force, like runc
    cid2 = prt.new_id()
    prt.cli("create", "--bundle", b, cid2)
    prt.cli("delete", cid2)
    assert list(prt.root.iterdir()) == []


# -- hooks ------------------------------------------------------------------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_hooks_order_and_state(runtime, runtime_bin, rootfs, tmp_path):
    log = tmp_path / "hooklog"
    log.mkdir()

    def hook(kind, in_container=False):
        target = "/hooklog/log" if in_container else str(log / "log")
        return {"path": "/bin/sh", "args": ["sh", "-c", f'echo "{kind} $(cat)" >> {target}']}

    def cfg(c):
        c["mounts"].append({"destination": "/hooklog", "type": "bind", "source": str(log), "options": ["rbind"]})
        c["hooks"] = {
            "createRuntime": [hook("createRuntime")],
            "createContainer": [hook("createContainer")],
            "startContainer": [hook("startContainer", in_container=True)],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        }
    b = bundle(tmp_path, rootfs, args=["true"], config=cfg)
    r = RT(runtime, runtime_bin, tmp_path / "state")
    cid = r.new_id()
    proc = r.run(b, cid)
    assert proc.returncode == 0, proc.stderr
    lines = (log / "log").read_text().splitlines()
    kinds = [ln.split(" ", 1)[0] for ln in lines]
    if runtime == "runc":
        # runc runs poststart in `runc start` while the init runs startContainer: racy.
        assert kinds[:2] == ["createRuntime", "createContainer"] and kinds[-1] == "poststop"
        assert sorted(kinds[2:4]) == ["poststart", "startContainer"]
    else:
        assert kinds == ["createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    states = {ln.split(" ", 1)[0]: json.loads(ln.split(" ", 1)[1]) for ln in lines}
    for kind, st in states.items():
        assert st["id"] == cid and st["bundle"] == str(b), kind
        assert st["ociVersion"].startswith("1."), kind
    assert states["createRuntime"]["pid"] > 0
    assert states["createRuntime"]["pid"] == states["poststart"]["pid"]
    if runtime == "provision-runtime":
        assert [states[k]["status"] for k in kinds] == ["creating", "creating", "created", "running", "stopped"]


def test_failing_create_hook_aborts_and_cleans(prt, rootfs, tmp_path):
    def cfg(c):
        c["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 4"]}]}
    b = bundle(tmp_path, rootfs, cgpath="/prt-test/hookfail", args=["true"], config=cfg)
    proc = prt.run(b)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "provision-runtime: hooks.createRuntime[0]: /bin/sh exited with status 4"]
    assert h.cgroup_dirs("/prt-test/hookfail") == []
    assert list(prt.root.iterdir()) == []


# -- user namespace ---------------------------------------------------------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_user_namespace_uid_map(runtime, runtime_bin, rootfs, tmp_path):
    def cfg(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    script = "echo uidmap=$(cat /proc/self/uid_map); echo gidmap=$(cat /proc/self/gid_map); echo uid=$(id -u)"
    b = bundle(tmp_path, rootfs, args=["sh", "-c", script], config=cfg)
    r = RT(runtime, runtime_bin, tmp_path / "state")
    proc = r.run(b)
    r.cleanup()
    assert proc.returncode == 0, proc.stderr
    seen = h.parse_kv(proc.stdout)
    assert seen["uidmap"].split() == ["0", "100000", "65536"]
    assert seen["gidmap"].split() == ["0", "100000", "65536"]
    assert seen["uid"] == "0"


# -- exec, console, fds -----------------------------------------------------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exec_into_running_container(runtime, runtime_bin, rootfs, tmp_path):
    r = RT(runtime, runtime_bin, tmp_path / "state")
    b = bundle(tmp_path, rootfs, cgpath=f"/prt-test/exec-{runtime}", args=["sleep", "100"])
    cid = r.new_id()
    try:
        r.cli("create", "--bundle", b, cid)
        r.cli("start", cid)
        proc = r.cli("exec", "--env", "A=1", "--env", "B=2", cid, "sh", "-c",
                     "echo host=$(hostname); echo pid1=$(cat /proc/1/cmdline | tr '\\0' ' '); "
                     "echo cg=$(grep memory /proc/self/cgroup | cut -d: -f3); echo env=$A$B; exit 5", check=False)
        assert proc.returncode == 5, proc.stderr
        seen = h.parse_kv(proc.stdout)
        assert seen["host"] == "box"
        assert seen["pid1"] == "sleep 100"
        assert seen["env"] == "12"
        # in the container's cgroup (with a cgroup namespace it is the root "/")
        assert seen["cg"] == "/"
        proc_json = tmp_path / "process.json"
        proc_json.write_text(json.dumps({"args": ["sh", "-c", "echo uid=$(id -u) cwd=$(pwd) x=$X"], "cwd": "/tmp",
                                         "env": ["PATH=/bin", "X=y"], "user": {"uid": 33, "gid": 33}}))
        proc = r.cli("exec", "--process", proc_json, cid)
        assert proc.stdout.split() == ["uid=33", "cwd=/tmp", "x=y"]
    finally:
        r.cleanup()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_terminal_via_console_socket(runtime, runtime_bin, rootfs, tmp_path):
    sock_path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)

    def cfg(c):
        c["process"]["terminal"] = True
        c["process"]["consoleSize"] = {"height": 30, "width": 100}
    b = bundle(tmp_path, rootfs, args=["sh", "-c", "echo tty=$(tty) size=$(stty size)"], config=cfg)
    r = RT(runtime, runtime_bin, tmp_path / "state")
    cid = r.new_id()
    try:
        r.cli("create", "--bundle", b, "--console-socket", sock_path, cid)
        conn, _ = srv.accept()
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        master = fds[0]
        r.cli("start", cid)
        data = b""
        end = time.monotonic() + 10
        while b"size=" not in data or not data.rstrip().endswith(b"100") and time.monotonic() < end:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        text = data.decode(errors="replace")
        assert "tty=/dev/pts/0" in text and "size=30 100" in text, text
        os.close(master)
        conn.close()
    finally:
        srv.close()
        r.cleanup()


def test_run_with_terminal_and_no_console_socket(prt, rootfs, tmp_path):
    """Like `runc run` on a terminal bundle: the runtime holds the pty and copies it to its
    own stdout; the exit code still comes through."""
    def cfg(c):
        c["process"]["terminal"] = True
    b = bundle(tmp_path, rootfs, args=["sh", "-c", "echo tty=$(tty); exit 3"], config=cfg)
    proc = prt.run(b)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.replace("\r", "").splitlines() == ["tty=/dev/pts/0"]


def test_no_runtime_fd_leaks_into_container(prt, rootfs, tmp_path):
    leak = os.open("/etc/hostname", os.O_RDONLY)  # inheritable on purpose
    os.set_inheritable(leak, True)
    try:
        b = bundle(tmp_path, rootfs, args=["sh", "-c", "ls /proc/self/fd | tr '\\n' ' '"])
        proc = subprocess.run(prt.base + ["run", "--bundle", str(b), prt.new_id()], capture_output=True, text=True,
                              pass_fds=(leak,), timeout=30, stdin=subprocess.DEVNULL)
    finally:
        os.close(leak)
    assert proc.returncode == 0, proc.stderr
    # 0-2 are stdio, 3 is ls's own directory handle
    assert proc.stdout.split() == ["0", "1", "2", "3"]


def test_sysctl_and_readonly_proc_sys(prt, rootfs, tmp_path):
    def cfg(c):
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    b = bundle(tmp_path, rootfs, args=["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward; echo 0 > /proc/sys/net/ipv4/ip_forward"],
               config=cfg)
    proc = prt.run(b)
    assert proc.stdout.split()[0] == "1"
    assert "Read-only file system" in proc.stderr


# -- misc -------------------------------------------------------------------------------
def test_version_and_features(prt):
    assert prt.cli("--version").stdout.startswith("provision-runtime version ")
    f = json.loads(prt.cli("features").stdout)
    assert f["ociVersionMin"].startswith("1.") and "createRuntime" in f["hooks"]
    assert set(f["linux"]["namespaces"]) >= {"mount", "pid", "uts", "ipc", "network", "user", "cgroup"}
    assert f["linux"]["cgroup"]["v1"] and f["linux"]["cgroup"]["v2"]
    assert "CAP_SYS_ADMIN" in f["linux"]["capabilities"]


def test_python_wrapper(runtime_bin, rootfs, tmp_path):
    from provisioner.containers.runtime import Runtime
    from provisioner.errors import ContainerError
    rt = Runtime(str(runtime_bin), str(tmp_path / "st"))
    b = bundle(tmp_path, rootfs, args=["sh", "-c", "echo hi; exit 3"])
    res = rt.run("w1", str(b), timeout=30)
    assert (res.returncode, res.stdout) == (3, "hi\n")
    b2 = bundle(tmp_path, rootfs, "b2", args=["sleep", "100"])
    rt.create("w2", str(b2))
    assert rt.state("w2").status == "created"
    rt.start("w2")
    assert rt.state("w2").status == "running"
    with pytest.raises(ContainerError, match="running"):
        rt.delete("w2")
    rt.kill("w2", "KILL")
    wait_for(lambda: rt.state("w2").status == "stopped", what="stopped")
    rt.delete("w2")
    with pytest.raises(ContainerError, match='container "w2" does not exist'):
        rt.state("w2")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_join_namespaces_by_path(runtime, runtime_bin, rootfs, tmp_path):
    """B joins A's user and network namespaces by path and creates the rest (owned by
    A's user namespace)."""
    r = RT(runtime, runtime_bin, tmp_path / "state")

    def userns(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = c["linux"]["gidMappings"] = USERNS_MAP
    a = bundle(tmp_path, rootfs, "a", args=["sleep", "100"], config=userns)
    aid = r.new_id()
    try:
        r.cli("create", "--bundle", a, aid)
        r.cli("start", aid)
        apid = r.state(aid)["pid"]

        def join(c):
            c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
            c["linux"]["namespaces"] += [{"type": "user", "path": f"/proc/{apid}/ns/user"},
                                         {"type": "network", "path": f"/proc/{apid}/ns/net"}]
            # runc 1.1 wants the (matching) mappings repeated; ignored when joining
            c["linux"]["uidMappings"] = c["linux"]["gidMappings"] = USERNS_MAP
        script = "echo uidmap=$(cat /proc/self/uid_map); echo net=$(readlink /proc/self/ns/net); " \
                 "echo user=$(readlink /proc/self/ns/user); echo pid=$$"
        b = bundle(tmp_path, rootfs, "b", args=["sh", "-c", script], config=join)
        proc = r.run(b)
        assert proc.returncode == 0, proc.stderr
        seen = h.parse_kv(proc.stdout)
        assert seen["uidmap"].split() == ["0", "100000", "65536"]
        assert seen["net"] == os.readlink(f"/proc/{apid}/ns/net")
        assert seen["user"] == os.readlink(f"/proc/{apid}/ns/user")
        assert seen["pid"] == "1"
    finally:
        r.cleanup()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_mount_options_and_propagation(runtime, runtime_bin, rootfs, tmp_path):
    """A read-only rslave bind mount and a size-limited noexec tmpfs, read back from
    /proc/self/mountinfo and by using them."""
    src = tmp_path / "shared"
    src.mkdir()
    # a shared mount on the host, so that rslave shows up as "master:N" inside
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src)], check=True)
    subprocess.run(["mount", "--make-shared", str(src)], check=True)
    (src / "f").write_text("from-host\n")

    def cfg(c):
        c["mounts"] += [
            {"destination": "/data/ro", "type": "bind", "source": str(src), "options": ["rbind", "ro", "rslave"]},
            {"destination": "/data/small", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "noexec", "size=1m"]},
        ]
    script = ("echo f=$(cat /data/ro/f); touch /data/ro/x 2>/dev/null; echo rw=$?; "
              "echo ro=$(grep ' /data/ro ' /proc/self/mountinfo | cut -d' ' -f6 | cut -d, -f1); "
              "echo slave=$(grep ' /data/ro ' /proc/self/mountinfo | grep -c 'master:'); "
              "echo size=$(df -k /data/small | tail -1 | awk '{print $2}'); "
              "echo noexec=$(grep ' /data/small ' /proc/self/mountinfo | cut -d' ' -f6 | grep -c noexec)")
    r = RT(runtime, runtime_bin, tmp_path / "state")
    try:
        proc = r.run(bundle(tmp_path, rootfs, args=["sh", "-c", script], config=cfg))
    finally:
        r.cleanup()
        subprocess.run(["umount", str(src)], check=True)
    assert proc.returncode == 0, proc.stderr
    assert h.parse_kv(proc.stdout) == {"f": "from-host", "rw": "1", "ro": "ro", "slave": "1", "size": "1024",
                                       "noexec": "1"}


def test_preserve_fds_passes_exactly_those(prt, rootfs, tmp_path):
    """--preserve-fds 1 hands fd 3 to the container (socket activation); fd 4 stays out."""
    (tmp_path / "three").write_text("fd-three\n")
    fd3 = os.open(tmp_path / "three", os.O_RDONLY)
    fd4 = os.open("/etc/hostname", os.O_RDONLY)
    try:
        b = bundle(tmp_path, rootfs, args=["sh", "-c", "cat <&3; ls /proc/self/fd | tr '\\n' ' '"])
        code = (f"import os,sys; os.dup2({fd3}, 3); os.dup2({fd4}, 4); "
                "os.execvp(sys.argv[1], sys.argv[1:])")
        proc = subprocess.run([sys.executable, "-c", code] + prt.base + ["run", "--preserve-fds", "1", "--bundle",
                              str(b), prt.new_id()], capture_output=True, text=True, pass_fds=(fd3, fd4),
                              timeout=30, stdin=subprocess.DEVNULL)
    finally:
        os.close(fd3)
        os.close(fd4)
    assert proc.returncode == 0, proc.stderr
    first, fds = proc.stdout.splitlines()
    assert first == "fd-three"
    assert fds.split() == ["0", "1", "2", "3", "4"]  # 4 here is ls's own directory handle


def test_personality_linux32(prt, rootfs, tmp_path):
    def cfg(c):
        c["linux"]["personality"] = {"domain": "LINUX32"}
    proc = prt.run(bundle(tmp_path, rootfs, args=["uname", "-m"], config=cfg))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ("i686", "i386")


def test_time_namespace_offsets(prt, rootfs, tmp_path):
    """A new time namespace with linux.timeOffsets: the container's boot clock (uptime) is
    400 days ahead of the host's, also for a process exec'd into it."""
    def cfg(c):
        c["linux"]["namespaces"].append({"type": "time"})
        c["linux"]["timeOffsets"] = {"boottime": {"secs": 400 * 86400, "nanosecs": 0}}
    cid = prt.new_id()
    prt.cli("create", "--bundle", bundle(tmp_path, rootfs, args=["sleep", "100"], config=cfg), cid)
    prt.cli("start", cid)
    inside = float(prt.cli("exec", cid, "cat", "/proc/uptime").stdout.split()[0])  # exec joins it too
    host_uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert 400 * 86400 - 5 <= inside - host_uptime < 400 * 86400 + 5
    prt.cli("delete", "--force", cid)
