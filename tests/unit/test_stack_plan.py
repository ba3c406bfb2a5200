"""The stack planner (pure): fresh -> create all in dependency order; unchanged -> nothing;
one changed service -> it alone (and its linkers); stopped -> start; gone from the file -> remove."""
from __future__ import annotations

import textwrap
from dataclasses import replace

from provisioner.compose.engine import Stacks
from provisioner.compose.names import container_name
from provisioner.compose.plan import Create, Current, Recreate, Remove, Start, config_hash, describe, plan
from provisioner.stack import load_stack

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
    return load_stack(p, hosts_required=False)


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
    app = st.request(s, s.services["app"])
    assert (app.name, app.links, app.command, app.hostname, app.detach) == (
        "shop-app", (("shop-api", "backend"),), ("sleep", "1000"), "app", True)
    assert [(a.network, a.aliases) for a in app.networks] == [("shop_default", ("app",))]
    assert dict(app.labels)["com.docker.compose.project"] == "shop"
    api = st.request(s, s.services["api"])
    assert [str(v) for v in api.volumes] == ["shop_data:/srv", "/scratch"]
    ep = st.request(s, replace(s.services["app"], entrypoint=("/bin/sh", "-c"), command=("echo hi",)))
    assert (ep.entrypoint, ep.command) == ("/bin/sh", ("-c", "echo hi"))


# ---- apply over a fake container Manager --------------------------------------------------------

import pytest  # noqa: E402

from provisioner.errors import ContainerError  # noqa: E402


class _Rec:
    def __init__(self, name, config=None):
        self.id = self.name = name
        self.config = config or {}


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


class FakeManager:
    """Containers as names. Their supervisors' health files as scripts: `health[name]` is the
    status each read returns, in turn (the last one repeats); without a script, "healthy"."""

    def __init__(self, root, health=None):
        self.root = root
        self.containers: dict[str, bool] = {}
        self.configs: dict[str, dict] = {}
        self.log: list[str] = []
        self.health_script = {k: list(v) for k, v in (health or {}).items()}
        self.volumes = _Volumes()
        self.records = self

    # records
    def find(self, ref):
        return _Rec(ref, self.configs.get(ref)) if ref in self.containers else None

    def get(self, ref):
        return _Rec(ref, self.configs.get(ref))

    # manager
    def is_running(self, rec):
        return self.containers[rec.name]

    def status(self, rec):
        st = _Status("running" if self.containers[rec.name] else "exited", 0)
        st.restart_count = self.__dict__.get("restarts", {}).get(rec.name, 0)
        return st

    def run(self, req):
        assert req.name not in self.containers, f"{req.name} created twice"
        self.containers[req.name] = True
        self.configs[req.name] = {"healthcheck": {"test": list(req.healthcheck.test)}} if req.healthcheck else {}
        for v in req.volumes:
            if v.kind == "volume":
                self.volumes.names.add(v.source)
        self.log.append(f"run {req.name}")

    def rm(self, name, force, remove_volumes):
        del self.containers[name]
        self.log.append(f"rm {name}")

    def start(self, name):
        self.containers[name] = True
        self.log.append(f"start {name}")

    def takeover(self, new, old):
        """No network here: the ports' switch is the privileged tests' (test_port_switch.py)."""
        self.log.append(f"takeover {new} from {old}")
        return None

    def logs(self, name, tail=None):
        from provisioner.containers.shimlogs import LogLine

        return [LogLine("2026-01-01T00:00:00Z", "stdout", f"{name} says goodbye\n")]

    # the shim's health file
    def health(self, rec):
        from provisioner.containers.supervise import Health

        if not rec.config.get("healthcheck"):
            return None
        self.log.append(f"health {rec.name}")
        script = self.health_script.get(rec.name) or ["healthy"]
        status = script.pop(0) if len(script) > 1 else script[0]
        return Health(status, output="fail\n" if status == "unhealthy" else "")

    def check_health_now(self, rec):
        self.log.append(f"check-now {rec.name}")
        return True

    # networks
    def ensure_network(self, spec):
        self.__dict__.setdefault("networks", set()).add(spec.name)

    def network_exists(self, name):
        return name in self.__dict__.get("networks", set())

    def networks_labelled(self, key, value):
        return sorted(self.__dict__.get("networks", set()))

    def remove_network_if_unused(self, name):
        self.__dict__.get("networks", set()).discard(name)
        self.log.append(f"rm network {name}")
        return True


class _Clock:
    def __init__(self):
        self.t = 0.0

    def now(self):
        return self.t

    def sleep(self, s):
        self.t += s


def _stacks(tmp_path, mgr):
    from provisioner.compose.engine import Stacks

    clock = _Clock()
    return Stacks(manager=mgr, now=clock.now, sleep=clock.sleep), clock


