"""The boot hook for real: loop-device disks (btrfs raid0 ephemeral as <root> + a volume), a real
useradd into a temp sysroot (`--prefix`), sysctl and the nftables firewall inside a network
namespace this test creates (a second namespace on a veth plays the outside client), and a real
supervised process restored after a simulated reboot.

Never this machine's /etc, users, sysctls or firewall: /etc paths live under a temp sysroot, the
runner sends every `nft`/`sysctl` into the test's namespace and refuses systemctl and any
useradd/usermod without --prefix, and the sysctl step is limited to per-namespace keys
(vm.* and fs.* are global). The test checks the root namespace is unchanged at the end.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner import network as net
from provisioner.containers import supervise
from provisioner.containers.container import Containers
from provisioner.host import boot
from provisioner.host import config as host_config
from provisioner.host.config import HostConfig
from provisioner.host.steps import StepContext
from provisioner.runner import Runner
from test_disks import Host as DiskHost, blkid, findmnt, sh  # tests/privileged is on sys.path (rootdir import)
from test_network import Env as NetEnv, free_port

pytestmark = pytest.mark.privileged

SHIM_DIR = Path(__file__).resolve().parents[2] / "native" / "shim"
NET_SYSCTLS = {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBoottestkeyonlyforthistest boot@test"
SERVER = """
import selectors, socket
sel = selectors.DefaultSelector()
for port in (8080, 8081):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16); sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        c, _ = key.fileobj.accept(); c.sendall(b"ok"); c.close()
"""
CLIENT = """
import socket, sys
s = socket.create_connection(("10.253.0.1", int(sys.argv[1])), timeout=1.5)
print(s.recv(2).decode())
"""


class NetnsRunner(Runner):
    """The real Runner, except: nft and sysctl run inside `ns`; systemctl, and useradd/usermod
    without --prefix, are refused (they would change this machine)."""

    def __init__(self, ns: str):
        self.ns = ns

    def run(self, argv, **kw):
        argv = [str(a) for a in argv]
        if argv[0] == "systemctl" or (argv[0] in ("useradd", "usermod") and "--prefix" not in argv):
            raise AssertionError(f"test runner refused: {' '.join(argv)}")
        if argv[0] in ("nft", "sysctl"):
            argv = ["ip", "netns", "exec", self.ns, *argv]
        return super().run(argv, **kw)


def wait_for(cond, timeout=10.0, what="condition", explain=None):
    """`explain()`, when given, says what the system looked like at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f"\n{explain()}" if explain else ""))


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Machine:
    """One fake host: disks (loop devices), sysroot, two network namespaces joined by a veth."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.disks = DiskHost(tmp)
        sfx = f"{os.getpid() % 100000}"
        self.ns, self.client_ns = f"pbh{sfx}", f"pbc{sfx}"
        self.server = None
        self.sysroot = tmp / "sys"
        self.root = tmp / "mnt" / "eph"
        self.state = self.root / "containers" / ".supervise"
        self.logs = self.root / "containers" / "logs"

    def setup_sysroot(self):
        etc = self.sysroot / "etc"
        etc.mkdir(parents=True)
        (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
        (etc / "group").write_text("root:x:0:\nsudo:x:27:\n")
        (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
        (etc / "gshadow").write_text("root:*::\nsudo:*::\n")
        os.chmod(etc / "shadow", 0o600)

    def setup_net(self):
        sh("ip", "netns", "add", self.ns)
        sh("ip", "netns", "add", self.client_ns)
        sh("ip", "link", "add", "eth0", "netns", self.ns, "type", "veth", "peer", "name", "eth0",
           "netns", self.client_ns)
        for ns, addr in ((self.ns, "10.253.0.1/30"), (self.client_ns, "10.253.0.2/30")):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        self.server = subprocess.Popen(["ip", "netns", "exec", self.ns, "python3", "-c", SERVER],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: {":8080", ":8081"} <= {ln.split()[3][-5:] for ln in sh(
            "ip", "netns", "exec", self.ns, "ss", "-ltnH").stdout.splitlines()}, what="the test server")

    def reach(self, port: int) -> bool:
        r = sh("ip", "netns", "exec", self.client_ns, "python3", "-c", CLIENT, port, check=False)
        return r.returncode == 0 and r.stdout.strip() == "ok"

    def in_ns(self, *argv, check=True):
        return sh("ip", "netns", "exec", self.ns, *argv, check=check)

    def write_config(self, eph: list[str], vol: str) -> Path:
        etc = self.tmp / "etc-provisioner"
        etc.mkdir()
        (etc / "stack.yml").write_text(f"""\
