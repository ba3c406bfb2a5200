"""`run -d --rm` without the system: which containers get the supervisor's exit command, how it
reaches the shim's argv, and what `autoremove` leaves alone."""
from __future__ import annotations

import sys

from provisioner.containers import supervise
from provisioner.containers.lifecycle import Manager, Status
from provisioner.runspec.request import RunRequest
from provisioner.network import NetworkConfig
from provisioner.runner import Result
from provisioner.testing import FakeRunner


def manager(tmp_path) -> Manager:
    return Manager(tmp_path, FakeRunner(), net=NetworkConfig(), runtime_path="/bin/false")


def test_only_detached_rm_containers_get_an_exit_command(tmp_path):
    m = manager(tmp_path)
    for detach, rm, wanted in ((True, True, True), (False, True, False), (True, False, False)):
        cfg = m.check(RunRequest("busybox", detach=detach, rm=rm))
        assert cfg["auto_remove"] is wanted
        rec = m.records.reserve(None, "busybox", "sha256:x", cfg)
        cmd = m._exit_command(rec)
        if wanted:
            assert cmd[0] == sys.executable and cmd[-3:] == ["container", "autoremove", rec.id]
            assert cmd[cmd.index("--root") + 1] == str(tmp_path.resolve())
        else:
            assert cmd is None


def test_the_exit_command_reaches_the_shim_argv(tmp_path):
    runner = FakeRunner().expect(["/opt/shim"], prefix=True, handler=lambda argv: Result(argv, 0, "1 2\n", ""))
    supervise.start("c1", ["true"], "no", tmp_path, tmp_path, runner=runner, shim="/opt/shim",
                    exit_command=["/usr/bin/python3", "-c", "x", "a b"])
    (argv,) = runner.commands()
    head = argv[:argv.index("--")]
    assert head[head.index("--exit-command") + 1] == "/usr/bin/python3"
    assert [head[i + 1] for i, a in enumerate(head) if a == "--exit-command-arg"] == ["-c", "x", "a b"]
    assert argv[argv.index("--") + 1:] == ("true",)


def test_autoremove_leaves_running_missing_and_non_rm_containers_alone(tmp_path, monkeypatch):
    m = manager(tmp_path)
    removed = []
    monkeypatch.setattr(m, "_rm", lambda rec, force, vols: removed.append((rec.name, force, vols)))
    states = {}
    monkeypatch.setattr(m, "status", lambda rec: Status(states[rec.name]))
    for name, rm, state in (("gone", True, "exited"), ("up", True, "running"), ("keep", False, "exited"),
                            ("dead", True, "dead")):
        rec = m.records.reserve(name, "busybox", "sha256:x", m.check(RunRequest("busybox", detach=True, rm=rm)))
        rec.state["phase"] = "created"
        m.records.save(rec)
        states[name] = state
    assert [m.autoremove(n) for n in ("gone", "up", "keep", "dead", "never-existed")] == [True, False, False, True,
                                                                                         False]
    assert removed == [("gone", True, True), ("dead", True, True)]


def test_the_exit_command_skips_the_cli_when_the_container_is_gone_or_being_removed(tmp_path):
    """An Engine API client waiting for the removal usually gets there first: the exit command then
    ends before the CLI's imports (the bulk of its cost); a record still "created" gets the CLI."""
    import subprocess

    m = manager(tmp_path / "root")
    rec = m.records.reserve("rm", "busybox", "sha256:x", m.check(RunRequest("busybox", detach=True, rm=True)))
    fake = tmp_path / "pkg"
    (fake / "provisioner" / "cli").mkdir(parents=True)
    (fake / "provisioner" / "__init__.py").write_text("")
    (fake / "provisioner" / "cli" / "__init__.py").write_text("")
    (fake / "provisioner" / "cli" / "main.py").write_text(
        f"import sys\ndef main():\n    open({str(tmp_path / 'ran')!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n")
    cmd = m._exit_command(rec)
    cmd[3] = str(fake)

    def ran(phase):
        if phase is None:
            m.records.delete(rec)
        else:
            rec.state["phase"] = phase
            m.records.save(rec)
        (tmp_path / "ran").unlink(missing_ok=True)
        subprocess.run(cmd, check=True, timeout=60)
        return (tmp_path / "ran").read_text() if (tmp_path / "ran").exists() else None

    assert ran("created") == f"--root {(tmp_path / 'root').resolve()} container autoremove {rec.id}\n"
    assert ran("removing") is None and ran(None) is None
