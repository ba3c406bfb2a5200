"""The healthcheck's Python side without processes: what the shim is told (argv, spec for restarts
and boot), how its health file is read, who may be asked for a check now, and the container's
check command (the runtime's exec, as `container exec` does it)."""
from __future__ import annotations

import json
import os

import pytest

from provisioner.containers import supervise
from provisioner.containers.supervise import Health, HealthCheck
from provisioner.errors import ContainerError
from provisioner.testing import FakeRunner

CHECK = HealthCheck(("/rt", "--root", "/run/rt", "exec", "--pid-file", "/s/c1.health.pid", "c1", "--",
                     "wget", "-q", "-O-", "http://localhost/"), interval=0.2, timeout=2.5, retries=5,
                    start_period=1.0, pid_file="/s/c1.health.pid")


def _split(argv):
    """The shim's argv as its getopt reads it: (option, value) pairs, then the command after the
    bare `--` (a `--` given as an option's value, as in the check's exec, is just a value)."""
    pairs, i = [], 1
    while argv[i] != "--":
        pairs.append((argv[i], argv[i + 1]))
        i += 2
    return pairs, list(argv[i + 1:])


def _opt(pairs, name):
    return [v for k, v in pairs if k == name]


def test_start_hands_the_healthcheck_to_the_shim(tmp_path):
    runner = FakeRunner().expect(["/opt/shim"], prefix=True, stdout="1 2\n")
    supervise.start("c1", ["run", "c1"], "always", tmp_path, tmp_path, runner=runner, shim="/opt/shim", health=CHECK)
    (argv,) = runner.commands()
    head, command = _split(argv)
    assert _opt(head, "--health-cmd") == ["/rt"]
    assert _opt(head, "--health-cmd-arg") == list(CHECK.argv[1:])
    assert _opt(head, "--health-file") == [str(tmp_path / "c1.health.json")]
    assert _opt(head, "--health-pid-file") == ["/s/c1.health.pid"]
    assert (_opt(head, "--health-interval"), _opt(head, "--health-timeout"), _opt(head, "--health-retries"),
            _opt(head, "--health-start-period")) == (["0.2"], ["2.5"], ["5"], ["1"])
    assert command == ["run", "c1"]
    # recorded for `start`/`restart` and for the boot-time restore
    assert json.loads((tmp_path / "c1.spec.json").read_text())["health"] == CHECK.to_json()


def test_without_a_healthcheck_the_shim_gets_no_health_options(tmp_path):
    runner = FakeRunner().expect(["/opt/shim"], prefix=True, stdout="1 2\n")
    supervise.start("c1", ["run"], "no", tmp_path, tmp_path, runner=runner, shim="/opt/shim")
    (argv,) = runner.commands()
    assert not [a for a in argv if a.startswith("--health")]
    assert json.loads((tmp_path / "c1.spec.json").read_text())["health"] is None


def test_restart_keeps_the_healthcheck(tmp_path):
    runner = FakeRunner().expect(["/opt/shim"], prefix=True, stdout="1 2\n")
    supervise.start("c1", ["run"], "always", tmp_path, tmp_path, runner=runner, shim="/opt/shim", health=CHECK)
    (tmp_path / "c1.health.json").write_text('{"status": "healthy"}')
    supervise.restart("c1", tmp_path, runner=runner, shim="/opt/shim")
    first, second = runner.commands()
    assert first == second
    # the old run's health is gone before the new shim starts: never reported for the new run
    assert supervise.health("c1", tmp_path) is None


@pytest.mark.parametrize("bad", [
    {"argv": ()}, {"interval": 0}, {"timeout": -1}, {"retries": 0}, {"start_period": -1}])
def test_a_bad_healthcheck_is_refused_before_anything_runs(tmp_path, bad):
    runner = FakeRunner()
    check = HealthCheck(**{**CHECK.to_json(), "argv": CHECK.argv, **bad})
    with pytest.raises(ContainerError, match="bad healthcheck"):
        supervise.start("c1", ["run"], "no", tmp_path, tmp_path, runner=runner, shim="/x", health=check)
    assert runner.calls == []


