"""User-defined networks: a bridge, subnet and table each; a container on several of them (one
netns, a veth per network); every container on a shared network resolvable by name and alias
through /etc/hosts kept current; fixed addresses; extra hosts and DNS settings; removal."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner import network as net
from provisioner.errors import CommandError, ContainerError
from provisioner.network import ipam, registry
from provisioner.network.model import NetworkConfig
from provisioner.runner import Result
from provisioner.runspec.netopts import NetworkAttachment as Att
from tests.unit.test_network_plan import FakeHost

CFG = NetworkConfig(pool="10.89.0.0/16", pool_prefixlen=24)


class Host(FakeHost):
    """FakeHost with a table per network and interface addresses."""

    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.tables: dict[str, dict[str, str]] = {}   # table -> {port chain: its rule's comment}
        self.addrs: list[tuple[str, str, int]] = [("eth0", "10.89.0.5", 24)]   # the LAN takes the pool's first block

    def listing(self, t: str) -> list[dict]:
        """A current table (its guard chain, set and port maps) and the port chains' rules."""
        return [{"chain": {"name": "guard"}}, {"set": {"name": "metadata_ok"}}, {"map": {"name": "bound4"}},
                {"map": {"name": "wild4"}}] + [{"rule": {"chain": c, "handle": 1, "comment": comment}}
                                               for c, comment in self.tables[t].items()]

    def handle(self, argv):
        if argv[:3] == ("ip", "-j", "-4"):
            return Result(argv, 0, json.dumps([{"ifname": i, "addr_info": [{"local": a, "prefixlen": p}]}
                                               for i, a, p in self.addrs]), "")
        if argv[:4] == ("nft", "-j", "-a", "list"):
            t = argv[-1]
            if t not in self.tables:
                return Result(argv, 1, "", "Error: No such file or directory")
            return Result(argv, 0, json.dumps({"nftables": self.listing(t)}), "")
        if argv[:3] == ("nft", "delete", "table"):
            self.tables.pop(argv[-1], None)
            return Result(argv, 0, "", "")
        return super().handle(argv)

    def nft_script(self, script: str):
        for line in script.splitlines():
            w = line.split()
            if line.startswith("table ip "):
                self.tables.setdefault(w[2], {})
            elif line.startswith(("flush chain", "delete chain")) and w[4].startswith("p_"):
                self.tables[w[3]].pop(w[4], None)
            elif line.startswith("add rule") and w[4].startswith("p_"):
                self.tables[w[3]][w[4]] = line.split('comment "')[1].rstrip('"')


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path)
    real_run = h.runner.run

    def run(argv, **kw):
        if list(argv[:3]) == ["nft", "-f", "-"]:
            h.nft_script(kw["input"])
        return real_run(argv, **kw)

    h.runner.run = run
    h.root = tmp_path / "root"
    return h


def _connect(host, name, networks, **kw):
    return net.connect(host.root, CFG, name, runner=host.runner, paths=host.paths, networks=networks, **kw)


def _hosts(ep) -> str:
    return (Path(ep.files_dir) / "hosts").read_text()


def test_networks_take_free_subnets_from_the_pool_and_are_recorded(host):
    front = net.ensure(host.root, CFG, net.NetworkSpec("shop_front", labels=(("project", "shop"),)), runner=host.runner)
    back = net.ensure(host.root, CFG, net.NetworkSpec("shop_back", internal=True), runner=host.runner)
    assert (front.config.subnet, back.config.subnet) == ("10.89.1.0/24", "10.89.2.0/24")   # 10.89.0/24 is the LAN's
    assert front.config.bridge == "prov0-" + registry.names_for(CFG, "shop_front")[0][6:]
    assert back.config.internal and registry.get(host.root, CFG, "shop_back") == back
    assert net.ensure(host.root, CFG, net.NetworkSpec("shop_front"), runner=host.runner) == front   # idempotent
    assert registry.labelled(host.root, CFG, "project", "shop") == [front]
    att = net.ensure(host.root, CFG, net.NetworkSpec("shop_att", attachable=True), runner=host.runner)
    assert att.attachable and registry.get(host.root, CFG, "shop_att").attachable and not front.attachable
    fixed = net.ensure(host.root, CFG, net.NetworkSpec("dns", subnet="172.20.0.0/24"), runner=host.runner)
    assert fixed.config.subnet == "172.20.0.0/24"
    with pytest.raises(ContainerError, match="subnet 172.20.0.0/25 overlaps 172.20.0.0/24"):
        net.ensure(host.root, CFG, net.NetworkSpec("other", subnet="172.20.0.0/25"), runner=host.runner)
    with pytest.raises(ContainerError, match="network shop_back exists with subnet 10.89.2.0/24 \\(internal\\)"):
        net.ensure(host.root, CFG, net.NetworkSpec("shop_back"), runner=host.runner)
    with pytest.raises(ContainerError, match="network nowhere not found"):
        _connect(host, "x", [Att("nowhere")])


