"""Network planning (pure), command rendering, and connect/disconnect against a fake system."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from provisioner import network as net
from provisioner.network import apply as napply
from provisioner.network.facts import NetFacts, parse_nft_table, rule_comment
from provisioner.network.manage import SystemPaths
from provisioner.network.model import Endpoint, NetworkConfig
from provisioner.network.plan import (
    CreateBridge, CreateNetns, CreateTable, CreateVeth, DeleteLink, DeleteNetns, DeleteTable, ReplacePortRules,
    SetMetadataAccess, SetSysctl, UpgradeTable, plan_connect, plan_disconnect, port_rules,
)
from provisioner.runspec.ports import PortMapping, parse_ports
from provisioner.errors import CommandError, ConfigError, ContainerError
from provisioner.runner import Result
from provisioner.testing import FakeRunner

CFG = NetworkConfig()


def ep(name="web", address="10.88.0.2", ports=(), owns=True):
    return Endpoint(name=name, address=address, prefixlen=16, gateway="10.88.0.1", veth=CFG.veth_name(name),
                    netns_path=f"/run/netns/prov-{name}" if owns else "/proc/42/ns/net", owns_netns=owns,
                    hostname=name, ports=tuple(ports))


def test_config_validation():
    with pytest.raises(ConfigError, match="bad container subnet"):
        NetworkConfig(subnet="10.88.0.1/16")
    with pytest.raises(ConfigError, match="too small"):
        NetworkConfig(subnet="10.88.0.0/31")
    with pytest.raises(ConfigError, match="bad bridge name"):
        NetworkConfig(bridge="a-very-long-bridge-name")
    with pytest.raises(ConfigError, match="bad bridge name"):
        NetworkConfig(bridge="br.0")
    with pytest.raises(ConfigError, match="table name"):
        NetworkConfig(table="1bad")
    assert len(CFG.veth_name("x" * 60)) == 15 and CFG.veth_name("a") != CFG.veth_name("b")


def test_plan_connect_on_a_bare_host():
    e = ep(ports=parse_ports(["8080:80"]))
    actions = plan_connect(NetFacts(), CFG, e)
    assert actions == [
        SetSysctl("net.ipv4.ip_forward", "1"),
        CreateBridge("prov0", "10.88.0.1/16"),
        SetSysctl("net.ipv4.conf.prov0.route_localnet", "1"),
        CreateTable("provisioner", "prov0", "10.88.0.0/16"),
        CreateNetns("prov-web"),
        CreateVeth(e.veth, "prov0", "/run/netns/prov-web", "eth0", "10.88.0.2/16", "10.88.0.1"),
        ReplacePortRules("provisioner", (), port_rules(e)),
    ]
    assert "set sysctl net.ipv4.ip_forward=1" in [a.describe() for a in actions]


def converged(e: Endpoint) -> NetFacts:
    return NetFacts(links=frozenset({"prov0", e.veth}), bridged=frozenset({e.veth}), netns=frozenset({"prov-web"}),
                    ip_forward="1",
                    route_localnet="1", table_exists=True, table_current=True,
                    rules={e.name: tuple((r.chain, r.comment.split("|", 1)[1]) for r in port_rules(e))})


def test_plan_connect_on_a_converged_host_is_empty():
    e = ep(ports=parse_ports(["8080:80", "53:53/udp"]))
    assert plan_connect(converged(e), CFG, e) == []


def test_plan_connect_replaces_changed_port_rules_in_one_transaction():
    old = ep(ports=parse_ports(["8080:80"]))
    new = ep(ports=parse_ports(["9090:80"]))
    assert plan_connect(converged(old), CFG, new) == [
        ReplacePortRules("provisioner", ("p_tcp_any_8080",), port_rules(new))]


def test_plan_connect_into_a_given_netns_creates_none():
    e = ep(owns=False)
    facts = NetFacts(links=frozenset({"prov0"}), ip_forward="1", route_localnet="1", table_exists=True,
                     table_current=True)
    actions = plan_connect(facts, CFG, e)
    assert actions == [CreateVeth(e.veth, "prov0", "/proc/42/ns/net", "eth0", "10.88.0.2/16", "10.88.0.1")]


def test_plan_disconnect():
    e = ep(ports=parse_ports(["8080:80"]))
    facts = converged(e)
    assert plan_disconnect(facts, CFG, "web", netns_name="prov-web", last=False) == [
        ReplacePortRules("provisioner", ("p_tcp_any_8080",)), DeleteLink(e.veth), DeleteNetns("prov-web")]
    assert plan_disconnect(facts, CFG, "web", netns_name="prov-web", last=True) == [
        DeleteLink(e.veth), DeleteNetns("prov-web"), DeleteTable("provisioner"), DeleteLink("prov0")]
    assert plan_disconnect(NetFacts(), CFG, "web", netns_name="prov-web", last=True) == []


def test_rendered_commands():
    e = ep(ports=[PortMapping("127.0.0.1", 8080, 80, "tcp"), PortMapping("0.0.0.0", 53, 5353, "udp")])
    (argv, script), = napply.commands(ReplacePortRules("provisioner", ("p_tcp_any_9000",), port_rules(e)))
    assert argv == ["nft", "-f", "-"]
    assert script.splitlines() == [
        "delete element ip provisioner wild4 { tcp . 9000 }",
        "flush chain ip provisioner p_tcp_any_9000",
        "delete chain ip provisioner p_tcp_any_9000",
        "add chain ip provisioner p_tcp_127.0.0.1_8080",
        'add rule ip provisioner p_tcp_127.0.0.1_8080 meta l4proto tcp dnat to 10.88.0.2:80 '
        'comment "prov:web|127.0.0.1:8080:80/tcp"',
        "add element ip provisioner bound4 { 127.0.0.1 . tcp . 8080 : goto p_tcp_127.0.0.1_8080 }",
        "add chain ip provisioner p_udp_any_53",
        'add rule ip provisioner p_udp_any_53 meta l4proto udp dnat to 10.88.0.2:5353 comment "prov:web|53:5353/udp"',
        "add element ip provisioner wild4 { udp . 53 : goto p_udp_any_53 }",
    ]
    # a port another container takes over: its chain repointed in place, nothing unpublished
    moved = ep(name="web2", ports=[PortMapping("0.0.0.0", 53, 5353, "udp")])
    (_, script), = napply.commands(ReplacePortRules("provisioner", ("p_udp_any_53",), port_rules(moved)))
    assert script.splitlines() == [
        "flush chain ip provisioner p_udp_any_53",
        'add rule ip provisioner p_udp_any_53 meta l4proto udp dnat to 10.88.0.2:5353 comment "prov:web2|53:5353/udp"']
    assert ReplacePortRules("provisioner", ("p_udp_any_53",), port_rules(moved)).describe() == \
        "nft table provisioner: repoint 0.0.0.0:53/udp→10.88.0.2:5353"
    veth = [argv for argv, _ in napply.commands(CreateVeth("pvx", "prov0", "/run/netns/n", "eth0", "10.88.0.2/16",
                                                            "10.88.0.1"))]
    assert veth[0] == ["ip", "link", "add", "pvx", "type", "veth", "peer", "name", "eth0", "netns", "/run/netns/n"]
    assert veth[-1] == ["nsenter", "--net=/run/netns/n", "ip", "route", "add", "default", "via", "10.88.0.1"]
    (argv, script), = napply.commands(CreateTable("t", "prov0", "10.88.0.0/16"))
    assert "fib daddr type local jump ports" in script
    assert 'ip saddr 10.88.0.0/16 oifname != "prov0" masquerade' in script
    assert 'oifname "prov0" ip saddr 127.0.0.0/8 masquerade' in script
    assert 'iifname "prov0" ip daddr 127.0.0.0/8 ct state { new, invalid, untracked } drop' in script
    assert napply.commands(ReplacePortRules("t")) == []


def test_parse_nft_table_finds_our_rules_by_container():
    text = json.dumps({"nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"chain": {"family": "ip", "table": "provisioner", "name": "ports", "handle": 1}},
        {"rule": {"family": "ip", "table": "provisioner", "chain": "p_tcp_any_8080", "handle": 11,
                  "comment": rule_comment("web", "8080:80/tcp"), "expr": []}},
        {"rule": {"family": "ip", "table": "provisioner", "chain": "p_tcp_10.0.0.5_5432", "handle": 12,
                  "comment": rule_comment("db", "10.0.0.5:5432:5432/tcp"), "expr": []}},
        {"rule": {"family": "ip", "table": "provisioner", "chain": "ports", "handle": 13, "expr": []}},
        {"rule": {"family": "ip", "table": "provisioner", "chain": "postrouting", "handle": 14,
                  "comment": rule_comment("x", "1:1/tcp"), "expr": []}},
    ]})
    assert parse_nft_table(text) == {"web": (("p_tcp_any_8080", "8080:80/tcp"),),
                                     "db": (("p_tcp_10.0.0.5_5432", "10.0.0.5:5432:5432/tcp"),)}
    with pytest.raises(ContainerError, match="unreadable"):
        parse_nft_table("{")


def test_an_older_tables_own_port_rules_are_carried_into_the_port_maps():
    """Before the port maps, each DNAT rule sat in the `ports` chain itself: the upgrade moves
    them into port chains in the same transaction, so running containers stay published."""
    from provisioner.network.facts import LegacyRule, parse_legacy_rules

    text = json.dumps({"nftables": [
        {"chain": {"name": "guard"}}, {"set": {"name": "metadata_ok"}},
        {"rule": {"chain": "ports", "handle": 11, "comment": rule_comment("web", "127.0.0.1:8080:80/tcp"),
                  "expr": [{"match": {}}, {"dnat": {"addr": "10.88.0.2", "port": 80}}]}}]})
    legacy = parse_legacy_rules(text)
    assert legacy == (LegacyRule("web", "127.0.0.1:8080:80/tcp", "10.88.0.2", 80),)
    from provisioner.network.facts import parse_nft_state
    assert parse_nft_state(text)[0] is False     # not this version's table: it is upgraded
    e = ep(ports=[PortMapping("127.0.0.1", 8080, 80, "tcp")])
    facts = replace(converged(e), table_current=False, rules={}, legacy=legacy)
    (up,) = [a for a in plan_connect(facts, CFG, e) if isinstance(a, UpgradeTable)]
    assert up.carry == port_rules(e)
    (_, script), = napply.commands(up)
    assert script.index("flush chain ip provisioner ports") < script.index("add chain ip provisioner p_tcp_127.0.0.1_8080")


class FakeHost:
    """Just enough of `ip`, `nft` and `sysctl` to run connect/disconnect against."""

    def __init__(self, tmp: Path, fail_on: str | None = None):
        self.links: set[str] = set()
        self.masters: dict[str, str] = {}
        self.vanishing: set[str] = set()   # links the kernel removes before our `ip link del` gets there
        self.netns: set[str] = set()
        self.table = False
        self.rules: dict[str, str] = {}      # port chain -> its rule's comment
        self.metadata: set[str] = set()
        self.fail_on = fail_on
        self.proc = tmp / "proc"
        (self.proc / "net").mkdir(parents=True)
        (self.proc / "sys/net/ipv4").mkdir(parents=True)
        (self.proc / "sys/net/ipv4/ip_forward").write_text("0\n")
        self.netns_dir = tmp / "netns"
        self.netns_dir.mkdir()
        (tmp / "resolv.conf").write_text("nameserver 10.0.0.2\n")
        self.paths = SystemPaths(proc=str(self.proc), netns_dir=str(self.netns_dir),
                                 resolv_conf=str(tmp / "resolv.conf"), resolved_upstream=str(tmp / "none"))
        self.runner = FakeRunner()
        for prefix in (["ip"], ["nft"], ["sysctl"], ["nsenter"]):
            self.runner.expect(prefix, prefix=True, handler=self.handle)

    def handle(self, argv):
        line = " ".join(argv)
        if self.fail_on and self.fail_on in line:
            return Result(argv, 2, "", f"simulated failure of {self.fail_on}")
        out = ""
        if argv[:3] == ("ip", "-j", "link"):
            out = json.dumps([{"ifname": n, **({"master": self.masters[n]} if n in self.masters else {})}
                              for n in sorted(self.links)])
        elif argv[:3] == ("ip", "-j", "-4"):
            out = json.dumps([{"ifname": "lo", "addr_info": [{"local": "127.0.0.1"}]}])
        elif argv[:3] == ("ip", "link", "add"):
            self.links.add(argv[3])
        elif argv[:3] == ("ip", "link", "del"):
            if argv[3] in self.vanishing:
                self.links.discard(argv[3])
                return Result(argv, 1, "", f'Cannot find device "{argv[3]}"')
            self.links.discard(argv[3])
            self.masters = {k: v for k, v in self.masters.items() if argv[3] not in (k, v)}
        elif argv[:3] == ("ip", "link", "set") and argv[4:5] == ("master",):
            self.masters[argv[3]] = argv[5]
        elif argv[:3] == ("ip", "netns", "add"):
            self.netns.add(argv[3])
            (self.netns_dir / argv[3]).touch()
        elif argv[:3] == ("ip", "netns", "del"):
            self.netns.discard(argv[3])
            (self.netns_dir / argv[3]).unlink()
        elif argv[0] == "sysctl":
            key, value = argv[-1].split("=")
            p = self.proc / "sys" / key.replace(".", "/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(value + "\n")
        elif argv[:4] == ("nft", "-j", "-a", "list"):
            if not self.table:
                return Result(argv, 1, "", "Error: No such file or directory")
            out = json.dumps({"nftables": [{"chain": {"name": "guard"}},
                                           {"set": {"name": "metadata_ok", "elem": sorted(self.metadata)}},
                                           {"map": {"name": "bound4"}}, {"map": {"name": "wild4"}}]
                             + [{"rule": {"chain": c, "handle": 1, "comment": comment}}
                                for c, comment in self.rules.items()]})
        elif argv[0] == "nft" and len(argv) == 2 and " element " in argv[1]:
            addr = argv[1].split("{ ")[1].split(" }")[0]
            (self.metadata.add if argv[1].startswith("add") else self.metadata.discard)(addr)
        elif argv[:3] == ("nft", "delete", "table"):
            self.table, self.rules, self.metadata = False, {}, set()
        return Result(argv, 0, out, "")

    def nft_script(self, script: str):
        for line in script.splitlines():
            if line.startswith("table "):
                self.table = True
            elif line.startswith(("flush chain", "delete chain")) and line.split()[4].startswith("p_"):
                self.rules.pop(line.split()[4], None)
            elif line.startswith("add rule") and line.split()[4].startswith("p_"):
                self.rules[line.split()[4]] = line.split('comment "')[1].rstrip('"')


@pytest.fixture
def host(tmp_path, monkeypatch):
    h = FakeHost(tmp_path)
    real_run = h.runner.run

    def run(argv, **kw):  # nft -f - reads its script from stdin
        if list(argv[:3]) == ["nft", "-f", "-"] and not (h.fail_on and h.fail_on in (kw.get("input") or "")):
            h.nft_script(kw["input"])
        elif list(argv[:3]) == ["nft", "-f", "-"]:
            h.runner.calls.append(tuple(argv))
            raise CommandError(argv, 1, stderr="Error: simulated failure")
        return real_run(argv, **kw)

    h.runner.run = run
    h.root = tmp_path / "root"
    return h


def test_connect_then_disconnect_leaves_nothing(host):
    web = net.connect(host.root, CFG, "web", runner=host.runner, ports=["8080:80", PortMapping("0.0.0.0", 53, 53, "udp")],
                      exposed=[(80, "tcp")], paths=host.paths)
    assert web.address == "10.88.0.2" and web.hostname == "web"
    assert host.links == {"prov0", web.veth} and host.netns == {"prov-web"} and host.table
    assert list(host.rules.values()) == ["prov:web|8080:80/tcp", "prov:web|53:53/udp"]
    assert (Path(web.files_dir) / "resolv.conf").read_text() == "nameserver 10.0.0.2\n"
    api = net.connect(host.root, CFG, "api", runner=host.runner, links=[("web", "backend")],
                      link_envs={"web": {"MODE": "prod", "PATH": "/bin"}}, paths=host.paths)
    assert api.env["BACKEND_PORT_80_TCP_ADDR"] == "10.88.0.2"
    assert api.env["BACKEND_ENV_MODE"] == "prod" and "BACKEND_ENV_PATH" not in api.env
    assert "10.88.0.2\tbackend web\n" in (Path(api.files_dir) / "hosts").read_text()
    assert net.endpoint(host.root, "api").links == (("web", "backend"),)

    net.disconnect(host.root, CFG, "web", runner=host.runner, paths=host.paths)
    assert host.rules == {} and host.links == {"prov0", api.veth} and host.netns == {"prov-api"}
    net.disconnect(host.root, CFG, "api", runner=host.runner, paths=host.paths)
    assert (host.links, host.netns, host.table) == (set(), set(), False)
    assert json.loads((host.root / "network/ipam.json").read_text())["allocations"] == {}
    assert net.endpoints(host.root) == {}
    assert not (host.root / "network/files/web").exists()


def test_port_taken_by_another_container_creates_nothing(host):
    net.connect(host.root, CFG, "web", runner=host.runner, ports=["8080:80"], paths=host.paths)
    before = (set(host.links), set(host.netns), dict(host.rules))
    with pytest.raises(ContainerError, match="port 8080/tcp is already published by container web"):
        net.connect(host.root, CFG, "api", runner=host.runner, ports=["8080:3000"], paths=host.paths)
    assert (host.links, host.netns, host.rules) == before
    assert set(json.loads((host.root / "network/ipam.json").read_text())["allocations"]) == {"web"}


def test_port_taken_by_a_listening_socket_creates_nothing(host):
    (host.proc / "net" / "tcp").write_text(
        "  sl  local_address rem_address   st\n   0: 00000000:1F90 00000000:0000 0A 0\n")
    with pytest.raises(ContainerError, match=r"port 8080/tcp is already in use on this host"):
        net.connect(host.root, CFG, "web", runner=host.runner, ports=["8080:80"], paths=host.paths)
    assert (host.links, host.netns, host.table) == (set(), set(), False)
    assert not (host.root / "network/ipam.json").exists()


def test_failure_midway_rolls_back(host):
    host.fail_on = "dnat to"  # the port rules transaction fails after netns and veth exist
    with pytest.raises(CommandError):
        net.connect(host.root, CFG, "web", runner=host.runner, ports=["8080:80"], paths=host.paths)
    assert (host.links, host.netns, host.table, host.rules) == (set(), set(), False, {})
    assert net.endpoints(host.root) == {}
    assert not (host.root / "network/ipam.json").exists()


def test_link_to_a_missing_container_is_refused_first(host):
    with pytest.raises(ContainerError, match="cannot link api to db: db is not running"):
        net.connect(host.root, CFG, "api", runner=host.runner, links=[("db", "db")], paths=host.paths)
    assert host.runner.calls == []


def test_linker_hosts_file_follows_a_restarted_target(host):
    net.connect(host.root, CFG, "db", runner=host.runner, paths=host.paths)
    api = net.connect(host.root, CFG, "api", runner=host.runner, links=[("db", None)], paths=host.paths)
    hosts_file = Path(api.files_dir) / "hosts"
    assert "10.88.0.2\tdb\n" in hosts_file.read_text()
    inode = hosts_file.stat().st_ino
    # a restart that keeps the address: same line
    net.disconnect(host.root, CFG, "db", runner=host.runner, keep_address=True, paths=host.paths)
    assert net.connect(host.root, CFG, "db", runner=host.runner, paths=host.paths).address == "10.88.0.2"
    # recreated: a new address, and the linker's file is rewritten in place
    net.disconnect(host.root, CFG, "db", runner=host.runner, paths=host.paths)
    db = net.connect(host.root, CFG, "db", runner=host.runner, paths=host.paths)
    assert db.address == "10.88.0.4"
    assert "10.88.0.4\tdb\n" in hosts_file.read_text() and "10.88.0.2\tdb" not in hosts_file.read_text()
    assert hosts_file.stat().st_ino == inode
    assert net.relink(host.root, "db") == ["api"]


def test_connect_twice_is_refused(host):
    net.connect(host.root, CFG, "web", runner=host.runner, paths=host.paths)
    with pytest.raises(ContainerError, match="already connected"):
        net.connect(host.root, CFG, "web", runner=host.runner, paths=host.paths)


def test_dry_run_plan_touches_nothing(host):
    actions = net.manage.plan(host.root, CFG, "web", runner=host.runner, ports=["8080:80"], paths=host.paths)
    assert SetSysctl("net.ipv4.ip_forward", "1") in actions
    assert (host.links, host.netns, host.table) == (set(), set(), False)
    assert {c[0] for c in host.runner.calls} <= {"ip", "nft"} and all("-j" in c for c in host.runner.calls)


def test_reconnect_rebuilds_a_recorded_endpoint(host):
    web = net.connect(host.root, CFG, "web", runner=host.runner, ports=["8080:80"], paths=host.paths)
    # reboot: the fake kernel forgets everything
    host.links, host.netns, host.table, host.rules = set(), set(), False, {}
    for p in host.netns_dir.iterdir():
        p.unlink()
    again = net.reconnect(host.root, CFG, "web", runner=host.runner, paths=host.paths)
    assert again == web
    assert host.links == {"prov0", web.veth} and host.netns == {"prov-web"}
    assert list(host.rules.values()) == ["prov:web|8080:80/tcp"]
    # nothing to do when converged
    calls = len(host.runner.calls)
    net.reconnect(host.root, CFG, "web", runner=host.runner, paths=host.paths)
    assert all(c[:2] in (("ip", "-j"),) or c[:3] == ("nft", "-j", "-a") for c in host.runner.calls[calls:])


@pytest.mark.parametrize("vanishes", [False, True], ids=["still-there", "gone-meanwhile"])
def test_reconnect_replaces_a_leftover_veth(host, vanishes):
    """The host end of a veth whose netns was just deleted outlives `ip netns del` for a moment
    (the kernel tears a namespace down asynchronously): reconnect must not take it for the
    endpoint's own link, and its deletion tolerates the kernel removing it first."""
    web = net.connect(host.root, CFG, "web", runner=host.runner, ports=["8080:80"], paths=host.paths)
    host.links, host.masters, host.netns, host.table, host.rules = {web.veth}, {}, set(), False, {}
    for p in host.netns_dir.iterdir():
        p.unlink()
    if vanishes:
        host.vanishing = {web.veth}
    calls = len(host.runner.calls)
    assert net.reconnect(host.root, CFG, "web", runner=host.runner, paths=host.paths) == web
    made = [c for c in host.runner.calls[calls:] if c[:3] in (("ip", "link", "del"), ("ip", "link", "add"))]
    assert [c[:4] for c in made] == [("ip", "link", "add", "prov0"), ("ip", "link", "del", web.veth),
                                     ("ip", "link", "add", web.veth)]
    assert host.links == {"prov0", web.veth} and host.masters == {web.veth: "prov0"}

    # a veth still there but cut off from the bridge is replaced too; one on it is left alone
    facts = converged(web)
    assert plan_connect(replace(facts, bridged=frozenset()), CFG, web)[:1] == [DeleteLink(web.veth, if_present=True)]
    assert plan_connect(facts, CFG, web) == []


