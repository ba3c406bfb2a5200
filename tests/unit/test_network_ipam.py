"""The persisted address allocator."""
from __future__ import annotations

import ipaddress
import json
import threading

import pytest

from provisioner.network import ipam
from provisioner.errors import ConfigError, ContainerError


def test_allocate_is_per_name_and_persisted(tmp_path):
    with ipam.transaction(tmp_path, "10.88.0.0/16") as a:
        assert str(a.allocate("web")) == "10.88.0.2"
        assert str(a.allocate("db")) == "10.88.0.3"
        assert str(a.allocate("web")) == "10.88.0.2"
        assert str(a.gateway) == "10.88.0.1"
    data = json.loads((tmp_path / "network" / "ipam.json").read_text())
    assert data["allocations"] == {"db": "10.88.0.3", "web": "10.88.0.2"}
    with ipam.lock(tmp_path):
        assert str(ipam.load(tmp_path, "10.88.0.0/16").get("db")) == "10.88.0.3"


def test_released_address_is_not_reused_at_once_and_wraps(tmp_path):
    with ipam.transaction(tmp_path, "10.9.9.0/29") as a:   # hosts .2-.6 for containers
        got = [str(a.allocate(n)) for n in "abcde"]
        assert got == [f"10.9.9.{i}" for i in range(2, 7)]
        with pytest.raises(ContainerError, match=r"no free address left in 10.9.9.0/29 \(5 in use\)"):
            a.allocate("f")
        a.release("b")
        assert str(a.allocate("f")) == "10.9.9.3"  # wraps around to the only free one
    with ipam.transaction(tmp_path, "10.9.9.0/29") as a:
        a.release("a")
        a.release("c")
        assert str(a.allocate("g")) == "10.9.9.4"  # after the last given (.3), not .2


def test_subnet_change_with_live_allocations_is_refused(tmp_path):
    with ipam.transaction(tmp_path, "10.88.0.0/16") as a:
        a.allocate("web")
    with pytest.raises(ConfigError, match="cannot switch to 10.99.0.0/16"):
        with ipam.transaction(tmp_path, "10.99.0.0/16"):
            pass
    with ipam.transaction(tmp_path, "10.88.0.0/16") as a:
        a.release("web")
    with ipam.transaction(tmp_path, "10.99.0.0/16") as a:
        assert str(a.allocate("web")) == "10.99.0.2"


def test_corrupt_state_is_a_clear_error(tmp_path):
    (tmp_path / "network").mkdir()
    (tmp_path / "network" / "ipam.json").write_text("{")
    with pytest.raises(ContainerError, match="ipam.json: unreadable address allocations"):
        with ipam.transaction(tmp_path, "10.88.0.0/16"):
            pass


def test_concurrent_allocations_never_collide(tmp_path):
    got: list[str] = []

    def worker(i):
        for j in range(10):
            with ipam.transaction(tmp_path, "10.88.0.0/16") as a:
                got.append(str(a.allocate(f"c{i}-{j}")))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 40 and len(set(got)) == 40
    assert all(ipaddress.IPv4Address(x) in ipaddress.IPv4Network("10.88.0.0/16") for x in got)
