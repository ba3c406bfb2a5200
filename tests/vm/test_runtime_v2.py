"""provision-runtime on a pure cgroup v2 host: a local Debian VM booted once for the module (every
controller is available at the root; systemd enables only some in its subtree_control, so the runtime
enables the others on its way down to the container's cgroup).

The runtime binary, /bin/busybox and runtime_v2_agent.py (bundle maker and observer; python3 only) go
over SFTP; containers run in the VM and the limits are read back from the container's cgroup files
both from the VM's side (/sys/fs/cgroup/<cgroupsPath>) and from inside (an `exec` in the container's
cgroup namespace sees its own cgroup as /sys/fs/cgroup). Limits are then provoked: a pids limit
stops a fork loop, a memory limit OOM-kills an allocation; `update` and pause/resume act on the v2
files; the eBPF device filter denies an unlisted device and allows a listed one; a relative
cgroupsPath lands where runc puts it. The last test destroys the VM and checks that no process, file or port is left.
"""
from __future__ import annotations

import copy
import json
import os
import posixpath
import shlex
import sys
import time
from pathlib import Path

import pytest

from provisioner.clouds.local import VmSpec
from provisioner.remote.hostkeys import target_for
from provisioner.remote.ssh import SshClient

from conftest import public_key
from vmhelpers import qemu_processes_for, wait_not_listening

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "privileged"))
import runtime_helpers as h  # noqa: E402  (config.json base, parse_kv, build_runtime; not its fixtures)

pytestmark = pytest.mark.vm

STACK = "prtv2"
REMOTE = "/tmp/prtv2"              # where SFTP puts the files (as the login user)
WORK = "/var/tmp/prtv2"            # root's rootfs and bundles
STATE = "/run/prtv2"               # the runtime's --root
RUNTIME = f"{REMOTE}/provision-runtime"
AGENT = f"{REMOTE}/runtime_v2_agent.py"
CG = "/prtv2"                      # every container's cgroupsPath is below this

# Read from inside the container; multi-line files are joined with ";".
INSIDE_FILES = ("memory.max", "memory.high", "memory.swap.max", "memory.low", "pids.max", "cpu.max", "cpu.weight",
                "cpuset.cpus", "cpuset.mems", "io.weight", "io.max")
INSIDE_SCRIPT = ("for f in " + " ".join(INSIDE_FILES) + "; do "
                 "echo \"$f=$(cat /sys/fs/cgroup/$f 2>/dev/null | tr '\\n' ';')\"; done; "
                 "echo \"self=$(cat /proc/self/cgroup)\"; "
                 "echo \"mount=$(grep ' /sys/fs/cgroup ' /proc/self/mounts | cut -d' ' -f3)\"; "
                 "echo \"allowed=$(grep Cpus_allowed_list /proc/self/status | cut -f2)\"")


class Guest:
    """The VM seen through SSH: the agent's commands, as root."""

    def __init__(self, ssh: SshClient):
        self.ssh = ssh

    def sh(self, cmd: str, check: bool = True) -> str:
        return self.ssh.run(["sh", "-c", cmd], sudo=True, check=check).stdout

    def agent(self, *args, input: str | None = None):
        out = self.ssh.run(["python3", AGENT, *map(str, args)], sudo=True, input=input).stdout
        return json.loads(out)

    def rt(self, *args) -> dict:
        """The runtime, straight from the shell (python3 starts slowly under TCG). A created
        container keeps create's stdio, so create's stdout goes to /dev/null and its stderr to a
        file: a pipe back over SSH would stay open as long as the container runs."""
        cmd = shlex.join([RUNTIME, "--root", STATE, *map(str, args)])
        if args[0] == "create":
            err = f"{WORK}/create.err"
            cmd = f"{cmd} </dev/null >/dev/null 2>{err}; rc=$?; cat {err} >&2; exit $rc"
        out = self.ssh.run(["sh", "-c", cmd], sudo=True, check=False)
        return {"rc": out.returncode, "out": out.stdout, "err": out.stderr}

    def bundle(self, name: str, cfg: dict) -> str:
        return self.agent("bundle", f"{WORK}/bundles/{name}", f"{WORK}/rootfs", input=json.dumps(cfg))["bundle"]

    def cg(self, path: str) -> dict:
        return self.agent("cg", path)

    def left(self, path: str = CG) -> list[str]:
        """Every cgroup directory at or below path that exists."""
        return self.sh(f"find /sys/fs/cgroup{path} -type d 2>/dev/null || true").split()

    def state_entries(self) -> list[str]:
        return self.sh(f"ls -A {STATE} 2>/dev/null || true").split()

    def wait(self, pred, what: str, timeout: float = 15.0):
        end = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)


