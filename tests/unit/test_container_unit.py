"""Container records and the lifecycle's checks and rollback, without touching the system."""
from __future__ import annotations

import json
import shutil

import pytest

from provisioner.containers import lifecycle
from provisioner.containers.container import Containers, check_name
from provisioner.containers.lifecycle import Manager
from provisioner.runspec.request import RunRequest, from_flags, parse_link
from provisioner.network import NetworkConfig
from provisioner.images.store import ImageRecord
from provisioner.errors import ConfigError, ContainerError, ImageError
from provisioner.testing import FakeRunner


def test_reserve_find_and_name_in_use(tmp_path):
    c = Containers(tmp_path)
    a = c.reserve("web", "busybox", "sha256:" + "a" * 64, {"k": 1})
    b = c.reserve(None, "busybox", "sha256:" + "a" * 64, {})
    assert b.name == f"c-{b.id[:12]}" and len(a.id) == 64
    assert c.get("web").id == a.id and c.get(a.id).name == "web" and c.get(a.id[:10]).name == "web"
    with pytest.raises(ContainerError, match="the container name 'web' is already in use by container"):
        c.reserve("web", "busybox", "x", {})
    with pytest.raises(ContainerError, match="no such container: nope"):
        c.get("nope")
    rec = json.loads((tmp_path / "containers" / a.id / "container.json").read_text())
    assert rec["name"] == "web" and rec["state"] == {"phase": "creating"} and rec["config"] == {"k": 1}
    with c.op_lock(a.id):
        assert (tmp_path / "containers" / ".locks" / a.id).exists()
        c.delete(a)
    assert [r.name for r in c.all()] == [b.name]
    assert not (tmp_path / "containers" / ".locks" / a.id).exists()  # the lock file goes with the container


def test_ambiguous_prefix(tmp_path, monkeypatch):
    ids = iter(["abc" + "0" * 61, "abc" + "1" * 61])
    monkeypatch.setattr("provisioner.containers.container.new_id", lambda: next(ids))
    c = Containers(tmp_path)
    c.reserve("one", "i", "x", {})
    c.reserve("two", "i", "x", {})
    with pytest.raises(ContainerError, match="ambiguous"):
        c.get("abc")
    assert c.get("abc0").name == "one"


@pytest.mark.parametrize("name", ["x", "-web", "web/1", "a" * 65, "wéb"])
def test_bad_names(name):
    with pytest.raises(ConfigError, match="bad container name"):
        check_name(name)


def test_parse_link():
    assert parse_link("db") == ("db", "db")
    assert parse_link("db:database") == ("db", "database")
    for bad in ("", ":x", "a:b:c"):
        with pytest.raises(ConfigError, match="bad --link"):
            parse_link(bad)


def manager(tmp_path) -> Manager:
    return Manager(tmp_path, FakeRunner(), net=NetworkConfig(), runtime_path="/bin/false")


@pytest.mark.parametrize("flags, msg", [
    ({"ports": ("99999:80",)}, "outside 1-65535"),
    ({"volumes": ("./x:/y",)}, "not a valid volume name"),
    ({"volumes": ("a1:/x", "/h:/x/")}, "duplicate mount point /x"),
    ({"restart": "sometimes"}, "bad restart policy"),
    ({"rm": True, "restart": "always"}, "--rm and --restart"),
    ({"memory": "lots"}, "--memory"),
    ({"cpus": "0"}, "--cpus"),
    ({"env": ("=x",)}, "KEY=VALUE"),
    ({"links": ("a:b:c",)}, "bad --link"),
    ({"workdir": "rel"}, "not an absolute path"),
    ({"name": "x"}, "bad container name"),
    ({"image": "Bad Image!"}, "invalid reference|invalid"),
])
def test_bad_input_is_refused_before_touching_anything(tmp_path, flags, msg):
    """Parsing the flags or checking the request, before anything on the host."""
    flags = {"image": "busybox", **flags}
    with pytest.raises((ConfigError, ContainerError, ImageError), match=msg):
        manager(tmp_path).check(from_flags(**flags))
    assert not (tmp_path / "containers").exists() or not any((tmp_path / "containers").iterdir())


