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


def _wrapper(tmp_path, extra_path: str = "", uid: int | None = None, python: str = sys.executable) -> tuple[str, dict]:
    """The generated wrapper in tmp_path/bin, and an environment whose PATH has it, the tools it
    needs and no docker of this machine's; with `uid`, an `id` that says the caller is that user."""
    path = tmp_path / "bin" / "docker"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(api.wrapper_text(python))
    path.chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for t in ("readlink", "id", "env"):
        if not (tools / t).exists():
            (tools / t).symlink_to(shutil.which(t))
    if uid is not None:
        (tools / "id").unlink()
        (tools / "id").write_text(f"#!/bin/sh\n[ \"$1\" = -u ] && echo {uid}\n")
        (tools / "id").chmod(0o755)
    env = {**os.environ, "PATH": f"{path.parent}:{extra_path}{tools}",
           "PYTHONPATH": api.__file__.rsplit("/provisioner/", 1)[0]}
    env.pop("DOCKER_HOST", None)
    return str(path), env


def _fake_sudo(tmp_path, refuse: bool = False, name: str = "sudo-bin") -> tuple[str, object]:
    """A `sudo` on PATH that logs its arguments and runs the command with the environment reset of
    DOCKER_HOST (as sudo's env_reset would), or refuses as `sudo -n` does for a user without
    passwordless sudo."""
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    log = tmp_path / f"{name}.log"
    body = ('echo "sudo: a password is required" >&2; exit 1' if refuse else
            '[ "$1" = -n ] || exit 99\nshift\nexec env -u DOCKER_HOST "$@"')
    (d / "sudo").write_text(f"#!/bin/sh\necho \"$*\" >> {log}\n{body}\n")
    (d / "sudo").chmod(0o755)
    return f"{d}:", log


def _listen(sock_path: str, answers: int = 1) -> tuple[threading.Thread, dict]:
    """A socket answering each connection's first request with 200 OK (the requests kept)."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sock_path)
    srv.listen(answers)
    got: dict = {"requests": []}

    def serve():
        for _ in range(answers):
            c, _ = srv.accept()
            data = b""
            while not data.endswith(b"\r\n\r\n"):
                data += c.recv(4096)
            got["requests"].append(data)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
            c.close()
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t, got


PING = b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"


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


def test_a_caller_who_cannot_write_the_socket_dials_through_sudo_n(tmp_path):
    """DOCKER_HOST=ssh://admin@host: the login is not root and the socket is 0660 root:root, so the
    wrapper runs dial-stdio under `sudo -n`, passing the socket as --host (sudo drops DOCKER_HOST);
    root, or a caller who may write to the socket, dials directly, and a login without passwordless
    sudo gets sudo's own refusal."""
    sock_path = str(tmp_path / "api.sock")
    unreachable = f"{tmp_path}/run-provisioner-0700/docker.sock"   # what a non-member cannot even see
    sudo_dir, log = _fake_sudo(tmp_path)
    # a writable socket: dialled directly, whoever asks
    t, got = _listen(sock_path)
    docker, env = _wrapper(tmp_path, extra_path=sudo_dir, uid=1000)
    p = subprocess.run([docker, f"--host=unix://{sock_path}", "system", "dial-stdio"], input=PING,
                       capture_output=True, env=env, timeout=30)
    t.join(5)
    assert p.returncode == 0 and p.stdout.endswith(b"OK"), p.stderr
    assert not log.exists()
    # not writable by the caller (here: not there for it), named by DOCKER_HOST: through sudo -n
    p = subprocess.run([docker, "system", "dial-stdio"], input=b"", capture_output=True,
                       env={**env, "DOCKER_HOST": f"unix://{unreachable}"}, timeout=30)
    assert log.read_text().split() == ["-n", sys.executable, "-m", "provisioner.api.dialstdio",
                                       f"--host=unix://{unreachable}", "system", "dial-stdio"]
    assert p.returncode == 1 and f"cannot connect to the Engine API at {unreachable}".encode() in p.stderr
    # ... and by -H, which beats DOCKER_HOST, as with the docker CLI
    log.unlink()
    subprocess.run([docker, "-H", f"unix://{unreachable}", "system", "dial-stdio"], input=b"",
                   capture_output=True, env={**env, "DOCKER_HOST": f"unix://{sock_path}"}, timeout=30)
    assert f"--host=unix://{unreachable} -H unix://{unreachable} system dial-stdio" in log.read_text()
    # the default socket, for a plain `docker system dial-stdio` (what docker 20.10's ssh transport runs)
    log.unlink()
    subprocess.run([docker, "system", "dial-stdio"], input=b"", capture_output=True, env=env, timeout=30)
    assert f"--host=unix://{api.SOCKET} system dial-stdio" in log.read_text()
    # through sudo, the API is reached: the fake sudo runs the dial (as the caller, here) to a live socket
    log.unlink()
    sock2 = str(tmp_path / "api2.sock")
    t, got = _listen(sock2)
    os.chmod(sock2, 0o666)
    fake = tmp_path / "sudo-bin" / "sudo"       # root's view: the socket it reaches is this live one
    fake.write_text(fake.read_text().replace('"$@"', f'"$@" --host=unix://{sock2}'))
    p = subprocess.run([docker, "system", "dial-stdio"], input=PING, capture_output=True,
                       env={**env, "DOCKER_HOST": f"unix://{unreachable}"}, timeout=30)
    t.join(5)
    assert p.returncode == 0 and p.stdout.endswith(b"OK") and got["requests"][0].startswith(b"GET /_ping"), p.stderr
    # root never goes through sudo
    log.unlink()
    docker, env = _wrapper(tmp_path, extra_path=sudo_dir, uid=0)
    p = subprocess.run([docker, "system", "dial-stdio"], input=b"", capture_output=True,
                       env={**env, "DOCKER_HOST": f"unix://{unreachable}"}, timeout=30)
    assert not log.exists() and p.returncode == 1 and b"cannot connect" in p.stderr
    # a login without passwordless sudo: sudo's refusal, nothing dialled
    sudo_dir, log = _fake_sudo(tmp_path, refuse=True, name="no-sudo")
    docker, env = _wrapper(tmp_path, extra_path=sudo_dir, uid=1000)
    p = subprocess.run([docker, "system", "dial-stdio"], input=b"", capture_output=True,
                       env={**env, "DOCKER_HOST": f"unix://{unreachable}"}, timeout=30)
    assert p.returncode == 1 and p.stderr == b"sudo: a password is required\n"


