"""supervise.py without real processes: policies, state reading, log reading, the shim argv."""
from __future__ import annotations

import json

import pytest

from provisioner.containers import supervise
from provisioner.containers.supervise import LogLine, RestartPolicy
from provisioner.errors import ConfigError, ContainerError
from provisioner.runner import Result
from provisioner.testing import FakeRunner


@pytest.mark.parametrize("text, expected", [
    ("no", RestartPolicy("no")),
    ("", RestartPolicy("no")),
    ("always", RestartPolicy("always")),
    ("unless-stopped", RestartPolicy("unless-stopped")),
    ("on-failure", RestartPolicy("on-failure", 0)),
    ("on-failure:5", RestartPolicy("on-failure", 5)),
])
def test_restart_policy_parse(text, expected):
    assert RestartPolicy.parse(text) == expected


@pytest.mark.parametrize("text", ["sometimes", "on-failure:", "on-failure:-1", "on-failure:x", "always:3"])
def test_restart_policy_rejects(text):
    with pytest.raises(ConfigError, match="bad restart policy"):
        RestartPolicy.parse(text)


def test_restart_policy_str_and_boot():
    assert str(RestartPolicy.parse("on-failure:3")) == "on-failure:3"
    assert str(RestartPolicy.parse("on-failure")) == "on-failure"
    assert RestartPolicy("always").restart_at_boot(stop_requested=True)
    assert RestartPolicy("unless-stopped").restart_at_boot(stop_requested=False)
    assert not RestartPolicy("unless-stopped").restart_at_boot(stop_requested=True)
    assert not RestartPolicy("no").restart_at_boot(stop_requested=False)


@pytest.mark.parametrize("name", ["", "../x", "a/b", "-x", "x" * 200])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ContainerError, match="bad container name"):
        supervise.status(name, tmp_path)


def write_state(tmp_path, name, **fields):
    base = {"name": name, "status": "running", "shim_pid": 999999, "pid": 1000000, "exit_code": None,
            "restart_count": 2, "policy": "always", "stop_requested": False,
            "started_at": "2026-01-01T00:00:00.000000000Z", "finished_at": "", "error": ""}
    base.update(fields)
    (tmp_path / f"{name}.state.json").write_text(json.dumps(base))


def test_status_unknown_when_never_started(tmp_path):
    st = supervise.status("c1", tmp_path)
    assert (st.status, st.shim_alive) == ("unknown", False)


def test_status_running_without_a_live_shim_is_dead(tmp_path):
    write_state(tmp_path, "c1")
    (tmp_path / "c1.pid").write_text("999999\n")  # no such process
    st = supervise.status("c1", tmp_path)
    assert (st.status, st.shim_alive, st.restart_count, st.policy) == ("dead", False, 2, "always")


def test_status_exited_is_reported_as_is(tmp_path):
    write_state(tmp_path, "c1", status="exited", exit_code=137, stop_requested=True)
    st = supervise.status("c1", tmp_path)
    assert (st.status, st.exit_code, st.stop_requested) == ("exited", 137, True)
    assert st.to_json()["exit_code"] == 137


def test_status_of_a_corrupt_state_file_is_a_clear_error(tmp_path):
    (tmp_path / "c1.state.json").write_text("{nope")
    with pytest.raises(ContainerError, match="c1.state.json: unreadable supervisor state"):
        supervise.status("c1", tmp_path)


def rec(text, stream="stdout", t="2026-01-01T00:00:00.000000001Z"):
    return json.dumps({"log": text, "stream": stream, "time": t}) + "\n"


def test_logs_read_rotated_files_oldest_first_and_tail(tmp_path):
    (tmp_path / "c1.log.2").write_text(rec("a\n") + rec("b\n"))
    (tmp_path / "c1.log.1").write_text(rec("c\n", "stderr"))
    (tmp_path / "c1.log").write_text(rec("d\n") + '{"log": "torn')  # mid-write last line
    (tmp_path / "c1.log.x").write_text(rec("ignored\n"))
    texts = [line.text for line in supervise.logs("c1", tmp_path)]
    assert texts == ["a\n", "b\n", "c\n", "d\n"]
    assert [line.text for line in supervise.logs("c1", tmp_path, tail=2)] == ["c\n", "d\n"]
    assert list(supervise.logs("c1", tmp_path, tail=0)) == []


