"""The Engine API server on a unix socket of its own (no root needed): version negotiation, Docker's
error shape, keep-alive and chunked bodies — over raw HTTP and through docker-py."""
from __future__ import annotations

import json
import socket

import docker
import pytest

from provisioner.api.app import make_server
from provisioner.api.server import API_VERSION
from provisioner.runner import Runner


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("apiroot")
    path = root / "docker.sock"
    srv = make_server(root, Runner(), socket_path=str(path))
    srv.start()
    try:
        yield str(path)
    finally:
        srv.close()


def http(path: str, raw: bytes) -> tuple[int, dict, bytes]:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(raw)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    n = 0 if raw.startswith(b"HEAD") else int(headers.get("content-length", 0))
    while len(body) < n:
        body += s.recv(65536)
    s.close()
    return int(lines[0].split()[1]), headers, body


def test_ping_announces_the_api_version(api):
    status, headers, body = http(api, b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
    assert (status, body) == (200, b"OK")
    assert headers["api-version"] == API_VERSION == "1.41" and headers["ostype"] == "linux"
    status, headers, body = http(api, b"HEAD /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
    assert status == 200 and headers["api-version"] == "1.41" and body == b""


def test_versions_too_new_or_too_old_are_told_the_range(api):
    status, _, body = http(api, b"GET /v1.50/version HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
    assert status == 400 and json.loads(body)["message"] == \
        "client version 1.50 is too new. Maximum supported API version is 1.41"
    status, _, body = http(api, b"GET /v1.11/version HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
    assert status == 400 and "Minimum supported API version is 1.12" in json.loads(body)["message"]
    for path in (b"/v1.41/version", b"/v1.24/version", b"/version"):
        status, _, body = http(api, b"GET " + path + b" HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        assert status == 200 and json.loads(body)["ApiVersion"] == "1.41"


def test_errors_are_json_messages_with_dockerds_status(api):
    status, headers, body = http(api, b"GET /containers/nope/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
    assert status == 404 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"message": "No such container: nope"}
    bad = b"{not json"
    status, _, body = http(api, b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(bad), bad))
    assert status == 400 and json.loads(body)["message"].startswith("malformed JSON in the request body")
    status, _, body = http(api, b"GET /no/such/thing HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
    assert status == 404 and "page not found" in json.loads(body)["message"]
    status, _, body = http(api, b"PUT /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
    assert status == 405


def test_keep_alive_and_a_chunked_body(api):
    s = socket.socket(socket.AF_UNIX)
    s.connect(api)
    body = b'{"Image": ""}'
    s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"
              b"POST /containers/create HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    data = b""
    while data.count(b"HTTP/1.1") < 2 or not data.endswith(b"}\n"):
        data += s.recv(65536)
    s.close()
    first, second = data.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200") and first.endswith(b"OK")
    assert second.startswith(b"400") and b"Config.Image is empty" in second


def test_docker_py_negotiates_and_reads_the_host(api):
    client = docker.DockerClient(base_url=f"unix://{api}", version="auto")
    assert client.api.api_version == "1.41"
    assert client.ping() is True
    info = client.info()
    assert info["Driver"] == "btrfs" and info["OSType"] == "linux" and info["Containers"] == 0
    assert client.containers.list(all=True) == []
    with pytest.raises(docker.errors.NotFound, match="No such container: ghost"):
        client.containers.get("ghost")
    with pytest.raises(docker.errors.APIError, match="invalid filter 'colour'"):
        client.containers.list(filters={"colour": "red"})
    client.close()


def test_user_networks_through_docker_py(api):
    """create / list / inspect / remove as docker-compose does them, served by network.registry (a
    bridge and subnet of each network's own); what the registry cannot do is refused by name and
    makes nothing."""
    client = docker.DockerClient(base_url=f"unix://{api}", version="auto")
    labels = {"com.docker.compose.network": "default", "com.docker.compose.project": "shop"}
    net = client.networks.create("shop_default", driver="bridge", labels=labels, attachable=True,
                                 check_duplicate=True)
    try:
        assert len(net.id) == 64 and net.name == "shop_default"
        got = client.api.inspect_network("shop_default")
        assert got["Id"] == net.id and got["Labels"] == labels and got["Driver"] == "bridge"
        assert got["Scope"] == "local" and got["Containers"] == {} and got["IPAM"]["Config"][0]["Subnet"]
        assert client.api.inspect_network(net.id[:12])["Name"] == "shop_default"
        names = sorted(n["Name"] for n in client.api.networks())
        assert names == ["bridge", "shop_default"]
        assert [n["Name"] for n in client.api.networks(filters={"label": "com.docker.compose.project=shop"})] \
            == ["shop_default"]
        assert [n["Name"] for n in client.api.networks(filters={"type": "custom"})] == ["shop_default"]
        with pytest.raises(docker.errors.APIError) as e:
            client.networks.create("shop_default")
        assert e.value.status_code == 409 and "already exists" in str(e.value)
        for kw, named in (({"driver": "overlay"}, "network Driver 'overlay'"),
                          ({"enable_ipv6": True}, "network EnableIPv6"),
                          ({"options": {"com.docker.network.bridge.name": "br9"}}, "network Options"),
                          ({"ipam": docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                              subnet="fd00::/64")])}, "IPAM.Config.Subnet 'fd00::/64'"),
                          ({"ipam": docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                              subnet="10.99.0.0/24"), docker.types.IPAMPool(subnet="10.98.0.0/24")])},
                           "IPAM.Config with more than one pool")):
            with pytest.raises(docker.errors.APIError) as e:
                client.networks.create("other", **kw)
            assert e.value.status_code == 400 and named in str(e.value) and "not supported" in str(e.value)
        assert sorted(n["Name"] for n in client.api.networks()) == ["bridge", "shop_default"]
        # a network of its own: the subnet, gateway and range asked for, and internal, are honoured
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
            subnet="10.99.0.0/24", gateway="10.99.0.254", iprange="10.99.0.128/25")])
        other = client.networks.create("other", internal=True, ipam=ipam)
        got = client.api.inspect_network("other")
        assert got["Id"] == other.id != net.id and got["Internal"] is True
        assert got["IPAM"]["Config"] == [{"Subnet": "10.99.0.0/24", "Gateway": "10.99.0.254",
                                          "IPRange": "10.99.0.128/25"}]
        assert got["Options"]["com.docker.network.bridge.name"] != \
            client.api.inspect_network("shop_default")["Options"]["com.docker.network.bridge.name"]
        with pytest.raises(docker.errors.APIError) as e:   # overlapping another network's subnet
            client.networks.create("third", ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                subnet="10.99.0.0/16")]))
        assert e.value.status_code == 400 and "overlaps" in str(e.value)
        client.api.remove_network("other")
        assert sorted(n["Name"] for n in client.api.networks()) == ["bridge", "shop_default"]
        with pytest.raises(docker.errors.APIError) as e:
            client.api.remove_network("bridge")
        assert e.value.status_code == 403
        with pytest.raises(docker.errors.NotFound):
            client.api.connect_container_to_network("ghost", "shop_default")
    finally:
        client.api.remove_network("shop_default")
    with pytest.raises(docker.errors.NotFound, match="network shop_default not found"):
        client.api.inspect_network("shop_default")
    client.close()


