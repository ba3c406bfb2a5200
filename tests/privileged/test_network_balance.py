"""A replicated service's published port in the port-chain scheme, for real: its own chain
p_<proto>_any_<port>, reached from @wild4, holds the numgen DNAT over the ready replicas; a
change of the ready set refills that chain in place; the last replica gone takes chain and map
element with it. A host whose table is from before the port chains (the balanced rule in the
`ports` chain itself) keeps the port answering through its in-place upgrade."""
from __future__ import annotations

import subprocess

import pytest

from provisioner import network as net
from provisioner.errors import ContainerError
from tests.privileged.test_network import NOTHING, env, free_port, sh, wait_for  # noqa: F401  (env: the fixture)
from tests.privileged.test_network_attacks import OLD_TABLE

pytestmark = pytest.mark.privileged
GROUP = "s/web"


def _replicas(env, pub: int) -> dict[str, str]:
    out = {}
    for i in (1, 2):
        ep = env.connect(f"web{i}", ports=[f"{pub}:80"], group=GROUP)
        env.httpd(f"pt{env.sfx}-web{i}", f"web{i}\n")
        out[f"web{i}"] = ep.address
    return out


def _served(env, pub: int, n: int = 8) -> set[str]:
    return {env.wget(f"http://127.0.0.1:{pub}/").stdout.strip() for _ in range(n)}


def _balance(env, members) -> list:
    return net.set_balance(env.root, env.cfg, GROUP, members, runner=env.runner)


def test_a_balanced_port_has_its_own_chain_and_is_refilled_in_place(env):
    pub = free_port()
    _replicas(env, pub)
    _balance(env, ["web1", "web2"])
    wait_for(lambda: _served(env, pub) == {"web1", "web2"}, timeout=10, what="both replicas answering in turn")
    chain = f"p_tcp_any_{pub}"
    ruleset = sh("nft", "-n", "list", "table", "ip", env.cfg.table).stdout
    assert f"chain {chain} {{" in ruleset and f" . {pub} : goto {chain}" in ruleset
    assert ruleset.count(f"prov-lb:{GROUP}|{pub}:80/tcp") == 1
    # one replica unready: the same chain, one rule, only the other replica answers
    (action,) = _balance(env, ["web2"])
    assert f"flush chain ip {env.cfg.table} {chain}" in action.script() and "delete chain" not in action.script()
    assert _served(env, pub) == {"web2"}
    # a container cannot take the replicas' port
    with pytest.raises(ContainerError, match="already published"):
        env.connect("other", ports=[f"{pub}:81"])
    # none ready: the port refuses, its chain and element are gone
    _balance(env, [])
    assert env.wget(f"http://127.0.0.1:{pub}/", check=False).returncode != 0
    ruleset = sh("nft", "-n", "list", "table", "ip", env.cfg.table).stdout
    assert chain not in ruleset and "prov-lb:" not in ruleset
    _balance(env, ["web1"])
    assert _served(env, pub) == {"web1"}
    env.disconnect("web1")
    env.disconnect("web2")
    assert env.leftovers() == NOTHING


def test_an_older_tables_balanced_port_survives_its_upgrade(env):
    """compose-17's table had the numgen rule in `ports` (no maps, no port chains): the next
    connect upgrades the table in one transaction and the port keeps answering from both."""
    pub = free_port()
    addrs = _replicas(env, pub)
    _balance(env, ["web1", "web2"])
    lb = next(line.split()[1] for line in sh("nft", "-n", "list", "table", "ip", env.cfg.table).stdout.splitlines()
              if line.strip().startswith("map lb_"))
    old = OLD_TABLE.format(table=env.cfg.table, bridge=env.cfg.bridge, subnet=env.cfg.subnet)
    sh("nft", "delete", "table", "ip", env.cfg.table)
    old += (f"add map ip {env.cfg.table} {lb} {{ typeof numgen inc mod 2 : ip daddr; }}\n"
            f"add element ip {env.cfg.table} {lb} {{ 0 : {addrs['web1']}, 1 : {addrs['web2']} }}\n"
            f"add rule ip {env.cfg.table} ports tcp dport {pub} dnat to numgen inc mod 2 map @{lb} : 80 "
            f'comment "prov-lb:{GROUP}|{pub}:80/tcp"\n')
    subprocess.run(["nft", "-f", "-"], input=old, text=True, check=True, timeout=20)
    assert _served(env, pub) == {"web1", "web2"}                 # the old table's flat rule
    env.connect("other")                                          # any connect upgrades it
    ruleset = sh("nft", "-n", "list", "table", "ip", env.cfg.table).stdout
    assert ruleset.count(f"prov-lb:{GROUP}|{pub}:80/tcp") == 1 and f"goto p_tcp_any_{pub}" in ruleset
    assert _served(env, pub) == {"web1", "web2"}
    assert _balance(env, ["web1", "web2"]) == []                  # converged: the upgrade carried it exactly
    _balance(env, ["web1"])
    assert _served(env, pub) == {"web1"}
    for name in ("other", "web1", "web2"):
        env.disconnect(name)
    assert env.leftovers() == NOTHING