def test_a_failed_link_deletion_still_fails_unless_the_link_may_vanish():
    runner = FakeRunner().expect(["ip", "link", "del"], prefix=True, returncode=1, stderr='Cannot find device "v"')
    assert napply.apply([DeleteLink("v", if_present=True)], runner) == []
    with pytest.raises(CommandError, match="Cannot find device"):
        napply.apply([DeleteLink("v")], runner)


def test_reconnect_of_an_unknown_container_is_refused(host):
    with pytest.raises(ContainerError, match="no network endpoint to reconnect"):
        net.reconnect(host.root, CFG, "ghost", runner=host.runner, paths=host.paths)


def test_oci_fragments_for_the_runtime(host):
    web = net.connect(host.root, CFG, "web", runner=host.runner, paths=host.paths)
    assert web.oci_namespace() == {"type": "network", "path": str(host.netns_dir / "prov-web")}
    mounts = {m["destination"]: m for m in web.oci_mounts()}
    assert set(mounts) == {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}
    for m in mounts.values():
        assert Path(m["source"]).is_file() and m["type"] == "bind"
    assert Path(mounts["/etc/hostname"]["source"]).read_text() == "web\n"
    assert Endpoint.from_json(json.loads(json.dumps(web.to_json()))) == web


def test_subnet_overlapping_another_interface_is_refused():
    from provisioner.network.plan import check_subnet
    facts = NetFacts(interface_networks=(("lo", "127.0.0.1/8"), ("eth0", "192.0.2.2/24"), ("prov0", "10.88.0.1/16")))
    check_subnet(facts, CFG)  # our own bridge and unrelated networks are fine
    clash = NetFacts(interface_networks=(("podman0", "10.88.0.1/16"),))
    with pytest.raises(ContainerError, match=r"container subnet 10.88.0.0/16 overlaps 10.88.0.1/16 on podman0"):
        check_subnet(clash, CFG)
    with pytest.raises(ContainerError, match="overlaps 10.0.0.5/8 on eth1"):
        check_subnet(NetFacts(interface_networks=(("eth1", "10.0.0.5/8"),)), CFG)


