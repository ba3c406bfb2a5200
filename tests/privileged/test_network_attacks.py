"""The LAN against containers, and containers against the instance metadata service, for real:
the "LAN host" is a network namespace joined to this host by a veth, routing the containers'
subnet (and, for the loopback attack, 127.0.0.0/8) via this host, as a neighbour on the same
segment can; the "metadata service" is a namespace holding 169.254.169.254, routed from this host
as a cloud's link-local metadata address is. Nothing outside namespaces made here is contacted."""
from __future__ import annotations

import secrets
import subprocess

import pytest

from tests.privileged.test_network import NOTHING, Env, env, free_port, sh  # noqa: F401  (env: the fixture)

pytestmark = pytest.mark.privileged
METADATA = "169.254.169.254"


def can_connect(e: Env, ns: str, addr: str, port: int) -> bool:
    probe = (f"import socket; s = socket.socket(); s.settimeout(2); "
             f"print('open' if s.connect_ex(('{addr}', {port})) == 0 else 'closed')")
    return e.in_ns(ns, "python3", "-c", probe).stdout.strip() == "open"


def listen(e: Env, ns: str, port: int) -> None:
    p = e.spawn("ip", "netns", "exec", ns, "python3", "-c",
                "import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
                f"s.bind(('0.0.0.0', {port})); s.listen(16); print('ready', flush=True)\n"
                "while True:\n c, a = s.accept(); c.close()")
    assert p.stdout.readline().strip() == "ready"


def test_a_lan_host_reaches_no_unpublished_container_port(env):
    """A neighbour that routes the containers' subnet via this host (which forwards: ip_forward=1)
    must reach only what is published, through the host's address."""
    pub = free_port()
    web = env.connect("web", ports=[f"{pub}:80"])
    ns = f"pt{env.sfx}-web"
    listen(env, ns, 80)
    listen(env, ns, 6379)                          # e.g. a database nobody published
    env.in_ns(env.ext_ns, "ip", "route", "add", env.cfg.subnet, "via", env.host_ext_ip)
    assert can_connect(env, env.ext_ns, env.host_ext_ip, pub)          # published: yes
    assert not can_connect(env, env.ext_ns, web.address, 6379)          # unpublished, routed: no
    assert not can_connect(env, env.ext_ns, web.address, 80)            # the container port itself: no
    # containers still reach each other, and the host reaches them
    env.connect("peer")
    assert can_connect(env, f"pt{env.sfx}-peer", web.address, 6379)
    with __import__("socket").create_connection((web.address, 6379), timeout=2):
        pass
    env.disconnect("peer")
    env.disconnect("web")
    assert env.leftovers() == NOTHING


def test_a_lan_host_cannot_reach_a_port_published_on_127_0_0_1(env):
    """`-p 127.0.0.1:P:80` means this host only. A neighbour sending to 127.0.0.1:P through this
    host (its own loopback down, 127.0.0.0/8 routed here) must not be DNAT-ed to the container."""
    pub = free_port()
    env.connect("local", ports=[f"127.0.0.1:{pub}:80"])
    listen(env, f"pt{env.sfx}-local", 80)
    with __import__("socket").create_connection(("127.0.0.1", pub), timeout=2):
        pass                                                           # from the host: yes
    ext = env.ext_ns
    env.in_ns(ext, "ip", "link", "set", "lo", "down")
    env.in_ns(ext, "ip", "addr", "flush", "dev", "lo")
    env.in_ns(ext, "sysctl", "-q", "-w", "net.ipv4.conf.eth0.route_localnet=1")
    env.in_ns(ext, "ip", "route", "add", "127.0.0.0/8", "via", env.host_ext_ip, "dev", "eth0")
    assert not can_connect(env, ext, "127.0.0.1", pub)
    env.disconnect("local")
    assert env.leftovers() == NOTHING


