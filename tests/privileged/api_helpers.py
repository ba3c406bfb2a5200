"""The Engine API server for the privileged tier: `provision host api` as a real process on a socket
of the test's own, over a root made by test_container's Env (its own bridge, subnet and nftables
table, swept at the end), and the real clients pointed at it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.privileged.test_container import Env
from tests.ptyterm import PtyTerminal

# Debian's docker.io client (API 1.41), not whatever other `docker` is first on PATH
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")
COMPOSE = shutil.which("docker-compose")


class ApiHost:
    def __init__(self, env: Env):
        self.env = env
        self.sock = str(env.root / "docker.sock")
        self.log = open(env.root / "api.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "provisioner.cli.main", "--root", str(env.root), "host",
                                      "api", "--socket", self.sock], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the API server did not start: {(env.root / 'api.log').read_text()}")
            time.sleep(0.05)
        self.environ = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}", "DOCKER_CONFIG": str(env.root / ".docker"),
                        "COMPOSE_INTERACTIVE_NO_CLI": "1"}

    def docker(self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None,
               cwd: str | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=self.environ,
                           input=input, stdin=subprocess.DEVNULL if input is None else None, cwd=cwd)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({p.returncode}): {p.stderr}{self.tail()}")
        return p

    def compose(self, *args: str, cwd: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        p = subprocess.run([COMPOSE, *args], capture_output=True, text=True, timeout=timeout, env=self.environ,
                           stdin=subprocess.DEVNULL, cwd=cwd)
        if check and p.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed ({p.returncode}): {p.stderr}{self.tail()}")
        return p

    def json(self, *args: str):
        return json.loads(self.docker(*args).stdout)

    def tail(self) -> str:
        text = (self.env.root / "api.log").read_text(errors="replace")
        return "\n--- api.log (tail) ---\n" + "\n".join(text.splitlines()[-15:])

    def records(self) -> list[str]:
        d = self.env.root / "containers"
        return sorted(p.name for p in d.iterdir() if len(p.name) == 64) if d.is_dir() else []

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def volumes(env: Env) -> list[str]:
    d = Path(env.root) / "volumes"
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


@pytest.fixture(scope="module")
def api(images):
    """A `provision host api` on a loop-backed root with the test images, for a test module."""
    work, mnt, refs, _ = images
    env = Env(work, mnt, refs)
    host = ApiHost(env)
    try:
        yield host
    finally:
        host.close()
        env.cleanup()


class Terminal(PtyTerminal):
    """The docker client on the slave side of a pty of ours, as a user's terminal runs it."""

    def __init__(self, host: ApiHost, *args: str, rows: int = 33, cols: int = 99):
        super().__init__([DOCKER, *args], host.environ, rows=rows, cols=cols, timeout=30.0)

