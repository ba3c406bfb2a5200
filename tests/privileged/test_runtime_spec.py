"""Corners of the runtime spec, observed from inside busybox containers under provision-runtime
and, where both are parametrized, runc: root propagation, cgroup namespace, network class and
priorities, masked/read-only paths naming device nodes, and the empty hostname.
"""
from __future__ import annotations

import os
import socket
import subprocess
import uuid

import pytest

import runtime_helpers as h
from runtime_helpers import RT, RUNTIMES, bundle, prt, rootfs, runtime_bin  # noqa: F401  (fixtures are used by name)

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
        # empty until the init has written it (then the exec is retried)
        views = {"init": h.wait_for(lambda: call("exec", cid, "sh", "-c", "cat /tmp/init 2>/dev/null; true"),
                                    what="the init's view"),
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


# -- linux.resources.network --------------------------------------------------------------
# This host mounts no net_cls/net_prio hierarchy.  The tests that need one run the runtime in
# a private mount namespace whose /sys/fs/cgroup is a tmpfs holding the host's hierarchies
# plus a net_cls,net_prio one, laid out as distributions do (a co-mounted directory and one
# symlink per controller).  NET_CLS_NS takes the runtime's argv as "$@".
NET_CLS_NS = r"""
set -e
old=$(mktemp -d)
mount --rbind /sys/fs/cgroup "$old"
mount -t tmpfs -o mode=755 cgroup-root /sys/fs/cgroup
for d in "$old"/*; do
  n=${d##*/}
  if [ -L "$d" ]; then ln -s "$(readlink "$d")" "/sys/fs/cgroup/$n"
  else mkdir "/sys/fs/cgroup/$n"; mount --rbind "$d" "/sys/fs/cgroup/$n"; fi
done
umount --lazy "$old"; rmdir "$old"
mkdir /sys/fs/cgroup/net_cls,net_prio
mount -t cgroup -o net_cls,net_prio net_cls /sys/fs/cgroup/net_cls,net_prio
ln -s net_cls,net_prio /sys/fs/cgroup/net_cls; ln -s net_cls,net_prio /sys/fs/cgroup/net_prio
leaf=/sys/fs/cgroup/net_cls,net_prio$CGPATH
trap 'rc=$?; "$@" delete --force "$ID" >/dev/null 2>&1 || true; exit $rc' EXIT
"$@" create --bundle "$BUNDLE" "$ID" > "$OUT" 2> "$ERR" || { cat "$ERR" >&2; exit 1; }
echo host_classid=$(cat "$leaf/net_cls.classid")
echo host_prio=$(grep '^lo ' "$leaf/net_prio.ifpriomap")
"$@" start "$ID"
while ! grep -q '^done' "$OUT"; do sleep 0.02; done
cat "$OUT"
"$@" delete --force "$ID"
[ ! -e "$leaf" ] && echo removed=yes
"""

NETWORK = {"classID": 1048577, "priorities": [{"name": "lo", "priority": 5}]}


def _network_bundle(tmp_path, rootfs, cgpath):
    def config(cfg):
        cfg["linux"]["resources"]["network"] = NETWORK
    # inside, its own network namespace: its lo is not the host's, so only the class id
    # reads back there; the priority is checked on the host's side of the cgroup
    return bundle(tmp_path, rootfs, cgpath=cgpath, config=config,
                  args=["sh", "-c", "echo classid=$(cat /sys/fs/cgroup/net_cls/net_cls.classid); echo done"])


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_network_class_and_priorities_on_v1(runtime, runtime_bin, rootfs, tmp_path):
    """linux.resources.network on cgroup v1: classID goes to net_cls.classid and each
    priority to net_prio.ifpriomap ("lo 5"), as runc writes them (its fs NetClsGroup and
    NetPrioGroup); the container reads its class id back."""
    if h.V2_MODE:
        pytest.skip("a v1 hierarchy is what this is about")
    cgpath = f"/prt-test/net-{uuid.uuid4().hex[:8]}"
    b = _network_bundle(tmp_path, rootfs, cgpath)
    r = RT(runtime, runtime_bin, tmp_path / "state")
    env = dict(os.environ, CGPATH=cgpath, BUNDLE=str(b), ID=r.new_id(), OUT=str(tmp_path / "out"),
               ERR=str(tmp_path / "err"))
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", NET_CLS_NS, "sh"] + r.base,
                          capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    seen = h.parse_kv(proc.stdout)
    assert seen["host_classid"] == "1048577", proc.stdout
    assert seen["host_prio"] == "lo 5", proc.stdout
    assert seen["classid"] == "1048577", proc.stdout
    assert seen["removed"] == "yes"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_network_without_net_cls_hierarchy(runtime, runtime_bin, rootfs, tmp_path):
    """A v1 host without net_cls/net_prio mounted (this one) cannot apply the class id:
    create fails and leaves nothing, as runc does ("cannot set net_cls limit")."""
    if h.V2_MODE or os.path.exists("/sys/fs/cgroup/net_cls"):
        pytest.skip("needs a v1 host without a net_cls hierarchy")
    cgpath = f"/prt-test/net-{uuid.uuid4().hex[:8]}"
    r = RT(runtime, runtime_bin, tmp_path / "state")
    cid = r.new_id()
    try:
        proc = r.cli("create", "--bundle", _network_bundle(tmp_path, rootfs, cgpath), cid, check=False)
        assert proc.returncode != 0
        assert "net_cls" in proc.stderr
        assert h.cgroup_dirs(cgpath) == []
        assert not (r.root / cid).exists()
    finally:
        r.cleanup()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_network_is_ignored_on_pure_v2(runtime, runtime_bin, rootfs, tmp_path):
    """cgroup v2 has no net_cls/net_prio (classification is an eBPF matter there): runc's
    fs2 manager ignores linux.resources.network without a word, and so do we."""
    cgpath = f"/prt-test/net-{uuid.uuid4().hex[:8]}"
    r = RT(runtime, runtime_bin, tmp_path / "state")
    b = bundle(tmp_path, rootfs, cgpath=cgpath, args=["sh", "-c", "echo done"],
               config=lambda c: c["linux"]["resources"].update(network=NETWORK))
    proc = h.in_v2_namespace(r.base + ["run", "--bundle", str(b), r.new_id()])
    r.cleanup()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    assert proc.stderr == ""


# -- masked and read-only paths -----------------------------------------------------------
MASK_VIEW = r"""
echo file=$(stat -c %F:%t,%T /proc/timer_list)/$(wc -c < /proc/timer_list)
echo dir=$(ls -A /sys/firmware | wc -l)/$(touch /sys/firmware/x 2>&1 | grep -c 'Read-only')
echo dev=$(stat -c %t,%T /dev/fuse)/$(head -c 4 /dev/fuse | wc -c)
echo ro_dev=$(grep ' /dev/zero ' /proc/self/mounts | cut -d' ' -f4 | cut -d, -f1)/$(head -c 4 /dev/zero | wc -c)
echo ro_dir=$(touch /etc/x 2>&1 | grep -c 'Read-only')
"""


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_masked_and_readonly_paths_of_each_kind(runtime, runtime_bin, rootfs, tmp_path):
    """maskedPaths "so that they cannot be read": a file or a device node gets /dev/null
    bound over it (reads end at once), a directory an empty read-only tmpfs, a missing path
    is skipped; readonlyPaths: a read-only bind, for a directory and for a device node
    alike (which stays readable)."""
    def config(cfg):
        cfg["root"]["readonly"] = False
        cfg["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666}]
        cfg["linux"]["resources"]["devices"] += [{"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"}]
        cfg["linux"]["maskedPaths"] = ["/proc/timer_list", "/sys/firmware", "/dev/fuse", "/no/such/path"]
        cfg["linux"]["readonlyPaths"] = ["/dev/zero", "/etc"]
    r = RT(runtime, runtime_bin, tmp_path / "state")
    proc = r.run(bundle(tmp_path, rootfs, args=["sh", "-c", MASK_VIEW], config=config))
    r.cleanup()
    assert proc.returncode == 0, proc.stderr
    seen = h.parse_kv(proc.stdout)
    assert seen == {"file": "character special file:1,3/0", "dir": "0/1", "dev": "1,3/0", "ro_dev": "ro/4",
                    "ro_dir": "1"}, proc.stdout


def test_masking_refuses_a_dev_null_that_is_not_the_null_device(prt, rootfs, tmp_path):
    """The mask source is the container's own /dev/null: if that is some other node (here
    the config puts /dev/zero's numbers there; an image or a race could do worse), binding it
    over /proc files would hand them its content or its writability.  The runtime refuses,
    as runc >= 1.2.8 does (CVE-2025-31133); the Debian runc 1.1.5 here does not."""
    def config(cfg):
        cfg["linux"]["devices"] = [{"path": "/dev/null", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666}]
    cid = prt.new_id()
    proc = prt.cli("run", "--bundle", bundle(tmp_path, rootfs, args=["true"], config=config), cid, check=False)
    assert proc.returncode != 0
    assert "/dev/null is not the null device" in proc.stderr, proc.stderr
    assert not (prt.root / cid).exists()


# -- hostname -----------------------------------------------------------------------------
def test_empty_hostname_in_a_new_uts_namespace(prt, rootfs, tmp_path):
    """hostname "" with a new UTS namespace: the container's hostname is empty (not a
    copy of the host's).  runc skips an empty hostname, so this one is ours alone."""
    proc = prt.run(bundle(tmp_path, rootfs, args=["sh", "-c", "echo \"host=[$(cat /proc/sys/kernel/hostname)]\""],
                          hostname=""))
    assert proc.returncode == 0, proc.stderr
    assert h.parse_kv(proc.stdout)["host"] == "[]"


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("uts", ["host", "joined"])
def test_empty_hostname_without_a_new_uts_namespace(runtime, uts, runtime_bin, rootfs, tmp_path):
    """hostname "" without a new UTS namespace (the host's, or one joined by path) asks for
    nothing: no error, and the namespace's hostname is left as it is."""
    holder = None
    if uts == "joined":
        # a UTS namespace of our own, named "joined", held by a sleeping process
        holder = subprocess.Popen(["unshare", "--uts", "sh", "-c", "hostname joined && echo ready && exec sleep 60"],
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline() == "ready\n"
    try:
        def config(cfg):
            ns = [n for n in cfg["linux"]["namespaces"] if n["type"] != "uts"]
            if holder:
                ns.append({"type": "uts", "path": f"/proc/{holder.pid}/ns/uts"})
            cfg["linux"]["namespaces"] = ns
        r = RT(runtime, runtime_bin, tmp_path / "state")
        proc = r.run(bundle(tmp_path, rootfs, args=["cat", "/proc/sys/kernel/hostname"], hostname="", config=config))
        r.cleanup()
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == ("joined\n" if holder else f"{socket.gethostname()}\n")
    finally:
        if holder:
            holder.kill()
            holder.wait()