def test_up_creates_in_order_waits_for_health_and_re_up_does_nothing(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path, {"shop-web": ["starting", "starting", "healthy"]})
    st, clock = _stacks(tmp_path, mgr)
    actions = st.up(s)
    assert [type(a).__name__ for a in actions] == ["Create"] * 5
    runs = [x for x in mgr.log if x.startswith("run")]
    # app waits for web's health (read from web's supervisor) before it is created; web's first
    # check is asked for at once rather than one interval after its start; api and cron, which
    # wait on nothing unmet, are created before that wait, not held behind it
    app = mgr.log.index("run shop-app")
    assert mgr.log[mgr.log.index("run shop-web"):app] == [
        "run shop-web", "run shop-api", "run shop-cron",
        "check-now shop-web", "health shop-web", "health shop-web", "health shop-web"]
    assert mgr.log.index("run shop-db") < mgr.log.index("run shop-web")
    assert clock.t == pytest.approx(0.1)   # two polls of 50 ms while web was starting
    assert len(runs) == 5
    rows = {r["service"]: r["health"] for r in st.ps(s)}
    assert rows == {"web": "healthy", "app": "none", "api": "none", "db": "none", "cron": "none"}
    mgr.log.clear()
    # a re-up only reads web's health (healthy): nothing created, started or asked of the shim
    assert st.up(s) == [] and [x for x in mgr.log if not x.startswith("health ")] == ["check-now shop-web"]
    assert st.plan(s) == []


def test_a_failing_healthcheck_stops_up_before_the_dependents(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path, {"shop-web": ["starting", "starting", "unhealthy"]})
    st, _ = _stacks(tmp_path, mgr)
    with pytest.raises(ContainerError, match=r"service web is unhealthy: 3 checks failed \(last: fail\)"):
        st.up(s)
    assert "run shop-app" not in mgr.log and mgr.log.count("health shop-web") == 3
    assert {r["service"]: r["health"] for r in st.ps(s)}["web"] == "unhealthy"


def test_the_healthcheck_goes_to_the_container_and_its_supervisor(tmp_path):
    """The rules (start period, retries, timeouts) are the shim's: native/shim/tests/test_health.c."""
    text = STACK.replace("interval: 200ms}", "interval: 200ms, start_period: 1s, retries: 5, timeout: 2s}")
    s = _services(tmp_path, text)
    st = Stacks(manager=type("M", (), {"root": tmp_path})())
    hc = st.request(s, s.services["web"]).healthcheck
    assert (hc.test, hc.interval, hc.timeout, hc.retries, hc.start_period) == (
        ("/bin/sh", "-c", "wget -q -O- http://localhost/"), 0.2, 2.0, 5, 1.0)
    assert st.request(s, s.services["db"]).healthcheck is None


def test_a_container_made_before_the_shim_ran_healthchecks_is_recreated(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path)
    st, _ = _stacks(tmp_path, mgr)
    st.up(s)
    mgr.configs["shop-web"] = {}   # its record has no healthcheck: the old Python monitor probed it
    assert st.plan(s) == [Recreate("web", "configuration changed")]


def test_a_container_the_state_lost_is_recreated_not_duplicated(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path)
    st, _ = _stacks(tmp_path, mgr)
    st.up(s)
    st._state_path("shop").unlink()
    assert {type(a).__name__ for a in st.plan(s)} == {"Recreate"}
    st.up(s)
    assert st.plan(s) == []


def test_down_removes_dependents_first_and_named_volumes_only_with_v(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path)
    st, _ = _stacks(tmp_path, mgr)
    st.up(s)
    mgr.log.clear()
    removed = st.down(s)
    assert removed.index("shop-app") < removed.index("shop-api") < removed.index("shop-db")
    assert mgr.containers == {} and mgr.volumes.names == {"shop_data"}
    assert not st._state_path("shop").exists()
    st.up(s)
    st.down(s, remove_volumes=True)
    assert mgr.volumes.names == set()


def test_a_service_that_exits_before_healthy_fails_up_at_once(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path, {"shop-web": ["starting"]})
    st, _ = _stacks(tmp_path, mgr)
    real_run = mgr.run

    def run_and_die(req):
        real_run(req)
        if req.name == "shop-web":
            mgr.containers[req.name] = False
    mgr.run = run_and_die
    with pytest.raises(ContainerError, match=r"service web stopped \(exit code 0\) before it became healthy"):
        st.up(s)
    assert mgr.log.count("health shop-web") == 0   # what its file says is moot: it stopped


