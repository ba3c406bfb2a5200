"""Each boot step's plan on fresh facts and on converged facts (converged -> no changes), with a
FakeRunner and a temp sysroot: nothing here touches this machine's /etc, sysctls or firewall."""
from __future__ import annotations

import json
import os

import pytest

from provisioner.host.config import HostConfig, User
from provisioner.host.steps import Skip, StepContext
from provisioner.host.steps import containers, firewall, logrotate, sysctl, timesync, users
from provisioner.runner import Result
from provisioner.runspec.ports import PublishedPort
from provisioner.testing import FakeRunner

KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxone one@x"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxtwo two@x"


def make_ctx(tmp_path, runner, systemd=False, **cfg) -> StepContext:
    sysroot = tmp_path / "sys"
    (sysroot / "etc").mkdir(parents=True, exist_ok=True)
    if systemd:
        (sysroot / "run/systemd/system").mkdir(parents=True)
    return StepContext(config=HostConfig(host="h1", **cfg), runner=runner, root=tmp_path / "root",
                       sysroot=sysroot, python="/opt/p/bin/python")


# -- sysctl -----------------------------------------------------------------------------------

class FakeSysctl:
    """`sysctl -e KEYS` and `sysctl -q -p FILE` over a dict (the 'kernel')."""

    def __init__(self, runner: FakeRunner, live: dict):
        self.live = live
        runner.expect(["sysctl", "-e"], prefix=True, handler=self.read)
        runner.expect(["sysctl", "-q", "-p"], prefix=True, handler=self.load)

    def read(self, argv):
        out = "".join(f"{k} = {self.live[k]}\n" for k in argv[2:] if k in self.live)
        return Result(argv, 0, out, "")

    def load(self, argv):
        for line in open(argv[-1]).read().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.partition(" = ")
                self.live[k] = v
        return Result(argv, 0, "", "")


def test_sysctl_fresh_then_converged(tmp_path):
    runner = FakeRunner()
    kernel = FakeSysctl(runner, {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0",
                                 "vm.max_map_count": "65530", "fs.inotify.max_user_watches": "1048576",
                                 "fs.inotify.max_user_instances": "128", "net.core.somaxconn": "128"})
    ctx = make_ctx(tmp_path, runner, sysctl={"net.core.somaxconn": "4096"})
    out = sysctl.run(ctx)
    conf = (ctx.sysroot / "etc/sysctl.d/60-provisioner.conf").read_text()
    assert "net.ipv4.ip_forward = 1\n" in conf and "vm.max_map_count = 262144\n" in conf
    assert "net.core.somaxconn = 4096\n" in conf
    # a limit already above our floor is kept, never lowered
    assert "fs.inotify.max_user_watches = 1048576\n" in conf
    # no br_netfilter in this 'kernel': left out and said so
    assert "net.bridge" not in conf and "net.bridge.bridge-nf-call-iptables" in out.message
    assert len(out.changes) == 2 and runner.commands("sysctl")[-1][:3] == ("sysctl", "-q", "-p")
    assert kernel.live["net.ipv4.ip_forward"] == "1"

    again = sysctl.run(ctx)
    assert again.changes == ()
    assert runner.commands("sysctl")[-1][:2] == ("sysctl", "-e")  # read only


def test_sysctl_reapplies_when_the_live_value_drifted(tmp_path):
    runner = FakeRunner()
    kernel = FakeSysctl(runner, {"net.ipv4.ip_forward": "0", "net.bridge.bridge-nf-call-iptables": "0"})
    ctx = make_ctx(tmp_path, runner)
    sysctl.run(ctx)
    assert kernel.live["net.bridge.bridge-nf-call-iptables"] == "1"
    kernel.live["net.ipv4.ip_forward"] = "0"   # a reboot before the file was read, or someone else
    f = sysctl.facts(ctx, {*sysctl.EXACT, *sysctl.MINIMUMS})
    actions, _, _ = sysctl.plan(f, sysctl.EXACT, sysctl.MINIMUMS, ctx.path(sysctl.CONF))
    assert [type(a).__name__ for a in actions] == ["Apply"]  # the file is right; only apply


def test_sysctl_unknown_key_from_the_config_fails_before_writing(tmp_path):
    runner = FakeRunner()
    FakeSysctl(runner, {"net.ipv4.ip_forward": "0"})
    ctx = make_ctx(tmp_path, runner, sysctl={"net.core.somaxcon": "1"}, path="/etc/provisioner/host.yml")
    with pytest.raises(Exception, match=r"sysctl: net.core.somaxcon \(from /etc/provisioner/host.yml\) not in "
                                        "this kernel; nothing applied"):
        sysctl.run(ctx)
    assert not (ctx.sysroot / "etc/sysctl.d").exists()


