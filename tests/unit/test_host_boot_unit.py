"""The boot hook orchestrator and its CLI: ordered steps, a failing step does not stop independent
ones, dependents are skipped with the reason, the result JSON, `provision host boot|status`.
FakeRunner and a temp sysroot throughout; the disk layer's converge() is faked at its boundary."""
from __future__ import annotations

import json
import os

import pytest

from provisioner import __version__
from provisioner.cli.app import App
from provisioner.cli.main import cli, main
from provisioner.disks.actions import MakeDir
from provisioner.disks.plan import Plan
from provisioner.errors import DiskError, HostError
from provisioner.host import boot
from provisioner.host.config import HostConfig, User
from provisioner.host.steps import Outcome, Skip, StepContext
from provisioner.host.steps import disks as disks_step
from provisioner.runspec.ports import PublishedPort
from provisioner.testing import FakeRunner

from test_host_steps import KEY1, FakeNft, FakeSysctl, fake_useradd


@pytest.fixture(autouse=True)
def no_system_config(tmp_path, monkeypatch):
    """The CLI looks in /etc/provisioner first: never let this machine's files in."""
    from provisioner.host import config as hc
    monkeypatch.setattr(hc, "ETC_FILE", str(tmp_path / "no-etc-host.yml"))
    monkeypatch.setattr(hc, "CLOUD_INIT_FILE", str(tmp_path / "no-host.json"))


