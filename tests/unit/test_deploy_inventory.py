from pathlib import Path

import pytest

from provisioner.deploy import inventory
from provisioner.errors import HostError


def _rec(stack, host, **kw):
    return inventory.HostRecord(stack=stack, host=host, cloud="local", address="127.0.0.1", port=2222,
                                user="debian", key_file="/k", fingerprints=("SHA256:abc",), **kw)


def test_save_then_find_by_stack_and_host(tmp_path):
    inventory.save(tmp_path, _rec("shop", "web", volumes={"data": "vol1"}, endpoints={"80/tcp": "127.0.0.1:8080"}))
    rec = inventory.find(tmp_path, "shop/web")
    assert rec.volumes == {"data": "vol1"} and rec.endpoints["80/tcp"] == "127.0.0.1:8080"
    assert inventory.find(tmp_path, "web") == rec
    t = rec.target()
    assert (t.host, t.port, t.user, t.fingerprints, t.key_file) == ("127.0.0.1", 2222, "debian", ("SHA256:abc",),
                                                                     Path("/k"))


def test_unknown_and_ambiguous_names_are_one_clear_error(tmp_path):
    inventory.save(tmp_path, _rec("a", "web"))
    inventory.save(tmp_path, _rec("b", "web"))
    with pytest.raises(HostError, match=r"ambiguous: a/web, b/web"):
        inventory.find(tmp_path, "web")
    with pytest.raises(HostError, match=r"unknown host 'db'.*deployed: a/web, b/web"):
        inventory.find(tmp_path, "db")
    assert inventory.find(tmp_path, "b/web").stack == "b"


def test_forget_a_host_or_a_stack(tmp_path):
    inventory.save(tmp_path, _rec("a", "web"))
    inventory.save(tmp_path, _rec("a", "db"))
    inventory.forget(tmp_path, "a", "db")
    assert [r.name for r in inventory.records(tmp_path)] == ["a/web"]
    inventory.forget(tmp_path, "a")
    assert inventory.records(tmp_path) == []


def test_unreadable_record_names_the_file(tmp_path):
    p = tmp_path / "deploy" / "a" / "web.json"
    p.parent.mkdir(parents=True)
    p.write_text("{not json")
    with pytest.raises(HostError, match=r"web.json: unreadable host record"):
        inventory.find(tmp_path, "a/web")
