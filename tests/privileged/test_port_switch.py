"""A start-first switch of published ports between two real containers, without a VM: the new
container stands by beside the old one, takes the ports over in one nftables transaction (each
port's chain behind the verdict maps repointed), the old one's conntrack entries that are not
established are flushed, its established connections drain, and it goes. Clients live in their
own network namespace — a LAN host reaching this one through a veth, so through prerouting's DNAT
as real clients do.

- UDP first, the case the flush exists for: a client sending from one source port keeps its
  conntrack entry (and so its NAT to the old container) alive for as long as it sends. Repointed
  without the flush, it still reaches the old container — and, once that is gone, nothing: the
  outage issue 13 measured. After the flush it reaches the new one.
- TCP: a client requesting every 50 ms from four fixed source ports (busy clients reuse ports)
  loses no request across `Manager.takeover`, every answer after it is the new version's, and a
  connection established before it is served to the end by the old container (drained).
"""
from __future__ import annotations

import json
import random
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from provisioner.containers.lifecycle import Manager
from provisioner.imagebuild.layout import Layer, LayoutWriter
from provisioner.imagebuild.recipes import PATH_ENV, busybox_layers, push
from provisioner.imagebuild.tarbuild import F
from provisioner.network import conntrack, takeover
from provisioner.runner import Runner
from provisioner.runspec.ports import parse_port
from provisioner.runspec.request import RunRequest
from tests.privileged.test_container import Env, images, pytestmark, wait_for  # noqa: F401
from tests.registry_fixture import free_port

pytestmark = [*pytestmark, pytest.mark.skipif(not Path("/usr/sbin/conntrack").exists(),
                                              reason="conntrack (conntrack-tools) is needed (scripts/install.sh)")]

UDP_REPLY = r"""
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
/* udpreply PORT TEXT: answers every datagram with TEXT */
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    if (argc != 3 || bind(s, (struct sockaddr *)&a, sizeof a) != 0) return 1;
    for (;;) {
        char buf[512];
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        if (recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &len) >= 0)
            sendto(s, argv[2], strlen(argv[2]), 0, (struct sockaddr *)&from, len);
    }
}
"""

HTTP_CLIENT = textwrap.dedent("""
    import os, socket, sys, time
    host, port, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ports, i = [41001, 41002, 41003, 41004], 0
    deadline = time.time() + 300
    while not os.path.exists(stop) and time.time() < deadline:
        sport, t = ports[i % 4], time.time()
        i += 1
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.settimeout(2)
            s.bind(("0.0.0.0", sport))
            s.connect((host, port))
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            s.close()
            body = data.split(b"\\r\\n\\r\\n", 1)[-1].decode().strip()
            print(f"{t:.3f} {sport} ok {body}", flush=True)
        except OSError as exc:
            print(f"{t:.3f} {sport} fail {type(exc).__name__}", flush=True)
        time.sleep(max(0.0, 0.05 - (time.time() - t)))
""")

UDP_ONCE = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[3])))
    s.settimeout(2)
    s.sendto(b"?", (sys.argv[1], int(sys.argv[2])))
    print(s.recv(512).decode())
""")


def _server(version: str) -> tuple[str, ...]:
    return ("sh", "-c", f"mkdir -p /s && echo {version} > /s/index.html && exec httpd -f -p 80 -h /s")


@pytest.fixture(scope="module")
def udp_image(images, tmp_path_factory):
    """busybox plus a static `udpreply` (a UDP server to tell two containers apart)."""
    work, _mnt, _refs, registry = images
    d = tmp_path_factory.mktemp("udpreply")
    (d / "udpreply.c").write_text(UDP_REPLY)
    Runner().run(["cc", "-static", "-O2", "-o", str(d / "udpreply"), str(d / "udpreply.c")])
    w = LayoutWriter(work / "layout-udpreply")
    layers = busybox_layers(Runner()) + [Layer((F("bin/udpreply", (d / "udpreply").read_bytes(), mode=0o755),))]
    w.tag(w.image(layers, {"Cmd": ["sh"], "Env": [PATH_ENV]}), "latest")
    ref = f"{registry}/test/udpreply:1"
    push(work / "layout-udpreply", ref, runner=Runner())
    return ref


@pytest.fixture
def lan(images, tmp_path):
    """The containers' host, and a client namespace on a veth: 10.X.Y.1 here, .2 there."""
    work, mnt, refs, _ = images
    env = Env(work, mnt, refs)
    r = Runner()
    sfx = secrets.token_hex(2)
    ns, here, there = f"cl{sfx}", f"vh{sfx}", f"vc{sfx}"
    net = f"10.{random.randint(150, 199)}.{random.randint(0, 255)}"
    r.run(["ip", "netns", "add", ns])
    r.run(["ip", "link", "add", here, "type", "veth", "peer", "name", there, "netns", ns])
    r.run(["ip", "addr", "add", f"{net}.1/30", "dev", here])
    r.run(["ip", "link", "set", here, "up"])
    for argv in (["ip", "addr", "add", f"{net}.2/30", "dev", there], ["ip", "link", "set", there, "up"],
                 ["ip", "link", "set", "lo", "up"]):
        r.run(["ip", "netns", "exec", ns, *argv])
    try:
        yield env, Manager(env.root, Runner()), ns, f"{net}.1", tmp_path
    finally:
        env.cleanup()
        r.run(["ip", "link", "del", here], check=False)
        r.run(["ip", "netns", "del", ns], check=False)