def test_preflight_names_missing_tools(tmp_path, monkeypatch):
    from provisioner.network.facts import preflight
    monkeypatch.setattr("os.geteuid", lambda: 0)
    (tmp_path / "sys/net/ipv4").mkdir(parents=True)
    (tmp_path / "sys/net/ipv4/ip_forward").write_text("0\n")
    runner = FakeRunner(known_commands={"ip", "sysctl", "nsenter"})
    assert preflight(runner, proc=tmp_path) == ["nft not found (install nftables)"]
    runner.known_commands |= {"nft"}
    assert preflight(runner, proc=tmp_path) == []
    assert preflight(runner, proc=tmp_path / "nope") == ["no IPv4 networking in this kernel (/proc/sys/net/ipv4 missing)"]


def test_an_older_table_is_upgraded_in_place_and_metadata_access_follows_the_endpoint():
    e = ep(ports=parse_ports(["8080:80"]))
    old = replace(converged(e), table_current=False)
    assert plan_connect(old, CFG, e) == [UpgradeTable("provisioner", "prov0", "10.88.0.0/16")]
    (argv, script), = napply.commands(UpgradeTable("t", "prov0", "10.88.0.0/16"))
    # chains and maps declared first (an older table may lack some), then emptied, then filled
    assert script.startswith("table ip t {\n") and "map wild4 {" in script.split("flush chain")[0]
    assert "dnat" not in script.split("flush chain")[0] and "flush chain ip t guard\n" in script
    assert 'iifname != "lo" ip daddr 127.0.0.0/8 drop' in script and 'oifname "prov0" drop' in script
    opted = replace(e, metadata=True)
    assert plan_connect(converged(e), CFG, opted) == [SetMetadataAccess("provisioner", "10.88.0.2", True)]
    had = replace(converged(e), metadata_ok=frozenset({"10.88.0.2"}))
    assert plan_connect(had, CFG, opted) == []
    assert plan_connect(had, CFG, e) == [SetMetadataAccess("provisioner", "10.88.0.2", False)]  # a previous holder's
    assert SetMetadataAccess("provisioner", "10.88.0.2", False) in plan_disconnect(
        had, CFG, "web", netns_name="prov-web", last=False, address="10.88.0.2")
    assert napply.commands(SetMetadataAccess("t", "10.88.0.5", True)) == [
        (["nft", "add element ip t metadata_ok { 10.88.0.5 }"], None)]