def test_a_container_on_two_networks_and_names_on_shared_ones(host):
    for n in ("front", "back", "other"):
        net.ensure(host.root, CFG, net.NetworkSpec(n), runner=host.runner)
    db = _connect(host, "p-db", [Att("back", ("db",))])
    web = _connect(host, "p-web", [Att("front", ("web", "www")), Att("back", ("web",))], ports=["8080:80"])
    lone = _connect(host, "p-lone", [Att("other", ("lone",))])
    # one netns, a veth on each bridge; the primary network holds the default route and the port
    assert [a.ifname for a in web.attachments] == ["eth0", "eth1"]
    assert web.address == web.attachments[0].address and web.attachments[0].address.startswith("10.89.1.")
    adds = [c for c in host.runner.calls if c[:3] == ("nsenter", f"--net={web.netns_path}", "ip")]
    routes = [c for c in adds if "route" in c]
    assert len(routes) == 1 and routes[0][-1] == web.attachments[0].gateway
    front_table = registry.get(host.root, CFG, "front").config.table
    assert list(host.tables[front_table].values()) == ["prov:p-web|8080:80/tcp"]
    # names: web sees db (shared back), db sees web's back address; lone sees neither
    assert f"{db.address}\tdb p-db\n" in _hosts(web)
    assert f"{web.attachments[1].address}\tweb p-web\n" in _hosts(db)       # updated when web came
    assert f"{web.attachments[0].address}\tweb www p-web\n" in _hosts(web)
    assert "p-db" not in _hosts(lone) and "p-web" not in _hosts(lone)
    assert web.attachments[0].address not in _hosts(db)                  # db is not on front
    # a restart keeps the addresses, a removal takes the names away
    net.disconnect(host.root, CFG, "p-db", runner=host.runner, keep_address=True, paths=host.paths)
    assert "p-db" not in _hosts(web)
    again = _connect(host, "p-db", [Att("back", ("db",))])
    assert again.address == db.address and f"{db.address}\tdb p-db\n" in _hosts(web)
    net.disconnect(host.root, CFG, "p-web", runner=host.runner, paths=host.paths)
    assert "p-web" not in _hosts(again)
    assert not any(web.veth in link or web.attachments[1].veth in link for link in host.links)
    assert host.tables[front_table] == {}
    with pytest.raises(ContainerError, match="network back is in use by p-db"):
        net.remove_network(host.root, CFG, "back", runner=host.runner, paths=host.paths)
    net.disconnect(host.root, CFG, "p-db", runner=host.runner, paths=host.paths)
    back = registry.get(host.root, CFG, "back")
    assert net.remove_network(host.root, CFG, "back", runner=host.runner, paths=host.paths)
    assert back.config.table not in host.tables and back.config.bridge not in host.links
    assert registry.get(host.root, CFG, "back") is None and not net.remove_network(host.root, CFG, "back",
                                                                                  runner=host.runner, paths=host.paths)