def test_sysctl_dry_run_changes_nothing(tmp_path):
    runner = FakeRunner()
    FakeSysctl(runner, {"net.ipv4.ip_forward": "0"})
    ctx = make_ctx(tmp_path, runner)
    out = sysctl.run(ctx, dry_run=True)
    assert out.changes and not (ctx.sysroot / "etc/sysctl.d").exists()
    assert not runner.commands("sysctl")[-1][:3] == ("sysctl", "-q", "-p")


# -- users ------------------------------------------------------------------------------------

def fake_useradd(ctx, runner):
    """useradd/usermod --prefix SYSROOT editing the temp passwd/group (as this uid, so no root needed)."""
    uid, gid = os.getuid(), os.getgid()

    def useradd(argv):
        assert argv[1:3] == ("--prefix", str(ctx.sysroot))
        name = argv[-1]
        with open(ctx.path("/etc/passwd"), "a") as f:
            f.write(f"{name}:x:{uid}:{gid}::/home/{name}:/bin/bash\n")
        (ctx.path("/home") / name).mkdir(parents=True)
        if "--groups" in argv:
            groups = argv[argv.index("--groups") + 1].split(",")
            text = ctx.path("/etc/group").read_text().splitlines()
            lines = [ln + ("," if not ln.endswith(":") else "") + name if ln.split(":")[0] in groups else ln
                     for ln in text]
            ctx.path("/etc/group").write_text("\n".join(lines) + "\n")
        return Result(argv, 0, "", "")

    runner.expect(["useradd"], prefix=True, handler=useradd)


def users_ctx(tmp_path, runner, keys=(KEY1,), groups=("sudo",)):
    ctx = make_ctx(tmp_path, runner, users=(User("deploy", tuple(keys), tuple(groups)),))
    ctx.path("/etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    ctx.path("/etc/group").write_text("root:x:0:\nsudo:x:27:\n")
    return ctx


def test_users_fresh_creates_user_and_keys(tmp_path):
    runner = FakeRunner()
    ctx = users_ctx(tmp_path, runner)
    fake_useradd(ctx, runner)
    plan = users.plan(users.facts(ctx), ctx.config.users)
    assert [type(a).__name__ for a in plan] == ["UserAdd", "InstallKeys"]
    out = users.run(ctx)
    assert out.changes == ("useradd deploy", "write ~deploy/.ssh/authorized_keys (1 key(s))")
    (argv,) = runner.commands("useradd")
    assert argv == ("useradd", "--prefix", str(ctx.sysroot), "--create-home", "--user-group",
                    "--shell", "/bin/bash", "--groups", "sudo", "deploy")
    ssh = ctx.path("/home/deploy/.ssh")
    keys = ssh / "authorized_keys"
    assert keys.read_text() == users.HEADER + KEY1 + "\n"
    assert oct(ssh.stat().st_mode & 0o777) == "0o700" and oct(keys.stat().st_mode & 0o777) == "0o600"
    assert (keys.stat().st_uid, keys.stat().st_gid) == (os.getuid(), os.getgid())

    assert users.run(ctx).changes == ()          # converged: no useradd, no write
    assert len(runner.commands("useradd")) == 1


def test_users_key_rotation_and_modes_are_restored(tmp_path):
    runner = FakeRunner()
    ctx = users_ctx(tmp_path, runner)
    fake_useradd(ctx, runner)
    users.run(ctx)
    keys = ctx.path("/home/deploy/.ssh/authorized_keys")
    os.chmod(keys, 0o644)
    assert users.run(ctx).changes == ("write ~deploy/.ssh/authorized_keys (1 key(s))",)
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    ctx.config = HostConfig(host="h1", users=(User("deploy", (KEY2,), ("sudo",)),))
    users.run(ctx)
    assert KEY1 not in keys.read_text() and KEY2 in keys.read_text()


def test_users_existing_user_joins_missing_groups_only(tmp_path):
    runner = FakeRunner().expect(["usermod", "--prefix"], prefix=True)
    ctx = users_ctx(tmp_path, runner, keys=(), groups=("sudo",))
    with open(ctx.path("/etc/passwd"), "a") as f:
        f.write(f"deploy:x:{os.getuid()}:{os.getgid()}::/home/deploy:/bin/sh\n")
    out = users.run(ctx)
    assert out.changes == ("usermod -a -G sudo deploy",)
    assert runner.commands("usermod") == [("usermod", "--prefix", str(ctx.sysroot), "-a", "-G", "sudo", "deploy")]
    assert not ctx.path("/home/deploy/.ssh").exists()   # no keys listed: the file is not ours


def test_users_refuses_a_symlinked_ssh_dir(tmp_path):
    runner = FakeRunner()
    ctx = users_ctx(tmp_path, runner, groups=())
    with open(ctx.path("/etc/passwd"), "a") as f:
        f.write(f"deploy:x:{os.getuid()}:{os.getgid()}::/home/deploy:/bin/sh\n")
    ctx.path("/home/deploy").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    ctx.path("/home/deploy/.ssh").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Exception, match="symlink"):
        users.run(ctx)
    assert list((tmp_path / "elsewhere").iterdir()) == []


