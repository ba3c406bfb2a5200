"""Pure parts of the Engine API: docker ps's status words, ports as the list and inspect show them,
the multiplexed stream framing, and container events from two views of the host."""
from __future__ import annotations

from provisioner.api import events, views
from provisioner.api.streams import frame, unframe


def described(state: str, **st) -> dict:
    return {"id": "a" * 64, "name": "web", "image": "web:1", "image_id": "sha256:" + "b" * 64, "created": 1000.0,
            "command": "httpd -f", "ports": ["127.0.0.1:8080:80/tcp", "53/udp"], "address": "10.88.0.2",
            "mounts": [{"kind": "volume", "source": "data", "destination": "/data", "readonly": False}],
            "status": {"state": state, "exit_code": st.get("code"), "restart_count": 0, "pid": 7,
                       "started_at": st.get("started", ""), "finished_at": st.get("finished", "")},
            "labels": {"team": "ops"}}


def test_status_words_as_docker_ps_prints_them():
    assert views.status_text(described("running", started="1970-01-01T00:16:40.000000000Z"), now=1005) == \
        "Up 5 seconds"
    assert views.status_text(described("exited", code=137, finished="1970-01-01T00:16:40.5Z"), now=1000.7) == \
        "Exited (137) Less than a second ago"
    assert views.status_text(described("exited", code=0, finished="1970-01-01T00:16:40Z"), now=1000 + 7200) == \
        "Exited (0) 2 hours ago"
    assert views.status_text(described("created"), now=2000) == "Created"
    assert [views.human_duration(s) for s in (0.5, 1, 59, 60, 61 * 60, 90 * 60, 3 * 86400)] == \
        ["Less than a second", "1 second", "59 seconds", "About a minute", "About an hour", "2 hours", "3 days"]


def test_ports_while_running_and_after():
    running = described("running", started="1970-01-01T00:16:40Z")
    assert views.list_ports(running) == [{"PrivatePort": 80, "Type": "tcp", "IP": "127.0.0.1", "PublicPort": 8080},
                                         {"PrivatePort": 53, "Type": "udp"}]
    assert views.port_map(running) == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "53/udp": None}
    assert views.list_ports(described("exited", code=0)) == []
    entry = views.list_entry(running, ("shop", "web"), "10.88.0.1", 16, "/var/lib/provisioner/volumes", now=1001)
    assert entry["Names"] == ["/web"] and entry["State"] == "running"
    assert entry["Labels"]["com.docker.compose.project"] == "shop" and entry["Labels"]["team"] == "ops"
    assert entry["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == "10.88.0.2"
    assert entry["NetworkSettings"]["Networks"]["bridge"]["MacAddress"] == "02:42:0a:58:00:02"
    assert entry["Mounts"][0] == {"Type": "volume", "Name": "data", "Source": "/var/lib/provisioner/volumes/data",
                                  "Destination": "/data", "Driver": "local", "Mode": "", "RW": True,
                                  "Propagation": ""}


def test_stdcopy_framing():
    data = frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"")
    assert data[:8] == b"\x01\x00\x00\x00\x00\x00\x00\x04"
    assert unframe(data) == [(1, b"out\n"), (2, b"err\n"), (1, b"")]


def test_events_from_two_views():
    attrs = {"name": "web", "image": "web:1"}
    before = {"a": ("running", "t1", None, attrs), "gone": ("exited", "t0", 0, attrs)}
    after = {"a": ("exited", "t1", 3, attrs), "new": ("running", "t2", None, attrs)}
    got = [(e["Action"], e["id"], e["Actor"]["Attributes"].get("exitCode")) for e in events.diff(before, after, 5.0)]
    assert got == [("die", "a", "3"), ("create", "new", None), ("start", "new", None), ("destroy", "gone", None)]
    restarted = events.diff({"a": ("running", "t1", None, attrs)}, {"a": ("running", "t2", 1, attrs)}, 6.0)
    assert [e["Action"] for e in restarted] == ["die", "start"]
    assert restarted[0]["timeNano"] == 6_000_000_000 and restarted[0]["Type"] == "container"