def test_fixed_addresses_extra_hosts_and_dns(host):
    net.ensure(host.root, CFG, net.NetworkSpec("dns", subnet="172.20.0.0/24"), runner=host.runner)
    a = _connect(host, "a", [Att("dns", (), "172.20.0.2")], extra_hosts=[("gw", "host-gateway"), ("x", "1.2.3.4")],
                 dns=(("9.9.9.9",), ("example.com",), ("ndots:2",)))
    assert a.address == "172.20.0.2"
    assert "172.20.0.1\tgw\n" in _hosts(a) and "1.2.3.4\tx\n" in _hosts(a)
    assert (Path(a.files_dir) / "resolv.conf").read_text() == ("nameserver 9.9.9.9\nsearch example.com\n"
                                                              "options ndots:2\n")
    with pytest.raises(ContainerError, match="address 172.20.0.2 is already in use by a"):
        _connect(host, "b", [Att("dns", (), "172.20.0.2")])
    assert net.endpoint(host.root, "b") is None
    b = _connect(host, "b", [Att("dns")])
    assert b.address == "172.20.0.3"
    assert net.endpoint(host.root, "a") == a                        # the record round-trips


def test_a_running_container_joins_and_leaves_a_network(host):
    """Docker's network connect/disconnect while it runs: a veth on the joined network's bridge as the
    next ethN (no default route, no published port), the names on both sides rewritten in place;
    leaving takes the veth, the address and the names away; its first network stays."""
    for n in ("front", "back"):
        net.ensure(host.root, CFG, net.NetworkSpec(n), runner=host.runner)
    db = _connect(host, "p-db", [Att("back", ("db",))])
    web = _connect(host, "p-web", [Att("front", ("web",))], ports=["8080:80"])
    web_hosts = Path(web.files_dir) / "hosts"
    inode = web_hosts.stat().st_ino
    assert "p-db" not in _hosts(web)
    calls = len(host.runner.calls)
    att = net.join(host.root, CFG, "p-web", Att("back", ("api",), "10.89.2.50"), runner=host.runner,
                   paths=host.paths)
    assert (att.network, att.ifname, att.address, att.aliases) == ("back", "eth1", "10.89.2.50", ("api",))
    new = host.runner.calls[calls:]
    assert not any(c[:2] == ("ip", "netns") and "add" in c for c in new)        # its namespace as it was
    assert not any("route" in c for c in new)                                   # the default route stays
    assert att.veth in host.links and host.masters.get(att.veth) == registry.get(host.root, CFG, "back").config.bridge
    ep = net.endpoint(host.root, "p-web")
    assert [a.network for a in ep.attachments] == ["front", "back"] and ep.ports == web.ports
    assert f"{db.address}\tdb p-db\n" in _hosts(ep) and web_hosts.stat().st_ino == inode
    assert "10.89.2.50\tapi p-web\n" in _hosts(db)
    with pytest.raises(ContainerError, match="already on network back"):
        net.join(host.root, CFG, "p-web", Att("back"), runner=host.runner, paths=host.paths)
    with pytest.raises(ContainerError, match="default bridge cannot be combined"):
        net.join(host.root, CFG, "p-web", Att("bridge"), runner=host.runner, paths=host.paths)
    with pytest.raises(ContainerError, match="front is its first network"):
        net.leave(host.root, CFG, "p-web", "front", runner=host.runner, paths=host.paths)
    net.leave(host.root, CFG, "p-web", "back", runner=host.runner, paths=host.paths)
    assert att.veth not in host.links and "p-web" not in _hosts(db) and "p-db" not in _hosts(ep)
    assert [a.network for a in net.endpoint(host.root, "p-web").attachments] == ["front"]
    back = registry.get(host.root, CFG, "back").config
    assert ipam.load(host.root, back.subnet, "back").get("p-web") is None      # the address went back
    with pytest.raises(ContainerError, match="not connected to network other"):
        net.leave(host.root, CFG, "p-web", "other", runner=host.runner, paths=host.paths)


def test_mixing_the_default_bridge_with_user_networks_is_refused(host):
    net.ensure(host.root, CFG, net.NetworkSpec("front"), runner=host.runner)
    with pytest.raises(ContainerError, match="default bridge cannot be combined"):
        _connect(host, "x", [Att("bridge"), Att("front")])
    assert host.runner.calls == [c for c in host.runner.calls if c[:2] == ("ip", "-j")]


def test_a_failed_connect_on_the_second_network_rolls_everything_back(host):
    for n in ("front", "back"):
        net.ensure(host.root, CFG, net.NetworkSpec(n), runner=host.runner)
    back_bridge = registry.get(host.root, CFG, "back").config.bridge
    host.fail_on = f"master {back_bridge}"          # the second veth cannot join its bridge
    with pytest.raises(CommandError):
        _connect(host, "x", [Att("front"), Att("back")])
    assert net.endpoint(host.root, "x") is None and host.netns == set()
    assert not any(link.startswith(CFG.veth_prefix) for link in host.links)


