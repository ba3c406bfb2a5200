import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from provisioner import __version__, doctor, sysinfo, yamlutil
from provisioner.cli.main import cli, main
from provisioner.errors import CommandError, CommandNotFound, ConfigError, ProvisionerError
from provisioner.fsutil import atomic_write
from provisioner.runner import Runner
from provisioner.testing import FakeRunner, UnexpectedCommand


def test_runner_runs_argv_and_captures():
    res = Runner().run([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
    assert res.ok and res.stdout == "out\n" and res.stderr == "err\n"


def test_runner_input_may_be_text_or_bytes_and_the_output_is_text():
    code = "import sys; d = sys.stdin.buffer.read(); print(len(d), d[:2].hex())"
    assert Runner().run([sys.executable, "-c", code], input=b"\x00\xffrest").stdout == "6 00ff\n"
    assert Runner().run([sys.executable, "-c", code], input="é").stdout == "2 c3a9\n"


def test_runner_failure_carries_command_code_and_stderr_tail():
    with pytest.raises(CommandError) as info:
        Runner().run([sys.executable, "-c", "import sys; sys.stderr.write('a\\nb\\nboom\\n'); sys.exit(3)"])
    err = info.value
    assert err.returncode == 3
    assert "exit 3" in str(err) and "boom" in str(err) and "\n" not in str(err)


def test_runner_unknown_command():
    with pytest.raises(CommandNotFound):
        Runner().run(["definitely-not-a-command-xyz"])


def test_runner_check_false_returns_result():
    res = Runner().run([sys.executable, "-c", "raise SystemExit(4)"], check=False)
    assert res.returncode == 4 and not res.ok


def test_fake_runner_refuses_undeclared_commands():
    fake = FakeRunner().expect(["mkfs.btrfs", "-L"], prefix=True, stdout="made")
    assert fake.run(["mkfs.btrfs", "-L", "x", "/dev/loop9"]).stdout == "made"
    with pytest.raises(UnexpectedCommand):
        fake.run(["rm", "-rf", "/"])
    assert fake.commands("mkfs.btrfs") == [("mkfs.btrfs", "-L", "x", "/dev/loop9")]


def test_fake_runner_nonzero_raises_like_real():
    fake = FakeRunner().expect(["false"], returncode=1, stderr="nope")
    with pytest.raises(CommandError):
        fake.run(["false"])
    assert fake.run(["false"], check=False).returncode == 1


def test_atomic_write_replaces_and_keeps_mode(tmp_path):
    p = tmp_path / "f"
    atomic_write(p, "one")
    p.chmod(0o600)
    atomic_write(p, "two")
    assert p.read_text() == "two" and (p.stat().st_mode & 0o777) == 0o600
    assert [x.name for x in tmp_path.iterdir()] == ["f"]


def test_yaml_lines_and_errors(tmp_path):
    f = tmp_path / "s.yml"
    f.write_text("a: 1\nb:\n  - x\n  - y: 2\n")
    data = yamlutil.load(f)
    assert data == {"a": 1, "b": ["x", {"y": 2}]}
    assert yamlutil.line_of(data, "b") == 2
    assert yamlutil.line_of(data["b"], 1) == 4
    f.write_text("a: 1\na: 2\n")
    with pytest.raises(ConfigError, match=r"s\.yml:2: invalid YAML: duplicate key 'a'"):
        yamlutil.load(f)
    f.write_text("a: [1\n")
    with pytest.raises(ConfigError, match=r"s\.yml:\d+: invalid YAML"):
        yamlutil.load(f)
    with pytest.raises(ConfigError, match="file not found"):
        yamlutil.load(tmp_path / "nope.yml")


@pytest.mark.parametrize("mountinfo,mode", [
    ("31 23 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "v2"),
    ("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
     "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
     "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n", "hybrid"),
    ("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", "v1"),
    ("", "none"),
])
def test_cgroup_mode(mountinfo, mode):
    assert sysinfo.cgroup_mode(mountinfo) == mode


def test_cli_version():
    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output


def test_doctor_json_reports_every_check(tmp_path):
    res = CliRunner().invoke(cli, ["--root", str(tmp_path), "doctor", "--json", "--registry", "127.0.0.1:9"])
    checks = json.loads(res.output)
    names = {c["name"] for c in checks}
    assert {"kernel btrfs", "cgroups", "native runtime", "qemu", "kvm", "registry 127.0.0.1:9"} <= names
    reg = next(c for c in checks if c["name"] == "registry 127.0.0.1:9")
    assert reg["ok"] is False and reg["fix"]


def test_main_prints_expected_errors_as_one_line(monkeypatch, capsys):
    @cli.command("boom-test")
    def boom():
        raise ProvisionerError("the thing was wrong")

    try:
        with pytest.raises(SystemExit) as info:
            main(["boom-test"])
        assert info.value.code == 1
        assert capsys.readouterr().err == "error: the thing was wrong\n"
    finally:
        cli.commands.pop("boom-test")


def test_main_writes_crash_log_for_bugs(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PROVISION_ROOT", str(tmp_path))

    @cli.command("bug-test")
    def bug():
        raise RuntimeError("oops")

    try:
        with pytest.raises(SystemExit) as info:
            main(["bug-test"])
        assert info.value.code == 70
        err = capsys.readouterr().err
        assert "internal error (RuntimeError: oops)" in err
        log = err.strip().split("details in ")[1]
        assert "Traceback" in open(log).read()
    finally:
        cli.commands.pop("bug-test")


def test_console_script_installed():
    out = subprocess.run(["provision", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def test_every_command_module_registers_what_the_map_says():
    from provisioner.cli.main import COMMANDS, LazyGroup

    import click

    group = LazyGroup(name="t")
    ctx = click.Context(group)
    for name in COMMANDS:
        assert group.get_command(ctx, name) is not None, name
    assert set(group.commands) == set(COMMANDS)


def test_light_commands_do_not_import_the_heavy_stacks():
    code = ("import sys; from provisioner.cli.main import main\n"
            "try:\n    main(['host', '--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('requests', 'libcloud', 'paramiko', 'provisioner.images.pull') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_doctor_reports_kvm_that_cannot_run_guests(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(doctor, "kvm_usable", lambda: (True, "/dev/kvm API 12"))
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "accel.json").write_text(
        json.dumps({"kvm_runs_guests": False, "kernel": os.uname().release}))
    kvm = next(c for c in doctor.run_checks(tmp_path, ["127.0.0.1:9"]) if c.name == "kvm")
    assert not kvm.ok and "guests hang" in kvm.detail