def test_check_reads_env_files(tmp_path):
    f = tmp_path / "app.env"
    f.write_text("# c\nA=1\nB=2\n")
    cfg = manager(tmp_path).check(from_flags("busybox", env=("B=3",), env_files=(str(f),), ports=("8080:80",),
                                             volumes=("data:/d:ro",), links=("db:database",), restart="on-failure:2"))
    assert cfg["options"]["env"] == [["A", "1"], ["B", "2"], ["B", "3"]]  # -e after --env-file: it wins
    assert cfg["ports"] == ["8080:80/tcp"] and cfg["links"] == [["db", "database"]] and cfg["restart"] == "on-failure:2"
    assert cfg["volumes"] == [{"kind": "volume", "source": "data", "destination": "/d", "readonly": True}]
    with pytest.raises(ConfigError, match=r"missing.env: cannot read env file"):
        manager(tmp_path).check(RunRequest("busybox", env_files=(str(tmp_path / "missing.env"),)))
    (tmp_path / "bad.env").write_text("A=1\noops\n")
    with pytest.raises(ConfigError, match=r"bad.env:2: bad line"):
        manager(tmp_path).check(RunRequest("busybox", env_files=(str(tmp_path / "bad.env"),)))


class FakeStore:
    def snapshot(self, chain, dest, readonly=False):
        dest.mkdir()
        (dest / "etc").mkdir()
        (dest / "data").mkdir()
        (dest / "data" / "seed").write_text("x")
        return dest


def test_failed_network_connect_rolls_everything_back(tmp_path, monkeypatch):
    m = manager(tmp_path)
    image = ImageRecord("sha256:" + "c" * 64, "sha256:" + "d" * 64,
                        {"config": {"Cmd": ["sh"], "Volumes": {"/data": {}}}}, ["sha256:" + "e" * 64], 0)
    deleted, volumes_removed = [], []
    monkeypatch.setattr(m, "_image", lambda ref, insecure, pull="missing": image)
    monkeypatch.setattr(m, "_store", lambda: FakeStore())
    monkeypatch.setattr(lifecycle.btrfs, "delete", lambda runner, p: (deleted.append(p), shutil.rmtree(p)))
    monkeypatch.setattr(m.volumes, "create", lambda name, anonymous=False: (m.volumes.path(name).mkdir(parents=True), True)[1])
    monkeypatch.setattr(m.volumes, "remove", lambda name: (volumes_removed.append(name), shutil.rmtree(m.volumes.path(name))))
    m.runner.expect(["cp", "-a", "--reflink=auto", "-T"], prefix=True)
    monkeypatch.setattr(lifecycle.network, "endpoint", lambda root, name: None)

    def refuse(*a, **kw):
        raise ContainerError("port 8080/tcp is already in use on this host (a process listens on 0.0.0.0:8080)")

    monkeypatch.setattr(lifecycle.network, "connect", refuse)
    with pytest.raises(ContainerError, match="already in use"):
        m.run(from_flags("busybox", name="web", ports=("8080:80",)))
    assert m.records.all() == []
    assert [p.name for p in deleted] == ["rootfs"]
    assert len(volumes_removed) == 1 and not any((tmp_path / "volumes").iterdir())
    assert sorted(p.name for p in (tmp_path / "containers").iterdir()) == [".lock", ".locks"]
    assert list((tmp_path / "containers" / ".locks").iterdir()) == []
    # the anonymous volume got the image's content at /data before the failure (copy-up)
    assert any(call[:2] == ("cp", "-a") and call[-2].endswith("rootfs/data") for call in m.runner.calls)


def test_missing_runtime_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(lifecycle.native, "runtime_path", lambda: None)
    m = Manager(tmp_path, FakeRunner(), net=NetworkConfig())
    with pytest.raises(ContainerError, match="provision-runtime not found"):
        m.runtime()


def test_network_settings_file(tmp_path):
    (tmp_path / "containers").mkdir()
    (tmp_path / "containers" / "network.json").write_text(json.dumps({"bridge": "pt0", "subnet": "10.9.0.0/24"}))
    assert Manager(tmp_path, FakeRunner()).net.bridge == "pt0"
    (tmp_path / "containers" / "network.json").write_text(json.dumps({"colour": "red"}))
    with pytest.raises(ConfigError, match="network.json: unknown network setting"):
        Manager(tmp_path, FakeRunner())