# -- logrotate --------------------------------------------------------------------------------

def test_logrotate_without_systemd(tmp_path):
    ctx = make_ctx(tmp_path, FakeRunner())
    out = logrotate.run(ctx)
    rule = ctx.path(logrotate.LOGROTATE_RULE).read_text()
    assert f"{ctx.root}/logs/*.log {{" in rule and "copytruncate" in rule
    assert not ctx.path(logrotate.JOURNALD_DROPIN).exists()
    assert "no systemd" in out.message and len(out.changes) == 1
    assert logrotate.run(ctx).changes == ()


def test_logrotate_with_systemd_restarts_journald_once(tmp_path):
    runner = FakeRunner(known_commands={"logrotate"}).expect(["systemctl", "restart", "systemd-journald"])
    ctx = make_ctx(tmp_path, runner, systemd=True)
    out = logrotate.run(ctx)
    assert "SystemMaxUse=" in ctx.path(logrotate.JOURNALD_DROPIN).read_text()
    assert out.changes[-1] == "systemctl restart systemd-journald"
    assert logrotate.run(ctx).changes == ()
    assert len(runner.commands("systemctl")) == 1


# -- firewall ---------------------------------------------------------------------------------

class FakeNft:
    def __init__(self, runner: FakeRunner):
        self.table: str | None = None
        self.loaded: list[str] = []
        runner.expect(["nft", "list", "table", "inet", "provisioner_host"], handler=self.list)
        runner.expect(["nft", "-f"], prefix=True, handler=self.load)

    def list(self, argv):
        if self.table is None:
            return Result(argv, 1, "", "Error: No such file or directory")
        return Result(argv, 0, self.table, "")

    def load(self, argv):
        text = open(argv[-1]).read()
        self.loaded.append(text)
        self.table = "table inet provisioner_host { # normalized by nft\n" + text.split("{", 1)[1]
        return Result(argv, 0, "", "")


def fw_ctx(tmp_path, runner, **kw):
    return make_ctx(tmp_path, runner, ports=(PublishedPort("tcp", 80, 80), PublishedPort("tcp", 8000, 8010),
                                             PublishedPort("udp", 5353, 5353)), **kw)


def test_firewall_ruleset_opens_exactly_the_published_ports(tmp_path):
    text = firewall.render(fw_ctx(tmp_path, FakeRunner(), ssh_cidr="10.0.0.0/8").config)
    assert text.index("table inet provisioner_host\n") < text.index("delete table inet provisioner_host\n")
    assert "policy drop;" in text and 'iif "lo" accept' in text and "ct state established,related accept" in text
    assert "ip saddr 10.0.0.0/8 tcp dport 22 accept" in text
    assert "tcp dport { 80, 8000-8010 } accept" in text and "udp dport 5353 accept" in text
    v6 = firewall.render(HostConfig(host="h", ssh_cidr="fd00::/8", ssh_port=2222))
    assert "ip6 saddr fd00::/8 tcp dport 2222 accept" in v6 and " dport {" not in v6


def test_firewall_opens_the_metrics_port_to_its_range_only(tmp_path):
    from provisioner.stack import MetricsSpec

    text = firewall.render(HostConfig(host="h", metrics=MetricsSpec(port=9100, allow_from="10.0.2.2/32")))
    assert "ip saddr 10.0.2.2/32 tcp dport 9100 accept" in text and text.count("9100") == 1
    v6 = firewall.render(HostConfig(host="h", metrics=MetricsSpec(port=9273, allow_from="fd00::/8")))
    assert "ip6 saddr fd00::/8 tcp dport 9273 accept" in v6
    closed = firewall.render(HostConfig(host="h", metrics=MetricsSpec(port=9100)))   # no range: not opened
    assert "9100" not in closed