def config(name: str, args, resources: dict | None = None, edit=None) -> dict:
    cfg = copy.deepcopy(h.BASE_CONFIG)
    cfg["process"]["args"] = list(args)
    cfg["linux"]["cgroupsPath"] = f"{CG}/{name}"
    cfg["linux"]["resources"].update(copy.deepcopy(resources or {}))
    if edit:
        edit(cfg)
    return cfg


# -- the VM -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vm(cloud, operator_key):
    if not os.path.exists(h.BUSYBOX):  # checked before a VM is booted for nothing
        pytest.skip("needs busybox-static (/bin/busybox) for the containers' rootfs")
    spec = VmSpec(STACK, "rt", public_key(operator_key), cpus=2, memory_mb=1024)
    try:
        st = cloud.launch(spec, timeout=300)
        print(f"\nboot: {st.boot_seconds}s to SSH host keys on the console ({st.accel})")
        yield spec, st
    finally:
        cloud.destroy(STACK)


@pytest.fixture(scope="module")
def guest(vm, operator_key):
    _spec, st = vm
    client = SshClient(target_for([f["sha256"] for f in st.fingerprints], st.ssh_port, st.user, operator_key))
    client.wait_ready(timeout=120)
    binary = h.build_runtime()
    client.run(["mkdir", "-p", REMOTE])
    client.put(binary, RUNTIME, mode=0o755)
    client.put(Path(h.BUSYBOX), f"{REMOTE}/busybox", mode=0o755)
    client.put(Path(__file__).with_name("runtime_v2_agent.py"), AGENT, mode=0o644)
    g = Guest(client)
    g.sh(f"rm -rf {WORK} && mkdir -p {WORK}/bundles")
    g.agent("rootfs", f"{WORK}/rootfs", f"{REMOTE}/busybox")
    yield g
    client.close()


@pytest.fixture(scope="module")
def host_facts(guest) -> dict:
    ctrls = guest.sh("cat /sys/fs/cgroup/cgroup.controllers").split()
    disk = next(line.split()[0] for line in guest.sh("lsblk -dn -o MAJ:MIN,TYPE").splitlines()
                if line.split()[1] == "disk")
    # io.weight is iocost's file (its root has io.cost.qos); systemd leaves io off at the root,
    # so the runtime enables it on the way down to the leaf
    io_weight = guest.sh("test -e /sys/fs/cgroup/io.cost.qos && echo yes || true").strip() == "yes"
    return {"controllers": ctrls, "disk": disk, "io_weight": io_weight,
            "cpus": int(guest.sh("nproc").strip())}


# -- tests --------------------------------------------------------------------------------
def test_the_vm_is_pure_cgroup_v2(guest, host_facts):
    print(f"\nguest: {host_facts}")
    assert guest.sh("stat -fc %T /sys/fs/cgroup").strip() == "cgroup2fs"
    assert not guest.sh("awk '$3 == \"cgroup\"' /proc/mounts").strip(), "a v1 hierarchy is mounted"
    assert {"cpuset", "cpu", "io", "memory", "pids"} <= set(host_facts["controllers"])
    assert guest.sh(f"{RUNTIME} --version").startswith("provision-runtime")


