"""/etc/hosts, resolv.conf and Docker --link env rendering."""
from __future__ import annotations

import os

from provisioner.network import hosts
from provisioner.network.hosts import LinkTarget


def test_hosts_file_has_links_and_own_name():
    text = hosts.render_hosts("api", "10.88.0.3", [LinkTarget("mydb", "db", "10.88.0.2"),
                                                   LinkTarget("cache", "cache", "10.88.0.4")])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert "10.88.0.2\tdb mydb" in lines
    assert "10.88.0.4\tcache" in lines
    assert lines[-1] == "10.88.0.3\tapi"


def test_link_env_matches_docker():
    env = hosts.link_env("web", LinkTarget("mydb", "db-main", "10.88.0.2", ((5432, "tcp"), (53, "udp")),
                                           {"POSTGRES_USER": "app", "PATH": "/bin", "HOME": "/root"}))
    assert env == {
        "DB_MAIN_PORT": "tcp://10.88.0.2:5432",  # TCP sorts first
        "DB_MAIN_PORT_5432_TCP": "tcp://10.88.0.2:5432",
        "DB_MAIN_PORT_5432_TCP_ADDR": "10.88.0.2",
        "DB_MAIN_PORT_5432_TCP_PORT": "5432",
        "DB_MAIN_PORT_5432_TCP_PROTO": "tcp",
        "DB_MAIN_PORT_53_UDP": "udp://10.88.0.2:53",
        "DB_MAIN_PORT_53_UDP_ADDR": "10.88.0.2",
        "DB_MAIN_PORT_53_UDP_PORT": "53",
        "DB_MAIN_PORT_53_UDP_PROTO": "udp",
        "DB_MAIN_NAME": "/web/db-main",
        "DB_MAIN_ENV_POSTGRES_USER": "app",
    }


def test_link_env_port_ranges():
    env = hosts.link_env("app", LinkTarget("zk", "zk", "10.88.0.5", ((2181, "tcp"), (2888, "tcp"), (2889, "tcp"),
                                                                     (2890, "tcp"), (9000, "tcp"))))
    assert env["ZK_PORT"] == "tcp://10.88.0.5:2181"
    assert env["ZK_PORT_2888_TCP_START"] == "tcp://10.88.0.5:2888"
    assert env["ZK_PORT_2888_TCP_PORT_START"] == "2888"
    assert env["ZK_PORT_2888_TCP_END"] == "tcp://10.88.0.5:2890"
    assert env["ZK_PORT_2888_TCP_PORT_END"] == "2890"
    assert env["ZK_PORT_2889_TCP_ADDR"] == "10.88.0.5"
    assert not any(k.startswith(("ZK_PORT_2181_TCP_START", "ZK_PORT_9000_TCP_START")) for k in env)


def test_link_env_without_ports_has_only_the_name():
    assert hosts.link_env("web", LinkTarget("db", "db", "10.88.0.2")) == {"DB_NAME": "/web/db"}


def test_resolv_conf_drops_loopback_and_ipv6_keeps_search():
    text, note = hosts.render_resolv_conf(
        "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n"
        "nameserver ::1\nsearch corp.example\noptions edns0 trust-ad\n")
    assert text == "nameserver 10.0.0.2\nsearch corp.example\noptions edns0 trust-ad\n"
    assert note is None


def test_resolv_conf_uses_systemd_resolved_upstream_when_only_loopback():
    text, note = hosts.render_resolv_conf("nameserver 127.0.0.53\nsearch lan\n",
                                          "nameserver 192.0.2.53\nnameserver 192.0.2.54\n")
    assert text == "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch lan\n"
    assert "systemd-resolved" in note


def test_resolv_conf_falls_back_to_dockers_default():
    text, note = hosts.render_resolv_conf("nameserver 127.0.0.1\n", None)
    assert text == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert "no usable" in note


def test_read_host_resolv(tmp_path):
    (tmp_path / "resolv.conf").write_text("nameserver 10.1.1.1\n")
    assert hosts.read_host_resolv(tmp_path / "resolv.conf", tmp_path / "missing") == ("nameserver 10.1.1.1\n", None)
    assert hosts.read_host_resolv(tmp_path / "missing", tmp_path / "missing") == ("", None)


def test_write_file_rewrites_in_place(tmp_path):
    p = tmp_path / "hosts"
    hosts.write_file(p, "a long first version\n")
    inode = os.stat(p).st_ino
    hosts.write_file(p, "short\n")
    assert p.read_text() == "short\n"
    assert os.stat(p).st_ino == inode  # a bind mount of it would see the change
