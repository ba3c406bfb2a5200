"""Which order `up` recreates a service's container in (compose/switch.py), and the start-first
switch as the engine drives it (fake containers; the ports' nftables switch and the conntrack
flush are tests/privileged/test_port_switch.py's, the whole path the VM test's)."""
from __future__ import annotations

import json

import pytest

from provisioner.compose.switch import next_name, update_order
from provisioner.errors import StackError

from test_stack_plan import STACK, FakeManager, _services, _stacks


def _spec(tmp_path, body: str):
    s = _services(tmp_path, "name: shop\nvolumes: {data: {}}\nservices:\n  web:\n    image: web\n" + body)
    return s.services["web"]


HC = '    healthcheck: {test: "true", interval: 1s}\n'


@pytest.mark.parametrize("body, order, why", [
    (HC, "start-first", "it has a healthcheck"),
    ("", "stop-first", "no healthcheck tells"),
    (HC + "    volumes: [data:/srv]\n", "stop-first", "named volume 'data'"),
    (HC + "    volumes: [data:/srv:ro]\n", "start-first", "it has a healthcheck"),
    (HC + "    volumes: [data:/srv]\n    deploy: {update_config: {order: start-first}}\n", "start-first",
     "deploy.update_config.order"),
    (HC + "    deploy: {update_config: {order: stop-first}}\n", "stop-first", "deploy.update_config.order"),
    (HC + "    deploy: {update_config: {parallelism: 2}}\n", "start-first", "it has a healthcheck"),
    (HC + "    container_name: web1\n    deploy: {update_config: {order: start-first}}\n", "stop-first",
     "container_name 'web1'"),
    (HC + "    network_mode: host\n", "stop-first", "host's network"),
    (HC + "    deploy: {replicas: 2}\n", "stop-first", "a replica at a time"),
])
def test_the_order_a_service_is_recreated_in(tmp_path, body, order, why):
    got, reason = update_order(_spec(tmp_path, body))
    assert got == order and why in reason


def test_rollback_config_speaks_first_when_rolling_back(tmp_path):
    spec = _spec(tmp_path, HC + "    deploy: {rollback_config: {order: stop-first}}\n")
    assert update_order(spec)[0] == "start-first"
    assert update_order(spec, rollback=True) == ("stop-first", "deploy.rollback_config.order")


def test_new_names_count_up_and_never_come_back_to_the_first():
    assert next_name("shop-web", "shop-web") == "shop-web.2"
    assert next_name("shop-web", "shop-web.2") == "shop-web.3"
    assert next_name("shop-web", "shop-web.19") == "shop-web.20"
    assert next_name("shop-web", "other.4") == "shop-web.2"


def _changed(tmp_path, text=STACK):
    return _services(tmp_path, text.replace("interval: 200ms}", "interval: 200ms}\n    environment: {V: \"2\"}"))


def test_a_healthchecked_service_starts_beside_the_old_one_then_takes_its_ports(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path)
    st, _ = _stacks(tmp_path, mgr)
    st.up(s)
    mgr.log.clear()
    st.up(_changed(tmp_path))
    # the new one runs and is healthy before the old one goes; the old one goes last (after the
    # other services' health), and its linkers are not recreated (web has none)
    log = [x for x in mgr.log if not x.startswith(("health", "check-now"))]
    assert log == ["run shop-web.2", "takeover shop-web.2 from shop-web", "rm shop-web"]
    assert mgr.log.index("check-now shop-web.2") < mgr.log.index("takeover shop-web.2 from shop-web")
    state = json.loads(st._state_path("shop").read_text())
    assert state["services"]["web"]["container"] == "shop-web.2" and state["retiring"] == []
    assert {r["service"]: r["container"] for r in st.ps(s)}["web"] == "shop-web.2"
    assert st.switched == {"web": {"container": "shop-web.2", "replaced": "shop-web", "seconds": 0.0}}
    # the next change: shop-web.3 beside shop-web.2
    mgr.log.clear()
    st.up(_changed(tmp_path, STACK.replace("interval: 200ms}", "interval: 300ms}")))
    assert [x for x in mgr.log if x.startswith(("run", "rm", "takeover"))] == [
        "run shop-web.3", "takeover shop-web.3 from shop-web.2", "rm shop-web.2"]
    assert st.plan(_changed(tmp_path, STACK.replace("interval: 200ms}", "interval: 300ms}"))) == []


def test_a_new_version_that_never_becomes_healthy_is_removed_and_the_old_one_serves_on(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path, {"shop-web.2": ["starting", "unhealthy"]})
    st, _ = _stacks(tmp_path, mgr)
    st.up(s)
    before = st._state_path("shop").read_text()
    mgr.log.clear()
    with pytest.raises(StackError) as err:
        st.up(_changed(tmp_path))
    msg = str(err.value)
    assert "service web: the new container shop-web.2 did not become ready" in msg
    assert "shop-web keeps serving, unchanged" in msg and "shop-web.2 says goodbye" in msg
    assert "takeover" not in " ".join(mgr.log) and mgr.log[-1] == "rm shop-web.2"
    assert mgr.containers["shop-web"] is True and "shop-web.2" not in mgr.containers
    assert st._state_path("shop").read_text() == before


