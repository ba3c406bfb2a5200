"""Container networking for real: netns "containers" with busybox httpd, a bridge, veths,
nftables DNAT/masquerade, and an "other host" netns joined to this host by its own veth.

Every name carries a random suffix (parallel runs do not clash) and the fixture removes
everything with that suffix at the end, even after a failure. Only addresses inside
namespaces made here (and 127.0.0.1) are ever contacted.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest

from provisioner import network as net
from provisioner.errors import ContainerError
from provisioner.runner import Runner

pytestmark = pytest.mark.privileged


def sh(*argv, check=True, timeout=20):
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except (OSError, subprocess.SubprocessError) as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Env:
    def __init__(self, root: Path):
        sfx = secrets.token_hex(2)
        self.sfx = sfx
        self.root = root
        self.cfg = net.NetworkConfig(bridge=f"pb{sfx}", subnet=f"10.{random.randint(200, 249)}.{random.randint(0, 255)}.0/24",
                                     table=f"pt{sfx}", netns_prefix=f"pt{sfx}-", veth_prefix=f"v{sfx}")
        self.runner = Runner()
        self.procs: list[subprocess.Popen] = []
        third = random.randint(0, 255)
        self.ext_ns = f"pt{sfx}-ext"
        self.ext_if = f"px{sfx}"
        self.host_ext_ip = f"10.{random.randint(250, 253)}.{third}.1"
        self.ext_ip = self.host_ext_ip.rsplit(".", 1)[0] + ".2"

    # -- the simulated external client ----------------------------------------------------
    def make_other_host(self):
        sh("ip", "netns", "add", self.ext_ns)
        sh("ip", "link", "add", self.ext_if, "type", "veth", "peer", "name", "eth0", "netns", self.ext_ns)
        sh("ip", "addr", "add", f"{self.host_ext_ip}/30", "dev", self.ext_if)
        sh("ip", "link", "set", self.ext_if, "up")
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{self.ext_ip}/30", "dev", "eth0"],
                    ["ip", "link", "set", "eth0", "up"], ["ip", "route", "add", "default", "via", self.host_ext_ip]):
            sh("ip", "netns", "exec", self.ext_ns, *cmd)

    def in_ns(self, ns, *argv, check=True):
        return sh("ip", "netns", "exec", ns, *argv, check=check)

    def spawn(self, *argv) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def httpd(self, ns: str, content: str) -> Path:
        d = self.root / f"www-{ns}"
        d.mkdir()
        (d / "index.html").write_text(content)
        self.spawn("ip", "netns", "exec", ns, "/bin/busybox", "httpd", "-f", "-p", "80", "-h", str(d))
        return d

    def wget(self, url, ns=None, check=True):
        # No -T: Debian 12's busybox-static wget segfaults with it; sh() has a timeout instead.
        argv = ["/bin/busybox", "wget", "-q", "-O-", url]
        return self.in_ns(ns, *argv, check=check) if ns else sh(*argv, check=check)

    def connect(self, name, **kw):
        return net.connect(self.root, self.cfg, name, runner=self.runner, **kw)

    def disconnect(self, name, **kw):
        return net.disconnect(self.root, self.cfg, name, runner=self.runner, **kw)

    # -- what is left on the system -------------------------------------------------------
    def leftovers(self) -> dict:
        links = [link["ifname"] for link in json.loads(sh("ip", "-j", "link", "show").stdout)
                 if self.sfx in link["ifname"] and link["ifname"] != self.ext_if]
        netns = [n for n in os.listdir("/run/netns") if n.startswith(f"pt{self.sfx}-") and n != self.ext_ns] \
            if os.path.isdir("/run/netns") else []
        table = sh("nft", "list", "table", "ip", self.cfg.table, check=False).returncode == 0
        ipam = self.root / "network" / "ipam.json"
        allocs = json.loads(ipam.read_text())["allocations"] if ipam.exists() else {}
        return {"links": links, "netns": netns, "table": table, "allocations": allocs,
                "endpoints": sorted(net.endpoints(self.root))}

    def cleanup(self):
        for p in self.procs:
            p.kill()
            p.wait(timeout=5)
        try:
            net.teardown(self.root, self.cfg, runner=self.runner)
        except Exception as exc:  # the sweep below still runs; the test result stands
            print(f"teardown failed: {exc}")
        for link in json.loads(sh("ip", "-j", "link", "show").stdout):
            if self.sfx in link["ifname"]:
                sh("ip", "link", "del", link["ifname"], check=False)
        if os.path.isdir("/run/netns"):
            for n in os.listdir("/run/netns"):
                if n.startswith(f"pt{self.sfx}-"):
                    sh("ip", "netns", "del", n, check=False)
        sh("nft", "delete", "table", "ip", self.cfg.table, check=False)


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    try:
        e.make_other_host()
        yield e
    finally:
        e.cleanup()


NOTHING = {"links": [], "netns": [], "table": False, "allocations": {}, "endpoints": []}


def test_two_containers_links_published_ports_nat_and_teardown(env):
    port = free_port()
    web = env.connect("web", ports=[f"{port}:80"], exposed=[(80, "tcp")])
    api = env.connect("api", links=[("web", "backend")])
    ns_web, ns_api = f"pt{env.sfx}-web", f"pt{env.sfx}-api"
    env.httpd(ns_web, "hello from web\n")
    wait_for(lambda: env.wget(f"http://{web.address}/", ns_api, check=False).returncode == 0, what="httpd up")

    # container → container by address
    assert env.wget(f"http://{web.address}/", ns_api).stdout == "hello from web\n"

    # … and by link alias through its /etc/hosts (bind-mounted as the runtime will do)
    hosts_file = Path(api.files_dir) / "hosts"
    assert f"{web.address}\tbackend web\n" in hosts_file.read_text()
    probe = ("import socket, urllib.request; ip = socket.gethostbyname('backend'); "
             "print(ip, urllib.request.urlopen('http://backend/', timeout=5).read().decode(), end='')")
    out = env.in_ns(ns_api, "unshare", "-m", "sh", "-c",
                    f"mount --bind {hosts_file} /etc/hosts && exec python3 -c \"{probe}\"").stdout
    assert out == f"{web.address} hello from web\n"
    assert api.env["BACKEND_PORT_80_TCP_ADDR"] == web.address and api.env["BACKEND_NAME"] == "/api/backend"

    # published port from the host's own 127.0.0.1, and from the other host
    assert env.wget(f"http://127.0.0.1:{port}/").stdout == "hello from web\n"
    assert env.wget(f"http://{env.host_ext_ip}:{port}/", env.ext_ns).stdout == "hello from web\n"
    # … and from containers through a host address: another one, and the publisher itself (hairpin)
    assert env.wget(f"http://{env.host_ext_ip}:{port}/", ns_api).stdout == "hello from web\n"
    assert env.wget(f"http://{env.host_ext_ip}:{port}/", ns_web).stdout == "hello from web\n"

    # egress: container → the other host, source masqueraded to this host's address there
    server = env.spawn("ip", "netns", "exec", env.ext_ns, "python3", "-c",
                       "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
                       "s.bind(('0.0.0.0', 9000)); s.listen(); print('ready', flush=True);"
                       "c, a = s.accept(); c.sendall(a[0].encode()); c.close()")
    assert server.stdout.readline().strip() == "ready"
    peer = env.in_ns(ns_web, "python3", "-c",
                     f"import socket; s = socket.create_connection(('{env.ext_ip}', 9000), 5); print(s.recv(64).decode())")
    assert peer.stdout.strip() == env.host_ext_ip

    # resolv.conf: the host's non-loopback IPv4 nameservers (or a stated fallback)
    resolv = (Path(web.files_dir) / "resolv.conf").read_text()
    assert resolv.startswith("nameserver ") and "127.0.0." not in resolv

    env.disconnect("api")
    env.disconnect("web")
    assert env.leftovers() == NOTHING


def test_port_taken_by_a_container_leaves_nothing_half_created(env):
    port = free_port()
    env.connect("web", ports=[f"{port}:80"])
    before = env.leftovers()
    rules_before = sh("nft", "list", "table", "ip", env.cfg.table).stdout
    with pytest.raises(ContainerError, match=f"port {port}/tcp is already published by container web"):
        env.connect("other", ports=[f"{port}:8080"])
    assert env.leftovers() == before
    assert sh("nft", "list", "table", "ip", env.cfg.table).stdout == rules_before
    env.disconnect("web")
    assert env.leftovers() == NOTHING


def test_port_taken_by_a_listening_socket_leaves_nothing(env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ContainerError, match=f"port {port}/tcp is already in use on this host"):
            env.connect("web", ports=[f"{port}:80"])
    assert env.leftovers() == NOTHING


def test_failed_connect_rolls_back(env):
    missing = f"/run/netns/pt{env.sfx}-nonexistent"
    with pytest.raises(Exception):
        env.connect("web", netns_path=missing, ports=[f"{free_port()}:80"])
    assert env.leftovers() == NOTHING


def test_callers_netns_is_joined_and_kept(env):
    given = f"pt{env.sfx}-given"
    sh("ip", "netns", "add", given)
    ep = env.connect("c1", netns_path=f"/run/netns/{given}")
    addr = json.loads(env.in_ns(given, "ip", "-j", "-4", "addr", "show", "dev", "eth0").stdout)
    assert addr[0]["addr_info"][0]["local"] == ep.address
    route = env.in_ns(given, "ip", "route", "show", "default").stdout
    assert f"default via {env.cfg.gateway}" in route
    env.disconnect("c1")
    assert given in os.listdir("/run/netns")  # not ours to delete
    assert "eth0" not in env.in_ns(given, "ip", "-br", "link").stdout
    sh("ip", "netns", "del", given)
    assert env.leftovers() == NOTHING


def test_link_follows_a_recreated_container(env):
    env.connect("db")
    app = env.connect("app", links=[("db", "database")])
    hosts_file = Path(app.files_dir) / "hosts"
    inode = hosts_file.stat().st_ino
    env.disconnect("db")
    env.connect("filler")  # takes the next address so db's changes for sure
    db2 = env.connect("db")
    text = hosts_file.read_text()
    assert f"{db2.address}\tdatabase db\n" in text
    assert hosts_file.stat().st_ino == inode
    for name in ("app", "db", "filler"):
        env.disconnect(name)
    assert env.leftovers() == NOTHING


def test_ip_forward_is_on_after_connect(env):
    env.connect("web")
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    assert Path(f"/proc/sys/net/ipv4/conf/{env.cfg.bridge}/route_localnet").read_text().strip() == "1"
    env.disconnect("web")
    assert env.leftovers() == NOTHING


def test_rules_are_removed_exactly_and_a_converged_plan_is_empty(env):
    from provisioner.network.facts import read_facts
    from provisioner.network.plan import plan_connect

    p1, p2 = free_port(), free_port()
    a = env.connect("a", ports=[f"{p1}:80", f"{p1}:53/udp"])
    b = env.connect("b", ports=[f"127.0.0.1:{p2}:80"])
    facts = read_facts(env.runner, env.cfg)
    assert {n: sorted(m for _, m in rules) for n, rules in facts.rules.items()} == {
        "a": sorted([f"{p1}:80/tcp", f"{p1}:53/udp"]), "b": [f"127.0.0.1:{p2}:80/tcp"]}
    assert plan_connect(facts, env.cfg, a) == [] and plan_connect(facts, env.cfg, b) == []

    env.disconnect("a")
    ruleset = sh("nft", "list", "table", "ip", env.cfg.table).stdout
    assert "prov:a|" not in ruleset and f'prov:b|127.0.0.1:{p2}:80/tcp' in ruleset
    assert env.leftovers()["allocations"] == {"b": b.address}
    env.disconnect("b")
    assert env.leftovers() == NOTHING


def test_host_port_chosen_when_not_given(env):
    ep = env.connect("web", ports=["80"])
    (m,) = ep.ports
    assert m.container_port == 80 and m.host_port > 0
    lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert lo <= m.host_port <= hi
    env.httpd(f"pt{env.sfx}-web", "auto\n")
    assert wait_for(lambda: env.wget(f"http://127.0.0.1:{m.host_port}/", check=False).stdout == "auto\n",
                    what="published on the chosen port")
    env.disconnect("web")
    assert env.leftovers() == NOTHING


def test_reconnect_after_a_simulated_reboot_and_into_a_new_netns(env):
    port = free_port()
    web = env.connect("web", ports=[f"{port}:80"])
    api = env.connect("api", links=[("web", "web")])
    # "reboot": everything in the kernel is gone, the records under --root remain
    for ns in (f"pt{env.sfx}-web", f"pt{env.sfx}-api"):
        sh("ip", "netns", "del", ns)
    sh("nft", "delete", "table", "ip", env.cfg.table)
    sh("ip", "link", "del", env.cfg.bridge)
    # netns teardown is asynchronous in the kernel: their veths go a moment later
    wait_for(lambda: env.leftovers()["links"] == [], what="veths to go with their namespaces")
    assert env.leftovers()["table"] is False
    again = net.reconnect(env.root, env.cfg, "web", runner=env.runner)
    net.reconnect(env.root, env.cfg, "api", runner=env.runner)
    assert again.address == web.address and again.ports == web.ports
    env.httpd(f"pt{env.sfx}-web", "back\n")
    assert wait_for(lambda: env.wget(f"http://127.0.0.1:{port}/", check=False).stdout == "back\n")
    assert env.wget(f"http://{web.address}/", f"pt{env.sfx}-api").stdout == "back\n"

    # the runtime restarts api in a fresh namespace: the endpoint moves, the address stays
    fresh = f"pt{env.sfx}-fresh"
    sh("ip", "netns", "add", fresh)
    moved = net.reconnect(env.root, env.cfg, "api", runner=env.runner, netns_path=f"/run/netns/{fresh}")
    assert moved.address == api.address and not moved.owns_netns
    assert f"pt{env.sfx}-api" not in os.listdir("/run/netns")
    assert env.wget(f"http://{web.address}/", fresh).stdout == "back\n"
    env.disconnect("api")
    env.disconnect("web")
    sh("ip", "netns", "del", fresh)
    assert env.leftovers() == NOTHING


def test_container_cannot_reach_the_hosts_loopback_services(env):
    """route_localnet=1 on the bridge must not open the host's 127.0.0.1 to containers
    (CVE-2020-8558): a container that routes 127.0.0.0/8 to its gateway still gets nothing."""
    ep = env.connect("evil")
    ns = f"pt{env.sfx}-evil"
    env.in_ns(ns, "ip", "link", "set", "lo", "down")  # no local 127.x routes left in the container
    env.in_ns(ns, "ip", "addr", "flush", "dev", "lo")
    env.in_ns(ns, "sysctl", "-q", "-w", "net.ipv4.conf.eth0.route_localnet=1")
    env.in_ns(ns, "ip", "route", "add", "127.0.0.0/8", "via", ep.gateway, "dev", "eth0")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        probe = (f"import socket; s = socket.socket(); s.settimeout(2); "
                 f"print('open' if s.connect_ex(('127.0.0.1', {port})) == 0 else 'closed')")
        assert env.in_ns(ns, "python3", "-c", probe).stdout.strip() == "closed"
        # the same trick against the container's own gateway address does reach the host
        # (like Docker's docker0): proof that the probe itself works
        srv2 = socket.socket()
        srv2.bind((ep.gateway, 0))
        srv2.listen()
        probe2 = (f"import socket; s = socket.socket(); s.settimeout(2); "
                  f"print('open' if s.connect_ex(('{ep.gateway}', {srv2.getsockname()[1]})) == 0 else 'closed')")
        assert env.in_ns(ns, "python3", "-c", probe2).stdout.strip() == "open"
        srv2.close()
    env.disconnect("evil")
    assert env.leftovers() == NOTHING