def test_firewall_fresh_converged_and_reapplied_after_reboot(tmp_path):
    runner = FakeRunner()
    nft = FakeNft(runner)
    ctx = fw_ctx(tmp_path, runner)
    out = firewall.run(ctx)
    assert len(out.changes) == 1 and len(nft.loaded) == 1
    assert ctx.path(firewall.RULES_FILE).read_text() == nft.loaded[0]
    assert json.loads((ctx.root / firewall.STATE_FILE).read_text())["listing"] == nft.table
    assert firewall.run(ctx).changes == () and len(nft.loaded) == 1
    nft.table = None                      # reboot: the ruleset is empty again
    assert len(firewall.run(ctx).changes) == 1 and len(nft.loaded) == 2
    nft.table += "# someone added a rule\n"   # drift in our table
    assert len(firewall.run(ctx).changes) == 1
    ctx.config = HostConfig(host="h1", ports=(PublishedPort("tcp", 443, 443),))
    firewall.run(ctx)
    assert "tcp dport 443 accept" in nft.loaded[-1] and "8000-8010" not in nft.loaded[-1]


def test_firewall_nft_failure_is_a_command_error(tmp_path):
    runner = FakeRunner().expect(["nft", "list"], prefix=True, returncode=1)
    runner.expect(["nft", "-f"], prefix=True, returncode=1, stderr="Error: syntax error")
    with pytest.raises(Exception, match="syntax error"):
        firewall.run(fw_ctx(tmp_path, runner))
    assert not (tmp_path / "root" / firewall.STATE_FILE).exists()


# -- timesync ---------------------------------------------------------------------------------

def _is_active(states):
    return lambda argv: Result(argv, 3, "".join(states.get(u, "inactive") + "\n" for u in argv[2:]), "")


def test_timesync_already_active(tmp_path):
    runner = FakeRunner().expect(["systemctl", "is-active"], prefix=True,
                                 handler=_is_active({"chrony.service": "active"}))
    runner.expect(["systemctl", "cat", timesync.TIMESYNCD], returncode=1)
    out = timesync.run(make_ctx(tmp_path, runner, systemd=True))
    assert out.changes == () and "chrony.service" in out.message


def test_timesync_enables_timesyncd_when_nothing_syncs(tmp_path):
    runner = FakeRunner().expect(["systemctl", "is-active"], prefix=True, handler=_is_active({}))
    runner.expect(["systemctl", "cat", timesync.TIMESYNCD])
    runner.expect(["systemctl", "enable", "--now", timesync.TIMESYNCD])
    out = timesync.run(make_ctx(tmp_path, runner, systemd=True))
    assert out.changes == (f"systemctl enable --now {timesync.TIMESYNCD}",)


def test_timesync_skips_without_timesyncd_or_systemd(tmp_path):
    runner = FakeRunner().expect(["systemctl", "is-active"], prefix=True, handler=_is_active({}))
    runner.expect(["systemctl", "cat", timesync.TIMESYNCD], returncode=1)
    with pytest.raises(Skip, match="not installed"):
        timesync.run(make_ctx(tmp_path, runner, systemd=True))
    with pytest.raises(Skip, match="no systemd"):
        timesync.run(make_ctx(tmp_path / "b", FakeRunner()))


def test_timesync_sees_a_daemon_in_the_process_table(tmp_path):
    ctx = make_ctx(tmp_path, FakeRunner())
    (ctx.path("/proc/4242")).mkdir(parents=True)
    (ctx.path("/proc/4242/comm")).write_text("chronyd\n")
    out = timesync.run(ctx)
    assert out.changes == () and "chronyd" in out.message


# -- containers -------------------------------------------------------------------------------

def test_containers_without_systemd_restores(tmp_path, monkeypatch):
    shim = tmp_path / "shim"
    shim.write_text("#!/bin/sh\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PROVISION_SHIM", str(shim))
    runner = FakeRunner().expect([str(shim)], prefix=True, stdout="4242 4243\n")
    ctx = make_ctx(tmp_path, runner)
    assert containers.run(ctx).changes == ()          # nothing supervised yet: nothing to do
    state = containers.state_dir(ctx)
    state.mkdir(parents=True)
    for name, policy in (("web", "always"), ("job", "no")):
        (state / f"{name}.spec.json").write_text(json.dumps({
            "argv": ["/bin/true"], "policy": policy, "log_dir": str(tmp_path / "logs"), "stop_signal": "SIGTERM",
            "stop_timeout": 10, "log_max_size": 1 << 20, "log_max_files": 3, "backoff_max_ms": 1000}))
    out = containers.run(ctx)
    assert out.changes == ("started web",)
    (argv,) = runner.commands(str(shim))
    assert argv[argv.index("--name") + 1] == "web"


