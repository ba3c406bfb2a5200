"""`provision up/ps/down` end to end: a 4-service busybox stack from images pushed to a loopback
registry, on a loop-backed btrfs root, with the real runtime, shim and network (fixtures shared
with test_container.py)."""
from __future__ import annotations

import json
import textwrap

import pytest

from tests.privileged.test_container import NOTHING, PAGE, Env, alive, http_get, images, pytestmark, wait_for  # noqa: F401
from tests.registry_fixture import free_port

STACK = """\
name: {name}
volumes:
  data: {{}}
services:
  front:
    image: {busybox}
    command: sleep 1000
    links: ["api:backend", "web"]
    depends_on:
      web: {{condition: service_healthy}}
      api: {{condition: service_started}}
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://backend/index.html"]
      interval: 200ms
      retries: 25
  web:
    image: {web}
    ports: ["127.0.0.1:{port}:80"]
    healthcheck:
      test: wget -q -O- http://localhost/index.html
      interval: 200ms
      timeout: 2s
      retries: 25
  api:
    image: {web}
    environment: {{ROLE: api}}
  worker:
    image: {busybox}
    command: ["sh", "-c", "echo N=$N; sleep 1000"]
    environment: {{N: "1"}}
    volumes: ["data:/data", /scratch]
    depends_on: [web]
"""


@pytest.fixture
def env(images):
    work, mnt, refs, _ = images
    e = Env(work, mnt, refs)
    try:
        yield e
    finally:
        e.provision("down", "-f", str(e.work / f"stack-{e.sfx}.yml"), check=False)
        e.cleanup()


def _write(env: Env, port: int, **changes) -> str:
    text = STACK.format(name=f"s{env.sfx}", busybox=env.refs["busybox"], web=env.refs["web"], port=port)
    for old, new in changes.items():
        text = text.replace(old, new)
    path = env.work / f"stack-{env.sfx}.yml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def _ps(env: Env, path: str) -> dict:
    return {r["service"]: r for r in json.loads(env.provision("ps", "-f", path, "--json").stdout)}


def test_up_is_healthy_idempotent_recreates_only_the_changed_service_and_down_leaves_nothing(env):
    port = free_port()
    path = _write(env, port)
    out = env.provision("up", "-f", path)
    assert "web is healthy" in out.stderr and "front is healthy" in out.stderr
    ps = _ps(env, path)
    assert {s: (r["state"], r["health"]) for s, r in ps.items()} == {
        "web": ("running", "healthy"), "api": ("running", "none"), "front": ("running", "healthy"),
        "worker": ("running", "none")}
    assert ps["web"]["container"] == f"s{env.sfx}-web"
    # through the published port from the host, and from one service to another by its link alias
    assert wait_for(lambda: http_get(port), what="httpd through the stack's port") == PAGE
    assert env.provision("container", "exec", f"s{env.sfx}-front", "wget", "-q", "-O-",
                         "http://backend/index.html").stdout == PAGE
    assert "BACKEND_ENV_ROLE=api" in env.provision("container", "exec", f"s{env.sfx}-front", "env").stdout.split()
    pids = {s: r["pid"] for s, r in ps.items()}
    assert all(pids.values())

    # up again, nothing changed: nothing restarted
    again = env.provision("up", "-f", path)
    assert again.stdout.strip() == f"s{env.sfx}: up to date"
    assert {s: r["pid"] for s, r in _ps(env, path).items()} == pids

    # one service's environment changed: it alone is recreated
    path = _write(env, port, **{'{N: "1"}': '{N: "2"}'})
    changed = json.loads(env.provision("up", "-f", path, "--json").stdout)
    assert [(a["action"], a["service"]) for a in changed] == [("recreate", "worker")]
    now = {s: r["pid"] for s, r in _ps(env, path).items()}
    assert now["worker"] != pids["worker"]
    assert {s: p for s, p in now.items() if s != "worker"} == {s: p for s, p in pids.items() if s != "worker"}
    assert "N=2" in env.provision("container", "exec", f"s{env.sfx}-worker", "env").stdout.split()
    env.provision("container", "exec", f"s{env.sfx}-worker", "sh", "-c", "echo kept > /data/f")

    # down: nothing left but the named volume (kept without -v)
    down = env.provision("down", "-f", path)
    assert sorted(down.stdout.split()) == sorted(f"s{env.sfx}-{s}" for s in pids)
    assert env.leftovers() == NOTHING
    for pid in pids.values():
        wait_for(lambda: not alive(pid), timeout=5, what=f"process {pid} gone")
    vol = env.root / "volumes" / f"s{env.sfx}_data"
    assert (vol / "f").read_text() == "kept\n"
    # the anonymous /scratch volumes went with their containers
    assert [p.name for p in (env.root / "volumes").iterdir() if p.is_dir()] == [vol.name]
    assert not (env.root / "stacks" / f"s{env.sfx}.json").exists()
    assert all(r["state"] == "missing" for r in _ps(env, path).values())
    # up again finds the data; down -v removes the named volume too
    env.provision("up", "-f", path)
    assert env.provision("container", "exec", f"s{env.sfx}-worker", "cat", "/data/f").stdout == "kept\n"
    env.provision("down", "-v", "-f", path)
    assert env.leftovers() == NOTHING
    assert [p.name for p in (env.root / "volumes").iterdir() if p.is_dir()] == []