def test_a_real_non_root_caller_without_write_access_goes_through_sudo(tmp_path):
    """The same, with no fake `id`: an actual unprivileged user (setpriv, when this runs as root) and a
    socket it may not write to."""
    setpriv = shutil.which("setpriv")
    python = "/usr/bin/python3"            # one the other user may run (sys.executable may be under /root)
    if os.geteuid() != 0 or not setpriv or not os.access(python, os.X_OK):
        import pytest
        pytest.skip("needs root, setpriv and /usr/bin/python3 to run the wrapper as another user")
    import tempfile
    d = tempfile.mkdtemp(prefix="wrapper-")         # world-traversable, unlike pytest's tmp_path
    try:
        os.chmod(d, 0o755)
        base = __import__("pathlib").Path(d)
        sock_path = str(base / "api.sock")
        t, got = _listen(sock_path)
        os.chmod(sock_path, 0o660)                  # root:root, as provision host api makes it
        sudo_dir, log = _fake_sudo(base, refuse=True)
        docker, env = _wrapper(base, extra_path=sudo_dir, python=python)
        os.chmod(base, 0o777)                       # so that nobody may write the sudo log
        p = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", docker,
                            f"--host=unix://{sock_path}", "system", "dial-stdio"], input=b"",
                           capture_output=True, env=env, timeout=30)
        assert log.read_text().startswith("-n "), p.stderr
        assert p.returncode == 1 and p.stderr == b"sudo: a password is required\n"
        os.chmod(sock_path, 0o666)                  # writable by anyone: dialled directly
        log.unlink()
        p = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", docker,
                            f"--host=unix://{sock_path}", "system", "dial-stdio"], input=PING,
                           capture_output=True, env=env, timeout=30)
        t.join(5)
        assert p.returncode == 0 and p.stdout.endswith(b"OK") and not log.exists(), p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)
