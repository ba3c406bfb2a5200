"""`python -m provisioner.host.agent --config FILE`: the host's long-running agent.

It serves the metrics endpoint (metrics/server.py), pushes to Graphite when asked
(metrics/graphite.py) and ships the logs (logship/), as the host config's `metrics:` and
`logging:` say — the boot hook's agent step writes that down as FILE (JSON, root-only) and keeps
this process running: a systemd unit where systemd runs, else started by the step itself with
`--daemon` (it detaches, holds a flock on `--pid-file` for its whole life, and returns once it
serves, or fails with the reason).

Kept small on purpose (the whole agent ≤ 30 MB RSS; bench/observe.py measures it): it imports
no CLI, no YAML and no registry client, only the readers it runs; its own log goes to
<root>/logs/agent.log, which the shipper ships too.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("provisioner.agent")


def load_config(path: str | os.PathLike) -> dict:
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"provisioner agent: cannot read its config {path}: {exc}") from None
    if not isinstance(cfg, dict) or "root" not in cfg:
        raise SystemExit(f"provisioner agent: {path} is not an agent config")
    return cfg


def _rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Agent:
    def __init__(self, cfg: dict):
        from ..metrics.collect import Collector

        self.cfg = cfg
        self.root = Path(cfg["root"])
        self.stop = threading.Event()
        self.started = time.time()
        self.collector = Collector(self.root, host=cfg.get("host"), stack=cfg.get("stack") or "",
                                   boot_result=Path(cfg["boot_result"]) if cfg.get("boot_result") else None)
        self.shipper = self.server = self.graphite = None
        self._snapshots = threading.Lock()   # the endpoint and the Graphite push share the collector
        lg = cfg.get("logging")
        if lg:
            from ..logship.shipper import Shipper

            self.shipper = Shipper(self.root, lg["scheme"], lg["host"], int(lg["port"]),
                                   buffer_bytes=int(lg["buffer_bytes"]), hostname=cfg.get("host"), ca=lg.get("ca"))
        m = cfg.get("metrics")
        if m:
            from ..metrics.server import MetricsServer

            # every address by default (the firewalls decide who gets in); "address" pins one (tests, benches)
            self.server = MetricsServer(int(m["port"]), self.render, address=m.get("address"))
            if m.get("graphite"):
                from ..metrics.graphite import GraphitePusher

                host, port = m["graphite"]
                self.graphite = GraphitePusher(host, int(port), float(m.get("interval") or 10), self.graphite_lines)

    # -- the series -----------------------------------------------------------------------------------
    def _own(self) -> list:
        from ..metrics.exposition import Families

        f = Families()
        f("process_resident_memory_bytes", "gauge", "The agent's resident memory size in bytes.", _rss_bytes())
        f("process_start_time_seconds", "gauge", "Start time of the agent since unix epoch in seconds.",
          self.started)
        if self.server is not None:
            f("provisioner_scrapes_total", "counter", "Scrapes of this endpoint served.", self.server.scrapes)
            f("provisioner_scrape_duration_seconds", "gauge", "How long the previous scrape took to render.",
              self.server.scrape_seconds)
        if self.shipper is not None:
            c = self.shipper.counters()
            f("provisioner_logship_lines_total", "counter", "Log lines read for shipping.", c["lines"])
            f("provisioner_logship_dropped_lines_total", "counter", "Log lines dropped: the buffer was full.",
              c["dropped"])
            f("provisioner_logship_buffer_bytes", "gauge", "Bytes waiting in the on-disk buffer.",
              c["buffered_bytes"])
            f("provisioner_logship_buffer_limit_bytes", "gauge", "The on-disk buffer's bound.",
              c["buffer_limit_bytes"])
            f("provisioner_logship_sent_bytes_total", "counter", "Bytes the collector acknowledged.", c["sent_bytes"])
            f("provisioner_logship_connected", "gauge", "1 while connected to the collector.", c["connected"])
            f("provisioner_logship_rotation_gaps_total", "counter", "Times the reader fell behind a log's "
              "rotation (lines may be missing).", c["lost_sources"])
        if self.graphite is not None:
            f("provisioner_graphite_pushes_total", "counter", "Pushes Graphite took.", self.graphite.pushes)
            f("provisioner_graphite_push_failures_total", "counter", "Pushes dropped: Graphite unreachable.",
              self.graphite.failures)
        return list(f.values())

    def families(self):
        from ..metrics import exposition

        with self._snapshots:
            snap = self.collector.snapshot()
            devices = self.collector.devices(snap)
        return snap, exposition.families(snap, devices, self._own())

    def render(self) -> str:
        from ..metrics import exposition

        return exposition.render(self.families()[1])

    def graphite_lines(self) -> list[str]:
        from ..metrics import exposition

        snap, fams = self.families()
        m = self.cfg["metrics"]
        return exposition.graphite_lines(fams, m.get("prefix") or "provisioner", snap.stack, snap.host, snap.at)

    # -- running ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.server is not None:
            self.server.start()
        if self.shipper is not None:
            self.shipper.start(self.stop)
        if self.graphite is not None:
            threading.Thread(target=self.graphite.run, args=(self.stop,), daemon=True, name="graphite").start()
        log.info("agent serving: metrics %s, graphite %s, logs to %s",
                 f"on :{self.server.port}" if self.server else "off",
                 "{}:{}".format(*self.cfg["metrics"]["graphite"]) if self.graphite else "off",
                 self.shipper.target if self.shipper else "nowhere")

    def wait(self) -> None:
        while not self.stop.wait(3600):
            pass
        if self.server is not None:
            self.server.close()
        if self.shipper is not None:
            self.shipper.sender.wake.set()
        time.sleep(0.3)   # let the reader record how far it read


def _log_to(root: Path) -> None:
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / "agent.log")
    # RFC 3339 times in UTC: the shipper takes each line's time from its start
    fmt = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    fmt.converter = time.gmtime
    handler.setFormatter(fmt)
    logging.basicConfig(level=logging.INFO, handlers=[handler, logging.StreamHandler(sys.stderr)], force=True)


def _lock(pid_file: Path) -> int:
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(pid_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        raise SystemExit(f"provisioner agent: already running (pid {holder}, {pid_file})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _daemonize() -> int:
    """Detach; the parent exits once the child reports (through a pipe) that it serves, or why not."""
    r, w = os.pipe()
    if os.fork() > 0:
        os.close(w)
        with os.fdopen(r) as f:
            msg = f.read()
        if msg == "ok":
            os._exit(0)
        sys.stderr.write(msg or "provisioner agent: exited while starting\n")
        os._exit(1)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.chdir("/")
    return w


# for the other long-running services of a host (the Engine API server) started the same way
daemonize, hold_pid_file = _daemonize, _lock


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m provisioner.host.agent",
                                 description="Serve the host's metrics, push them to Graphite, ship its logs.")
    ap.add_argument("--config", required=True, help="the agent config the boot hook wrote (JSON)")
    ap.add_argument("--daemon", action="store_true", help="detach (without systemd); needs --pid-file")
    ap.add_argument("--pid-file", type=Path, help="held with a flock while the agent runs")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    report = _daemonize() if args.daemon else None
    try:
        lock = _lock(args.pid_file) if args.pid_file else None
        _log_to(Path(cfg["root"]))
        agent = Agent(cfg)
        agent.start()
    except (OSError, SystemExit) as exc:
        msg = str(exc) if isinstance(exc, SystemExit) else f"provisioner agent: cannot start: {exc}"
        if report is not None:
            os.write(report, (msg + "\n").encode())
            os._exit(1)
        print(msg, file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop.set())
    if report is not None:
        os.write(report, b"ok")
        os.close(report)
    agent.wait()
    if lock is not None:
        os.close(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