def test_lifecycle_and_exit_codes(guest):
    cid = "life"
    b = guest.bundle(cid, config(cid, ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]))
    assert guest.rt("create", "--bundle", b, cid)["rc"] == 0
    st = json.loads(guest.rt("state", cid)["out"])
    assert st["status"] == "created" and st["pid"] > 0 and st["bundle"] == b
    # the init waits in the container's cgroup (v2: one directory, cgroup.procs)
    assert guest.cg(f"{CG}/{cid}")["files"]["cgroup.procs"].split() == [str(st["pid"])]
    assert guest.sh(f"cat /proc/{st['pid']}/cgroup").strip() == f"0::{CG}/{cid}"
    assert guest.rt("start", cid)["rc"] == 0
    assert json.loads(guest.rt("state", cid)["out"])["status"] == "running"
    refused = guest.rt("delete", cid)
    assert refused["rc"] != 0 and "running" in refused["err"], refused
    assert guest.rt("kill", cid, "TERM")["rc"] == 0
    guest.wait(lambda: json.loads(guest.rt("state", cid)["out"])["status"] == "stopped", "stopped")
    assert guest.rt("delete", cid)["rc"] == 0
    assert guest.left(f"{CG}/{cid}") == []
    gone = guest.rt("state", cid)
    assert gone["rc"] == 1 and gone["err"].strip() == f'provision-runtime: container "{cid}" does not exist'
    # run: the exit code of the process; a signal as 128+N
    assert guest.rt("run", "--bundle", guest.bundle("rc7", config("rc7", ["sh", "-c", "exit 7"])), "rc7")["rc"] == 7
    # (no pid namespace here: a namespace's init ignores even SIGKILL sent from inside it)
    no_pidns = config("rc9", ["sh", "-c", "kill -9 $$"], edit=lambda c: c["linux"].update(
        namespaces=[n for n in c["linux"]["namespaces"] if n["type"] != "pid"]))
    killed = guest.rt("run", "--bundle", guest.bundle("rc9", no_pidns), "rc9")
    assert killed["rc"] == 137
    # the parent the runtime made for the first container went with the last one
    assert guest.left() == [] and guest.state_entries() == []