def _in(ns: str, code: str, *args) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, *map(str, args)],
                          capture_output=True, text=True, timeout=20).stdout.strip()


def _udp(ns: str, host: str, port: int, sport: int) -> str:
    return _in(ns, UDP_ONCE, host, port, sport)


def test_udp_keeps_reaching_the_old_container_until_its_entries_are_flushed(lan, udp_image):
    env, m, ns, host_ip, _ = lan
    port = free_port()
    mapping = tuple(parse_port(f"{host_ip}:{port}:53/udp"))
    old, new = f"a{env.sfx}", f"b{env.sfx}"
    m.run(RunRequest(image=udp_image, command=("udpreply", "53", "v1"), name=old, detach=True, ports=mapping))
    assert wait_for(lambda: _udp(ns, host_ip, port, 41500) == "v1", what="v1 over UDP")
    m.run(RunRequest(image=udp_image, command=("udpreply", "53", "v2"), name=new, detach=True, ports=mapping,
                     replaces=old))
    assert _udp(ns, host_ip, port, 41501) == "v1"                # standing by: not published yet
    was = takeover(env.root, m.net, new, old, runner=m.runner, paths=m.net_paths)
    assert _udp(ns, host_ip, port, 41502) == "v2"                # a new flow: the new container
    assert _udp(ns, host_ip, port, 41500) == "v1"                # an existing flow: still the old one
    assert conntrack.flush_stale(m.runner, was.address) == 1
    assert _udp(ns, host_ip, port, 41500) == "v2"                # flushed: the new one
    assert conntrack.entries(m.runner, was.address) == []


def test_a_tcp_switch_loses_no_request_and_drains_what_was_established(lan):
    env, m, ns, host_ip, tmp = lan
    port = free_port()
    mapping = tuple(parse_port(f"{host_ip}:{port}:80"))
    old, new = f"a{env.sfx}", f"b{env.sfx}"
    image = env.refs["busybox"]
    m.run(RunRequest(image=image, command=_server("v1"), name=old, detach=True, ports=mapping))
    assert wait_for(lambda: _http(ns, host_ip, port) == "v1", what="v1 through the published port")
    stop = tmp / "stop"
    client = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", HTTP_CLIENT, host_ip, str(port),
                               str(stop)], stdout=subprocess.PIPE, text=True)
    held = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", HELD, host_ip, str(port),
                             str(tmp / "finish-held")], stdout=subprocess.PIPE, text=True)
    try:
        m.run(RunRequest(image=image, command=_server("v2"), name=new, detach=True, ports=mapping, replaces=old))
        old_addr = env.address(old)
        wait_for(lambda: conntrack.established(m.runner, old_addr) >= 1, what="the held connection")
        wait_for(lambda: sum(e.state == "TIME_WAIT" for e in conntrack.entries(m.runner, old_addr)) >= 3,
                 what="the client's requests to the old container")
        t0 = time.time()
        assert m.takeover(new, old) == old_addr
        switched = time.time()
        # only the established connection is left of the old container's entries
        assert {e.state for e in conntrack.entries(m.runner, old_addr) if e.proto == "tcp"} == {"ESTABLISHED"}
        assert conntrack.drain(m.runner, old_addr, 0.5) == 1      # still open: the grace period runs out
        (tmp / "finish-held").touch()
        assert held.communicate(timeout=20)[0].strip() == "v1"    # served to the end by the old container
        assert conntrack.drain(m.runner, old_addr, 10.0) == 0
        m.rm(old, force=True)
        time.sleep(1.5)
    finally:
        stop.touch()
        (tmp / "finish-held").touch()
        for proc in (held, client):      # never left behind, whatever failed
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    lines = [ln.split(" ", 3) for ln in client.communicate(timeout=30)[0].splitlines()]
    assert [ln for ln in lines if ln[2] != "ok"] == [], "requests failed across the switch"
    assert {ln[3] for ln in lines if float(ln[0]) < t0} == {"v1"}
    after = [ln for ln in lines if float(ln[0]) > switched]
    assert len(after) >= 20 and {ln[3] for ln in after} == {"v2"}
    assert len({ln[1] for ln in lines}) == 4
    # the port is the new container's alone; nothing of the old one is left in the table
    table = json.loads(Runner().run(["nft", "-j", "list", "table", "ip", env.net["table"]]).stdout)["nftables"]
    assert [i["rule"]["comment"] for i in table if "rule" in i and i["rule"].get("comment")] == [
        f"prov:{new}|{mapping[0]}"]


HELD = textwrap.dedent("""
    import os, socket, sys, time
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
    s.sendall(b"GET / HTTP/1.0\\r\\n")                 # the request's last line comes later
    deadline = time.time() + 120
    while not os.path.exists(sys.argv[3]) and time.time() < deadline:
        time.sleep(0.05)
    s.sendall(b"\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    print(data.split(b"\\r\\n\\r\\n", 1)[-1].decode().strip())
""")


def _http(ns: str, host: str, port: int) -> str:
    code = ("import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); "
            "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); d = b''.join(iter(lambda: s.recv(4096), b'')); "
            "print(d.split(b'\\r\\n\\r\\n', 1)[-1].decode().strip())")
    return _in(ns, code, host, port)
