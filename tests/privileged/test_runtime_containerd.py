"""containerd drives provision-runtime through its CRI plugin, as a kubelet would.

A private containerd (its own root, state, socket and config, in a private mount namespace
with a tmpfs on /run so that nothing of it lands in the host's /run/containerd) runs the CRI
plugin with containerd's runc shim (io.containerd.runc.v2) whose BinaryName is this tree's
provision-runtime.  A busybox image built here is imported with ctr; then, through the CRI
gRPC API (cri_client.py): RunPodSandbox, CreateContainer, StartContainer, StopContainer,
RemoveContainer, StopPodSandbox, RemovePodSandbox, and the pod must be gone.  The pod uses
the node's network (no CNI) and its containers share the pod's pid namespace, so the shim
calls `kill --all ID SIGKILL` once a container's init has exited.  The container has a
terminal (create gets a --console-socket); on it ExecSync, UpdateContainerResources, and
(through ctr and the shim's task API) ps, pause and resume exercise the shim's other calls.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

import runtime_helpers as h
from runtime_helpers import runtime_bin  # noqa: F401  (fixtures are used by name)

grpc = pytest.importorskip("grpc", reason="needs grpcio (pip install -e .[test])")
import cri_client as cri  # noqa: E402

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (containerd, namespaces, cgroups)"),
    pytest.mark.skipif(shutil.which("containerd") is None or shutil.which("containerd-shim-runc-v2") is None
                       or shutil.which("ctr") is None, reason="needs containerd (apt install containerd)"),
    pytest.mark.skipif(not os.path.exists(h.BUSYBOX), reason="needs busybox-static (/bin/busybox)"),
]

IMAGE = "docker.io/library/prt-busybox:test"

CONFIG = """
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Root here lacks CAP_SYS_RESOURCE, and neither runc nor we can lower oom_score_adj
  # without it: containerd's own knob (for rootless) keeps the pods' scores >= its own.
  restrict_oom_score_adj = {restrict_oom}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{base}/cni/bin"
    conf_dir = "{base}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "prt"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.prt]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.prt.options]
        BinaryName = "{binary}"
        Root = "{base}/runtime-root"
"""


# -- a busybox image, built here ----------------------------------------------------------
def _blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build_image_tar(dest: Path) -> Path:
    """An OCI image layout (one gzip layer: /bin/busybox with a link per applet, /etc) as a
    tar, named IMAGE; its default command sleeps, so it serves as the pod's sandbox image."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        def add_dir(name):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(ti)
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
            add_dir(d)
        tar.add(h.BUSYBOX, arcname="bin/busybox")
        applets = subprocess.run([h.BUSYBOX, "--list"], check=True, capture_output=True, text=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                ti = tarfile.TarInfo(f"bin/{applet}")
                ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(ti)
        for name, text in (("etc/passwd", "root:x:0:0:root:/:/bin/sh\n"), ("etc/group", "root:x:0:\n")):
            data = text.encode()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))
    raw = layer.getvalue()
    layout = dest.with_suffix(".layout")
    (layout / "blobs" / "sha256").mkdir(parents=True)
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(layout, gzip.compress(raw, 1))}
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Cmd": ["sleep", "3600"], "Env": ["PATH=/bin"]},
              "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **_blob(layout, json.dumps(config).encode())},
                "layers": [layer_desc]}
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(layout, json.dumps(manifest).encode()),
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "test"}}]}
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    with tarfile.open(dest, "w") as tar:
        for p in sorted(layout.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(layout)), recursive=False)
    shutil.rmtree(layout)
    return dest


# -- a private containerd -----------------------------------------------------------------
class Containerd:
    def __init__(self, base: Path, binary: Path):
        self.base = base
        self.socket = base / "containerd.sock"
        self.config = base / "config.toml"
        self.log = base / "containerd.log"
        base.mkdir()
        restrict = "false" if h.can_raise_rlimits() else "true"
        self.config.write_text(CONFIG.format(base=base, image=IMAGE, binary=binary, restrict_oom=restrict))
        self.proc = None

    def start(self):
        # /run on a private tmpfs: the shims' sockets (/run/containerd/s/...) stay in there
        script = f'mount -t tmpfs -o mode=755 prt-run /run && exec containerd --config "{self.config}"'
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        client = cri.CRI(str(self.socket), timeout=5)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"containerd exited: {self.log.read_text()[-3000:]}")
            if not self.socket.exists():
                return False
            try:
                return client.version()
            except grpc.RpcError:
                return False
        try:
            return h.wait_for(ready, timeout=30, what="containerd's CRI service")
        finally:
            client.close()

    def ctr(self, *args) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *map(str, args)],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"ctr {args}: {proc.stderr}"
        return proc

    def namespace_pids(self) -> list[int]:
        """Every process in containerd's mount namespace (it, its shims, their containers)."""
        try:
            mine = os.readlink(f"/proc/{self.proc.pid}/ns/mnt")
        except OSError:
            return []
        pids = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if os.readlink(p / "ns" / "mnt") == mine:
                        pids.append(int(p.name))
                except OSError:
                    pass
        return pids

    def stop(self):
        """containerd, and whatever a failed test left behind in its namespace."""
        if self.proc is None:
            return
        left = [p for p in self.namespace_pids() if p != self.proc.pid]
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def containerd(runtime_bin, tmp_path):
    ctrd = Containerd(tmp_path / "containerd", runtime_bin)
    try:
        ctrd.start()
        yield ctrd
    finally:
        ctrd.stop()