def test_health_reads_the_shims_file(tmp_path):
    assert supervise.health("c1", tmp_path) is None
    (tmp_path / "c1.health.json").write_bytes(
        b'{"status": "unhealthy", "failing_streak": 3, "checks": 7, "pid": 42, "restart_count": 1, '
        b'"exit_code": -1, "started_at": "T0", "checked_at": "T1", "output": "bad \xff byte", "future": 1}')
    h = supervise.health("c1", tmp_path)
    assert h == Health("unhealthy", 3, 7, -1, "bad \ufffd byte", "T0", "T1", 42, 1)
    assert h.to_json()["failing_streak"] == 3


@pytest.mark.parametrize("text", ['{"status": "great"}', "{not json", "[]"])
def test_an_unreadable_health_file_is_one_clear_error(tmp_path, text):
    (tmp_path / "c1.health.json").write_text(text)
    with pytest.raises(ContainerError, match="c1.health.json: unreadable health state"):
        supervise.health("c1", tmp_path)


def test_check_now_only_signals_a_live_shim_that_runs_checks(tmp_path):
    assert supervise.check_health_now("c1", tmp_path) is False                 # never started
    (tmp_path / "c1.pid").write_text(f"{os.getpid()}\n")                        # not a provision-shim
    (tmp_path / "c1.health.json").write_text('{"status": "starting"}')
    assert supervise.check_health_now("c1", tmp_path) is False


def test_remove_deletes_the_health_files(tmp_path):
    for suffix in ("state.json", "spec.json", "health.json", "health.pid"):
        (tmp_path / f"c1.{suffix}").write_text('{"status": "exited"}' if suffix == "state.json" else "{}")
    supervise.remove("c1", tmp_path, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_containers_check_is_the_runtimes_exec_with_a_pid_file(tmp_path):
    from provisioner.containers.lifecycle import Manager
    from provisioner.containers.runtime import Runtime

    mgr = Manager(tmp_path, FakeRunner())
    rec = type("Rec", (), {"id": "c" * 64, "config": {"healthcheck": {
        "test": ["/bin/sh", "-c", "redis-cli ping"], "interval": 0.5, "timeout": 3.0, "retries": 20,
        "start_period": 30.0}}})()
    rt = Runtime("/usr/bin/provision-runtime", "/run/provision-runtime", mgr.runner)
    hc = mgr._health(rec, rt)
    pid_file = str(mgr.supervise_dir.absolute() / f"{rec.id}.health.pid")
    assert hc == HealthCheck(("/usr/bin/provision-runtime", "--root", "/run/provision-runtime", "exec",
                              "--pid-file", pid_file, rec.id, "--", "/bin/sh", "-c", "redis-cli ping"),
                             0.5, 3.0, 20, 30.0, pid_file=pid_file)
    rec.config = {}
    assert mgr._health(rec, rt) is None
    assert mgr.health(rec) is None and mgr.check_health_now(rec) is False


def test_run_request_healthcheck_is_kept_in_the_container_config(tmp_path):
    from provisioner.containers.lifecycle import Manager
    from provisioner.runspec.health import Healthcheck
    from provisioner.runspec.request import RunRequest

    mgr = Manager(tmp_path, FakeRunner())
    cfg = mgr.check(RunRequest("busybox", healthcheck=Healthcheck(("true",), 1.0, 2.0, 3, 4.0)))
    assert cfg["healthcheck"] == {"test": ["true"], "interval": 1.0, "timeout": 2.0, "retries": 3, "start_period": 4.0}
    assert "healthcheck" not in mgr.check(RunRequest("busybox"))


def test_a_missing_shim_is_one_error_and_nothing_is_built_at_run_time(tmp_path, monkeypatch):
    monkeypatch.setattr(supervise, "shim_path", lambda: None)
    runner = FakeRunner()   # refuses any command: no `make` at run time
    with pytest.raises(ContainerError, match="provision-shim not found: build it with `make -C native/shim`"):
        supervise.start("web", ["true"], "no", tmp_path, tmp_path, runner=runner)
    assert runner.calls == []
