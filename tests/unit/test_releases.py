"""Release records (compose/releases.py), portable config hashes, and what deploy plans from them
(deploy/changes.py): pure, on temp directories."""
from __future__ import annotations

import json

import pytest

from provisioner.compose.plan import service_hashes
from provisioner.compose.releases import KEEP, Releases
from provisioner.deploy.changes import (ServiceChange, current_release, fingerprint, healthy, parse_probe_output,
                                        plan_changes, probe_command)
from provisioner.errors import HostError, StackError
from provisioner.stack import load_stack

STACK = """\
name: shop
services:
  db:
    image: redis:7
  web:
    image: 127.0.0.1:5000/shop/web:1
    env_file: web.env
    links: [db]
    volumes: ["./static:/srv/static:ro"]
  worker:
    image: 127.0.0.1:5000/shop/web:1
    command: ["work"]
"""
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def _stack(folder, env="A=1\n", text=STACK):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "web.env").write_text(env)
    (folder / "stack.yml").write_text(text)
    return load_stack(folder / "stack.yml", hosts_required=False)


def _services(stack, pins=None):
    pins = pins or {}
    specs = service_hashes(stack, portable=True)
    return {n: {"hash": f"h-{n}", "spec": specs[n], "image": s.image, "digest": pins.get(s.image),
                "image_name": s.image.rsplit(":", 1)[0], "container": f"shop-{n}"}
            for n, s in stack.services.items()}


def test_portable_hashes_ignore_where_the_stack_folder_is_but_not_what_is_in_it(tmp_path):
    here, there = _stack(tmp_path / "operator"), _stack(tmp_path / "etc-provisioner")
    assert service_hashes(here, portable=True) == service_hashes(there, portable=True)
    assert service_hashes(here) != service_hashes(there)          # the host's own hash keeps absolute paths
    changed = _stack(tmp_path / "other", env="A=2\n")
    diff = {n for n, h in service_hashes(changed, portable=True).items() if h != service_hashes(here, portable=True)[n]}
    assert diff == {"web"}
    # a digest is part of the (non-portable) hash: a new digest under the same tag is a new container
    assert service_hashes(here, {"redis:7": D1})["db"] != service_hashes(here, {"redis:7": D2})["db"]


def test_records_are_numbered_keep_the_last_five_and_copy_the_files(tmp_path):
    stack = _stack(tmp_path / "app")
    rel = Releases(tmp_path / "root", "shop")
    assert rel.current() is None and rel.numbers() == []
    for i in range(KEEP + 2):
        (tmp_path / "app" / "web.env").write_text(f"A={i}\n")
        made = rel.record(stack, _services(stack), [f"recreate web ({i})"], "deploy")
        assert made.number == i + 1 and rel.current().number == i + 1
    assert rel.numbers() == list(range(3, KEEP + 3))
    last = rel.current()
    assert last.by == "deploy" and last.changes == (f"recreate web ({KEEP + 1})",)
    assert last.stack_path == str(tmp_path / "app" / "stack.yml") and len(last.stack_sha256) == 64
    assert (rel.dir / "4" / "web.env").read_text() == "A=3\n"
    assert (rel.dir / "4" / "stack.yml").read_text() == STACK
    assert oct(rel.dir.joinpath("4").stat().st_mode & 0o777) == "0o700"
    assert rel.previous().number == KEEP + 1
    with pytest.raises(StackError, match=r"stack shop has no release 1 on this host \(kept: 3, 4, 5, 6, 7\)"):
        rel.get(1)


def test_previous_and_restore_put_the_files_back(tmp_path):
    app = tmp_path / "app"
    stack = _stack(app)
    rel = Releases(tmp_path / "root", "shop")
    with pytest.raises(StackError, match="stack shop has no release before the current one on this host"):
        rel.previous()
    first = rel.record(stack, _services(stack), [], "deploy")
    with pytest.raises(StackError, match="no release before release 1"):
        rel.previous()
    (app / "web.env").write_text("A=2\n")
    (app / "stack.yml").write_text(STACK.replace("redis:7", "redis:8"))
    rel.record(load_stack(app / "stack.yml", hosts_required=False), {}, [], "deploy")
    assert rel.previous() == first
    assert rel.restore(first) == app / "stack.yml"
    assert (app / "web.env").read_text() == "A=1\n" and (app / "stack.yml").read_text() == STACK
    # release 2 still holds what was replaced: nothing is lost
    assert (rel.dir / "2" / "web.env").read_text() == "A=2\n"