def test_log_chunks_go_out_when_the_follower_waits_not_only_at_32_kib():
    """`logs -f` of a quiet container: the lines written so far are sent as soon as the follower
    starts waiting for more (its None), not held until 32 KiB have gathered; a long backlog still
    goes out in 32 KiB pieces."""
    from provisioner.api.streams import _batched

    assert list(_batched(iter([b"one\n", b"two\n", None, None, b"three\n", None]))) == [b"one\ntwo\n", b"three\n"]
    big = [b"x" * 1000] * 70
    assert [len(c) for c in _batched(iter(big))] == [33000, 33000, 4000]


def test_a_running_containers_init_pid_is_asked_of_the_runtime_once_per_run(tmp_path):
    """inspect's State.Pid: the runtime's `state` (a process) runs once per run of the runtime, not on
    every inspect; a restart (new supervisor child or start) or an init that is gone asks again."""
    import os

    from provisioner.api.engine import Engine
    from provisioner.containers.runtime import ContainerState

    asked = []
    answer = {"pid": os.getpid()}      # a pid that exists

    class Rt:
        def state(self, cid):
            asked.append(cid)
            return ContainerState(cid, "running", answer["pid"], "")

    eng = Engine(tmp_path, Runner())
    eng.manager.runtime = lambda: Rt()
    run1 = {"pid": 100, "started_at": "2024-01-01T00:00:00Z", "restart_count": 0}
    assert eng.init_pid("c1", run1) == os.getpid() and eng.init_pid("c1", dict(run1)) == os.getpid()
    assert asked == ["c1"]
    run2 = {**run1, "pid": 101, "started_at": "2024-01-01T00:01:00Z", "restart_count": 1}
    assert eng.init_pid("c1", run2) == os.getpid() and asked == ["c1", "c1"]
    answer["pid"] = 2 ** 22 + 1        # beyond pid_max: no such process
    eng._init_pids["c1"] = (tuple(run2.values()), answer["pid"])
    assert eng.init_pid("c1", run2) == answer["pid"] and len(asked) == 3


