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


# ---- apply over a fake container Manager --------------------------------------------------------

import pytest  # noqa: E402

from provisioner.errors import ContainerError  # noqa: E402


class _Rec:
    def __init__(self, name):
        self.id = self.name = name


class _Status:
    def __init__(self, state, exit_code=None):
        self.state, self.exit_code, self.pid, self.restart_count = state, exit_code, 1, 0


class _Volumes:
    def __init__(self):
        self.names = set()

    def exists(self, n):
        return n in self.names

    def remove(self, n):
        self.names.discard(n)


class _Result:
    def __init__(self, rc):
        self.returncode, self.stdout, self.stderr = rc, "", "" if rc == 0 else "fail"


class FakeManager:
    """Containers as names; `healthy_after[name]` = probes that fail before one succeeds."""

    def __init__(self, root, healthy_after=None):
        self.root = root
        self.containers: dict[str, bool] = {}
        self.log: list[str] = []
        self.healthy_after = dict(healthy_after or {})
        self.volumes = _Volumes()
        self.records = self
        self.runner = self

    # records
    def find(self, ref):
        return _Rec(ref) if ref in self.containers else None

    def get(self, ref):
        return _Rec(ref)

    # manager
    def is_running(self, rec):
        return self.containers[rec.name]

    def status(self, rec):
        return _Status("running" if self.containers[rec.name] else "exited", 0)

    def run(self, req):
        assert req.name not in self.containers, f"{req.name} created twice"
        self.containers[req.name] = True
        for v in req.volumes:
            if not v.startswith("/"):
                self.volumes.names.add(v.split(":")[0])
        self.log.append(f"run {req.name}")

    def rm(self, name, force, remove_volumes):
        del self.containers[name]
        self.log.append(f"rm {name}")

    def start(self, name):
        self.containers[name] = True
        self.log.append(f"start {name}")

    def exec_argv(self, name, argv):
        return [name, *argv]

    # runner
    def run_probe(self, argv, check, timeout):
        name = argv[0]
        self.log.append(f"probe {name}")
        left = self.healthy_after.get(name, 0)
        self.healthy_after[name] = left - 1
        return _Result(0 if left <= 0 else 1)


class _Clock:
    def __init__(self):
        self.t = 0.0

    def now(self):
        return self.t

    def sleep(self, s):
        self.t += s


def _stacks(tmp_path, mgr):
    from provisioner.containers.stack import Stacks

    mgr.runner = type("R", (), {"run": staticmethod(mgr.run_probe)})()
    clock = _Clock()
    return Stacks(manager=mgr, now=clock.now, sleep=clock.sleep), clock


def test_up_creates_in_order_waits_for_health_and_re_up_does_nothing(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path, {"shop-web": 2})
    st, clock = _stacks(tmp_path, mgr)
    actions = st.up("shop", s)
    assert [type(a).__name__ for a in actions] == ["Create"] * 5
    runs = [x for x in mgr.log if x.startswith("run")]
    # app waits for web's health before it is created
    assert mgr.log.index("run shop-app") > max(i for i, x in enumerate(mgr.log) if x == "probe shop-web")
    assert mgr.log.count("probe shop-web") == 3 and clock.t == pytest.approx(0.4)
    assert len(runs) == 5
    state = st.load_state("shop")
    assert state["services"]["web"]["health"]["status"] == "healthy"
    mgr.log.clear()
    assert st.up("shop", s) == [] and mgr.log == []
    assert st.plan("shop", s) == []


def test_a_failing_healthcheck_stops_up_before_the_dependents(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path, {"shop-web": 99})
    st, _ = _stacks(tmp_path, mgr)
    with pytest.raises(ContainerError, match="service web is unhealthy: 3 checks failed"):
        st.up("shop", s)
    assert "run shop-app" not in mgr.log and mgr.log.count("probe shop-web") == 3
    assert st.load_state("shop")["services"]["web"]["health"]["status"] == "unhealthy"


def test_start_period_failures_do_not_count(tmp_path):
    text = STACK.replace("interval: 200ms}", "interval: 200ms, start_period: 1s}")
    s = _services(tmp_path, text)
    mgr = FakeManager(tmp_path, {"shop-web": 6})   # 6 failures in the first 1.2 s: only 1 counts
    st, _ = _stacks(tmp_path, mgr)
    st.up("shop", s)
    assert mgr.log.count("probe shop-web") == 7


def test_a_container_the_state_lost_is_recreated_not_duplicated(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path)
    st, _ = _stacks(tmp_path, mgr)
    st.up("shop", s)
    st._state_path("shop").unlink()
    assert {type(a).__name__ for a in st.plan("shop", s)} == {"Recreate"}
    st.up("shop", s)
    assert st.plan("shop", s) == []


def test_down_removes_dependents_first_and_named_volumes_only_with_v(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path)
    st, _ = _stacks(tmp_path, mgr)
    st.up("shop", s)
    mgr.log.clear()
    removed = st.down("shop", s)
    assert removed.index("shop-app") < removed.index("shop-api") < removed.index("shop-db")
    assert mgr.containers == {} and mgr.volumes.names == {"shop_data"}
    assert not st._state_path("shop").exists()
    st.up("shop", s)
    st.down("shop", s, remove_volumes=True)
    assert mgr.volumes.names == set()


def test_a_service_that_exits_before_healthy_fails_up_at_once(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path, {"shop-web": 99})
    st, _ = _stacks(tmp_path, mgr)
    real_run = mgr.run

    def run_and_die(req):
        real_run(req)
        if req.name == "shop-web":
            mgr.containers[req.name] = False
    mgr.run = run_and_die
    with pytest.raises(ContainerError, match=r"service web stopped \(exit code 0\) before it became healthy"):
        st.up("shop", s)
    assert mgr.log.count("probe shop-web") == 1


def test_completed_successfully_waits_for_exit_zero(tmp_path):
    text = STACK.replace("    depends_on: [db]\n  db:", "    depends_on: {db: {condition: service_completed_successfully}}\n  db:")
    assert text != STACK
    s = _services(tmp_path, text)
    mgr = FakeManager(tmp_path)
    st, clock = _stacks(tmp_path, mgr)
    real_status = mgr.status
    seen = []

    def status(rec):   # db runs for 0.5 s, then exits 0
        if rec.name == "shop-db" and clock.t >= 0.5:
            mgr.containers["shop-db"] = False
        seen.append(rec.name)
        return real_status(rec)
    mgr.status = status
    st.up("shop", s)
    assert "shop-db" in seen and clock.t >= 0.5
    assert mgr.log.index("run shop-api") > mgr.log.index("run shop-db")