@pytest.fixture
def metadata(env):
    """A namespace holding 169.254.169.254 with a listener on :80, routed from this host."""
    own = secrets.token_hex(3)         # not the env's suffix: its leftover checks stay exact
    ns, host_if = f"md{own}", f"md{own}"
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "link", "set", host_if, "up")
    for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", "eth0", "up"],
                ["ip", "addr", "add", f"{METADATA}/32", "dev", "eth0"],
                ["ip", "route", "add", "default", "dev", "eth0"]):
        sh("ip", "netns", "exec", ns, *cmd)
    sh("ip", "route", "add", f"{METADATA}/32", "dev", host_if)
    listen(env, ns, 80)
    try:
        yield ns
    finally:
        sh("ip", "route", "del", f"{METADATA}/32", check=False)
        sh("ip", "link", "del", host_if, check=False)
        sh("ip", "netns", "del", ns, check=False)


def test_a_container_cannot_reach_the_metadata_service_unless_it_opts_in(env, metadata):
    assert can_connect(env, metadata, METADATA, 80)            # the service itself answers
    with __import__("socket").create_connection((METADATA, 80), timeout=2):
        pass                                                   # and the host reaches it
    env.connect("app")
    assert not can_connect(env, f"pt{env.sfx}-app", METADATA, 80)
    env.connect("agent", metadata=True)                        # a service that opted in
    assert can_connect(env, f"pt{env.sfx}-agent", METADATA, 80)
    assert not can_connect(env, f"pt{env.sfx}-app", METADATA, 80)
    env.disconnect("agent")
    env.connect("agent")                                       # the opt-in went with the endpoint
    assert not can_connect(env, f"pt{env.sfx}-agent", METADATA, 80)
    env.disconnect("agent")
    env.disconnect("app")
    assert env.leftovers() == NOTHING


OLD_TABLE = """table ip {table} {{
  chain ports {{
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump ports
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    fib daddr type local jump ports
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != "{bridge}" masquerade
    oifname "{bridge}" ip saddr 127.0.0.0/8 masquerade
    oifname "{bridge}" ip saddr {subnet} ct status dnat masquerade
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{bridge}" ip daddr 127.0.0.0/8 ct state {{ new, invalid, untracked }} drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    oifname "{bridge}" ct state established,related accept
    oifname "{bridge}" ct status dnat accept
    iifname "{bridge}" accept
  }}
}}
"""


def test_a_running_hosts_older_table_is_upgraded_in_place(env):
    """A host set up by the previous version has the old table (forward ending in accept) with a
    container's port rule in it: the next connect upgrades the table in one transaction, keeps
    the rule, and the unpublished port is closed to the LAN from then on, without a reboot."""
    pub = free_port()
    web = env.connect("web", ports=[f"{pub}:80"])
    old = OLD_TABLE.format(table=env.cfg.table, bridge=env.cfg.bridge, subnet=env.cfg.subnet)
    sh("nft", "delete", "table", "ip", env.cfg.table)
    old += (f'add rule ip {env.cfg.table} ports tcp dport {pub} dnat to {web.address}:80 '
            f'comment "prov:web|{pub}:80/tcp"\n')
    subprocess.run(["nft", "-f", "-"], input=old, text=True, check=True, timeout=20)
    ns = f"pt{env.sfx}-web"
    listen(env, ns, 80)
    listen(env, ns, 6379)
    env.in_ns(env.ext_ns, "ip", "route", "add", env.cfg.subnet, "via", env.host_ext_ip)
    assert can_connect(env, env.ext_ns, web.address, 6379)              # the old table's hole
    env.connect("other")                                                # any connect upgrades it
    assert not can_connect(env, env.ext_ns, web.address, 6379)
    assert can_connect(env, env.ext_ns, env.host_ext_ip, pub)           # the published port stayed
    ruleset = sh("nft", "list", "table", "ip", env.cfg.table).stdout
    assert ruleset.count(f"prov:web|{pub}:80/tcp") == 1 and ruleset.count("fib daddr type local jump ports") == 2
    env.disconnect("other")
    env.disconnect("web")
    assert env.leftovers() == NOTHING
