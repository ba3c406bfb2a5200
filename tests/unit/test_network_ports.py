"""-p parsing (Docker's forms) and port conflict rules."""
from __future__ import annotations

import pytest

from provisioner.network.ports import Listener, assign_host_ports, check_conflicts, ephemeral_range, host_listeners
from provisioner.runspec.ports import PortMapping, parse_port, parse_ports
from provisioner.errors import ConfigError, ContainerError

W = "0.0.0.0"


@pytest.mark.parametrize("spec, expected", [
    ("80", [PortMapping(W, 0, 80, "tcp")]),
    ("8080:80", [PortMapping(W, 8080, 80, "tcp")]),
    ("8080:80/udp", [PortMapping(W, 8080, 80, "udp")]),
    ("8080:80/TCP", [PortMapping(W, 8080, 80, "tcp")]),
    ("127.0.0.1:8080:80", [PortMapping("127.0.0.1", 8080, 80, "tcp")]),
    ("127.0.0.1::80", [PortMapping("127.0.0.1", 0, 80, "tcp")]),
    ("53:53/udp", [PortMapping(W, 53, 53, "udp")]),
    ("8000-8002:80-82", [PortMapping(W, 8000, 80), PortMapping(W, 8001, 81), PortMapping(W, 8002, 82)]),
    ("7000-7001", [PortMapping(W, 0, 7000), PortMapping(W, 0, 7001)]),
    ("8000-8010:80", [PortMapping(W, 0, 80, "tcp", (8000, 8010))]),
])
def test_parse_port(spec, expected):
    assert parse_port(spec) == expected


@pytest.mark.parametrize("spec, match", [
    ("", "not a port"),
    ("http:80", "not a port"),
    ("0:80", "outside 1-65535"),
    ("8080:70000", "outside 1-65535"),
    ("8080:80/sctp", "protocol must be tcp or udp"),
    ("[::1]:80:80", "IPv6"),
    ("::1:80:80", "want"),
    ("fe80::1:80:80", "want"),
    ("1.2.3:80:80", "not an IP address"),
    ("8000-8001:80-82", "differ in length"),
    ("8002-8000:80-82", "runs backwards"),
    ("a:b:c:d", "want"),
])
def test_parse_port_rejects(spec, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_port(spec)
    assert repr(spec) in str(err.value)


def test_mapping_str_and_json_round_trip():
    m = PortMapping("127.0.0.1", 8080, 80, "udp")
    assert str(m) == "127.0.0.1:8080:80/udp"
    assert str(PortMapping(W, 8080, 80)) == "8080:80/tcp"
    assert PortMapping.from_json(m.to_json()) == m


def test_conflict_with_another_containers_rule():
    published = {"web": [PortMapping(W, 8080, 80)]}
    with pytest.raises(ContainerError, match="port 8080/tcp is already published by container web"):
        check_conflicts("api", parse_ports(["127.0.0.1:8080:3000"]), published, [])
    # other protocol, other port, or the container itself: fine
    check_conflicts("api", parse_ports(["8080:53/udp", "8081:80"]), published, [])
    check_conflicts("web", parse_ports(["8080:80"]), published, [])


def test_specific_addresses_do_not_clash_with_each_other():
    published = {"web": [PortMapping("127.0.0.1", 8080, 80)]}
    check_conflicts("api", parse_ports(["127.0.0.2:8080:80"]), published, [])
    with pytest.raises(ContainerError, match="already published by container web"):
        check_conflicts("api", parse_ports(["8080:80"]), published, [])


def test_conflict_with_a_listening_socket():
    with pytest.raises(ContainerError, match=r"port 5000/tcp is already in use on this host \(a process listens on 127.0.0.1:5000\)"):
        check_conflicts("reg", parse_ports(["5000:5000"]), {}, [Listener("tcp", "127.0.0.1", 5000)])
    check_conflicts("reg", parse_ports(["5000:5000/udp"]), {}, [Listener("tcp", "127.0.0.1", 5000)])


def test_duplicate_in_one_request():
    with pytest.raises(ContainerError, match="port 80/tcp is published twice for web"):
        check_conflicts("web", parse_ports(["80:80", "127.0.0.1:80:8080"]), {}, [])


def test_host_ip_must_be_local():
    with pytest.raises(ContainerError, match="192.0.2.7 is not an address of this host"):
        check_conflicts("web", parse_ports(["192.0.2.7:80:80"]), {}, [], local_addresses={"127.0.0.1"})


def test_assign_host_ports_skips_taken_ones():
    got = assign_host_ports("web", parse_ports(["80", "8080:81", "127.0.0.1::82"]),
                            {"db": [PortMapping(W, 40000, 5432)]}, [Listener("tcp", W, 40001)], (40000, 40010))
    assert [m.host_port for m in got] == [40002, 8080, 40003]
    with pytest.raises(ContainerError, match="no free host port in 40000-40000 for 80/tcp of web"):
        assign_host_ports("web", parse_ports(["80"]), {}, [Listener("tcp", W, 40000)], (40000, 40000))


def test_host_range_for_one_container_port_takes_the_first_free():
    (m,) = parse_ports(["8000-8002:80"])
    assert str(m) == "8000-8002:80/tcp"
    got = assign_host_ports("web", [m], {"db": [PortMapping(W, 8000, 5432)]}, [Listener("tcp", W, 8001)], (40000, 40010))
    assert got == [PortMapping(W, 8002, 80, "tcp")]
    with pytest.raises(ContainerError, match="no free host port in 8000-8001"):
        assign_host_ports("web", parse_ports(["8000-8001:80"]), {"db": [PortMapping(W, 8000, 5432)]},
                          [Listener("tcp", W, 8001)], (40000, 40010))


PROC_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0100007F:9C40 0100007F:1388 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
"""
PROC_TCP6 = """  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0
   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 0
   2: 0000000000000000FFFF00000100007F:1F92 00000000000000000000000000000000:0000 0A 0
"""
PROC_UDP = """  sl  local_address rem_address   st
   0: 00000000:0035 00000000:0000 07 0
"""


def test_host_listeners_from_proc(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(PROC_TCP)
    (tmp_path / "net" / "tcp6").write_text(PROC_TCP6)
    (tmp_path / "net" / "udp").write_text(PROC_UDP)
    got = set(host_listeners(tmp_path))
    assert got == {
        Listener("tcp", "127.0.0.1", 5000), Listener("tcp", W, 22),   # established 40000 is not listening
        Listener("tcp", W, 8080),                                       # [::]:8080 takes IPv4 too
        Listener("tcp", "127.0.0.1", 8082),                             # ::ffff:127.0.0.1
        Listener("udp", W, 53),
    }                                                                   # [::1]:8081 cannot clash


def test_ephemeral_range(tmp_path):
    p = tmp_path / "sys/net/ipv4"
    p.mkdir(parents=True)
    (p / "ip_local_port_range").write_text("40000\t50000\n")
    assert ephemeral_range(tmp_path) == (40000, 50000)
    assert ephemeral_range(tmp_path / "nope") == (32768, 60999)
