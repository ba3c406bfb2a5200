"""docker-py (PyPI `docker`, the test extra) against `provision host api`, no dockerd: the library's
high-level client pulling an image, running containers for real (detached with published ports,
environment, a named volume, labels and a restart policy; in the foreground with its output),
reading logs, exec_run, stop/wait/remove, volumes, and the errors it raises — checked on
provisioner's own containers, the ones `provision container ps` sees. One server and one root for
the module (each test removes what it made)."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.privileged.api_helpers import ApiHost, volumes
from tests.privileged.test_container import PAGE, Env, http_get, images, wait_for  # noqa: F401 (fixture)
from tests.registry_fixture import free_port

docker = pytest.importorskip("docker")

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("skopeo", "docker-registry", "nft", "mkfs.btrfs")),
                       reason="skopeo, docker-registry, nft and btrfs-progs are needed (scripts/install.sh)"),
]


@pytest.fixture(scope="module")
def api(images):
    work, mnt, refs, _ = images
    env = Env(work, mnt, refs)
    host = ApiHost(env)
    client = docker.DockerClient(base_url=f"unix://{host.sock}", version="auto", timeout=120)
    try:
        yield host, client
    finally:
        client.close()
        host.close()
        env.cleanup()


@pytest.fixture
def clean(api):
    yield api
    host, client = api
    for c in client.containers.list(all=True):
        c.remove(force=True)


def test_version_negotiated_and_an_image_pulled(api):
    host, client = api
    assert client.api.api_version == "1.41" and client.version()["ApiVersion"] == "1.41"
    assert client.ping() is True
    repo, tag = host.env.refs["web"].rsplit(":", 1)
    image = client.images.pull(repo, tag=tag)
    assert image.tags == [host.env.refs["web"]] and image.id.startswith("sha256:")
    assert image.attrs["Config"]["ExposedPorts"] == {"80/tcp": {}}
    assert client.images.get(host.env.refs["web"]).id == image.id
    assert host.env.refs["web"] in [t for i in client.images.list() for t in i.tags]
    # pull's streamed progress, as the low-level API hands it over
    events = list(client.api.pull(repo, tag=tag, stream=True, decode=True))
    assert events[-1] == {"status": f"Status: Image is up to date for {host.env.refs['web']}"}
    with pytest.raises(docker.errors.APIError) as exc:   # a tag the registry does not have
        client.images.pull(repo, tag="nope")
    assert "nope" in str(exc.value)


def test_run_detached_with_ports_environment_volume_then_logs_exec_stop_remove(clean):
    host, client = clean
    client.images.pull(host.env.refs["web"])
    port = free_port()
    c = client.containers.run(host.env.refs["web"], detach=True, name="pyweb", ports={"80/tcp": ("127.0.0.1", port)},
                              environment={"GREETING": "hi there"}, labels={"team": "ops"},
                              volumes={"pydata": {"bind": "/data", "mode": "rw"}},
                              restart_policy={"Name": "on-failure", "MaximumRetryCount": 3})
    assert wait_for(lambda: http_get(port), what="httpd through the published port") == PAGE
    c.reload()
    assert c.status == "running" and c.name == "pyweb" and c.labels["team"] == "ops"
    assert c.ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert "GREETING=hi there" in c.attrs["Config"]["Env"]
    assert c.attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert [(m["Type"], m["Name"], m["Destination"]) for m in c.attrs["Mounts"]] == [("volume", "pydata", "/data")]
    # one model: provisioner's own CLI sees it
    mine = json.loads(host.env.provision("container", "ps", "--json").stdout)
    assert [(m["id"], m["name"], m["restart"]) for m in mine] == [(c.id, "pyweb", "on-failure:3")]
    # exec_run: output and exit code, demultiplexed streams, another user's environment
    r = c.exec_run(["sh", "-c", "echo $GREETING; echo kept > /data/f; cat /data/f"])
    assert (r.exit_code, r.output) == (0, b"hi there\nkept\n")
    r = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"], demux=True)
    assert (r.exit_code, r.output) == (3, (b"out\n", b"err\n"))
    r = c.exec_run("pwd", workdir="/data", environment={"X": "1"})
    assert r.output == b"/data\n"
    # logs: httpd -v writes each request's answer to stderr
    wait_for(lambda: b"response:200" in c.logs(stdout=False, stderr=True), what="the request in the logs")
    assert c.logs(stdout=True, stderr=False) == b""
    stamped = c.logs(timestamps=True).splitlines()[-1]
    assert stamped[:4].isdigit() and b"T" in stamped[:20]
    # stop, wait, remove; the named volume outlives it
    c.stop(timeout=5)
    c.reload()
    assert c.status == "exited" and c.wait(timeout=10)["StatusCode"] in (0, 137, 143)
    c.remove()
    assert client.containers.list(all=True) == [] and host.records() == []
    assert "pydata" in [v.name for v in client.volumes.list()]
    client.volumes.get("pydata").remove()


def test_logs_follow_and_foreground_runs(clean):
    host, client = clean
    ref = host.env.refs["busybox"]
    client.images.pull(ref)
    c = client.containers.run(ref, ["sh", "-c", "echo one; echo two >&2; sleep 1; echo three; sleep 1000"],
                              detach=True)
    stream = c.logs(stream=True, follow=True)
    got = b""
    for chunk in stream:
        got += chunk
        if b"three" in got:
            break
    stream.close()
    assert got == b"one\ntwo\nthree\n"
    assert c.logs(stdout=True, stderr=False, tail=1) == b"three\n"
    c.kill()
    assert c.wait(timeout=10)["StatusCode"] == 137
    # the foreground: the output back, --rm's removal; a non-zero exit is a ContainerError
    assert client.containers.run(ref, ["echo", "hello"], remove=True) == b"hello\n"
    with pytest.raises(docker.errors.ContainerError) as exc:
        client.containers.run(ref, ["sh", "-c", "echo bad >&2; exit 4"], remove=True)
    assert exc.value.exit_status == 4 and b"bad" in exc.value.stderr
    wait_for(lambda: [x.id for x in client.containers.list(all=True)] == [c.id], what="the --rm containers gone")


def test_volumes_create_use_inspect_remove(clean):
    host, client = clean
    ref = host.env.refs["busybox"]
    client.images.pull(ref)
    v = client.volumes.create("pyvol", labels={"backup": "daily"})
    assert v.name == "pyvol" and v.attrs["Driver"] == "local" and v.attrs["Labels"] == {"backup": "daily"}
    assert v.attrs["Mountpoint"].startswith(str(host.env.root))
    assert client.volumes.get("pyvol").attrs["Mountpoint"] == v.attrs["Mountpoint"]
    assert [x.name for x in client.volumes.list(filters={"label": "backup=daily"})] == ["pyvol"]
    client.containers.run(ref, ["sh", "-c", "echo stored > /v/f"], volumes={"pyvol": {"bind": "/v"}}, remove=True)
    out = client.containers.run(ref, ["cat", "/v/f"], volumes=["pyvol:/v:ro"], remove=True)
    assert out == b"stored\n"
    holder = client.containers.create(ref, ["sleep", "1000"], volumes={"pyvol": {"bind": "/v"}})
    with pytest.raises(docker.errors.APIError) as exc:     # in use: dockerd's 409
        v.remove()
    assert exc.value.status_code == 409
    holder.remove(force=True)
    v.remove()
    assert "pyvol" not in volumes(host.env)
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get("pyvol")


def test_errors_name_what_is_refused_and_create_nothing(clean):
    host, client = clean
    ref = host.env.refs["busybox"]
    client.images.pull(ref)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("no-such-container")
    before = host.records()
    with pytest.raises(docker.errors.APIError) as exc:
        client.containers.run(ref, ["true"], detach=True, privileged=True)
    assert exc.value.status_code == 400 and "Privileged" in exc.value.explanation
    with pytest.raises(docker.errors.APIError) as exc:
        client.containers.run(ref, ["true"], detach=True, cap_add=["NET_ADMIN"])
    assert exc.value.status_code == 400 and "CapAdd" in exc.value.explanation
    assert host.records() == before and client.containers.list(all=True) == []
