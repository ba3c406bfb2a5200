"""`provision container run` with the options compose services use, on the real runtime, shim and
network: capabilities, read-only root and tmpfs, ulimits, sysctls, pids and shm limits, tini as
--init, the stop signal and timeout, a tty, stdin kept open, user-defined networks with aliases
and fixed addresses (and their isolation), extra hosts and DNS settings, host and none network
modes, and `run -it` attached to a terminal."""
from __future__ import annotations

import ipaddress
import json
import shutil
import time

import pytest

from tests.privileged.test_container import NOTHING, Env, env, images, wait_for  # noqa: F401 (fixtures)
from tests.privileged.test_container_tty import Terminal

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("skopeo", "docker-registry", "nft", "mkfs.btrfs",
                                                         "tini-static")),
                       reason="skopeo, docker-registry, nft, btrfs-progs and tini are needed (scripts/install.sh)"),
]


def _sh(env: Env, name: str, script: str) -> str:
    return env.provision("container", "exec", name, "sh", "-c", script).stdout


def _cap_eff(env: Env, name: str) -> int:
    line = next(ln for ln in _sh(env, name, "cat /proc/self/status").splitlines() if ln.startswith("CapEff:"))
    return int(line.split()[1], 16)


def test_kernel_and_process_options(env):
    box = env.refs["busybox"]
    env.run("--name", "opts", "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN", "--read-only", "--tmpfs",
            "/scratch:size=1m", "--ulimit", "nofile=321:654", "--sysctl", "net.core.somaxconn=777", "--pids-limit",
            "50", "--shm-size", "16m", "--init", "--stop-signal", "SIGUSR1", "--stop-timeout", "1", "-l", "tier=t",
            "--add-host", "gw:host-gateway", "--add-host", "x.example:192.0.2.9", "--dns", "192.0.2.53",
            "--dns-search", "example.org", "--dns-option", "ndots:3", box, "sleep", "1000")
    caps = _cap_eff(env, "opts")
    assert caps & (1 << 12) and not caps & (1 << 0)                      # NET_ADMIN added, CHOWN dropped
    assert "Read-only file system" in env.provision("container", "exec", "opts", "touch", "/x", check=False).stderr
    assert _sh(env, "opts", "echo ok > /scratch/f && cat /scratch/f") == "ok\n"
    assert "size=1024k" in next(ln for ln in _sh(env, "opts", "cat /proc/mounts").splitlines() if "/scratch" in ln)
    assert _sh(env, "opts", "ulimit -n; ulimit -Hn").split() == ["321", "654"]
    assert _sh(env, "opts", "cat /proc/sys/net/core/somaxconn") == "777\n"
    assert "size=16384k" in next(ln for ln in _sh(env, "opts", "cat /proc/mounts").splitlines() if "/dev/shm" in ln)
    assert _sh(env, "opts", "cat /proc/1/cmdline | tr '\\0' ' '").startswith("/sbin/docker-init -- sleep 1000")
    hosts = _sh(env, "opts", "cat /etc/hosts")
    gateway = env.inspect("opts")["networks"]["bridge"]["gateway"]
    assert "192.0.2.9\tx.example\n" in hosts and f"{gateway}\tgw\n" in hosts
    assert _sh(env, "opts", "cat /etc/resolv.conf") == "nameserver 192.0.2.53\nsearch example.org\noptions ndots:3\n"
    assert env.inspect("opts")["labels"] == {"tier": "t"}
    # the pids limit holds: the 51st process cannot be made
    forks = env.provision("container", "exec", "opts", "sh", "-c", "for i in $(seq 80); do sleep 30 & done; wait",
                          check=False)
    assert "fork" in forks.stderr.lower() or "resource temporarily unavailable" in forks.stderr.lower(), forks.stderr
    # the stop signal reaches tini, which passes it on; the 1 s stop timeout bounds a stop
    t0 = time.monotonic()
    env.provision("container", "stop", "opts")
    assert time.monotonic() - t0 < 8
    assert env.inspect("opts")["status"]["state"] == "exited"
    env.provision("container", "rm", "opts")
    assert env.leftovers() == NOTHING