def test_the_table_guards_loopback_the_bridge_and_the_metadata_address():
    (argv, script), = napply.commands(CreateTable("t", "prov0", "10.88.0.0/16"))
    guard = script.split("chain guard {")[1].split("}")[0]
    assert "priority raw" in guard and 'iifname != "lo" ip daddr 127.0.0.0/8 drop' in guard
    forward = script.split("chain forward {")[1].split("}")[0].strip().splitlines()
    assert forward[1].strip() == 'iifname "prov0" ip daddr 169.254.169.254 ip saddr != @metadata_ok drop'
    assert forward[-1].strip() == 'oifname "prov0" drop'


def test_a_replacement_stands_by_then_takes_the_ports_over_in_one_transaction(host):
    """Start-first: the new container is connected beside the old one with the same published
    port (no clash: it stands by, unpublished); takeover repoints the port's chain to it in one
    nft transaction; the old one keeps its address and leaves nothing of the port behind."""
    old = net.connect(host.root, CFG, "web", runner=host.runner, ports=["8080:80"], paths=host.paths)
    with pytest.raises(ContainerError, match="already published by container web"):
        net.connect(host.root, CFG, "other", runner=host.runner, ports=["8080:80"], paths=host.paths)
    new = net.connect(host.root, CFG, "web-r2", runner=host.runner, ports=["8080:80"], paths=host.paths,
                      standby_for="web")
    assert new.standby and new.address != old.address
    assert host.rules == {"p_tcp_any_8080": "prov:web|8080:80/tcp"}          # still the old one's
    scripts = []
    real = host.runner.run
    host.runner.run = lambda argv, **kw: (scripts.append(kw.get("input")), real(argv, **kw))[1]
    was = net.takeover(host.root, CFG, "web-r2", "web", runner=host.runner, paths=host.paths)
    host.runner.run = real
    assert was.address == old.address
    (script,) = [s for s in scripts if s]
    assert script.splitlines() == [
        "flush chain ip provisioner p_tcp_any_8080",
        f'add rule ip provisioner p_tcp_any_8080 meta l4proto tcp dnat to {new.address}:80 '
        'comment "prov:web-r2|8080:80/tcp"']
    assert host.rules == {"p_tcp_any_8080": "prov:web-r2|8080:80/tcp"}
    eps = net.endpoints(host.root)
    assert eps["web"].ports == () and eps["web-r2"].ports == new.ports and not eps["web-r2"].standby
    net.disconnect(host.root, CFG, "web", runner=host.runner, paths=host.paths)
    assert host.rules == {"p_tcp_any_8080": "prov:web-r2|8080:80/tcp"}          # the port stays
    net.reconnect(host.root, CFG, "web-r2", runner=host.runner, paths=host.paths)  # converged: no clash
    net.disconnect(host.root, CFG, "web-r2", runner=host.runner, paths=host.paths)
    assert host.rules == {} and host.table is False
    with pytest.raises(ContainerError, match="cannot stand x by for ghost: ghost has no network endpoint"):
        net.connect(host.root, CFG, "x", runner=host.runner, ports=["8080:80"], paths=host.paths,
                    standby_for="ghost")