def test_an_unreadable_release_is_one_error(tmp_path):
    stack = _stack(tmp_path / "app")
    rel = Releases(tmp_path / "root", "shop")
    rel.record(stack, {}, [], "up")
    (rel.dir / "1" / "release.json").write_text("{")
    with pytest.raises(StackError, match="release 1 of shop is unreadable"):
        rel.get(1)


# -- deploy's change plan ---------------------------------------------------------------------------
def _current(stack, pins):
    return {"number": 3, "current": True, "services": _services(stack, pins)}


def test_the_change_plan_names_each_service_and_why(tmp_path):
    old = _stack(tmp_path / "host")
    pins = {"redis:7": D1, "127.0.0.1:5000/shop/web:1": D1}
    cur = _current(old, pins)
    same = _stack(tmp_path / "op")
    assert [c.action for c in plan_changes(same, service_hashes(same, portable=True), pins, cur)] == ["keep"] * 3

    env = _stack(tmp_path / "env", env="A=2\n")
    assert sorted(c.describe() for c in plan_changes(env, service_hashes(env, portable=True), pins, cur)) == [
        "keep db", "keep worker", "recreate web (configuration changed)"]

    moved = dict(pins, **{"redis:7": D2})
    assert sorted(c.describe() for c in plan_changes(same, service_hashes(same, portable=True), moved, cur)) == [
        "keep worker", "recreate db (image redis:7: new digest 222222222222 (was 111111111111))",
        "recreate web (a linked service is recreated)"]

    text = STACK.replace("  worker:\n    image: 127.0.0.1:5000/shop/web:1\n    command: [\"work\"]\n", "") \
        .replace("redis:7", "redis:8") + "  cache:\n    image: redis:7\n"
    new = _stack(tmp_path / "new", text=text)
    plan = plan_changes(new, service_hashes(new, portable=True), dict(pins, **{"redis:8": D2}), cur)
    assert plan[0].describe() == "remove worker (no longer in the stack)"
    assert sorted(c.describe() for c in plan[1:]) == [
        "create cache", "recreate db (image redis:7 -> redis:8)", "recreate web (a linked service is recreated)"]
    assert plan[0].to_json() == {"service": "worker", "action": "remove", "why": ["no longer in the stack"]}
    assert [c.action for c in plan_changes(new, {}, {}, None)] == ["create"] * 3


def test_a_release_from_an_agent_before_change_plans_is_checked_not_guessed(tmp_path):
    stack = _stack(tmp_path / "op")
    cur = {"services": {n: {"hash": "x", "image": s.image} for n, s in stack.services.items()}}
    assert {c.action for c in plan_changes(stack, service_hashes(stack, portable=True), {}, cur)} == {"check"}


def test_fingerprint_covers_every_file_and_setting():
    base = fingerprint({"/etc/provisioner/stack.yml": b"a", "/etc/provisioner/.env": b"b"}, {"images": "pull"})
    assert base == fingerprint({"/etc/provisioner/.env": b"b", "/etc/provisioner/stack.yml": b"a"}, {"images": "pull"})
    assert base != fingerprint({"/etc/provisioner/stack.yml": b"a", "/etc/provisioner/.env": b"c"}, {"images": "pull"})
    assert base != fingerprint({"/etc/provisioner/stack.yml": b"a", "/etc/provisioner/.env": b"b"}, {"images": "push"})
    # a byte moved from one file to the next is a change
    assert fingerprint({"/a": b"xy", "/b": b""}, {}) != fingerprint({"/a": b"x", "/b": b"y"}, {})