# ---- replicas behind one published port (balance.py) -------------------------------------------

class LbHost(Host):
    """Host with nftables maps: `add map`, `flush map`, `add element`, `delete map`, listed with
    their elements as `nft -j` does."""

    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.maps: dict[tuple[str, str], list[str]] = {}
        self.scripts: list[str] = []

    def listing(self, t: str) -> list[dict]:
        return super().listing(t) + [{"map": {"name": n, "table": t, "elem": [[i, a] for i, a in enumerate(v)]}}
                                     for (tt, n), v in self.maps.items() if tt == t]

    def nft_script(self, script: str):
        self.scripts.append(script)
        for line in script.splitlines():
            w = line.split()
            if line.startswith("add map"):
                self.maps.setdefault((w[3], w[4]), [])
            elif line.startswith("flush map"):
                self.maps[(w[3], w[4])] = []
            elif line.startswith("add element") and w[4] not in ("bound4", "wild4"):
                self.maps[(w[3], w[4])] = [e.split(" : ")[1] for e in line.split("{ ")[1].rstrip(" }").split(", ")]
            elif line.startswith("delete map"):
                del self.maps[(w[3], w[4])]
            elif not line.startswith("table "):
                super().nft_script(line)


@pytest.fixture
def lbhost(tmp_path):
    h = LbHost(tmp_path)
    real_run = h.runner.run

    def run(argv, **kw):
        if list(argv[:3]) == ["nft", "-f", "-"]:
            if kw["input"].startswith("table ip "):
                h.tables.setdefault(kw["input"].split()[2], {})
            else:
                h.nft_script(kw["input"])
        return real_run(argv, **kw)

    h.runner.run = run
    h.root = tmp_path / "root"
    return h


def test_replicas_share_their_published_port_balanced_over_the_ready_ones(lbhost):
    h = lbhost
    net.ensure(h.root, CFG, net.NetworkSpec("front"), runner=h.runner)
    table = registry.get(h.root, CFG, "front").config.table
    reps = [net.connect(h.root, CFG, f"web-{i}", runner=h.runner, paths=h.paths, networks=[Att("front", ("web",))],
                        ports=["8080:80"], group="shop/web") for i in (1, 2, 3)]
    assert [r.ports for r in reps] == [reps[0].ports] * 3         # one port, no conflict between replicas
    assert h.tables[table] == {}                                  # none ready yet: no rule
    net.set_balance(h.root, CFG, "shop/web", ["web-1", "web-3"], runner=h.runner, paths=h.paths)
    # the port's own chain (as a single container's port has) holds the balanced rule; @wild4 leads to it
    assert h.tables[table] == {"p_tcp_any_8080": "prov-lb:shop/web|8080:80/tcp"}
    assert "dnat to numgen inc mod 2 map @lb_" in h.scripts[-1] and ": 80 comment" in h.scripts[-1]
    assert f"add element ip {table} wild4 {{ tcp . 8080 : goto p_tcp_any_8080 }}" in h.scripts[-1]
    (elements,) = h.maps.values()
    assert elements == [reps[0].address, reps[2].address]
    # converged: nothing to do
    assert net.set_balance(h.root, CFG, "shop/web", ["web-3", "web-1"], runner=h.runner, paths=h.paths) == []
    # the set changes in one transaction: elements and rule together
    net.set_balance(h.root, CFG, "shop/web", ["web-1", "web-2", "web-3"], runner=h.runner, paths=h.paths)
    last = h.scripts[-1].splitlines()
    assert last[0].startswith("add map") and last[1].startswith("flush map")
    assert last[3] == f"flush chain ip {table} p_tcp_any_8080" and "numgen inc mod 3" in last[4]
    assert len(last) == 5                                         # repointed in place: the map element stays
    assert list(h.maps.values()) == [[r.address for r in reps]]
    # a replica going away leaves the balance first; the last one takes the rule and map with it
    net.disconnect(h.root, CFG, "web-2", runner=h.runner, paths=h.paths)
    assert list(h.maps.values()) == [[reps[0].address, reps[2].address]]
    with pytest.raises(ContainerError, match="already published"):
        net.connect(h.root, CFG, "other", runner=h.runner, paths=h.paths, networks=[Att("front")], ports=["8080:81"])
    for name in ("web-1", "web-3"):
        net.disconnect(h.root, CFG, name, runner=h.runner, paths=h.paths)
    assert h.tables[table] == {} and h.maps == {}