def test_conntrack_entries_flush_and_drain():
    from provisioner.network import conntrack

    listing = (
        "tcp      6 431999 ESTABLISHED src=10.0.2.2 dst=10.0.2.15 sport=40000 dport=8080 src=10.88.0.2 "
        "dst=10.0.2.2 sport=80 dport=40000 [ASSURED] mark=0 use=1\n"
        "tcp      6 117 TIME_WAIT src=10.0.2.2 dst=10.0.2.15 sport=40002 dport=8080 src=10.88.0.2 dst=10.0.2.2 "
        "sport=80 dport=40002 [ASSURED] mark=0 use=1\n"
        "tcp      6 50 FIN_WAIT src=10.0.2.2 dst=10.0.2.15 sport=40003 dport=8080 src=10.88.0.2 dst=10.0.2.2 "
        "sport=80 dport=40003 [ASSURED] mark=0 use=1\n"
        "udp      17 29 src=10.0.2.2 dst=10.0.2.15 sport=5353 dport=53 src=10.88.0.2 dst=10.0.2.2 sport=53 "
        "dport=5353 mark=0 use=1\n")
    runner = FakeRunner().expect(["conntrack", "-L"], prefix=True, stdout=listing,
                                 stderr="conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.")
    runner.expect(["conntrack", "-D"], prefix=True, returncode=0)
    assert conntrack.flush_stale(runner, "10.88.0.2") == 3
    assert runner.commands("conntrack")[1:] == [
        ("conntrack", "-D", "-p", "tcp", "--reply-src", "10.88.0.2", "--state", "FIN_WAIT"),
        ("conntrack", "-D", "-p", "tcp", "--reply-src", "10.88.0.2", "--state", "TIME_WAIT"),
        ("conntrack", "-D", "-p", "udp", "--reply-src", "10.88.0.2")]
    assert conntrack.established(runner, "10.88.0.2") == 1
    clock = [0.0]
    left = conntrack.drain(runner, "10.88.0.2", 1.0, now=lambda: clock[0],
                           sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    assert left == 1 and clock[0] >= 1.0       # gave up after the grace period, one still open
