"""Real log and metric collectors for the tests, on loopback: Debian's rsyslog (imtcp, writing
what it receives to a file) and graphite-carbon's carbon-cache (whisper files under a temp dir),
each in the foreground, on ports the test chose."""
from __future__ import annotations

import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

from provisioner.runner import Runner
from tests.registry_fixture import free_port, wait_until


class Rsyslog:
    """rsyslogd in the foreground with only imtcp on 127.0.0.1:port, writing what it gets to a file."""

    def __init__(self, tmp: Path, port: int):
        self.dir, self.port = tmp / "rsyslog", port
        (self.dir / "work").mkdir(parents=True, exist_ok=True)
        self.out = self.dir / "received.log"
        self.conf = self.dir / "rsyslog.conf"
        self.conf.write_text(textwrap.dedent(f"""\
            global(workDirectory="{self.dir / 'work'}")
            module(load="imtcp")
            input(type="imtcp" port="{port}" address="127.0.0.1")
            template(name="line" type="string"
                     string="%hostname% %app-name% %msgid% %structured-data% %msg%\\n")
            action(type="omfile" file="{self.out}" template="line")
            """))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.dir / "pid")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _listening(self.port), what="rsyslog listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.proc = None

    def lines(self, app: str) -> list[str]:
        if not self.out.exists():
            return []
        return [ln for ln in self.out.read_text(errors="replace").splitlines() if ln.split(" ", 2)[1:2] == [app]]


class Carbon:
    """carbon-cache in the foreground, its line receiver on 127.0.0.1:port, whisper files under tmp."""

    def __init__(self, tmp: Path, port: int):
        self.dir, self.port = tmp / "carbon", port
        conf = self.dir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        self.storage = self.dir / "storage"
        (conf / "carbon.conf").write_text(textwrap.dedent(f"""\
            [cache]
            STORAGE_DIR = {self.storage}/
            LOCAL_DATA_DIR = {self.storage}/whisper/
            WHITELISTS_DIR = {self.storage}/lists/
            CONF_DIR = {conf}/
            LOG_DIR = {self.storage}/log/
            PID_DIR = {self.storage}/
            ENABLE_LOGROTATION = False
            USER =
            MAX_CACHE_SIZE = inf
            MAX_UPDATES_PER_SECOND = inf
            MAX_CREATES_PER_MINUTE = inf
            LINE_RECEIVER_INTERFACE = 127.0.0.1
            LINE_RECEIVER_PORT = {port}
            ENABLE_UDP_LISTENER = False
            PICKLE_RECEIVER_INTERFACE = 127.0.0.1
            PICKLE_RECEIVER_PORT = {free_port()}
            CACHE_QUERY_INTERFACE = 127.0.0.1
            CACHE_QUERY_PORT = {free_port()}
            ENABLE_TAGS = False
            WHISPER_AUTOFLUSH = True
            """))
        (conf / "storage-schemas.conf").write_text("[everything]\npattern = .*\nretentions = 1s:1h\n")
        self.proc = subprocess.Popen(["carbon-cache", f"--config={conf / 'carbon.conf'}", "--nodaemon",
                                      f"--pidfile={self.dir / 'pid'}", f"--logdir={self.storage / 'log'}", "start"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
        wait_until(lambda: _listening(port), timeout=60, what="carbon-cache listening")

    def values(self, path: str) -> list[float]:
        wsp = self.storage / "whisper" / (path.replace(".", "/") + ".wsp")
        if not wsp.exists():
            return []
        out = Runner().run(["whisper-fetch", f"--from={int(time.time()) - 600}", str(wsp)]).stdout
        return [float(v) for _, v in (ln.split() for ln in out.splitlines()) if v != "None"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
