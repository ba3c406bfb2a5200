"""What the API's handlers share: the host's container manager (the same one `provision container`
uses, so a container made either way is one and the same), the image store, the volumes, the
events bus, and the exec instances created but not yet finished."""
from __future__ import annotations

import os
import platform
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import network
from ..compose.labels import service_labels
from ..containers.lifecycle import Manager
from ..errors import ContainerError, ImageError, ProvisionerError
from .events import Events
from .http import not_found
from .networks import record_networks


@dataclass
class ExecInstance:
    id: str
    container: str            # container id
    argv: list[str]
    env: tuple[str, ...] = ()
    user: str | None = None
    workdir: str | None = None
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    master: int = -1          # the pty's master while a -t exec runs (resize)
    created: float = field(default_factory=time.time)

    def to_json(self) -> dict:
        return {"ID": self.id, "Running": self.running, "ExitCode": self.exit_code, "ProcessConfig": {
            "tty": self.tty, "entrypoint": self.argv[0] if self.argv else "", "arguments": self.argv[1:],
            "privileged": False, "user": self.user or ""},
            "OpenStdin": self.stdin, "OpenStderr": self.stderr, "OpenStdout": self.stdout,
            "CanRemove": False, "ContainerID": self.container, "DetachKeys": "", "Pid": self.pid}


class Engine:
    def __init__(self, root: str | os.PathLike, runner, *, manager: Manager | None = None):
        self.root = Path(root)
        self.runner = runner
        self.manager = manager or Manager(self.root, runner)
        self.events = Events(self)
        self.execs: dict[str, ExecInstance] = {}
        self._init_pids: dict[str, tuple[tuple, int]] = {}   # container id -> (its run, init pid): init_pid()
        self.lock = threading.Lock()
        self.started = time.time()
        self.id = self._engine_id()

    def _engine_id(self) -> str:
        path = self.root / "api" / "engine-id"
        try:
            return path.read_text().strip()
        except OSError:
            pass
        value = secrets.token_hex(16).upper()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value + "\n")
        except OSError:
            pass
        return value

    # -- containers -------------------------------------------------------------------------------
    def container(self, ref: str):
        """The record a path names (name, id or unique id prefix; Docker's "/name" too): 404 if none.
        A full id is looked up first and alone, as dockerd does (daemon.GetContainer: id, then name,
        then id prefix) — docker-py, compose and the CLI's own follow-up calls name containers so."""
        ref = ref.lstrip("/")
        try:
            rec = self.manager.records.by_id(ref) or self.manager.records.find(ref)
        except ContainerError as exc:
            raise not_found(str(exc)) from None
        if rec is None:
            raise not_found(f"No such container: {ref}")
        return rec

    def describe(self, rec) -> dict:
        d = self.manager.inspect(rec)
        d["labels"] = rec.config.get("labels") or {}
        d["healthcheck"] = rec.config.get("healthcheck")
        d["auto_remove"] = rec.config.get("auto_remove", False)
        d["stdin_open"], d["stdin_once"] = rec.config.get("stdin_open", False), rec.config.get("stdin_once", False)
        d["net_list"] = record_networks(rec)
        if d["status"]["state"] == "running":
            # Docker's State.Pid is the container's own init on the host (the supervisor's child is
            # the runtime waiting for it)
            pid = self.init_pid(rec.id, d["status"])
            if pid is not None:
                d["status"]["pid"] = pid
        return d

    def init_pid(self, cid: str, status: dict) -> int | None:
        """The running container's init pid, from the runtime's `state` (a process) once per run of
        the runtime: it stays the same while the supervisor's child (the runtime, `status["pid"]`)
        and its start are the same, and the init still exists."""
        key = (status.get("pid"), status.get("started_at"), status.get("restart_count"))
        hit = self._init_pids.get(cid)
        if key[0] and hit and hit[0] == key and os.path.exists(f"/proc/{hit[1]}"):
            return hit[1]
        try:
            pid = self.manager.runtime().state(cid).pid
        except ProvisionerError:
            return None
        if len(self._init_pids) > 4096:     # containers removed long ago
            self._init_pids.clear()
        if key[0] and pid:
            self._init_pids[cid] = (key, pid)
        return pid

    def ps(self, all_: bool) -> list[dict]:
        """manager.ps with each container's Docker labels."""
        out = []
        for rec, d in self.manager.ps_records(all_):
            d["labels"] = rec.config.get("labels") or {}
            d["net_list"] = record_networks(rec)
            out.append(d)
        return out

    def network_ids(self) -> dict[str, str]:
        return {n: net.id for n, net in self.networks().items()}

    def networks(self) -> dict:
        """name → network.registry.Network: the default bridge ("bridge") and the user-defined ones."""
        return network.all_networks(self.root, self.manager.net)

    def compose_labels(self) -> dict[str, tuple[str, str]]:
        return service_labels(self.root)

    @property
    def gateway(self) -> str:
        return str(self.manager.net.gateway)

    @property
    def prefixlen(self) -> int:
        return self.manager.net.network.prefixlen

    @property
    def volume_dir(self) -> str:
        return str(self.manager.volumes.dir)

    # -- images -----------------------------------------------------------------------------------
    def store(self):
        return self.manager._store()

    def image(self, ref: str):
        try:
            return self.store().get_image(ref)
        except ImageError:
            pass
        from ..images import reference

        try:
            return self.store().get_image(str(reference.parse(ref)))
        except ImageError:
            raise not_found(f"No such image: {ref}") from None

    # -- the host ---------------------------------------------------------------------------------
    @staticmethod
    def hostname() -> str:
        return socket.gethostname()

    @staticmethod
    def arch() -> str:
        return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