def test_a_full_id_names_its_container_before_any_name(tmp_path):
    """Engine.container: a full id is read alone (not every record), and wins over a container
    named like it, as dockerd resolves a reference (id, then name, then id prefix)."""
    from provisioner.api.engine import Engine
    from provisioner.api.http import ApiError
    from provisioner.containers.container import Containers

    c = Containers(tmp_path)
    a = c.reserve("web", "busybox", "", {})
    b = c.reserve(a.id, "busybox", "", {})          # named like a's id (64 hex: a valid name)
    eng = Engine(tmp_path, Runner())
    assert c.by_id(a.id).name == "web" and c.by_id("f" * 64) is None and c.by_id("web") is None
    assert eng.container(a.id).id == a.id and eng.container("/web").id == a.id
    assert eng.container(b.id).id == b.id and eng.container(b.id[:12]).id == b.id
    with pytest.raises(ApiError, match="No such container: " + "f" * 64):
        eng.container("f" * 64)


def test_waiting_for_removal_removes_an_exited_auto_remove_container_itself(tmp_path, monkeypatch):
    """`docker run --rm`'s wait(condition=removed): once the supervisor is gone the API removes the
    container (Manager.autoremove, what the supervisor's exit command would start a Python process
    for), once, and answers with the exit code; a supervisor still alive (its log not drained) is
    waited for, and a container without AutoRemove is left to whoever removes it."""
    from provisioner.api.containers import _wait
    from provisioner.api.engine import Engine
    from provisioner.containers.lifecycle import Status
    from provisioner.runspec.request import RunRequest

    eng = Engine(tmp_path, Runner())
    m = eng.manager
    rec = m.records.reserve("rm", "busybox", "", m.check(RunRequest("busybox", detach=True, rm=True)))
    rec.state["phase"] = "created"
    m.records.save(rec)
    phase = {"status": Status("running", started_at="t1"), "alive": True}
    removed = []
    monkeypatch.setattr(m, "status", lambda r: phase["status"])
    monkeypatch.setattr(m, "is_running", lambda r: phase["alive"])
    monkeypatch.setattr(m, "autoremove", lambda ref: removed.append(ref) or m.records.delete(m.records.get(ref)))

    class Conn:
        sock, peer = socket.socketpair()
        hijacked = False

    steps = iter([dict(status=Status("exited", exit_code=3, started_at="t1")),   # the shim drains its log
                  dict(alive=False)])                                            # and is gone

    def sleep(_):
        assert not removed
        phase.update(next(steps))

    monkeypatch.setattr("provisioner.api.containers.time.sleep", sleep)
    assert json.loads(next(_wait(eng, Conn(), rec, "removed"))) == {"StatusCode": 3, "Error": None}
    assert removed == [rec.id] and m.records.find("rm") is None

    keep = m.records.reserve("keep", "busybox", "", m.check(RunRequest("busybox", detach=True)))
    phase.update(status=Status("exited", exit_code=0, started_at="t1"), alive=False)
    monkeypatch.setattr("provisioner.api.containers.time.sleep", lambda s: m.records.delete(keep))
    assert json.loads(next(_wait(eng, Conn(), keep, "removed")))["StatusCode"] == 0
    assert removed == [rec.id]