class FakeDisks:
    """converge(): one MakeDir on the first call, converged after."""

    def __init__(self, fail: Exception | None = None):
        self.calls, self.fail = [], fail

    def __call__(self, config, runner, *, fstab_path, dry_run=False):
        self.calls.append((fstab_path, dry_run))
        if self.fail:
            raise self.fail
        if len([c for c in self.calls if not c[1]]) <= 1 or dry_run:
            return Plan((MakeDir("/srv/eph"),), ("ephemeral: 1 disk",)), None
        return Plan(()), None


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A fresh host: temp sysroot with passwd/group, fake kernel sysctls, fake nft, fake disks."""
    from provisioner.disks.config import parse_config

    runner = FakeRunner()
    cfg = HostConfig(host="web1", stack="shop", disks=parse_config({"ephemeral": {"mount": "/srv/eph"}}),
                     ports=(PublishedPort("tcp", 80, 80),), users=(User("deploy", (KEY1,)),))
    sysroot = tmp_path / "sys"
    (sysroot / "etc").mkdir(parents=True)
    (sysroot / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (sysroot / "etc/group").write_text("root:x:0:\n")
    ctx = StepContext(config=cfg, runner=runner, root=tmp_path / "root", sysroot=sysroot)
    fake_useradd(ctx, runner)
    FakeSysctl(runner, {"net.ipv4.ip_forward": "0", "vm.max_map_count": "65530"})
    FakeNft(runner)
    fake = FakeDisks()
    monkeypatch.setattr(disks_step.disks, "converge", fake)
    ctx.fake_disks = fake
    ctx.api_server = FakeApiServer(ctx, runner)
    return ctx


class FakeApiServer:
    """`provision host api --daemon --pid-file F`: the pid file written and its flock held (here, in
    this process), as the detached server holds it for its life."""

    def __init__(self, ctx, runner):
        self.fds: list[int] = []

        def start(argv):
            import fcntl
            import os

            pid_file = argv[argv.index("--pid-file") + 1]
            os.makedirs(os.path.dirname(pid_file), exist_ok=True)
            fd = os.open(pid_file, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, b"4242\n")
            self.fds.append(fd)
            from provisioner.runner import Result

            return Result(tuple(argv), 0, "", "")

        runner.expect([ctx.python, "-m", "provisioner.cli.main", "--root", str(ctx.root), "host", "api"],
                      prefix=True, handler=start)


def statuses(result) -> dict:
    return {s.name: s.status for s in result.steps}


def test_fresh_boot_then_rerun_changes_nothing(host):
    first = boot.boot(host)
    assert [s.name for s in first.steps] == list(boot.STEP_NAMES)
    assert statuses(first) == {"disks": "changed", "users": "changed", "sysctl": "changed", "logrotate": "changed",
                               "firewall": "changed", "timesync": "skipped", "containers": "ok",
                               "agent": "skipped", "api": "changed"}
    assert first.ok and all(s.seconds >= 0 for s in first.steps)
    assert host.fake_disks.calls == [(str(host.sysroot / "etc/fstab"), False)]

    data = json.loads((host.root / boot.RESULT_FILE).read_text())
    assert data["host"] == "web1" and data["stack"] == "shop" and data["ok"] is True and data["version"] == 1
    assert data["agent"] == __version__
    disks = data["steps"][0]
    assert set(disks) == {"name", "status", "seconds", "message", "changes"}
    assert disks["changes"] == ["mkdir -p /srv/eph"] and disks["message"] == "/srv/eph; ephemeral: 1 disk"
    assert "no time sync daemon" in data["steps"][5]["message"]

    second = boot.boot(host)
    assert "changed" not in statuses(second).values(), second.steps
    assert all(s.changes == [] for s in second.steps)
    log = (host.root / boot.LOG_FILE).read_text()
    assert log.count("boot hook for shop/web1") == 2 and "step firewall: changed" in log


def test_skip_unchanged_runs_nothing_when_the_inputs_are_those_of_the_last_good_run(host, monkeypatch):
    """Deploy's re-runs: the same host config, agent and key as the last run whose steps all
    succeeded: no step runs (the disks layer is not even asked). Anything else runs them all."""
    from dataclasses import replace

    first = boot.boot(host, skip_unchanged="agent-1")
    assert first.ok and not first.unchanged and first.inputs
    calls = len(host.fake_disks.calls)
    again = boot.boot(host, skip_unchanged="agent-1")
    assert again.unchanged and len(host.fake_disks.calls) == calls
    assert [s.name for s in again.steps] == list(boot.STEP_NAMES) and again.started_at == first.started_at
    assert "inputs unchanged since" in (host.root / boot.LOG_FILE).read_text()
    # a new agent (its marker is the key), a changed config: every step runs
    assert not boot.boot(host, skip_unchanged="agent-2").unchanged
    assert len(host.fake_disks.calls) == calls + 1
    host.config = replace(host.config, ports=(PublishedPort("tcp", 8080, 8080),))
    assert not boot.boot(host, skip_unchanged="agent-2").unchanged
    # where the config was read from is not an input (a stack file edited elsewhere moves its lines)
    host.config = replace(host.config, path="/elsewhere/host.yml")
    assert boot.boot(host, skip_unchanged="agent-2").unchanged
    # the boot at boot time (no key) always runs; and a last run that failed is never reused
    assert not boot.boot(host).unchanged
    monkeypatch.setattr(disks_step.disks, "converge", FakeDisks(fail=DiskError("gone")))
    assert not boot.boot(host, skip_unchanged="agent-3").ok
    monkeypatch.setattr(disks_step.disks, "converge", FakeDisks())
    assert not boot.boot(host, skip_unchanged="agent-3").unchanged


def test_a_failing_step_does_not_stop_independent_ones(host, monkeypatch):
    monkeypatch.setattr(disks_step.disks, "converge", FakeDisks(fail=DiskError("/dev/nvme1n1 holds ext4; refusing")))
    result = boot.boot(host)
    st = statuses(result)
    assert st["disks"] == "failed" and st["containers"] == "skipped"
    assert {st[n] for n in ("users", "sysctl", "logrotate", "firewall")} == {"changed"}
    by = {s.name: s for s in result.steps}
    assert by["disks"].message == "/dev/nvme1n1 holds ext4; refusing"
    assert by["containers"].message == "needs disks (failed)"
    assert not result.ok and result.failed == ["disks"]
    assert json.loads((host.root / boot.RESULT_FILE).read_text())["ok"] is False


def test_an_unexpected_exception_is_recorded_not_raised(host, monkeypatch):
    def broken(config, runner, **kw):
        raise KeyError("bug")
    monkeypatch.setattr(disks_step.disks, "converge", broken)
    result = boot.boot(host)
    assert result.steps[0].message == "internal error: KeyError: 'bug' (traceback in logs/host-boot.log under the root)"
    assert statuses(result)["firewall"] == "changed"
    log = (host.root / boot.LOG_FILE).read_text()
    assert "Traceback (most recent call last)" in log and "in broken" in log
    assert "trace" not in json.loads((host.root / boot.RESULT_FILE).read_text())["steps"][0]


def test_dependents_are_skipped_transitively_but_not_for_a_step_that_does_not_apply(tmp_path):
    ran = []

    def step(name, fail=False, skip=False):
        def run(ctx, dry_run):
            ran.append(name)
            if fail:
                raise HostError(f"{name} broke")
            if skip:
                raise Skip(f"{name} does not apply")
            return Outcome(("did it",), "")
        return run

    steps = (boot.StepDef("a", step("a", fail=True)), boot.StepDef("b", step("b"), needs=("a",)),
             boot.StepDef("c", step("c"), needs=("b",)), boot.StepDef("d", step("d", skip=True)),
             boot.StepDef("e", step("e"), needs=("d",)), boot.StepDef("f", step("f")))
    ctx = StepContext(config=HostConfig(host="h"), runner=FakeRunner(), root=tmp_path)
    result = boot.boot(ctx, steps=steps)
    assert statuses(result) == {"a": "failed", "b": "skipped", "c": "skipped", "d": "skipped", "e": "changed",
                                "f": "changed"}
    assert ran == ["a", "d", "e", "f"]
    assert [s.message for s in result.steps[1:3]] == ["needs a (failed)", "needs b (skipped)"]


def test_only_and_dry_run(host):
    result = boot.boot(host, only=("firewall", "logrotate"), dry_run=True)
    assert [s.name for s in result.steps] == ["logrotate", "firewall"]
    assert statuses(result) == {"logrotate": "changed", "firewall": "changed"}   # would change
    assert not host.root.exists()                     # no result file, no log on a dry run
    assert not (host.sysroot / "etc/logrotate.d").exists()
    assert host.runner.commands("nft") == [("nft", "list", "table", "inet", "provisioner_host")]
    with pytest.raises(Exception, match="unknown boot step"):
        boot.boot(host, only=("dns",))


def test_one_boot_hook_at_a_time(host):
    import fcntl

    lock = host.path(boot.LOCK_FILE)
    lock.parent.mkdir(parents=True)
    lock.write_text("4242\n")
    with open(lock) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(HostError, match=r"another boot hook is running \(pid 4242, lock .*boot.lock\); "
                                            r"gave up after 0.2s"):
            boot.boot(host, only=("logrotate",), lock_timeout=0.2)
        assert not (host.root / boot.RESULT_FILE).exists()
        assert boot.boot(host, only=("logrotate",), dry_run=True).steps   # a dry run does not wait
    result = boot.boot(host, only=("logrotate",), lock_timeout=0.2)
    assert statuses(result) == {"logrotate": "changed"} and lock.read_text() == f"{os.getpid()}\n"


def test_unwritable_lock_or_result_is_one_clear_error(host, tmp_path):
    (host.sysroot / "run").write_text("not a directory")
    with pytest.raises(HostError, match=r"cannot take the boot lock .*/run/provisioner/boot.lock"):
        boot.boot(host, only=("logrotate",))
    (host.sysroot / "run").unlink()
    host.root.mkdir(parents=True)
    (host.root / "host").write_text("not a directory")
    with pytest.raises(HostError, match=r"cannot write the boot result .*/host/boot-result.json"):
        boot.boot(host, only=("logrotate",))


def test_read_result_errors(tmp_path):
    with pytest.raises(HostError, match="no boot result yet"):
        boot.read_result(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(HostError, match="unreadable boot result"):
        boot.read_result(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("[1]")
    with pytest.raises(HostError, match="not a boot result"):
        boot.read_result(tmp_path / "other.json")


# -- CLI ----------------------------------------------------------------------------------------

def invoke(args, runner=None):
    return cli.main(args=args, standalone_mode=False, obj=App(runner=runner or FakeRunner()))


def write_host_yml(root, text="host: web1\nstack: shop\n"):
    (root / "host").mkdir(parents=True, exist_ok=True)
    (root / "host/host.yml").write_text(text)


def test_cli_boot_then_status(tmp_path, capsys):
    root, sysroot = tmp_path / "root", tmp_path / "sys"
    write_host_yml(root)
    sysroot.mkdir()
    invoke(["--root", str(root), "host", "boot", "--sysroot", str(sysroot), "--step", "logrotate", "--step", "disks"])
    out = capsys.readouterr()
    assert "STEP" in out.out and "logrotate" in out.out and "changed" in out.out
    assert "disks: skipped" in out.err            # progress on stderr

    invoke(["--root", str(root), "host", "status", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["host"] == "web1" and [s["name"] for s in data["steps"]] == ["disks", "logrotate"]
    invoke(["--root", str(root), "host", "status"])
    text = capsys.readouterr().out
    assert text.startswith("shop/web1: boot hook at ") and ", ok\n" in text and "total" in text


def test_cli_boot_failure_exits_nonzero_with_one_line(tmp_path, capsys, monkeypatch):
    root = tmp_path / "root"
    write_host_yml(root, "host: web1\ndisks:\n  ephemeral: {mount: /srv/eph}\n")
    monkeypatch.setattr(disks_step.disks, "converge", FakeDisks(fail=DiskError("no ephemeral disks found")))
    monkeypatch.setenv("PROVISION_ROOT", str(root))
    with pytest.raises(SystemExit) as exit_:
        main(["host", "boot", "--sysroot", str(tmp_path), "--step", "disks", "--step", "containers"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: boot: step(s) failed: disks (details: ") and "boot-result.json" in err
    with pytest.raises(SystemExit) as exit_:
        main(["host", "status"])
    assert exit_.value.code == 1 and "FAILED: disks" in capsys.readouterr().out


def test_cli_bad_config_is_one_line_with_file_and_line(tmp_path, capsys, monkeypatch):
    root = tmp_path / "root"
    write_host_yml(root, "host: web1\nports: [http]\n")
    monkeypatch.setenv("PROVISION_ROOT", str(root))
    with pytest.raises(SystemExit) as exit_:
        main(["host", "boot"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (f"error: {root}/host/host.yml:2: ports[0]: 'http' is not a port or "
                                               "range like 80, \"443/tcp\" or \"8000-8010/udp\"")


def test_cli_status_before_any_boot(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PROVISION_ROOT", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main(["host", "status"])
    assert exit_.value.code == 1 and "no boot result yet" in capsys.readouterr().err


def test_cli_restore_containers_with_nothing_supervised(tmp_path, capsys):
    invoke(["--root", str(tmp_path), "host", "restore-containers"])
    assert capsys.readouterr().out.strip() == "nothing to start"
    assert not os.path.exists(tmp_path / "containers")
