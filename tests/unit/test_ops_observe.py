"""`provision stats` and `provision logs STACK --cloud C` against the in-process SSH server on
loopback (test_ops_sshd.FakeSshd: real SSH, the agent's answers scripted), and the time-order merge."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from provisioner.cli.main import cli
from provisioner.deploy import inventory
from provisioner.deploy.ops_logs import Merger, Stream
from provisioner.errors import HostError

from test_ops_sshd import FakeSshd

AGENT = "sudo -n /usr/local/bin/provision"


@pytest.fixture
def sshd(tmp_path):
    d = FakeSshd(tmp_path)
    d.record(tmp_path, host="web")
    d.record(tmp_path, host="db")
    yield d
    d.close()


def _invoke(root, *args):
    return CliRunner().invoke(cli, ["--root", str(root), *args])


def _records(lines):
    return "".join(json.dumps({"log": text + "\n", "stream": stream, "time": t}) + "\n" for t, stream, text in lines)


# -- logs --------------------------------------------------------------------------------------------

LOGS = {
    "shop-frontend": [("2026-01-01T00:00:01.000000000Z", "stdout", "front 1"),
                      ("2026-01-01T00:00:04.000000000Z", "stdout", "front 4")],
    "shop-api": [("2026-01-01T00:00:02.000000000Z", "stderr", "api 2")],
    "shop-postgres": [("2026-01-01T00:00:00.500000000Z", "stdout", "pg 0.5"),
                      ("2026-01-01T00:00:03.000000000Z", "stdout", "pg 3")],
}


def test_stack_logs_merge_every_host_and_service_in_time_order(sshd, tmp_path):
    sshd.on(f"{AGENT} --json container logs", lambda x: x.out(_records(LOGS[x.command.split()[-1]])) or 0)
    r = _invoke(tmp_path, "logs", "shop", "--cloud", "local")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["db/postgres  | pg 0.5", "web/frontend | front 1", "web/api      | api 2",
                                     "db/postgres  | pg 3", "web/frontend | front 4"]
    r = _invoke(tmp_path, "logs", "shop", "postgres", "--cloud", "local", "-t", "-n", "5", "--since", "10m")
    assert r.stdout.splitlines()[0] == "db/postgres | 2026-01-01T00:00:00.500000000Z pg 0.5"
    assert f"{AGENT} --json container logs --tail 5 --since 10m shop-postgres" in sshd.commands
    r = _invoke(tmp_path, "logs", "shop", "api", "--cloud", "local", "-f")
    assert r.stdout == "web/api | api 2\n" and sshd.ptys == 1   # -f: a pty, so closing hangs the remote up


def test_logs_read_the_containers_the_host_says_run_each_service(sshd, tmp_path):
    """After a start-first update the service's container is `<name>.<generation>`, and replicas
    have one each: the host's own `ps` names them, so logs follow the live ones."""
    ps = {"web": [{"service": "frontend", "container": "shop-frontend.3"},
                  {"service": "api", "container": "shop-api"}, {"service": "api", "container": "shop-api-2"}],
          "db": [{"service": "postgres", "container": "shop-postgres"}]}
    sshd.on(f"{AGENT} ps -f /etc/provisioner/stack.yml --host ",
            lambda x: x.out(json.dumps(ps[x.command.split()[-2]])) or 0)
    logs = {"shop-frontend.3": [("2026-01-01T00:00:01Z", "stdout", "new front")],
            "shop-api": [("2026-01-01T00:00:02Z", "stdout", "api one")],
            "shop-api-2": [("2026-01-01T00:00:03Z", "stdout", "api two")],
            "shop-postgres": [("2026-01-01T00:00:00Z", "stdout", "pg")]}
    sshd.on(f"{AGENT} --json container logs", lambda x: x.out(_records(logs[x.command.split()[-1]])) or 0)
    r = _invoke(tmp_path, "logs", "shop", "--cloud", "local")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [f"{p:18} | {t}" for p, t in [
        ("db/postgres", "pg"), ("web/frontend", "new front"), ("web/api/shop-api", "api one"),
        ("web/api/shop-api-2", "api two")]]
    sshd.on(f"{AGENT} container logs shop-frontend.3", lambda x: x.out("new front\n") or 0)
    r = _invoke(tmp_path, "logs", "web", "frontend")
    assert r.exit_code == 0 and r.stdout == "new front\n" and "container logs shop-frontend.3" in sshd.commands[-1]


def test_a_failing_service_is_reported_and_the_others_still_print(sshd, tmp_path):
    sshd.on(f"{AGENT} --json container logs shop-postgres",
            lambda x: x.out(_records([("2026-01-01T00:00:00Z", "stdout", "pg")])) or 0)
    sshd.on(f"{AGENT} --json container logs shop-", lambda x: x.err("error: no such container: shop-x\n") or 1)
    r = _invoke(tmp_path, "logs", "shop", "--cloud", "local")
    assert r.exit_code == 1 and r.stdout == "db/postgres  | pg\n"
    assert r.stderr.splitlines() == ["warning: web/api: no such container: shop-x",
                                     "warning: web/frontend: no such container: shop-x"]