def test_logs_since_then_tail(tmp_path):
    (tmp_path / "c1.log.1").write_text(rec("old\n", t="2026-01-01T00:00:00.000000000Z"))
    (tmp_path / "c1.log").write_text(rec("a\n", t="2026-01-01T00:00:05.000000000Z") +
                                     rec("b\n", t="2026-01-01T00:00:06.500000000Z") +
                                     rec("c\n", t="2026-01-01T00:00:07.000000000Z"))
    since = "2026-01-01T00:00:05.000000000Z"
    assert [ln.text for ln in supervise.logs("c1", tmp_path, since=since)] == ["a\n", "b\n", "c\n"]
    assert [ln.text for ln in supervise.logs("c1", tmp_path, since=since, tail=1)] == ["c\n"]


def test_logs_of_unknown_container_is_empty(tmp_path):
    assert list(supervise.logs("nothing", tmp_path)) == []


def test_log_line_format():
    line = LogLine("2026-01-01T00:00:00.5Z", "stdout", "hi\n")
    assert line.format() == "hi\n"
    assert line.format(timestamps=True) == "2026-01-01T00:00:00.5Z hi\n"


def test_start_runs_the_shim_with_the_policy_and_limits(tmp_path):
    def launched(argv):
        write_state(tmp_path / "state", "web", shim_pid=4242, pid=4243)
        return Result(argv, 0, "4242 4243\n", "")

    runner = FakeRunner().expect(["/opt/provision-shim"], prefix=True, handler=launched)
    st = supervise.start("web", ["redis-server", "--port", "6379"], "on-failure:3", tmp_path / "logs",
                         tmp_path / "state", runner=runner, shim="/opt/provision-shim",
                         stop_signal="QUIT", stop_timeout=2.5)
    (argv,) = runner.commands()
    assert argv[argv.index("--restart") + 1] == "on-failure:3"
    assert argv[argv.index("--stop-signal") + 1] == "SIGQUIT"
    assert argv[argv.index("--stop-timeout") + 1] == "2.5"
    assert argv[argv.index("--log") + 1] == str(tmp_path / "logs" / "web.log")
    assert argv[argv.index("--log-max-size") + 1] == str(10 * 1024 * 1024)
    assert argv[argv.index("--log-max-files") + 1] == "3"
    assert argv[argv.index("--backoff-max-ms") + 1] == "60000"
    assert argv[argv.index("--backoff-reset-ms") + 1] == "10000"
    assert argv[argv.index("--") + 1:] == ("redis-server", "--port", "6379")
    assert st.shim_pid == 4242 and st.pid == 4243


def test_start_failure_is_one_clear_line(tmp_path):
    runner = FakeRunner().expect(["/opt/provision-shim"], prefix=True, returncode=1,
                                 stderr="provision-shim: exec nope: No such file or directory\n")
    with pytest.raises(ContainerError) as err:
        supervise.start("web", ["nope"], "no", tmp_path, tmp_path, runner=runner, shim="/opt/provision-shim")
    assert str(err.value) == "cannot start web: exec nope: No such file or directory"


@pytest.mark.parametrize("kw, match", [
    ({"stop_signal": "SIGNOPE"}, "unknown stop signal"),
    ({"log_max_size": 10}, "log limits"),
    ({"policy": "maybe"}, "bad restart policy"),
])
def test_start_rejects_bad_options_before_running_anything(tmp_path, kw, match):
    runner = FakeRunner()
    args = {"policy": "no", **kw}
    policy = args.pop("policy")
    with pytest.raises((ContainerError, ConfigError), match=match):
        supervise.start("web", ["true"], policy, tmp_path, tmp_path, runner=runner, shim="/x", **args)
    assert runner.calls == []


