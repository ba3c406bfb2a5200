"""Shared by the deploy VM tests: images in a loopback registry, the CLI, HTTP from the operator side."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from provisioner.deploy import inventory
from provisioner.errors import CommandError, HostError
from provisioner.remote.ssh import SshClient
from provisioner.imagebuild.recipes import build, push
from provisioner.runner import Runner

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def push_images(workdir: Path, registry: str, images: dict[str, str]) -> None:
    """images: repository path (e.g. "hello/busybox:1") -> recipe."""
    runner = Runner()
    for ref, recipe in images.items():
        layout = workdir / recipe
        if not (layout / "index.json").exists():
            build(recipe, layout, runner)
        push(layout, f"{registry}/{ref}", runner=runner)


def provision(root: Path, *args: str, env: dict | None = None, timeout: float = 1800,
              check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})
    sys.stderr.write(proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"provision {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc


def deploy(root: Path, stack: Path, env: dict) -> dict:
    proc = provision(root, "deploy", "--cloud", "local", "-f", str(stack), "--json", env=env)
    return json.loads(proc.stdout)


def http_get(port: int, path: str = "/", timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def ssh_to(root: Path, name: str) -> SshClient:
    client = SshClient(inventory.find(root, name).target())
    client.wait_ready(timeout=300)
    return client


def reboot_and_wait(root: Path, name: str, timeout: float = 700.0) -> float:
    """Reboot the guest (qemu stays), wait until SSH answers with a new boot id; returns seconds."""
    with ssh_to(root, name) as ssh:
        boot_id = ssh.run(["cat", "/proc/sys/kernel/random/boot_id"]).stdout.strip()
        # from a transient unit, so this command returns before the connection drops
        ssh.run(["systemd-run", "--on-active=1", "systemctl", "reboot"], sudo=True)
    start = time.monotonic()
    while True:
        client = SshClient(inventory.find(root, name).target())
        try:
            client.wait_ready(timeout=timeout)  # the same pinned host keys must be accepted
            # a connection made while the guest shuts down is never closed by qemu's user-mode
            # network (the guest just stops answering): ask briefly, and ask again on a new one
            try:
                now = client.run(["cat", "/proc/sys/kernel/random/boot_id"], timeout=30).stdout.strip()
            except (CommandError, HostError):
                now = boot_id
            if now != boot_id:
                return time.monotonic() - start
        finally:
            client.close()
        assert time.monotonic() - start < timeout, "the VM did not come back from the reboot"
        time.sleep(2)