def test_an_older_tables_balanced_rules_are_carried_into_port_chains():
    """Before the port chains, a replicated service's numgen rule sat in the `ports` chain itself,
    which the upgrade empties: the same transaction gives each balanced port its chain (over the
    lb map as it is, so the replicas that were ready stay so) and its @wild4/@bound4 element, and
    a container's own ports are carried beside them."""
    from provisioner.network import apply as napply
    from provisioner.network.balance import lb_comment, map_name, parse_table
    from provisioner.network.facts import parse_legacy_rules, parse_nft_state
    from provisioner.network.plan import UpgradeTable, plan_infrastructure

    lb = map_name("shop/web", "8080:80/tcp")
    items = [{"chain": {"name": "guard"}}, {"set": {"name": "metadata_ok"}},
             {"rule": {"chain": "ports", "handle": 7, "comment": lb_comment("shop/web", "8080:80/tcp"), "expr": []}},
             {"rule": {"chain": "ports", "handle": 8, "comment": "prov:db|127.0.0.1:5432:5432/tcp",
                       "expr": [{"dnat": {"addr": "10.89.1.9", "port": 5432}}]}},
             {"map": {"name": lb, "elem": [[1, "10.89.1.3"], [0, "10.89.1.2"]]}}]
    text = json.dumps({"nftables": items})
    balanced, maps, legacy = parse_table(items)
    assert (balanced, maps[lb], legacy) == ({}, ("10.89.1.2", "10.89.1.3"), (("shop/web", "8080:80/tcp"),))
    assert parse_nft_state(text)[0] is False
    # the same rules in their port chains: this version's table
    now = [i for i in items if "rule" not in i] + [{"map": {"name": "bound4"}}, {"map": {"name": "wild4"}},
        {"rule": {"chain": "p_tcp_any_8080", "handle": 9, "comment": lb_comment("shop/web", "8080:80/tcp")}}]
    assert parse_table(now)[0] == {"shop/web": (("p_tcp_any_8080", "8080:80/tcp"),)} and parse_table(now)[2] == ()
    assert parse_nft_state(json.dumps({"nftables": now}))[0] is True

    cfg = NetworkConfig(subnet="10.89.1.0/24", bridge="prov0-x", table="t")
    from provisioner.network.facts import NetFacts
    facts = NetFacts(links=frozenset({"prov0-x"}), ip_forward="1", route_localnet="1", table_exists=True,
                     table_current=False, lb_maps=maps, legacy_balanced=legacy, legacy=parse_legacy_rules(text))
    (up,) = plan_infrastructure(facts, cfg)
    assert isinstance(up, UpgradeTable) and [b.group for b in up.balance] == ["shop/web"]
    assert up.balance[0].addresses == ("10.89.1.2", "10.89.1.3") and len(up.carry) == 1
    (_, script), = napply.commands(up)
    lines = script.splitlines()
    flush = lines.index(f"flush chain ip {cfg.table} ports")
    chain = lines.index(f"add chain ip {cfg.table} p_tcp_any_8080")
    rule = next(i for i, l in enumerate(lines) if l.startswith(f"add rule ip {cfg.table} p_tcp_any_8080 "))
    assert flush < chain < rule
    assert f"dnat to numgen inc mod 2 map @{lb} : 80" in lines[rule]
    assert f"add element ip {cfg.table} wild4 {{ tcp . 8080 : goto p_tcp_any_8080 }}" in lines
    assert f"add element ip {cfg.table} bound4 {{ 127.0.0.1 . tcp . 5432 : goto p_tcp_127.0.0.1_5432 }}" in lines
    assert "upgrade" in up.describe() and "1 balanced service(s) carried over" in up.describe()