def _remove_cgroups(parent: str):
    """The pod's cgroups, and whatever a failed test left running in them (a container's
    processes live in mount namespaces of their own, out of containerd's)."""
    dirs = [sub for d in h.cgroup_dirs(parent) for sub in sorted(Path(d).glob("**/"), key=lambda p: -len(p.parts))]
    pids = {int(p) for d in dirs if (d / "cgroup.procs").exists() for p in (d / "cgroup.procs").read_text().split()}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for d in dirs:
        try:
            h.wait_for(lambda: not (d / "cgroup.procs").exists() or not (d / "cgroup.procs").read_text().split(),
                       timeout=5, what=f"{d} to empty")
            d.rmdir()
        except (OSError, AssertionError):
            pass


# -- the pod lifecycle --------------------------------------------------------------------
def test_cri_pod_lifecycle(containerd, tmp_path):
    t0 = time.monotonic()
    containerd.ctr("images", "import", "--snapshotter", "overlayfs", build_image_tar(tmp_path / "busybox.tar"))
    logs = tmp_path / "pod-logs"
    logs.mkdir()
    parent = f"/prt-cri-{uuid.uuid4().hex[:8]}"
    client = cri.CRI(str(containerd.socket))
    try:
        sandbox = cri.pod_sandbox_config("prt-pod", uuid.uuid4().hex, str(logs), parent)
        pod = client.run_pod_sandbox(sandbox)
        assert pod in client.list_pod_sandboxes()
        # with a terminal: the shim hands create a --console-socket and logs the pty
        config = cri.container_config("sleeper", IMAGE, ["sh", "-c", "tty; exec sleep 3600"], "sleeper.log", tty=True)
        cid = client.create_container(pod, config, sandbox)
        client.start_container(cid)
        assert client.container_state(cid) == cri.CONTAINER_RUNNING
        h.wait_for(lambda: b"/dev/pts/0" in (logs / "sleeper.log").read_bytes(), what="the tty's name in the log")
        # exec (the shim: exec --detach --pid-file --process FILE)
        code, out, err = client.exec_sync(cid, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (code, out, err) == (3, b"out\n", b"err\n")
        # update --resources -, read back inside
        client.update_container_resources(cid, cpu_shares=512, memory_limit=64 << 20)
        code, out, _ = client.exec_sync(cid, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                              "/sys/fs/cgroup/cpu/cpu.shares"])
        assert (code, out.split()) == (0, [str(64 << 20).encode(), b"512"])
        # ps --format json, pause, resume (through the shim's task API)
        assert len(containerd.ctr("task", "ps", cid).stdout.splitlines()) >= 2
        containerd.ctr("task", "pause", cid)
        assert "PAUSED" in containerd.ctr("task", "ls").stdout
        containerd.ctr("task", "resume", cid)
        # the runtime holds both the sandbox and the container
        runtime_root = containerd.base / "runtime-root" / "k8s.io"
        assert {pod, cid} <= {p.name for p in runtime_root.iterdir()}
        client.stop_container(cid, timeout=10)
        assert client.container_state(cid) == cri.CONTAINER_EXITED
        client.remove_container(cid)
        assert cid not in client.list_containers()
        client.stop_pod_sandbox(pod)
        client.remove_pod_sandbox(pod)
        assert client.list_pod_sandboxes() == []
        assert not [p for p in runtime_root.iterdir()], "the runtime still holds state"
        assert h.cgroup_dirs(parent + "/" + pod) == [] and h.cgroup_dirs(parent + "/" + cid) == []
        print(f"pod lifecycle through CRI: {time.monotonic() - t0:.1f} s")
    except grpc.RpcError as e:
        raise AssertionError(f"{e.code()}: {e.details()}\n--- containerd log ---\n"
                             f"{containerd.log.read_text()[-6000:]}") from None
    finally:
        client.close()
        _remove_cgroups(parent)