name: boottest
hosts:
  - name: web1
    aws: {{instance_type: t3.small, image: ami-0abc12345678, region: us-east-1}}
    services: [web]
    disks:
      ephemeral: {{mount: {self.root}, devices: [{', '.join(eph)}]}}
      volumes:
        - {{name: data, match: {{device: {vol}}}, mount: {self.tmp / 'mnt' / 'data'}, size: 1}}
services:
  web:
    image: busybox
    ports: ["8080:80"]
""")
        (etc / "host.yml").write_text(f"""\
host: web1
stack_file: stack.yml
users:
  - name: deploy
    ssh_authorized_keys: ["{KEY}"]
    groups: [sudo]
""")
        return etc / "host.yml"

    def context(self, config_path: Path) -> StepContext:
        return StepContext(config=host_config.load(config_path), runner=NetnsRunner(self.ns), root=self.root,
                           sysroot=self.sysroot, options={"sysctl": NET_SYSCTLS})

    def kill_api(self):
        """The Engine API server the api step started (its pid file's holder)."""
        from provisioner.host.steps.agent import running_pid

        pid = running_pid(self.sysroot / "run/provisioner/api.pid")
        if pid:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: running_pid(self.sysroot / "run/provisioner/api.pid") is None, what="the API server gone")

    def kill_containers(self):
        self.kill_api()
        if not self.state.is_dir():
            return
        for spec in self.state.glob("*.spec.json"):
            st = supervise.status(spec.name[:-len(".spec.json")], self.state, self.logs)
            for kill, pid in ((os.kill, st.shim_pid if st.shim_alive else None), (os.killpg, st.pid)):
                if pid:
                    try:
                        kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def cleanup(self):
        self.kill_containers()
        if self.server:
            self.server.kill()
            self.server.wait()
        self.disks.cleanup()
        for ns in (self.ns, self.client_ns):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture(scope="module")
def shim() -> str:
    Runner().run(["make", "-s", "-C", str(SHIM_DIR)])
    return str(SHIM_DIR / "build" / "provision-shim")


@pytest.fixture
def machine(tmp_path, shim, monkeypatch):
    monkeypatch.setenv("PROVISION_SHIM", shim)
    m = Machine(tmp_path)
    try:
        m.setup_sysroot()
        m.setup_net()
        yield m
    finally:
        m.cleanup()


def statuses(result) -> dict:
    return {s.name: s.status for s in result.steps}


def changes(result, name) -> list[str]:
    return next(s.changes for s in result.steps if s.name == name)