def test_the_health_of_a_run_before_a_restart_is_not_taken_for_the_current_one(tmp_path):
    s = _services(tmp_path)
    # web crashed after it was healthy and its policy restarts it: the file still says healthy
    # (of the run before) while it is "restarting"; `up` waits for the new run's own health
    mgr = FakeManager(tmp_path, {"shop-web": ["healthy"]})
    st, clock = _stacks(tmp_path, mgr)
    real_status = mgr.status
    polls = []

    def status(rec):
        out = real_status(rec)
        if rec.name == "shop-web":
            polls.append(clock.t)
            if clock.t < 0.2:
                out.state = "restarting"
        return out
    mgr.status = status
    st.up(s)
    app = mgr.log.index("run shop-app")
    assert "health shop-web" in mgr.log[:app] and clock.t >= 0.2
    assert mgr.log[:app].count("health shop-web") == 1   # read only once it ran again


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
    st.up(s)
    assert "shop-db" in seen and clock.t >= 0.5
    assert mgr.log.index("run shop-api") > mgr.log.index("run shop-db")


def test_up_waits_as_long_as_a_services_own_healthcheck_needs():
    from provisioner.compose.waits import UP_TIMEOUT, wait_budget
    from provisioner.runspec.health import Healthcheck
    from provisioner.stack import ServiceSpec

    quick = ServiceSpec(name="a", image="x", healthcheck=Healthcheck(("true",), interval=1, timeout=1, retries=3))
    slow = ServiceSpec(name="b", image="x", healthcheck=Healthcheck(("true",), interval=10, timeout=30, retries=5,
                                                                      start_period=60))
    assert wait_budget(ServiceSpec(name="c", image="x")) == UP_TIMEOUT
    assert wait_budget(quick) == UP_TIMEOUT
    assert wait_budget(slow) == 60 + 6 * 40


def test_start_only_starts_what_exists_and_never_creates(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path)
    st, _clock = _stacks(tmp_path, mgr)
    st.up(s)
    mgr.containers["shop-db"] = False          # stopped (e.g. gave up while a dependency started)
    del mgr.containers["shop-cron"]             # gone: only `up` may create it again
    mgr.log.clear()
    actions = st.up(s, start_only=True)
    assert [(type(a).__name__, a.service) for a in actions] == [("Start", "db")]
    assert [x for x in mgr.log if x.startswith(("run", "start", "rm"))] == ["start shop-db"]


REPLICATED = """\
name: shop
networks:
  back: {internal: true}
services:
  web:
    image: web
    ports: ["8080:80"]
    networks: [default, back]
    deploy: {replicas: 3}
  db:
    image: busybox
    networks:
      back: {aliases: [database]}
"""


def test_replicas_are_planned_one_by_one_and_scaled_down_from_the_top(tmp_path):
    s = _services(tmp_path, REPLICATED)
    hashes = {n: config_hash(spec, {}) for n, spec in s.services.items()}
    assert plan(s, hashes, {}) == [Create("web", 1), Create("web", 2), Create("web", 3), Create("db")]
    current = {"db": Current("shop-db", hashes["db"], True, True)}
    current.update({k: Current(c, hashes["web"], True, True) for k, c in
                    (("web", "shop-web"), ("web#2", "shop-web-2"), ("web#3", "shop-web-3"))})
    assert plan(s, hashes, current) == []
    fewer = _services(tmp_path, REPLICATED.replace("replicas: 3", "replicas: 2"))
    assert plan(fewer, hashes, current) == [Remove("web#3", "shop-web-3")]
    assert describe(Remove("web#3", "shop-web-3")) == "remove shop-web-3 (replica 3 of web is not wanted)"
    assert describe(Create("web", 2)) == "create web (replica 2)"


def test_replica_requests_and_the_stacks_networks(tmp_path):
    from provisioner.compose import request as requests

    s = _services(tmp_path, REPLICATED)
    reqs = [requests.request(s, s.services["web"], n) for n in (1, 2, 3)]
    assert [r.name for r in reqs] == ["shop-web", "shop-web-2", "shop-web-3"]
    assert [(a.network, a.aliases) for a in reqs[0].networks] == [("shop_default", ("web",)), ("shop_back", ("web",))]
    assert [dict(r.labels)["com.docker.compose.container-number"] for r in reqs] == ["1", "2", "3"]
    db = requests.request(s, s.services["db"])
    assert [(a.network, a.aliases) for a in db.networks] == [("shop_back", ("db", "database"))]
    assert [(n.name, n.internal) for n in requests.network_specs(s)] == [("shop_default", False), ("shop_back", True)]


def test_up_makes_the_networks_first_and_down_removes_them(tmp_path):
    s = _services(tmp_path, REPLICATED)
    mgr = FakeManager(tmp_path)
    st, _ = _stacks(tmp_path, mgr)
    st.up(s)
    assert mgr.networks == {"shop_default", "shop_back"}
    assert mgr.log[:4] == ["run shop-web", "run shop-web-2", "run shop-web-3", "run shop-db"]
    st.down(s)
    assert mgr.networks == set() and "rm network shop_back" in mgr.log