def test_stack_logs_errors_are_one_line(sshd, tmp_path):
    r = _invoke(tmp_path, "logs", "shop", "--cloud", "aws")
    assert isinstance(r.exception, HostError) and "no stack 'shop' deployed on the aws cloud (deployed stacks: " \
                                                  "shop (local))" in str(r.exception)
    r = _invoke(tmp_path, "logs", "shop", "nosuch", "--cloud", "local")
    assert "unknown service 'nosuch' in stack shop" in str(r.exception)
    r = _invoke(tmp_path, "logs", "web")
    assert "name a service of web (provision logs HOST SERVICE), or read a whole stack with --cloud" in str(r.exception)


def test_follow_uses_ptys_and_the_merge_waits_for_the_slower_stream():
    clock = [0.0]
    a, b = Stream("web", "api", "shop-api"), Stream("db", "pg", "shop-pg")
    m = Merger([a, b], lag=0.5, clock=lambda: clock[0])
    m.push(a, "2026-01-01T00:00:02Z", "a2")
    assert m.ready() == []                       # b has said nothing yet: a2 may not be the oldest
    m.push(b, "2026-01-01T00:00:01Z", "b1")
    assert [e.text for e in m.ready()] == ["b1"]  # b1 is no later than both streams' latest
    m.push(b, "2026-01-01T00:00:03Z", "b3")
    assert [e.text for e in m.ready()] == ["a2"]  # b3 waits: a may still say something before it
    clock[0] = 0.6                               # ... but not forever
    assert [e.text for e in m.ready()] == ["b3"]
    m.push(a, "2026-01-01T00:00:04Z", "a4")
    m.end(a)
    m.end(b)
    assert [e.text for e in m.ready()] == ["a4"] and m.finished


# -- stats -------------------------------------------------------------------------------------------

def _stats(host, containers):
    return json.dumps({"host": {"host": host, "cgroup_mode": "v2", "load": [0.5, 0.25, 0.1], "cpus": 2,
                                "mem_used": 512 << 20, "mem_total": 2048 << 20,
                                "filesystems": [{"mountpoint": "/var/lib/provisioner", "used": 1 << 30,
                                                 "size": 4 << 30}]},
                       "containers": containers})


def _row(name, cpu):
    return {"id": "ab" * 32, "name": name, "stack": "shop", "service": name[5:], "cpu_percent": cpu,
            "mem_usage": 10 << 20, "mem_limit": 64 << 20, "mem_percent": 15.625, "net_rx": 1500, "net_tx": 2000,
            "block_read": 0, "block_write": 4096, "pids": 3}


def test_stats_of_a_stack_one_line_per_host_and_a_row_per_container(sshd, tmp_path):
    def answer(x):
        rows = [_row("shop-frontend", 12.5), _row("shop-api", 0.0)]
        return x.out(_stats("web", rows)) or 0
    sshd.on(f"{AGENT} --json container stats --no-stream --interval 1", answer)
    r = _invoke(tmp_path, "stats", "shop", "--cloud", "local", "--no-stream")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[1] == ("shop/web: load 0.50 0.25 0.10 (2 CPU), mem 512MiB / 2GiB, btrfs "
                        "/var/lib/provisioner 1GiB / 4GiB (25%), cgroup v2")
    assert lines[0].startswith("shop/db: load") and lines[2].split()[:4] == ["HOST", "CONTAINER", "ID", "NAME"]
    assert lines[3].split()[:4] == ["shop/db", "abababababab", "shop-frontend", "12.50%"]
    assert "10MiB / 64MiB" in lines[3] and "1.5kB / 2kB" in lines[3] and lines[3].endswith(" 3")
    assert len(lines) == 7      # both hosts answered the same script: two rows each
    r = _invoke(tmp_path, "stats", "shop/db", "--cloud", "local", "--no-stream", "--json")
    (host,) = json.loads(r.stdout)["hosts"]
    assert host["host"] == "shop/db" and host["containers"][0]["cpu_percent"] == 12.5 and host["error"] is None


def test_stats_of_an_unreachable_agent_says_so_and_exits_1(sshd, tmp_path):
    sshd.on(f"{AGENT} --json container stats", lambda x: x.err("error: provision: command not found\n") or 127)
    r = _invoke(tmp_path, "stats", "--cloud", "local", "--no-stream")
    assert r.exit_code == 1 and "shop/web: unavailable: provision: command not found" in r.stdout


def test_selecting_hosts(sshd, tmp_path):
    names = lambda recs: [r.name for r in recs]   # noqa: E731
    assert names(inventory.select(tmp_path, None, "local")) == ["shop/db", "shop/web"]
    assert names(inventory.select(tmp_path, "shop", "local")) == ["shop/db", "shop/web"]
    assert names(inventory.select(tmp_path, "web", None)) == ["shop/web"]
    with pytest.raises(HostError, match="stack shop is deployed on the local cloud, not gce"):
        inventory.select(tmp_path, "shop", "gce")
    with pytest.raises(HostError, match="host shop/web is on the local cloud, not aws"):
        inventory.select(tmp_path, "shop/web", "aws")
    with pytest.raises(HostError, match="no deployed hosts on the aws cloud"):
        inventory.select(tmp_path, None, "aws")