def test_containers_network_is_reconnected_before_the_command_starts(tmp_path, monkeypatch):
    from provisioner import network
    from provisioner.containers.container import Containers

    shim = tmp_path / "shim"
    shim.write_text("#!/bin/sh\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PROVISION_SHIM", str(shim))
    order = []
    runner = FakeRunner().expect([str(shim)], prefix=True,
                                 handler=lambda a: order.append(("start", a[a.index("--name") + 1]))
                                 or Result(a, 0, "1 2\n", ""))
    ctx = make_ctx(tmp_path, runner)
    rec = Containers(ctx.root).reserve("web", "busybox", "sha256:" + "0" * 64, {})
    plain = "job"                                   # supervised, but no container record
    state = containers.state_dir(ctx)
    assert state == ctx.root / "containers" / ".supervise"
    state.mkdir(parents=True)
    for name in (rec.id, plain):
        (state / f"{name}.spec.json").write_text(json.dumps({
            "argv": ["/bin/true"], "policy": "always", "log_dir": str(tmp_path / "logs"), "stop_signal": "SIGTERM",
            "stop_timeout": 10, "log_max_size": 1 << 20, "log_max_files": 3, "backoff_max_ms": 1000}))
    monkeypatch.setattr(network, "endpoint", lambda root, name: object() if name == "web" else None)
    monkeypatch.setattr(network, "reconnect",
                        lambda root, cfg, name, *, runner, paths: order.append(("reconnect", name)))
    out = containers.run(ctx)
    assert order == [("reconnect", "web"), ("start", rec.id), ("start", plain)]
    assert out.changes == ("started web", f"started {plain}")


def test_containers_with_systemd_installs_the_unit(tmp_path):
    runner = FakeRunner()
    state = {"enabled": "disabled", "active": "inactive"}
    runner.expect(["systemctl", "is-enabled", containers.UNIT],
                  handler=lambda a: Result(a, 0 if state["enabled"] == "enabled" else 1, state["enabled"] + "\n", ""))
    runner.expect(["systemctl", "is-active", containers.UNIT],
                  handler=lambda a: Result(a, 0 if state["active"] == "active" else 3, state["active"] + "\n", ""))
    runner.expect(["systemctl", "daemon-reload"])
    runner.expect(["systemctl", "enable", "--no-reload", containers.UNIT], handler=lambda a: state.update(enabled="enabled")
                  or Result(a, 0, "", ""))
    runner.expect(["systemctl", "restart", containers.UNIT], handler=lambda a: state.update(active="active")
                  or Result(a, 0, "", ""))
    ctx = make_ctx(tmp_path, runner, systemd=True)
    out = containers.run(ctx)
    assert out.changes == (f"write {ctx.path(containers.UNIT_PATH)} (644)",
                           f"systemctl enable --no-reload {containers.UNIT}", "systemctl daemon-reload",
                           f"systemctl restart {containers.UNIT}")
    assert runner.calls.count(("systemctl", "daemon-reload")) == 1
    unit = ctx.path(containers.UNIT_PATH).read_text()
    assert f"ExecStart=/opt/p/bin/python -m provisioner.host.restore --root {ctx.root}\n" in unit
    assert f"RequiresMountsFor={ctx.root}\n" in unit
    assert "Type=oneshot" in unit and "KillMode=process" in unit and "WantedBy=multi-user.target" in unit
    assert containers.run(ctx).changes == ()
    state["active"] = "inactive"           # e.g. stopped by hand
    assert containers.run(ctx).changes == (f"systemctl restart {containers.UNIT}",)
    assert containers.unit_text("/py", tmp_path, tmp_path / "st").count(f"--root {tmp_path} --state-dir {tmp_path}/st\n")


def test_restore_entry_point_of_the_unit(tmp_path, monkeypatch, capsys):
    """`python -m provisioner.host.restore` (what the unit runs): one line out, exit code."""
    from provisioner.host import restore as restore_main

    assert restore_main.main(["--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "nothing to start\n"
    state = tmp_path / containers.STATE_SUBDIR
    state.mkdir(parents=True)
    (state / "web.spec.json").write_text("{")
    assert restore_main.main(["--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {state}/web.spec.json: unreadable container spec") and err.count("\n") == 1