def test_stop_first_for_a_service_without_healthcheck_and_for_a_stopped_one(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path)
    st, _ = _stacks(tmp_path, mgr)
    st.up(s)
    mgr.log.clear()
    st.up(_services(tmp_path, STACK.replace('A: "1"', 'A: "2"')))      # db: no healthcheck
    assert [x for x in mgr.log if x.startswith(("run", "rm"))] == ["rm shop-db", "run shop-db"]
    mgr.containers["shop-web"] = False                                   # web stopped: nothing to keep serving
    mgr.log.clear()
    st.up(_changed(tmp_path, STACK.replace('A: "1"', 'A: "2"')))
    assert [x for x in mgr.log if x.startswith(("run", "rm", "takeover"))] == ["rm shop-web", "run shop-web"]


def test_an_old_container_an_interrupted_up_left_is_removed_by_the_next(tmp_path):
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path)
    st, _ = _stacks(tmp_path, mgr)
    st.up(s)
    real_rm = mgr.rm

    def interrupted(name, force, remove_volumes):
        if name == "shop-web":
            raise KeyboardInterrupt
        real_rm(name, force, remove_volumes)
    mgr.rm = interrupted
    with pytest.raises(KeyboardInterrupt):
        st.up(_changed(tmp_path))
    assert json.loads(st._state_path("shop").read_text())["retiring"] == ["shop-web"]
    mgr.rm = real_rm
    assert st.plan(_changed(tmp_path)) == []
    mgr.log.clear()
    st.up(_changed(tmp_path))
    assert mgr.log[:1] == ["rm shop-web"] and "shop-web" not in mgr.containers
    assert json.loads(st._state_path("shop").read_text())["retiring"] == []
    st.down(s)
    assert mgr.containers == {}


def test_a_new_version_its_restart_policy_keeps_restarting_is_refused_at_its_first_exit(tmp_path):
    """restart: always would start a crashing command again and again until the health budget
    ran out (minutes); a switch's new container gets one life: the first exit refuses it."""
    s = _services(tmp_path)
    mgr = FakeManager(tmp_path, {"shop-web.2": ["starting"]})
    st, clock = _stacks(tmp_path, mgr)
    st.up(s)
    mgr.restarts = {"shop-web.2": 1}
    with pytest.raises(StackError) as err:
        st.up(_changed(tmp_path))
    assert "service web stopped (exit code 0) before it became healthy" in str(err.value)
    assert clock.t < 1 and mgr.containers == {**mgr.containers, "shop-web": True}
    assert "shop-web.2" not in mgr.containers


def test_deploy_reports_the_hosts_one_error_with_the_lines_under_it():
    """`up` failing on the host: deploy's error is its error line and the log tail under it, not
    whatever two lines came last."""
    import subprocess

    from provisioner.deploy.hoststeps import remote_json
    from provisioner.errors import HostError

    class Ssh:
        def run(self, argv, **kw):
            return subprocess.CompletedProcess(argv, 1, "", "web: start-first (it has a healthcheck)\n"
                                               "error: service web: the new container hello-web.2 did not become "
                                               "ready (stopped); hello-web keeps serving, unchanged\n"
                                               "--- last lines of hello-web.2 ---\nbroken on purpose\n")
    with pytest.raises(HostError) as err:
        remote_json(Ssh(), ["up", "-f", "stack.yml"])
    assert str(err.value).splitlines() == [
        "`provision up -f stack.yml` failed on the host (exit 1): service web: the new container hello-web.2 did "
        "not become ready (stopped); hello-web keeps serving, unchanged",
        "--- last lines of hello-web.2 ---", "broken on purpose"]


def test_the_boot_convergence_starts_again_a_service_whose_restart_policy_gave_up(tmp_path):
    """After a reboot a service restarting under on-failure:N (running when the boot hook looked)
    can use its N up before what it depends on is ready; the hook's start-only up, waiting for its
    health, starts it once more — and a plain up does not (its error stands)."""
    s = _services(tmp_path)

    class GivesUp(FakeManager):
        def health(self, rec):
            if rec.name == "shop-web" and self.__dict__.setdefault("gave_up", 0) < 1:
                self.gave_up += 1
                self.containers["shop-web"] = False      # its last restart failed: exited for good
                self.log.append("web gave up")
                return None
            return super().health(rec)
    mgr = GivesUp(tmp_path)
    mgr.gave_up = 1
    st, _ = _stacks(tmp_path, mgr)
    st.up(s)
    mgr.gave_up, mgr.log = 0, []
    assert st.up(s, start_only=True) == []
    assert "web gave up" in mgr.log and mgr.log.index("web gave up") < mgr.log.index("start shop-web")
    assert mgr.containers["shop-web"] is True
    mgr.gave_up = 0
    with pytest.raises(Exception, match="service web stopped"):
        st.up(s)
