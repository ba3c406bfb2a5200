#!/usr/bin/env python3
"""Name resolution between services: hosts entries kept current (what network/names.py does)
against an embedded resolver (Docker's design: a DNS server at 127.0.0.11 in each container's
network namespace, answering from a table the daemon updates). Measured on this machine:

  lookup     glibc getaddrinfo() of a peer's name as a container sees it: its own /etc/hosts and
             resolv.conf bind-mounted over the host's in a private mount namespace, in a network
             namespace of its own; for the resolver, a minimal UDP DNS server (A records from a
             dict, no recursion: the least work any resolver does) listening on 127.0.0.11:53 in
             that namespace. Median of many lookups, for N peers on the network.
  change     what one peer's change (a restart with a new address) costs until every container
             resolves it: hosts — network.names.refresh() rewriting the N hosts files in place
             (the real code, on tmpfs-backed files); resolver — one table update over a unix socket.
  idle cost  the resolver process's RSS (the hosts approach runs no process).

Run as root from the repo root: `python3 bench/dns_choice.py [--peers 10,100,500] [--lookups 3000]`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.network import names  # noqa: E402
from provisioner.network.model import Attachment, Endpoint  # noqa: E402

RESOLVER = textwrap.dedent(r'''
    import json, os, socket, struct, sys, threading
    table = json.load(open(sys.argv[1]))
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); ctl.bind(sys.argv[2])
    def control():
        while True:
            name, addr = json.loads(ctl.recv(4096)); table[name] = addr
            ctl.sendto(b"ok", sys.argv[2] + ".reply")
    threading.Thread(target=control, daemon=True).start()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.11", 53))
    print("ready", flush=True)
    while True:
        q, peer = s.recvfrom(512)
        tid, flags, qd = struct.unpack("!HHH", q[:6])
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
        qtype, = struct.unpack("!H", q[i + 1:i + 3]); question = q[12:i + 5]
        addr = table.get(".".join(labels))
        if addr and qtype == 1:
            ans = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + socket.inet_aton(addr)
            s.sendto(struct.pack("!HHHHHH", tid, 0x8180, 1, 1, 0, 0) + question + ans, peer)
        else:   # NOERROR, no answer (AAAA) / NXDOMAIN
            rcode = 0 if addr else 3
            s.sendto(struct.pack("!HHHHHH", tid, 0x8180 | rcode, 1, 0, 0, 0) + question, peer)
''')

LOOKUP = textwrap.dedent(r'''
    import socket, statistics, sys, time
    name, n = sys.argv[1], int(sys.argv[2])
    socket.getaddrinfo(name, None, socket.AF_INET)       # warm
    times = []
    for _ in range(n):
        t = time.perf_counter_ns(); socket.getaddrinfo(name, None, socket.AF_INET); times.append(time.perf_counter_ns() - t)
    print(statistics.median(times) / 1000, statistics.quantiles(times, n=100)[98] / 1000)
''')


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def lookup(work: Path, netns: str, hosts: str, resolv: str, name: str, n: int) -> tuple[float, float]:
    (work / "hosts").write_text(hosts)
    (work / "resolv.conf").write_text(resolv)
    (work / "lookup.py").write_text(LOOKUP)
    script = (f"mount --bind {work}/hosts /etc/hosts && mount --bind {work}/resolv.conf /etc/resolv.conf && "
              f"exec ip netns exec {netns} {sys.executable} {work}/lookup.py {name} {n}")
    out = sh("unshare", "-m", "--propagation", "private", "sh", "-c", script).stdout.split()
    return float(out[0]), float(out[1])


def peers_table(n: int) -> dict[str, str]:
    return {f"svc{i}": f"10.99.{i // 250}.{i % 250 + 2}" for i in range(n)}


def bench_lookup(work: Path, counts: list[int], lookups: int) -> list[dict]:
    netns = f"dnsbench{os.getpid()}"
    sh("ip", "netns", "add", netns)
    rows = []
    try:
        sh("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", netns, "ip", "addr", "add", "127.0.0.11/8", "dev", "lo")
        for n in counts:
            table = peers_table(n)
            target = f"svc{n - 1}"      # the last line of the hosts file: the worst case for a file scan
            base = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            hosts_file = base + "".join(f"{a}\t{name} proj-{name}-1\n" for name, a in table.items())
            h = lookup(work, netns, hosts_file, "nameserver 192.0.2.1\noptions timeout:1 attempts:1\n", target,
                       lookups)
            (work / "table.json").write_text(json.dumps(table))
            ctl = work / "ctl.sock"
            ctl.unlink(missing_ok=True)
            proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", RESOLVER,
                                     str(work / "table.json"), str(ctl)], stdout=subprocess.PIPE, text=True)
            try:
                assert proc.stdout.readline().strip() == "ready"
                d = lookup(work, netns, base, "nameserver 127.0.0.11\noptions ndots:0\n", target, lookups)
                rss = _rss_of_child(proc.pid)
                upd = _update_cost(ctl)
            finally:
                proc.terminate()
                proc.wait()
            rows.append({"peers": n, "hosts_us": h[0], "hosts_p99_us": h[1], "dns_us": d[0], "dns_p99_us": d[1],
                         "resolver_rss_kb": rss, "resolver_update_us": upd})
    finally:
        sh("ip", "netns", "del", netns)
    return rows


def _rss_of_child(pid: int) -> int:
    """RSS of the resolver: `ip netns exec` execs it, so the pid is the python process."""
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS"):
            return int(ln.split()[1])
    return 0


def _update_cost(ctl: Path, rounds: int = 200) -> float:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reply = Path(str(ctl) + ".reply")
    reply.unlink(missing_ok=True)
    s.bind(str(reply))
    times = []
    for i in range(rounds):
        t = time.perf_counter_ns()
        s.sendto(json.dumps(["svc0", f"10.98.0.{i % 250 + 2}"]).encode(), str(ctl))
        s.recv(16)
        times.append(time.perf_counter_ns() - t)
    s.close()
    reply.unlink(missing_ok=True)
    return statistics.median(times) / 1000


def bench_change(work: Path, counts: list[int], rounds: int = 20) -> list[dict]:
    """names.refresh() after one peer's change, with N containers on the network (hosts files on
    the same filesystem the network manager uses: <root>/network/files, here a tmpfs)."""
    rows = []
    for n in counts:
        d = Path(tempfile.mkdtemp(dir=work))
        eps = {}
        for i, (name, addr) in enumerate(peers_table(n).items()):
            files = d / name
            files.mkdir()
            ep = Endpoint(name=f"proj-{name}-1", address=addr, prefixlen=16, gateway="10.99.0.1", veth=f"v{i}",
                          netns_path="/x", owns_netns=True, hostname=name, files_dir=str(files),
                          extra=(Attachment("proj_default", addr, 16, "10.99.0.1", f"v{i}", "eth0", (name,)),))
            eps[ep.name] = ep
        for ep in eps.values():
            names.write_files(ep, eps, "nameserver 192.0.2.1\n")
        times = []
        first = next(iter(eps))
        for r in range(rounds):
            t = time.perf_counter()
            changed = names.refresh(eps, first, ["proj_default"])
            times.append(time.perf_counter() - t)
        assert len(changed) == n - 1
        rows.append({"peers": n, "hosts_refresh_ms": statistics.median(times) * 1000,
                     "files_rewritten": len(changed)})
        shutil.rmtree(d)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", default="10,100,500")
    ap.add_argument("--lookups", type=int, default=3000)
    args = ap.parse_args()
    counts = [int(x) for x in args.peers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="dnsbench-", dir="/dev/shm"))
    try:
        lk = bench_lookup(work, counts, args.lookups)
        ch = bench_change(work, counts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"name resolution: hosts entries vs an embedded resolver; {args.lookups} getaddrinfo() per case, "
          "medians (p99 in brackets)")
    print(f"{'peers':>6} {'hosts lookup':>16} {'resolver lookup':>18} {'ratio':>6} {'hosts: one change':>20} "
          f"{'resolver: one change':>21} {'resolver RSS':>13}")
    for a, b in zip(lk, ch):
        print(f"{a['peers']:>6} {a['hosts_us']:>8.1f} µs ({a['hosts_p99_us']:>5.0f}) {a['dns_us']:>9.1f} µs "
              f"({a['dns_p99_us']:>5.0f}) {a['dns_us'] / a['hosts_us']:>5.1f}x {b['hosts_refresh_ms']:>9.2f} ms "
              f"({b['files_rewritten']} files) {a['resolver_update_us']:>14.1f} µs {a['resolver_rss_kb'] / 1024:>9.1f} MiB")


if __name__ == "__main__":
    main()