def test_releases_and_rollback_recreate_only_what_differs(env):
    """Each `up` that changes something is a release; rollback puts the earlier stack file back
    and recreates only the service it changes; rolling back is a release too."""
    port = free_port()
    path = _write(env, port)
    stack = f"s{env.sfx}"
    env.provision("up", "-f", path)
    first = {s: r["pid"] for s, r in _ps(env, path).items()}
    path = _write(env, port, **{'{N: "1"}': '{N: "2"}'})
    env.provision("up", "-f", path)
    rels = json.loads(env.provision("releases", stack, "--json").stdout)
    assert [(r["number"], r["current"], r["by"]) for r in rels] == [(1, False, "up"), (2, True, "up")]
    assert rels[1]["changes"] == ["recreate worker (configuration changed)"]
    assert rels[1]["services"]["worker"]["spec"] != rels[0]["services"]["worker"]["spec"]

    out = json.loads(env.provision("rollback", stack, "--json").stdout)
    assert out["release"] == 1 and out["actions"] == ["recreate worker (configuration changed)"]
    assert out["tcp_ports"] == []        # its one port is published on 127.0.0.1: nothing for others to check
    assert 'N: "1"' in open(path).read()                               # the stack file as it was
    now = {s: r["pid"] for s, r in _ps(env, path).items()}
    assert {s: p for s, p in now.items() if s != "worker"} == {s: p for s, p in first.items() if s != "worker"}
    assert "N=1" in env.provision("container", "exec", f"{stack}-worker", "env").stdout.split()
    assert wait_for(lambda: http_get(port), what="httpd through the stack's port") == PAGE
    rels = json.loads(env.provision("releases", stack, "--json").stdout)
    assert [(r["number"], r["current"], r["by"]) for r in rels] == [
        (1, False, "up"), (2, False, "up"), (3, True, "rollback to 1")]
    # forward again, by number; and a release that is not kept is one clear error
    assert json.loads(env.provision("rollback", stack, "--to", "2", "--json").stdout)["release"] == 2
    assert "N=2" in env.provision("container", "exec", f"{stack}-worker", "env").stdout.split()
    bad = env.provision("rollback", stack, "--to", "9", check=False)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        f"error: stack {stack} has no release 9 on this host (kept: 1, 2, 3, 4)"]


def test_an_invalid_stack_is_one_error_line_and_creates_nothing(env):
    path = _write(env, free_port(), **{"    depends_on: [web]\n": "    depends_on: [web]\n    privileged: true\n"})
    proc = env.provision("up", "-f", path, check=False)
    assert proc.returncode == 2
    line = next(i for i, ln in enumerate(open(path).read().splitlines(), 1) if "privileged" in ln)
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}:{line}: services.worker.privileged: a privileged container has every capability and the "
        "host's devices; give --allow-privileged to `up`/`deploy` to run it"]
    assert env.leftovers() == NOTHING
    assert not (env.root / "stacks").exists()
    assert not (env.root / "volumes").exists() or not any((env.root / "volumes").iterdir())


def test_a_failing_healthcheck_fails_up_naming_the_service(env):
    path = _write(env, free_port(), **{"wget -q -O- http://localhost/index.html": "wget -q -O- http://localhost/nope",
                                       "      retries: 25\n  api": "      retries: 3\n  api"})
    proc = env.provision("up", "-f", path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: service web is unhealthy: 3 checks failed")
    # front waits for web to be healthy, so it was never created
    ps = _ps(env, path)
    assert ps["front"]["state"] == "missing" and ps["web"]["health"] == "unhealthy"
    env.provision("down", "-f", path)
    assert env.leftovers() == NOTHING


def test_a_healthchecked_service_switches_start_first_without_a_failed_request(env):
    """web (healthcheck, published port) changes: its new container comes up beside the old one,
    healthy, then takes the port; a client polling every 50 ms through the port sees no failure,
    and the old container is gone when `up` returns. A version that never becomes healthy is
    refused and the serving one is left as it was."""
    import threading
    import time

    port = free_port()
    path = _write(env, port)
    stack = f"s{env.sfx}"
    env.provision("up", "-f", path)
    assert wait_for(lambda: http_get(port), what="httpd through the stack's port") == PAGE
    failures, answered, stop = [], [], threading.Event()

    def poll():
        while not stop.is_set():
            try:
                answered.append(http_get(port) == PAGE)
            except Exception as exc:   # noqa: BLE001 - a failed request, whatever its kind
                failures.append(repr(exc))
            stop.wait(0.05)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        path = _write(env, port, **{"timeout: 2s": "timeout: 3s"})
        out = env.provision("up", "-f", path)
        assert "web: start-first (it has a healthcheck)" in out.stderr
        assert "web: switched to " in out.stderr and "(healthy → traffic)" in out.stderr
        ps = _ps(env, path)
        assert ps["web"]["container"] == f"{stack}-web.2" and ps["web"]["health"] == "healthy"
        names = {c["name"] for c in json.loads(env.provision("container", "ps", "--json").stdout)}
        assert f"{stack}-web" not in names and f"{stack}-web.2" in names
        served = len(answered)

        # a version whose command exits: refused, the old one serving on
        broken = _write(env, port, **{"timeout: 2s": "timeout: 4s",
                                      "  web:\n    image: {web}\n".format(web=env.refs["web"]):
                                      "  web:\n    image: {web}\n    command: [sh, -c, 'echo broken on purpose; exit 3']\n"
                                      .format(web=env.refs["web"])})
        bad = env.provision("up", "-f", broken, check=False)
        assert bad.returncode != 0
        assert f"service web: the new container {stack}-web.3 did not become ready" in bad.stderr
        assert f"{stack}-web.2 keeps serving, unchanged" in bad.stderr and "broken on purpose" in bad.stderr
        time.sleep(0.5)
    finally:
        stop.set()
        poller.join(10)
    assert failures == [] and all(answered) and len(answered) > served > 0
    assert _ps(env, path)["web"]["container"] == f"{stack}-web.2"
    names = {c["name"] for c in json.loads(env.provision("container", "ps", "-a", "--json").stdout)}
    assert f"{stack}-web.3" not in names