def test_the_probe_answers_and_what_deploy_makes_of_them():
    cmd = probe_command("/opt/provisioner/venv", "f" * 64, "shop", "/etc/provisioner/stack.yml", "web")
    assert cmd[:2] == ["sh", "-c"] and "f" * 64 in cmd[2] and "releases shop --json" in cmd[2]
    rows = [{"service": "web", "state": "running", "health": "healthy", "up_to_date": True}]
    head = "Python 3.11.2\nglibc 2.36\nx86_64\nvenv\nabc click.whl\n\nclick.whl\n"
    p = parse_probe_output(head + "@@provisioner:deployed\n" + "f" * 64 + "\n\n@@provisioner:services\n"
                           + json.dumps(rows) + "\n\n@@provisioner:releases\n", "h")
    assert p.deployed == "f" * 64 and p.services == rows and p.releases is None
    assert p.facts.marker == "abc click.whl" and p.facts.deps == ("click.whl",)
    assert healthy(p.services, ("web",)) and not healthy(p.services, ("web", "db")) and not healthy(None, ())
    assert not healthy([dict(rows[0], health="starting")], ("web",))
    assert not healthy([dict(rows[0], up_to_date=False)], ("web",))
    releases = [{"number": 1, "current": False}, {"number": 2, "current": True}]
    q = parse_probe_output(head + "@@provisioner:deployed\n\n@@provisioner:services\n\n@@provisioner:releases\n"
                           + json.dumps(releases), "h")
    assert q.deployed == "" and q.services is None and current_release(q.releases)["number"] == 2
    # an agent that does not know `releases` (or prints anything else): nothing known, no error
    r = parse_probe_output(head + "@@provisioner:deployed\n\n@@provisioner:services\n\n@@provisioner:releases\n"
                           "Usage: provision [OPTIONS]", "h")
    assert r.releases is None
    with pytest.raises(HostError, match="deploy probe of h: unexpected answer"):
        parse_probe_output(head, "h")


def test_the_probe_script_runs_as_a_shell_would(tmp_path):
    """The probe's shell, for real, against a fake agent and deployed file: ps only when the
    fingerprint matches, releases only when it does not."""
    import subprocess

    from provisioner.deploy import changes

    agent, deployed = tmp_path / "provision", tmp_path / "deployed"
    agent.write_text("#!/bin/sh\necho \"[\\\"$1\\\"]\"\n")
    agent.chmod(0o755)
    deployed.write_text("f" * 64)
    script = probe_command(str(tmp_path / "venv"), "f" * 64, "shop", "/s.yml", "web")[2]
    script = script.replace(changes.AGENT, str(agent)).replace(changes.DEPLOYED, str(deployed))
    out = parse_probe_output(subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout, "h")
    assert out.deployed == "f" * 64 and out.services == ["ps"] and out.releases is None
    deployed.write_text("other")
    out = parse_probe_output(subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout, "h")
    assert out.deployed == "other" and out.services is None and out.releases == ["releases"]
    assert ServiceChange("a", "keep").describe() == "keep a"


def test_the_probe_does_not_ask_an_agent_about_to_be_replaced(tmp_path):
    """Same files, but the host's agent is not the one this deploy brings for that Python: it is
    replaced first, so its `ps` (a Python start on the host) is not asked; on another Python than
    expected, or with the expected agent, it is."""
    import subprocess
    import sys

    from provisioner.deploy import changes

    agent, deployed, venv = tmp_path / "provision", tmp_path / "deployed", tmp_path / "venv"
    agent.write_text("#!/bin/sh\necho \"[\\\"$1\\\"]\"\n")
    agent.chmod(0o755)
    deployed.write_text("f" * 64)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/provision").symlink_to(agent)
    (tmp_path / "venv.installed").write_text("old-agent\n")
    here = subprocess.run(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True).stdout.strip()

    def probe(expect):
        script = probe_command(str(venv), "f" * 64, "shop", "/s.yml", "web", agent=expect)[2]
        script = script.replace(changes.AGENT, str(agent)).replace(changes.DEPLOYED, str(deployed))
        return parse_probe_output(subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout, "h")

    stale = probe((here, "new-agent"))
    assert stale.facts.marker == "old-agent" and stale.deployed == "f" * 64
    assert stale.services is None and stale.releases is None
    assert probe((here, "old-agent")).services == ["ps"]
    assert probe(("2.7", "new-agent")).services == ["ps"]      # another Python: its own bundle decides
    assert probe(None).services == ["ps"]
