"""The boot hook's api step: the service started (no systemd here: the daemon with its pid file), and
the `docker` wrapper for `docker system dial-stdio` written only where the host has no docker of its
own — run here for real: dial-stdio joins its stdin/stdout to a socket; anything else goes to a
docker later on PATH or is refused."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading

from provisioner.host.config import HostConfig
from provisioner.host.steps import StepContext, api
from provisioner.testing import FakeRunner


def ctx_for(tmp_path) -> StepContext:
    sysroot = tmp_path / "sys"
    (sysroot / "run").mkdir(parents=True)
    return StepContext(config=HostConfig(host="h"), runner=FakeRunner(), root=tmp_path / "root", sysroot=sysroot)


def test_plan_starts_the_server_and_writes_the_wrapper_only_without_a_docker(tmp_path):
    ctx = ctx_for(tmp_path)
    actions = api.plan(ctx)
    assert [type(a).__name__ for a in actions] == ["WriteFile", "StartApi"]
    assert actions[0].path == str(ctx.path(api.WRAPPER)) and actions[0].mode == 0o755
    assert actions[1].argv[-6:] == ("api", "--socket", str(ctx.path(api.SOCKET)), "--daemon", "--pid-file",
                                    str(ctx.path(api.PID_FILE)))
    api.apply(ctx, actions[:1])
    assert [type(a).__name__ for a in api.plan(ctx)] == ["StartApi"]        # the wrapper is current
    real = ctx.path("/usr/bin/docker")
    real.parent.mkdir(parents=True)
    real.write_text("#!/bin/sh\necho real docker\n")
    real.chmod(0o755)
    steps = api.plan(ctx)     # a real docker came: ours steps aside, theirs is never touched
    assert [(type(a).__name__, getattr(a, "path", "")) for a in steps][0] == ("RemoveFile", str(ctx.path(api.WRAPPER)))
    systemd = ctx_for(tmp_path / "sd")
    (systemd.sysroot / "run/systemd/system").mkdir(parents=True)
    systemd.runner.expect(["systemctl", "is-enabled", api.UNIT], stdout="disabled\n")
    systemd.runner.expect(["systemctl", "is-active", api.UNIT], stdout="inactive\n")
    names = [a.describe() for a in api.plan(systemd)]
    assert names[1:] == [f"write {systemd.path(api.UNIT_PATH)} (644)", "systemctl daemon-reload",
                         f"systemctl enable --no-reload {api.UNIT}", f"systemctl restart {api.UNIT}"]
    unit = api.unit_text("/usr/bin/python3", systemd.root)
    assert f"host api --socket {api.SOCKET}" in unit and "Restart=always" in unit


def _wrapper(tmp_path, extra_path: str = "") -> tuple[str, dict]:
    path = tmp_path / "bin" / "docker"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(api.wrapper_text(sys.executable))
    path.chmod(0o755)
    tools = tmp_path / "tools"      # what the wrapper needs, and no docker of this machine's
    tools.mkdir(exist_ok=True)
    for t in ("readlink",):
        if not (tools / t).exists():
            (tools / t).symlink_to(shutil.which(t))
    env = {**os.environ, "PATH": f"{path.parent}:{extra_path}{tools}",
           "PYTHONPATH": api.__file__.rsplit("/provisioner/", 1)[0]}
    return str(path), env


def test_the_wrapper_dials_the_socket_for_docker_system_dial_stdio(tmp_path):
    sock_path = str(tmp_path / "api.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sock_path)
    srv.listen(1)
    got = {}

    def serve():
        c, _ = srv.accept()
        data = b""
        while not data.endswith(b"\r\n\r\n"):
            data += c.recv(4096)
        got["request"] = data
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
        c.close()

    t = threading.Thread(target=serve)
    t.start()
    docker, env = _wrapper(tmp_path)
    p = subprocess.run([docker, f"--host=unix://{sock_path}", "system", "dial-stdio"],
                       input=b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n", capture_output=True, env=env, timeout=30)
    t.join(5)
    srv.close()
    assert p.returncode == 0, p.stderr
    assert got["request"].startswith(b"GET /_ping HTTP/1.1") and p.stdout.endswith(b"\r\n\r\nOK")
    # nothing listening: one line saying where it tried
    p = subprocess.run([docker, f"--host=unix://{tmp_path}/none.sock", "system", "dial-stdio"], input=b"",
                       capture_output=True, env=env, timeout=30)
    assert p.returncode == 1 and b"cannot connect to the Engine API at" in p.stderr


def test_any_other_command_goes_to_a_real_docker_or_is_refused(tmp_path):
    docker, env = _wrapper(tmp_path)
    p = subprocess.run([docker, "ps"], capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 127 and "no docker CLI on this host" in p.stderr
    real = tmp_path / "later" / "docker"
    real.parent.mkdir()
    real.write_text("#!/bin/sh\necho real docker \"$@\"\n")
    real.chmod(0o755)
    docker, env = _wrapper(tmp_path, extra_path=f"{real.parent}:")
    p = subprocess.run([docker, "ps", "-a"], capture_output=True, text=True, env=env, timeout=30)
    assert (p.returncode, p.stdout) == (0, "real docker ps -a\n")