def test_tty_and_open_stdin_when_detached(env):
    box = env.refs["busybox"]
    env.run("--name", "term", "-t", box, "sh", "-c", "tty; sleep 1000")
    wait_for(lambda: "/dev/pts/0" in env.provision("container", "logs", "term").stdout, what="tty in the log")
    env.run("--name", "reader", "-i", box, "sh", "-c", "cat; echo stdin-closed")
    time.sleep(0.5)   # a /dev/null stdin would end `cat` at once: give it the chance to
    assert env.inspect("reader")["status"]["state"] == "running"
    assert "stdin-closed" not in env.provision("container", "logs", "reader").stdout


def test_run_it_attached_to_a_terminal(env):
    t = Terminal(env, "container", "run", "-it", "--rm", "--name", "inter", env.refs["busybox"], "sh")
    t.read_until(b"# ")
    t.type("tty; echo typed-$((6*7)); exit 3\n")
    t.read_until(b"typed-42")
    assert t.wait() == 3
    assert b"/dev/pts/0" in t.out
    assert json.loads(env.provision("container", "ps", "-a", "--json").stdout) == []


def test_user_networks_aliases_fixed_addresses_and_isolation(env):
    web, box = env.refs["web"], env.refs["busybox"]
    env.provision("network", "create", "front")
    env.provision("network", "create", "back", "--subnet", env.spare_subnet(), "--internal")
    back = next(n for n in json.loads(env.provision("network", "ls", "--json").stdout) if n["name"] == "back")
    fixed = str(ipaddress.IPv4Network(back["subnet"]).network_address + 9)
    env.run("--name", "api", "--network", "back", "--network-alias", "db", "--ip", fixed, web)
    env.run("--name", "both", "--network", "front", "--network", "back", box, "sleep", "1000")
    env.run("--name", "outside", "--network", "front", "--network-alias", "edge", box, "sleep", "1000")
    # by alias and by container name, on the shared network; the fixed address is the one given
    assert env.provision("container", "exec", "both", "wget", "-q", "-O-", "http://db/index.html").stdout.startswith(
        "hello")
    assert env.provision("container", "exec", "both", "wget", "-q", "-O-", "http://api/index.html").returncode == 0
    assert f"{fixed}\tdb api" in _sh(env, "both", "cat /etc/hosts")
    # outside shares only front: it cannot resolve api, nor reach its address
    assert env.provision("container", "exec", "outside", "nslookup", "api", check=False).returncode != 0 or \
        "api" not in _sh(env, "outside", "cat /etc/hosts")
    assert env.provision("container", "exec", "outside", "wget", "-q", "-T", "2", "-O-", f"http://{fixed}/",
                         check=False).returncode != 0
    # the internal network has no way out, but front does (its gateway answers)
    assert env.provision("network", "rm", "back", check=False).returncode != 0   # in use
    for c in ("api", "both", "outside"):
        env.provision("container", "rm", "-f", c)
    env.provision("network", "rm", "front", "back")
    assert env.leftovers() == NOTHING


def test_host_and_none_network_modes(env):
    box = env.refs["busybox"]
    env.run("--name", "hostnet", "--network", "host", box, "sleep", "1000")
    assert "lo" in _sh(env, "hostnet", "ls /sys/class/net") and \
        len(_sh(env, "hostnet", "ls /sys/class/net").split()) > 1
    env.run("--name", "nonet", "--network", "none", box, "sleep", "1000")
    assert _sh(env, "nonet", "ls /sys/class/net").split() == ["lo"]
    for c in ("hostnet", "nonet"):
        env.provision("container", "rm", "-f", c)
    assert env.leftovers() == NOTHING