def test_stop_of_a_stopped_container_is_a_no_op(tmp_path):
    write_state(tmp_path, "c1", status="exited", exit_code=0)
    assert supervise.stop("c1", tmp_path, timeout=1).status == "exited"
    assert not (tmp_path / "c1.stop").exists()


def test_remove_deletes_state_and_logs(tmp_path):
    write_state(tmp_path, "c1", status="exited", exit_code=0)
    (tmp_path / "c1.log").write_text(rec("x\n"))
    (tmp_path / "c1.log.1").write_text(rec("y\n"))
    supervise.remove("c1", tmp_path, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_restore_starts_what_the_policy_brings_back_at_boot(tmp_path):
    def spec(name, policy):
        (tmp_path / f"{name}.spec.json").write_text(json.dumps({
            "argv": ["run", name], "policy": policy, "log_dir": str(tmp_path), "stop_signal": "SIGTERM",
            "stop_timeout": 10, "log_max_size": 1 << 20, "log_max_files": 3, "backoff_max_ms": 60000}))

    spec("a", "always")
    write_state(tmp_path, "a", status="running")             # machine went down under it
    spec("b", "unless-stopped")
    write_state(tmp_path, "b", status="exited", stop_requested=True)  # the user stopped it
    spec("c", "unless-stopped")
    write_state(tmp_path, "c", status="running")
    spec("d", "no")
    write_state(tmp_path, "d", status="running")
    spec("e", "on-failure:3")
    runner = FakeRunner().expect(["/opt/shim"], prefix=True, stdout="1 2\n")
    prepared = []
    assert supervise.restore(tmp_path, runner=runner, shim="/opt/shim", before_start=prepared.append) == ["a", "c"]
    assert prepared == ["a", "c"]
    started = [c[c.index("--") + 1:] for c in runner.commands()]
    assert started == [("run", "a"), ("run", "c")]


def test_log_text_tail_and_timestamps(tmp_path):
    (tmp_path / "c1.log").write_text(rec("a\n", t="T1") + rec("b\n", "stderr", t="T2") + rec("c", t="T3"))
    assert list(supervise.log_text("c1", tmp_path)) == ["a\n", "b\n", "c"]
    assert list(supervise.log_text("c1", tmp_path, tail=2, timestamps=True)) == ["T2 b\n", "T3 c"]


def test_restart_starts_again_from_the_spec(tmp_path):
    (tmp_path / "c1.spec.json").write_text(json.dumps({
        "argv": ["redis-server"], "policy": "always", "log_dir": str(tmp_path), "stop_signal": "SIGQUIT",
        "stop_timeout": 3, "log_max_size": 4096, "log_max_files": 2, "backoff_max_ms": 1000}))
    write_state(tmp_path, "c1", status="exited", exit_code=0)
    runner = FakeRunner().expect(["/opt/shim"], prefix=True, stdout="1 2\n")
    supervise.restart("c1", tmp_path, runner=runner, shim="/opt/shim")
    (argv,) = runner.commands()
    assert argv[argv.index("--") + 1:] == ("redis-server",)
    assert argv[argv.index("--stop-signal") + 1] == "SIGQUIT" and argv[argv.index("--log-max-files") + 1] == "2"


def test_restart_of_an_unknown_container(tmp_path):
    with pytest.raises(ContainerError, match="no such container: ghost"):
        supervise.restart("ghost", tmp_path, runner=FakeRunner())


def test_paths_given_to_the_shim_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = FakeRunner().expect(["/opt/shim"], prefix=True, stdout="1 2\n")
    supervise.start("web", ["true"], "no", "logs", "state", runner=runner, shim="/opt/shim")
    (argv,) = runner.commands()
    for opt in ("--state", "--pid-file", "--stop-file", "--log"):
        assert argv[argv.index(opt) + 1].startswith(str(tmp_path) + "/"), opt
