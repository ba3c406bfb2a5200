"""provisioner.containers.runtime.Runtime against a FakeRunner: the argv it builds for each
lifecycle call and how the runtime's one-line errors become ContainerError."""
from __future__ import annotations

import json

import pytest

from provisioner.containers.runtime import ContainerState, Runtime
from provisioner.errors import ContainerError
from provisioner.testing import FakeRunner

RT = "/opt/provision-runtime"
BASE = [RT, "--root", "/run/test-rt"]


def make(runner: FakeRunner, **kw) -> Runtime:
    return Runtime(RT, "/run/test-rt", runner, **kw)


def test_create_sends_stdio_to_files_and_passes_options():
    fake = FakeRunner().expect(BASE + ["create", "--bundle", "/b", "--stdin", "/dev/null", "--stdout", "/log/out",
                                       "--stderr", "/dev/null", "--pid-file", "/p", "c1"])
    make(fake).create("c1", "/b", pid_file="/p", stdout="/log/out")
    assert len(fake.calls) == 1


def test_create_with_console_socket_leaves_stdio_to_the_pty():
    fake = FakeRunner().expect(BASE + ["create", "--bundle", "/b", "--console-socket", "/s", "c1"])
    make(fake).create("c1", "/b", console_socket="/s")


def test_state_parses_the_oci_state():
    doc = {"ociVersion": "1.0.2", "id": "c1", "status": "running", "pid": 42, "bundle": "/b",
           "annotations": {"a": "b"}}
    fake = FakeRunner().expect(BASE + ["state", "c1"], stdout=json.dumps(doc))
    assert make(fake).state("c1") == ContainerState("c1", "running", 42, "/b", "1.0.2", {"a": "b"})


def test_kill_delete_start_argv():
    fake = (FakeRunner()
            .expect(BASE + ["start", "c1"])
            .expect(BASE + ["kill", "--all", "c1", "KILL"])
            .expect(BASE + ["delete", "--force", "c1"]))
    rt = make(fake)
    rt.start("c1")
    rt.kill("c1", "KILL", all_processes=True)
    rt.delete("c1", force=True)
    assert [c[3] for c in fake.calls] == ["start", "kill", "delete"]


def test_runtime_error_line_becomes_container_error():
    msg = 'provision-runtime: cannot delete container "c1" that is running: stop it first or use --force'
    fake = FakeRunner().expect(BASE + ["delete", "c1"], returncode=1, stderr=msg + "\n")
    with pytest.raises(ContainerError) as exc:
        make(fake).delete("c1")
    assert str(exc.value) == msg


def test_run_returns_the_process_exit_code_but_raises_on_runtime_failure():
    fake = (FakeRunner()
            .expect(BASE + ["run", "--bundle", "/b", "ok"], returncode=3, stdout="hi\n")
            .expect(BASE + ["run", "--bundle", "/b", "bad"], returncode=1,
                    stderr="provision-runtime: config.json: root: required field is missing\n"))
    rt = make(fake)
    res = rt.run("ok", "/b")
    assert (res.returncode, res.stdout) == (3, "hi\n")
    with pytest.raises(ContainerError, match="config.json: root: required field is missing"):
        rt.run("bad", "/b")


def test_json_log_option():
    fake = FakeRunner().expect(BASE + ["--log", "/l", "--log-format", "json", "start", "c1"])
    make(fake, log_file="/l").start("c1")


def test_pause_resume_pids_list():
    doc = [{"ociVersion": "1.0.2", "id": "c1", "status": "paused", "pid": 7, "bundle": "/b"}]
    fake = (FakeRunner()
            .expect(BASE + ["pause", "c1"])
            .expect(BASE + ["resume", "c1"])
            .expect(BASE + ["ps", "c1"], stdout="[7,9]\n")
            .expect(BASE + ["list", "--format", "json"], stdout=json.dumps(doc)))
    rt = make(fake)
    rt.pause("c1")
    rt.resume("c1")
    assert rt.pids("c1") == [7, 9]
    assert rt.list() == [ContainerState("c1", "paused", 7, "/b", "1.0.2", {})]


def test_update_sends_resources_on_stdin():
    fake = FakeRunner().expect(BASE + ["update", "-r", "-", "c1"])
    inputs = []
    real_run = fake.run
    fake.run = lambda argv, **kw: inputs.append(kw.get("input")) or real_run(argv, **kw)
    make(fake).update("c1", {"memory": {"limit": 1024}})
    assert [json.loads(i) for i in inputs] == [{"memory": {"limit": 1024}}]