def test_limits_read_back_from_the_vm_and_from_inside(guest, host_facts):
    cid = "limits"
    disk = host_facts["disk"]
    cpus = "1" if host_facts["cpus"] > 1 else "0"
    resources = {
        "memory": {"limit": 96 << 20, "swap": 96 << 20, "reservation": 16 << 20},
        "pids": {"limit": 64},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": cpus, "mems": "0"},
        "unified": {"memory.high": str(80 << 20)},  # a v2 file by name
    }
    expected = {
        "memory.max": str(96 << 20), "memory.high": str(80 << 20), "memory.swap.max": "0", "memory.low": str(16 << 20), "pids.max": "64",
        "cpu.max": "50000 100000",
        "cpu.weight": str(1 + ((512 - 2) * 9999) // 262142),  # runc's shares→weight: 20
        "cpuset.cpus": cpus, "cpuset.mems": "0",
        "io.max": f"{disk} rbps=1048576 wbps=max riops=max wiops=max",
    }
    resources["blockIO"] = {"throttleReadBpsDevice": [
        {"major": int(disk.split(":")[0]), "minor": int(disk.split(":")[1]), "rate": 1048576}]}
    if host_facts["io_weight"]:
        resources["blockIO"]["weight"] = 500
        expected["io.weight"] = f"default {1 + (500 - 10) * 9999 // 990}"  # 4949
    b = guest.bundle(cid, config(cid, ["sleep", "1000"], resources))
    created = guest.rt("create", "--bundle", b, cid)
    assert created["rc"] == 0, created["err"]
    assert guest.rt("start", cid)["rc"] == 0
    outside = guest.cg(f"{CG}/{cid}")["files"]
    assert {k: outside.get(k) for k in expected} == expected
    # the parent delegates exactly what the leaf needs
    assert {"cpuset", "cpu", "io", "memory", "pids"} <= set(outside["cgroup.controllers"].split())
    ex = guest.rt("exec", cid, "sh", "-c", INSIDE_SCRIPT)
    assert ex["rc"] == 0, ex["err"]
    inside = h.parse_kv(ex["out"])
    assert {k: inside[k].rstrip(";").replace(";", "\n") for k in expected} == expected
    # the exec joined the cgroup namespace: its own cgroup is the root of a cgroup2 mount
    assert inside["self"] == "0::/" and inside["mount"] == "cgroup2"
    assert inside["allowed"] == cpus
    # update rewrites the v2 files of the running container (runc's flags, then -r JSON)
    upd = guest.rt("update", "--memory", 48 << 20, "--pids-limit", 17, "--cpu-share", 1024, cid)
    assert upd["rc"] == 0, upd["err"]
    res = json.dumps({"cpu": {"quota": 20000, "period": 50000}})
    upd = guest.ssh.run([RUNTIME, "--root", STATE, "update", "-r", "-", cid], sudo=True, input=res, check=False)
    assert upd.returncode == 0, upd.stderr
    after = guest.cg(f"{CG}/{cid}")["files"]
    assert (after["memory.max"], after["pids.max"], after["cpu.weight"], after["cpu.max"]) == (
        str(48 << 20), "17", str(1 + ((1024 - 2) * 9999) // 262142), "20000 50000")
    # pause/resume: cgroup.freeze, done when cgroup.events says so
    assert guest.rt("pause", cid)["rc"] == 0
    assert json.loads(guest.rt("state", cid)["out"])["status"] == "paused"
    assert "frozen 1" in guest.cg(f"{CG}/{cid}")["files"]["cgroup.events"]
    assert guest.rt("resume", cid)["rc"] == 0
    assert "frozen 0" in guest.cg(f"{CG}/{cid}")["files"]["cgroup.events"]
    assert guest.rt("kill", cid, "KILL")["rc"] == 0
    guest.wait(lambda: json.loads(guest.rt("state", cid)["out"])["status"] == "stopped", "stopped")
    assert guest.rt("delete", cid)["rc"] == 0
    assert guest.left(f"{CG}/{cid}") == []


def test_relative_cgroups_path_is_below_the_parent_of_the_callers_cgroup(guest):
    """A relative cgroupsPath is taken from the parent of the runtime's own cgroup, as runc does
    (fs2/defaultpath.go): on a systemd host the caller's own cgroup is a session scope with
    processes in it, and the "no internal processes" rule forbids enabling controllers below it."""
    own = guest.sh("cat /proc/self/cgroup").strip()[len("0::"):]  # a unit of sshd's (or a session scope)
    assert own.count("/") >= 2 and guest.cg(own)["files"]["cgroup.procs"], own  # with processes in it
    parent = posixpath.dirname(own)
    cid = "rel"
    b = guest.bundle(cid, config(cid, ["sleep", "1000"], {"pids": {"limit": 33}},
                                 edit=lambda c: c["linux"].update(cgroupsPath="prtv2-rel/c")))
    created = guest.rt("create", "--bundle", b, cid)
    assert created["rc"] == 0, created["err"]
    pid = json.loads(guest.rt("state", cid)["out"])["pid"]
    files = guest.cg(f"{parent}/prtv2-rel/c")["files"]
    assert (files["pids.max"], files["cgroup.procs"]) == ("33", str(pid))
    assert guest.rt("delete", "--force", cid)["rc"] == 0
    assert guest.left(f"{parent}/prtv2-rel") == []


DEV_SCRIPT = ("mknod /dev/sda b 8 0; echo mknod=$?; echo read=$(head -c1 /dev/sda 2>&1 | sed 's/.*: //'); "
              "mknod /dev/null2 c 1 3; echo x > /dev/null2; echo write=$?")


def test_device_ebpf_filter_denies_an_unlisted_device(guest):
    def mknod(c):
        for k in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][k].append("CAP_MKNOD")
    res = guest.rt("run", "--bundle", guest.bundle("dev", config("dev", ["sh", "-c", DEV_SCRIPT], edit=mknod)), "dev")
    assert res["rc"] == 0, res["err"]
    # the node can be made (like runc's default rules) but not opened; /dev/null's numbers work
    assert h.parse_kv(res["out"]) == {"mknod": "0", "read": "Operation not permitted", "write": "0"}


def test_device_ebpf_filter_allows_a_listed_device(guest, host_facts):
    major, minor = host_facts["disk"].split(":")

    def allow_disk(c):
        for k in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][k].append("CAP_MKNOD")
        c["linux"]["resources"]["devices"].append(
            {"allow": True, "type": "b", "major": int(major), "minor": int(minor), "access": "r"})
    script = (f"mknod /dev/disk b {major} {minor}; head -c 512 /dev/disk | wc -c; "
              "echo x 2>&1 > /dev/disk | sed 's/.*: //'")
    res = guest.rt("run", "--bundle", guest.bundle("devok", config("devok", ["sh", "-c", script], edit=allow_disk)),
                   "devok")
    assert res["rc"] == 0, res["err"]
    # read is allowed by the rule; write is not in its access
    assert res["out"].split("\n")[:2] == ["512", "Operation not permitted"], res


def test_pids_limit_stops_a_fork_loop(guest):
    limit = 8
    # An inner shell forks sleeps until a fork is refused (ash then gives up with status 2); the
    # outer one (pid 1) reads the counters with builtins, as nothing more can fork.
    inner = 'for i in $(seq 1 20); do echo try=$i; sleep 30 & done'
    script = (f"sh -c '{inner}'; echo inner=$?; "
              "read c < /sys/fs/cgroup/pids.current; echo current=$c; "
              "read e < /sys/fs/cgroup/pids.events; echo events=$e")
    b = guest.bundle("pids", config("pids", ["sh", "-c", script], {"pids": {"limit": limit}}))
    res = guest.rt("run", "--bundle", b, "pids")
    assert res["rc"] == 0, res
    seen = h.parse_kv(res["out"])
    # outer + inner + 6 sleeps = 8 tasks: the 7th sleep is the fork refused
    assert seen["try"] == str(limit - 1) and seen["inner"] == "2", seen
    assert "can't fork" in res["err"], res["err"]
    assert seen["current"] == str(limit - 1), seen  # the inner shell is gone, its sleeps remain
    assert seen["events"].split()[0] == "max" and int(seen["events"].split()[1]) >= 1, seen
    assert guest.left(f"{CG}/pids") == []


def test_memory_limit_oom_kills_the_allocation(guest):
    cid = "oom"
    # tail keeps the last line of /dev/zero, an endless one: it grows until the kernel kills it
    # (over 32 MiB, with no swap allowed). tail is pid 1, so `run` sees the SIGKILL.
    b = guest.bundle(cid, config(cid, ["tail", "/dev/zero"], {"memory": {"limit": 32 << 20, "swap": 32 << 20}}))
    assert guest.rt("create", "--bundle", b, cid)["rc"] == 0
    # memory.events is read before delete removes the cgroup: start, then poll for the death
    assert guest.rt("start", cid)["rc"] == 0
    guest.wait(lambda: json.loads(guest.rt("state", cid)["out"])["status"] == "stopped", "the OOM kill", timeout=30)
    events = dict(line.split() for line in guest.cg(f"{CG}/{cid}")["files"]["memory.events"].splitlines())
    assert int(events["oom_kill"]) >= 1 and int(events["max"]) >= 1, events
    assert guest.rt("delete", cid)["rc"] == 0
    assert guest.left(f"{CG}/{cid}") == []
    # and `run` reports the kill as 128 + SIGKILL
    res = guest.rt("run", "--bundle", b, "oomrun")
    assert res["rc"] == 137 and res["out"] == "", res
    assert guest.left(f"{CG}/{cid}") == []


def _drop_root(c):
    del c["root"]


def _bad_ns(c):
    c["linux"]["namespaces"].append({"type": "foo"})


def _cpus_out_of_range(c):
    c["linux"]["resources"]["cpu"] = {"cpus": "63"}


BAD = [
    ("noroot", _drop_root, "config.json: root: required field is missing"),
    ("badns", _bad_ns, 'config.json: linux.namespaces[6].type: unknown namespace type "foo"'),
    # refused by the kernel only when written, after the cgroup was made: it must be removed again
    ("cpus63", _cpus_out_of_range, 'linux.resources.cpu.cpus: writing "63" to /sys/fs/cgroup/prtv2/cpus63/cpuset.cpus'),
]


@pytest.mark.parametrize("name,edit,message", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("cmd", ["create", "run"])
def test_bad_config_one_line_nothing_left(guest, cmd, name, edit, message):
    b = guest.bundle(name, config(name, ["true"], edit=edit))
    res = guest.rt(cmd, "--bundle", b, name)
    assert res["rc"] == 1
    lines = res["err"].splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"provision-runtime: {message}"), lines
    assert guest.left(f"{CG}/{name}") == []
    assert guest.state_entries() == []


def test_destroy_leaves_nothing(cloud, vm, guest):
    _spec, st = vm
    assert guest.left() == [] and guest.state_entries() == []
    guest.ssh.close()
    directory = cloud.host_dir(STACK, "rt")
    assert qemu_processes_for(directory) == [st.pid]
    assert cloud.destroy(STACK) == ["rt"]
    assert qemu_processes_for(directory) == []
    assert not directory.exists() and not directory.parent.exists()
    assert wait_not_listening(st.ssh_port)
    assert cloud.status(STACK) == []
