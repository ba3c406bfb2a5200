"""A stack's healthchecks run by each container's supervisor (provision-shim), not by a Python
process: health recorded between ups, kept across restarts by the restart policy (starting over
each time, as Docker does), a check past its timeout killed inside the container. Real busybox
images, runtime, shim and network (fixtures shared with test_stack_up.py / test_container.py)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.privileged.test_container import NOTHING, alive, images, pytestmark, wait_for  # noqa: F401
from tests.privileged.test_stack_up import _ps, _write, env  # noqa: F401
from tests.registry_fixture import free_port


def _python_monitors() -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and b"provisioner.containers.healthmon" in (p / "cmdline").read_bytes():
                out.append(int(p.name))
        except OSError:
            pass
    return out


def _procs_running(*argv: str) -> list[int]:
    """Processes whose command line is exactly argv (not the shim or exec that carry it as args)."""
    want = b"\0".join(a.encode() for a in argv) + b"\0"
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and (p / "cmdline").read_bytes() == want:
                out.append(int(p.name))
        except OSError:
            pass
    return out


def test_health_is_recorded_between_ups_by_the_shims_alone(env):
    path = _write(env, free_port(), **{"      retries: 25\n  api": "      retries: 2\n  api"})
    env.provision("up", "-f", path)
    stack = f"s{env.sfx}"
    web = f"{stack}-web"
    assert not _python_monitors()
    env.provision("container", "exec", web, "mv", "/www/index.html", "/www/away.html")
    wait_for(lambda: _ps(env, path)["web"]["health"] == "unhealthy", timeout=10, what="web unhealthy")
    detail = _ps(env, path)["web"]["health_detail"]
    assert detail["failing_streak"] >= 2 and detail["exit_code"] != 0
    assert _ps(env, path)["front"]["health"] == "healthy"   # front probes api, which still serves
    # inspect shows the same health (the shim's file)
    assert env.inspect(web)["health"]["status"] == "unhealthy"
    env.provision("container", "exec", web, "mv", "/www/away.html", "/www/index.html")
    wait_for(lambda: _ps(env, path)["web"]["health"] == "healthy", timeout=10, what="web healthy again")
    # a re-up leaves every container alone
    pids = {s: r["pid"] for s, r in _ps(env, path).items()}
    assert env.provision("up", "-f", path).stdout.strip() == f"{stack}: up to date"
    assert {s: r["pid"] for s, r in _ps(env, path).items()} == pids
    env.provision("down", "-f", path)
    assert env.leftovers() == NOTHING   # no shim, no health file left behind


def test_health_checks_go_on_across_restarts_and_start_over_each_time(env):
    path = _write(env, free_port(), **{"    ports: [": "    restart: always\n    ports: ["})
    env.provision("up", "-f", path)
    web = f"s{env.sfx}-web"
    first = _ps(env, path)["web"]
    assert first["health"] == "healthy" and first["health_detail"]["restart_count"] == 0
    os.kill(env.container_pid(env.inspect(web)["id"]), signal.SIGKILL)
    row = wait_for(lambda: (r := _ps(env, path)["web"])["restart_count"] == 1 and r["state"] == "running" and r,
                   what="web restarted by its policy")
    # the second run's health is its own: it started over and the shim's checks made it healthy again
    h = wait_for(lambda: (d := _ps(env, path)["web"]["health_detail"])["restart_count"] == 1
                 and d["status"] == "healthy" and d, timeout=10, what="the restarted web healthy")
    assert h["pid"] == row["pid"] and h["checks"] >= 1
    env.provision("down", "-f", path)
    assert env.leftovers() == NOTHING


def test_a_check_past_its_timeout_is_killed_in_the_container(env):
    path = _write(env, free_port(), **{
        'test: wget -q -O- http://localhost/index.html': 'test: ["CMD", "sleep", "31337"]',
        "      interval: 200ms\n      timeout: 2s\n      retries: 25\n":
            "      interval: 1h\n      timeout: 300ms\n      retries: 1\n"})
    proc = env.provision("up", "-f", path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: service web is unhealthy: 1 checks failed (last: Health check exceeded timeout (0.3s))")
    web = _ps(env, path)["web"]
    assert web["health"] == "unhealthy" and web["health_detail"]["checks"] == 1   # the one `up` asked for
    # the sleep the runtime's exec started in the container (its pid in the check's pid file) went
    # with the check, and was running until then (the check's exec got that far)
    pid_file = env.root / "containers" / ".supervise" / f"{env.inspect(f's{env.sfx}-web')['id']}.health.pid"
    assert int(pid_file.read_text()) > 1
    wait_for(lambda: not _procs_running("sleep", "31337"), timeout=5, what="the timed-out check's sleep gone")
    env.provision("down", "-f", path)
    assert env.leftovers() == NOTHING

