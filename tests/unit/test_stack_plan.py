"""The stack planner (pure): fresh -> create all in dependency order; unchanged -> nothing;
one changed service -> it alone (and its linkers); stopped -> start; gone from the file -> remove."""
from __future__ import annotations

import textwrap
from dataclasses import replace

from provisioner.containers.stack import (Create, Current, Recreate, Remove, Stacks, Start, config_hash,
                                          container_name, plan)
from provisioner.stack.services import load_services

STACK = """\
name: shop
volumes: {data: {}}
services:
  app:
    image: busybox
    command: sleep 1000
    links: ["api:backend"]
    depends_on: {web: {condition: service_healthy}}
  web:
    image: web
    ports: ["127.0.0.1:8080:80"]
    healthcheck: {test: "wget -q -O- http://localhost/", interval: 200ms}
  api:
    image: web
    volumes: ["data:/srv", /scratch]
    depends_on: [db]
  db:
    image: busybox
    environment: {A: "1"}
  cron:
    image: busybox
    depends_on: [db]
"""


def _services(tmp_path, text=STACK):
    p = tmp_path / "stack.yml"
    p.write_text(textwrap.dedent(text))
    return load_services(str(p))[1]


def _hashes(s):
    return {n: config_hash(spec, {}) for n, spec in s.services.items()}


def _converged(s):
    return {n: Current(container_name("shop", n), h, True, True) for n, h in _hashes(s).items()}


def test_fresh_creates_everything_in_dependency_order(tmp_path):
    s = _services(tmp_path)
    actions = plan(s, _hashes(s), {})
    assert all(isinstance(a, Create) for a in actions)
    order = [a.service for a in actions]
    assert sorted(order) == ["api", "app", "cron", "db", "web"]
    for before, after in [("db", "api"), ("api", "app"), ("web", "app"), ("db", "cron")]:
        assert order.index(before) < order.index(after), order


def test_unchanged_and_running_is_an_empty_plan(tmp_path):
    s = _services(tmp_path)
    assert plan(s, _hashes(s), _converged(s)) == []


def test_a_changed_service_is_recreated_alone(tmp_path):
    s = _services(tmp_path)
    current = _converged(s)
    changed = _services(tmp_path, STACK.replace('A: "1"', 'A: "2"'))
    assert _hashes(changed)["db"] != current["db"].hash
    # db changed: api and cron depend on it but do not link to it, so they stay
    assert plan(changed, _hashes(changed), current) == [Recreate("db", "configuration changed")]


def test_linkers_of_a_recreated_service_are_recreated(tmp_path):
    s = _services(tmp_path)
    changed = _services(tmp_path, STACK.replace("/scratch]", "/scratch2]"))
    assert plan(changed, _hashes(changed), _converged(s)) == [
        Recreate("api", "configuration changed"), Recreate("app", "a linked service was recreated")]


def test_stopped_is_started_and_missing_is_created(tmp_path):
    s = _services(tmp_path)
    current = _converged(s)
    current["web"] = replace(current["web"], running=False)
    current["cron"] = replace(current["cron"], exists=False, running=False)
    assert plan(s, _hashes(s), current) == [Start("web"), Create("cron")]


def test_a_service_removed_from_the_file_is_removed_first(tmp_path):
    s = _services(tmp_path)
    current = _converged(s)
    current["old"] = Current("shop-old", "abc", True, False)
    assert plan(s, _hashes(s), current) == [Remove("old", "shop-old")]


def test_the_hash_ignores_the_line_and_includes_env_file_contents(tmp_path):
    s = _services(tmp_path)
    db = s.services["db"]
    assert config_hash(db, {}) == config_hash(replace(db, line=99), {})
    with_file = replace(db, env_files=("/x/env",))
    assert config_hash(with_file, {"/x/env": "A=1\n"}) != config_hash(with_file, {"/x/env": "A=2\n"})


def test_run_requests_carry_stack_names(tmp_path):
    s = _services(tmp_path.joinpath())
    st = Stacks(manager=type("M", (), {"root": tmp_path})())
    app = st.request("shop", s.services["app"])
    assert (app.name, app.links, app.command, app.hostname, app.detach) == (
        "shop-app", ("shop-api:backend",), ("sleep", "1000"), "app", True)
    api = st.request("shop", s.services["api"])
    assert api.volumes == ("shop_data:/srv", "/scratch")
    ep = st.request("shop", replace(s.services["app"], entrypoint=("/bin/sh", "-c"), command=("echo hi",)))
    assert (ep.entrypoint, ep.command) == ("/bin/sh", ("-c", "echo hi"))
