"""A tool written for runc drives provision-runtime: podman (through conmon) runs, execs
into, pauses, stops and removes a busybox container with `--runtime provision-runtime`."""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

import runtime_helpers as h
from runtime_helpers import rootfs, runtime_bin  # noqa: F401  (fixtures are used by name)

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("podman") is None or shutil.which("conmon") is None,
                       reason="podman/conmon not installed"),
    pytest.mark.skipif(h.V2_MODE, reason="podman reads the host's cgroup layout itself"),
]

# Our own storage (vfs: plain directories, nothing mounted) and run dir, so no other
# podman user on the machine is touched. Hosts without CAP_SYS_RESOURCE cannot raise
# podman's default nofile/nproc limits (runc fails the same way), so ask for the host's.
LIMITS = ["--ulimit", f"nofile={h.host_hard_nofile()}:{h.host_hard_nofile()}", "--ulimit", "nproc=4096:4096"]


@pytest.fixture
def podman(tmp_path, runtime_bin, rootfs):
    runroot = tempfile.mkdtemp(prefix="prt-pm-", dir="/run")  # podman wants a short runroot
    base = ["podman", "--root", str(tmp_path / "storage"), "--runroot", runroot,
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--runtime", str(runtime_bin)]

    def pm(*args, check=True, timeout=60):
        proc = subprocess.run(base + list(args), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {args}: rc={proc.returncode}: {proc.stderr}")
        return proc

    tar = tmp_path / "bb.tar"
    with tarfile.open(tar, "w") as t:
        t.add(rootfs, arcname=".")
    pm("import", str(tar), "localhost/prt-bb:latest")
    yield pm
    pm("rm", "--all", "--force", check=False)
    pm("rmi", "--all", "--force", check=False)
    shutil.rmtree(runroot, ignore_errors=True)


def test_podman_drives_provision_runtime(podman):
    out = podman("run", "--rm", "--net", "none", "--hostname", "pm", *LIMITS, "localhost/prt-bb",
                 "sh", "-c", "echo hello; hostname; echo pid=$$").stdout.split()
    assert out == ["hello", "pm", "pid=1"]
    cid = podman("run", "-d", "--name", "prt1", "--net", "none", *LIMITS, "localhost/prt-bb", "sh", "-c",
                 "trap 'echo bye; exit 0' TERM; echo started; while true; do sleep 0.05; done").stdout.strip()
    assert cid
    assert podman("exec", "prt1", "sh", "-c", "echo in=$(cat /proc/1/cmdline | tr '\\0' ' ')").stdout.startswith(
        "in=sh -c trap")
    podman("pause", "prt1")
    assert podman("inspect", "--format", "{{.State.Status}}", "prt1").stdout.strip() == "paused"
    podman("unpause", "prt1")
    podman("stop", "-t", "10", "prt1")
    assert podman("inspect", "--format", "{{.State.ExitCode}}", "prt1").stdout.strip() == "0"
    assert podman("logs", "prt1").stdout.split() == ["started", "bye"]
    podman("rm", "prt1")
    # the runtime's refusal reaches the podman user as its own one-line message
    bad = podman("run", "--rm", "--net", "none", "--ulimit", "nofile=99999999:99999999", "localhost/prt-bb", "true",
                 check=False)
    if not h.can_raise_rlimits():
        assert bad.returncode != 0
        assert "process.rlimits[0]: raising RLIMIT_NOFILE" in bad.stderr
