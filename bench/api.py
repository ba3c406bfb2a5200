"""Engine API round-trip latency: `provision host api` vs podman's Docker-compatible API
(`podman system service`, the peer that serves the same API without dockerd), in one run, with 20
containers running on each.

Builds the test images (busybox) with the project's builder, pushes them to Debian's
docker-registry on loopback; provisioner pulls through its API, podman with `podman pull` into
its own storage (btrfs driver, on the same loop-backed btrfs as provisioner's store; cgroupfs,
file events, runc). Both get 20 busybox `sleep`s on their default bridge network, made through
their API. Then, alternating between the two servers call by call so both see the same load:
  GET /_ping, GET /containers/json (the 20), GET /containers/json?all=1,
  GET /containers/{id}/json      each over one kept-alive connection (docker-py's way), --calls times
  lifecycle                      POST /containers/create + /start + /stop + DELETE of one container
                                 (its sh exits on SIGTERM), --cycles times
  docker ps / docker run --rm IMAGE true
                                 Debian's docker CLI (API 1.41) as a fresh process against each socket
                                 (connection set-up and the CLI's own /_ping included), --cli times
The same hand-written HTTP/1.1 client is used for both; the median and p95 of each call and the
ratio provisioner / podman of the medians are printed.

Run as root from the repo root:  python3 bench/api.py
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.imagebuild.loopfs import loop_btrfs  # noqa: E402
from provisioner.runner import Runner  # noqa: E402
from tests.privileged.api_helpers import DOCKER, ApiHost  # noqa: E402
from tests.privileged.runtime_helpers import build_runtime  # noqa: E402
from tests.privileged.test_container import Env, build_images  # noqa: E402
from tests.registry_fixture import docker_registry  # noqa: E402

N_RUNNING = 20
STOPPABLE = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class Client:
    """One kept-alive connection to an Engine API socket."""

    def __init__(self, name: str, sock: str):
        self.name, self.sock = name, sock
        self.conn = UnixHTTP(sock)

    def call(self, method: str, path: str, body=None, ok=(200, 201, 204, 304), raw_body: bool = False):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.conn.request(method, "/v1.41" + path, body=data, headers=headers)
        r = self.conn.getresponse()
        raw = r.read()
        if r.status not in ok:
            raise RuntimeError(f"{self.name}: {method} {path} -> {r.status} {raw[:300]!r}")
        if raw_body or not raw or not r.getheader("Content-Type", "").startswith("application/json"):
            return raw
        return json.loads(raw)

    def pull(self, ref: str) -> None:
        repo, tag = ref.rsplit(":", 1)
        out = self.call("POST", f"/images/create?fromImage={repo}&tag={tag}", raw_body=True)
        if b'"error"' in out:
            raise RuntimeError(f"{self.name}: pull {ref}: {out[-300:]!r}")


def wait_socket(path: str, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)


class Podman:
    """`podman system service` over storage of its own on the given btrfs."""

    def __init__(self, work: Path, mnt: Path):
        self.runroot = tempfile.mkdtemp(prefix="bench-api-pm-", dir="/run")   # podman wants a short runroot
        nofile = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        conf = work / "containers.conf"     # this VM refuses podman's default ulimits (as it does runc's)
        conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc=4096:4096"]\n'
                        f'[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n')
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.base = ["podman", "--root", str(mnt / "pm-storage"), "--runroot", self.runroot, "--storage-driver",
                     "btrfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc"]
        self.sock = f"{self.runroot}/podman.sock"
        self.log = work / "podman-service.log"
        self.log_file = open(self.log, "wb")  # noqa: SIM115 (the service's, closed in close())
        self.proc = subprocess.Popen(self.base + ["system", "service", "--time=0", f"unix://{self.sock}"],
                                     stdout=self.log_file, stderr=subprocess.STDOUT, env=self.env,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        wait_socket(self.sock, self.proc, "podman system service", self.log)

    def pm(self, *args: str) -> str:
        return subprocess.run(self.base + list(args), capture_output=True, text=True, timeout=300, check=True,
                              env=self.env).stdout

    def close(self) -> None:
        subprocess.run(self.base + ["rm", "-f", "-t", "0", "-a"], capture_output=True, timeout=300, env=self.env)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()
        subprocess.run(self.base + ["rmi", "-f", "-a"], capture_output=True, timeout=300, env=self.env)
        subprocess.run(self.base + ["system", "reset", "-f"], capture_output=True, timeout=300, env=self.env)
        shutil.rmtree(self.runroot, ignore_errors=True)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def lifecycle(c: Client, image: str) -> None:
    cid = c.call("POST", "/containers/create", {"Image": image, "Cmd": STOPPABLE})["Id"]
    c.call("POST", f"/containers/{cid}/start")
    c.call("POST", f"/containers/{cid}/stop?t=10")
    c.call("DELETE", f"/containers/{cid}")


CLI_CONFIG = {"DOCKER_CONFIG": ""}     # the docker CLI's config dir: one of the run's own (set in main)


def cli(sock: str, *args: str) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", **CLI_CONFIG}
    p = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=120, env=env,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} against {sock}: {p.returncode} {p.stderr}")


def pct(v: list[float], q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200, help="requests per GET endpoint and server")
    ap.add_argument("--cycles", type=int, default=15, help="create+start+stop+rm cycles per server")
    ap.add_argument("--cli", type=int, default=15, help="docker ps / docker run --rm per server")
    args = ap.parse_args()
    if not (shutil.which("podman") and shutil.which("runc") and DOCKER):
        raise SystemExit("podman, runc and Debian's docker client are needed (scripts/install.sh)")
    build_runtime()
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    CLI_CONFIG["DOCKER_CONFIG"] = str(work / ".docker")
    try:
        with docker_registry(work / "registry") as reg, loop_btrfs(work / "fs", Runner(), size="2G") as mnt:
            refs = build_images(work, reg.address)
            env = Env(work, mnt, refs)
            host = ApiHost(env)
            podman = None
            try:
                podman = Podman(work, mnt)
                run_bench(env, host, podman, refs["busybox"], args)
            finally:
                if podman:
                    podman.close()
                host.close()
                env.cleanup()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_bench(env: Env, host: ApiHost, podman: Podman, image: str, args) -> None:
    prov = Client("provisioner", host.sock)
    peer = Client("podman", podman.sock)
    prov.pull(image)
    podman.pm("pull", "--tls-verify=false", image)     # (the compat pull would want the registry in registries.conf)
    ids: dict[str, list[str]] = {}
    for c in (prov, peer):
        ids[c.name] = []
        for i in range(N_RUNNING):
            cid = c.call("POST", f"/containers/create?name=bench-{i}", {"Image": image, "Cmd": ["sleep", "100000"]})["Id"]
            c.call("POST", f"/containers/{cid}/start")
            ids[c.name].append(cid)
        running = c.call("GET", "/containers/json")
        assert len(running) == N_RUNNING, (c.name, len(running))
    lifecycle(prov, image)     # warm-up (first create of the image on each side)
    lifecycle(peer, image)
    cli(host.sock, "ps")
    cli(podman.sock, "ps")
    cases = [
        ("GET /_ping", args.calls, lambda c: c.call("GET", "/_ping")),
        ("GET /containers/json (20)", args.calls, lambda c: c.call("GET", "/containers/json")),
        ("GET /containers/json?all=1", args.calls, lambda c: c.call("GET", "/containers/json?all=1")),
        ("GET /containers/{id}/json", args.calls, lambda c: c.call("GET", f"/containers/{ids[c.name][7]}/json")),
        ("create+start+stop+rm", args.cycles, lambda c: lifecycle(c, image)),
        ("docker ps (CLI process)", args.cli, lambda c: cli(c.sock, "ps")),
        ("docker run --rm IMAGE true (CLI)", args.cli, lambda c: cli(c.sock, "run", "--rm", image, "true")),
    ]
    results = []
    for label, n, fn in cases:
        got: dict[str, list[float]] = {"provisioner": [], "podman": []}
        for i in range(n):
            order = (prov, peer) if i % 2 == 0 else (peer, prov)
            for c in order:
                got[c.name].append(timed(lambda c=c: fn(c)))
        results.append((label, n, got))
    load = os.getloadavg()
    print(f"Engine API latency, {N_RUNNING} containers running on each server (busybox sleep, default bridge), "
          f"calls alternated between the servers; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    ver = peer.call("GET", "/version")
    print(f"peer: podman {ver.get('Version')} system service (compat API {ver.get('ApiVersion')}), runc, btrfs "
          f"storage driver, cgroupfs; provisioner: provision host api (API 1.41), provision-runtime, btrfs store")
    print(f"{'call':<36}{'n':>5}{'prov med':>11}{'prov p95':>11}{'podman med':>12}{'podman p95':>12}{'ratio':>8}")
    for label, n, got in results:
        p, q = got["provisioner"], got["podman"]
        print(f"{label:<36}{n:>5}{statistics.median(p) * 1000:>9.1f}ms{pct(p, .95) * 1000:>9.1f}ms"
              f"{statistics.median(q) * 1000:>10.1f}ms{pct(q, .95) * 1000:>10.1f}ms"
              f"{statistics.median(p) / statistics.median(q):>8.2f}")
    print("ratio = provisioner median / podman median (< 1: provisioner faster)")
    ps = next(g for lab, _, g in results if lab.startswith("docker ps"))
    run = next(g for lab, _, g in results if lab.startswith("docker run"))
    for what, g in (("docker ps", ps), ("docker run --rm IMAGE true", run)):
        a, b = statistics.median(g["provisioner"]), statistics.median(g["podman"])
        print(f"target: {what} <= podman's -> {'met' if a <= b else 'NOT met'} ({a * 1000:.0f} ms vs {b * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