def test_boot_fresh_rerun_and_reboot(machine):
    m = machine
    real = {"passwd": digest("/etc/passwd"), "group": digest("/etc/group"),
            "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
            "table": sh("nft", "list", "table", "inet", boot.firewall.TABLE, check=False).returncode}
    eph, (vol,) = m.disks.loop(2), m.disks.loop(1)
    cfg_path = m.write_config(eph, vol)
    m.in_ns("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
    assert m.reach(8080) and m.reach(8081)          # no firewall yet: both answer

    # -- first boot: everything to do ---------------------------------------------------------
    first = boot.boot(m.context(cfg_path))
    assert statuses(first) == {"disks": "changed", "users": "changed", "sysctl": "changed", "logrotate": "changed",
                               "firewall": "changed", "timesync": "skipped", "containers": "ok",
                               "agent": "skipped", "api": "changed"}, first.steps
    assert sum(c.startswith("mkfs.btrfs") for c in changes(first, "disks")) == 2
    assert "Data, RAID0" in sh("btrfs", "filesystem", "df", m.root).stdout
    assert findmnt(m.tmp / "mnt" / "data")["source"] == vol
    # the result file and the log are on the ephemeral filesystem the disks step mounted
    data = json.loads((m.root / boot.RESULT_FILE).read_text())
    assert data["ok"] and [s["name"] for s in data["steps"]] == list(boot.STEP_NAMES)
    assert "step firewall: changed" in (m.root / boot.LOG_FILE).read_text()

    passwd = (m.sysroot / "etc/passwd").read_text()
    assert "deploy:x:" in passwd and "sudo:x:27:deploy" in (m.sysroot / "etc/group").read_text()
    keys = m.sysroot / "home/deploy/.ssh/authorized_keys"
    uid = int(passwd.split("deploy:x:")[1].split(":")[0])
    assert KEY in keys.read_text() and keys.stat().st_mode & 0o777 == 0o600 and keys.stat().st_uid == uid
    assert keys.parent.stat().st_mode & 0o777 == 0o700 and keys.parent.stat().st_uid == uid

    assert m.in_ns("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    assert "net.ipv4.ip_forward = 1" in (m.sysroot / "etc/sysctl.d/60-provisioner.conf").read_text()
    table = m.in_ns("nft", "list", "table", "inet", "provisioner_host").stdout
    assert "policy drop" in table and "tcp dport 8080 accept" in table
    assert m.reach(8080) and not m.reach(8081)      # exactly the published port is open

    # a supervised container with a restart policy, its state on the ephemeral store
    supervise.start("web", ["/bin/sh", "-c", "exec sleep 1000"], "always", m.logs, m.state, runner=Runner())
    assert supervise.status("web", m.state, m.logs).status == "running"

    # -- second boot, nothing changed: no changes at all ---------------------------------------
    second = boot.boot(m.context(cfg_path))
    assert "changed" not in statuses(second).values(), second.steps
    assert statuses(second)["timesync"] == "skipped" and second.ok

    # -- "reboot": processes die, filesystems unmounted, the namespace's rules and sysctls reset --
    (m.tmp / "mnt" / "data" / "keep.txt").write_text("volume data")
    uuids = {d: blkid(d)["UUID"] for d in eph + [vol]}
    old_pid = supervise.status("web", m.state, m.logs).pid
    m.kill_containers()
    wait_for(lambda: supervise.status("web", m.state, m.logs).status == "dead", what="the container to die")
    m.disks.unmount_all()
    for d in eph + [vol]:
        sh("btrfs", "device", "scan", "--forget", d, check=False)
    m.in_ns("nft", "delete", "table", "inet", "provisioner_host")
    m.in_ns("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
    assert m.reach(8081)

    third = boot.boot(m.context(cfg_path))
    st = statuses(third)
    assert st == {"disks": "changed", "users": "ok", "sysctl": "changed", "logrotate": "ok",
                  "firewall": "changed", "timesync": "skipped", "containers": "changed", "agent": "skipped",
                  "api": "changed"}, third.steps
    assert not any(c.startswith(("mkfs", "wipe")) for c in changes(third, "disks"))   # mounted, not formatted
    assert {d: blkid(d)["UUID"] for d in eph + [vol]} == uuids
    assert (m.tmp / "mnt" / "data" / "keep.txt").read_text() == "volume data"
    assert changes(third, "containers") == ["started web"]
    restored = supervise.status("web", m.state, m.logs)
    assert restored.status == "running" and restored.pid != old_pid
    assert m.reach(8080) and not m.reach(8081)

    fourth = boot.boot(m.context(cfg_path))
    assert "changed" not in statuses(fourth).values(), fourth.steps

    # this machine is as it was
    assert digest("/etc/passwd") == real["passwd"] and digest("/etc/group") == real["group"]
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == real["ip_forward"]
    assert sh("nft", "list", "table", "inet", boot.firewall.TABLE, check=False).returncode == real["table"] != 0


def test_a_failed_disk_step_skips_containers_but_not_the_rest(machine):
    m = machine
    bad, vol = m.disks.loop(2)
    sh("mkfs.ext4", "-q", "-F", bad)        # a foreign filesystem on the "ephemeral" disk: refused
    cfg_path = m.write_config([bad], vol)
    result = boot.boot(m.context(cfg_path))
    st = statuses(result)
    assert st["disks"] == "failed" and st["containers"] == "skipped"
    assert st["firewall"] == "changed" and st["users"] == "changed" and st["sysctl"] == "changed"
    by = {s.name: s for s in result.steps}
    assert by["containers"].message == "needs disks (failed)"
    assert bad in by["disks"].message and "ext4" in by["disks"].message and "\n" not in by["disks"].message
    assert not result.ok and not m.reach(8081)
    assert blkid(bad)["TYPE"] == "ext4"       # untouched
    assert "TYPE" not in blkid(vol)           # the plan failed as a whole: the good disk was not formatted either
    # the result is still written (under <root> on the root filesystem, since nothing got mounted)
    assert json.loads((m.root / boot.RESULT_FILE).read_text())["ok"] is False


@pytest.fixture
def netenv(tmp_path, shim, monkeypatch):
    """The containers layer's own test network (random names, swept at the end) under a root
    whose containers/network.json names it, as the container manager reads it."""
    monkeypatch.setenv("PROVISION_SHIM", shim)
    e = NetEnv(tmp_path / "root")
    (e.root / "containers").mkdir(parents=True)
    (e.root / "containers" / "network.json").write_text(json.dumps(dataclasses.asdict(e.cfg)))
    state = e.root / "containers" / ".supervise"
    try:
        yield e
    finally:
        for spec in state.glob("*.spec.json") if state.is_dir() else []:
            st = supervise.status(spec.name[:-len(".spec.json")], state)
            for kill, pid in ((os.kill, st.shim_pid if st.shim_alive else None), (os.killpg, st.pid)):
                if pid:
                    try:
                        kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        e.cleanup()


def test_reboot_reconnects_a_containers_network_before_restarting_it(netenv, tmp_path):
    """A container (record + network endpoint + supervised command in its netns, published on a
    host port) loses its netns, veth, bridge, DNAT table and processes in a "reboot"; the boot
    hook's containers step rebuilds the endpoint (same address) and the command serves again."""
    e = netenv
    port = free_port()
    rec = Containers(e.root).reserve("web", "busybox", "sha256:" + "0" * 64, {})
    ep = e.connect("web", ports=[f"{port}:80"])
    www = e.root / "www"
    www.mkdir()
    (www / "index.html").write_text("served\n")
    state = e.root / "containers" / ".supervise"
    ns = Path(ep.netns_path).name
    argv = ["ip", "netns", "exec", ns, "/bin/busybox", "httpd", "-f", "-p", "80", "-h", str(www)]
    supervise.start(rec.id, argv, "always", e.root / "containers" / rec.id, state, runner=e.runner)
    url = f"http://127.0.0.1:{port}/"
    serving = lambda: e.wget(url, check=False).stdout == "served\n"  # noqa: E731

    def explain() -> str:
        st = supervise.status(rec.id, state)
        log = "".join(supervise.log_text(rec.id, e.root / "containers" / rec.id, tail=20))
        return "\n".join([f"supervisor: {st}", f"log:\n{log}", f"wget: {e.wget(url, check=False).stderr.strip()}",
                          sh("ip", "-n", ns, "-br", "addr", check=False).stdout,
                          sh("ip", "-br", "addr", "show", "dev", e.cfg.bridge, check=False).stdout,
                          sh("nft", "list", "table", "ip", e.cfg.table, check=False).stdout])

    wait_for(serving, what="the container serving before the reboot", explain=explain)

    def reboot():
        st = supervise.status(rec.id, state)
        os.kill(st.shim_pid, signal.SIGKILL)
        os.killpg(st.pid, signal.SIGKILL)
        wait_for(lambda: supervise.status(rec.id, state).status == "dead", what="the container to die")
        sh("ip", "netns", "del", ns)                # takes the container's veth end, and so the pair
        sh("ip", "link", "del", e.cfg.bridge)
        sh("nft", "delete", "table", "ip", e.cfg.table)
        assert not serving()

    # The kernel tears a deleted netns down asynchronously, so the host end of its veth can
    # outlive `ip netns del`; a process still in the namespace makes that moment last: the
    # reconnect must replace that veth, not take it for the container's own.
    straggler = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "120"])
    try:
        in_ns = lambda: os.stat(f"/proc/{straggler.pid}/ns/net").st_ino == os.stat(ep.netns_path).st_ino  # noqa: E731
        wait_for(in_ns, what="the straggler inside the container's namespace")
        reboot()
        assert sh("ip", "link", "show", ep.veth, check=False).returncode == 0   # the leftover is there
        ctx = StepContext(config=HostConfig(host="h1"), runner=Runner(), root=e.root, sysroot=tmp_path / "sys")
        result = boot.boot(ctx, only=("containers",))
    finally:
        straggler.kill()
        straggler.wait()
    assert statuses(result) == {"containers": "changed"} and changes(result, "containers") == ["started web"]
    wait_for(serving, what="the container serving after the boot hook", explain=explain)
    assert net.endpoint(e.root, "web").address == ep.address
    assert boot.boot(ctx, only=("containers",)).steps[0].changes == []

    # the same through the exact command provisioner-containers.service runs under systemd
    reboot()
    unit = boot.containers.unit_text(sys.executable, e.root)
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))[len("ExecStart="):].split()
    out = sh(*exec_start)
    assert out.stdout == "started: web\n", out.stderr
    wait_for(serving, what="the container serving after the unit's command", explain=explain)
