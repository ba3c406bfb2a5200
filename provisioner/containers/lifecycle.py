"""Container lifecycle: run / start / stop / restart / rm / exec / ps / inspect / logs.

One container is, on disk and on the system:
  <root>/containers/<id>/container.json   the record (container.py)
  <root>/containers/<id>/rootfs           writable btrfs snapshot of the image's top layer chain
  <root>/containers/<id>/bundle/          config.json for the OCI runtime (bundle.py)
  <root>/containers/<id>/<id>.log[.N]     stdout/stderr as JSON lines (written by the shim)
  <root>/containers/.supervise/<id>.*     the shim's state, pid and spec files
  a network endpoint named after the container (network/): netns, veth, DNAT rules
  the shim process, whose child is `<runtime> run --bundle … <id>`: every restart the policy
  asks for runs the runtime again, so a restarted container is created afresh from the bundle
  (same rootfs, same netns, same volumes).

`Manager` is assembled here from its parts: create.py (check, run, the start step),
control.py (stop, start, restart, rm, removal of exited --rm containers), access.py (exec,
logs, ps, inspect). This module keeps what they share: the settings, the records, the runtime,
and each container's status from its supervisor.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import native
from ..errors import ConfigError, ContainerError
from ..images import btrfs  # noqa: F401 (callers and tests patch lifecycle.btrfs)
from .. import network
from . import supervise, volumes
from .access import Accessing
from .container import ContainerRecord, Containers
from .control import Controlling
from .create import Creating
from ..network.manage import SystemPaths
from .runtime import DEFAULT_STATE_ROOT, Runtime

NETWORK_CONFIG = "network.json"   # optional <root>/containers/network.json: NetworkConfig fields


@dataclass
class Status:
    state: str            # created | running | restarting | exited | dead
    exit_code: int | None = None
    restart_count: int = 0
    pid: int | None = None
    started_at: str = ""
    finished_at: str = ""

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Manager(Creating, Controlling, Accessing):
    root: Path
    runner: object
    net: network.NetworkConfig | None = None
    runtime_path: str | None = None
    runtime_state: str = DEFAULT_STATE_ROOT
    shim: str | None = None
    net_paths: SystemPaths = field(default_factory=SystemPaths)
    cgroup_parent: str = "/provisioner"
    cgroup_mount: str = "/sys/fs/cgroup"     # where a v2 host mounts its cgroups (tests: a temp tree)

    def __post_init__(self):
        self.root = Path(self.root)
        self.records = Containers(self.root)
        self.volumes = volumes.Volumes(self.root, self.runner)
        self.supervise_dir = self.records.dir / ".supervise"
        if self.net is None:
            self.net = self._network_config()

    # ---- plumbing ---------------------------------------------------------------------------
    def _network_config(self) -> network.NetworkConfig:
        path = self.root / "containers" / NETWORK_CONFIG
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return network.NetworkConfig()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"unreadable network settings ({exc})", str(path)) from exc
        try:
            return network.NetworkConfig(**data)
        except TypeError as exc:
            raise ConfigError(f"unknown network setting ({exc})", str(path)) from exc

    def runtime(self) -> Runtime:
        path = self.runtime_path or native.runtime_path()
        if not path:
            raise ContainerError("provision-runtime not found: build it with `make -C native` "
                                 "or set PROVISION_RUNTIME (runc works too)")
        return Runtime(path, self.runtime_state, self.runner)

    def _dir(self, rec: ContainerRecord) -> Path:
        return self.records.path(rec.id)

    def _store(self):
        from ..images.store import Store  # needs btrfs under root: only when an image is wanted

        return Store(self.root, self.runner)

    # ---- status -----------------------------------------------------------------------------
    def status(self, rec: ContainerRecord) -> Status:
        st = supervise.status(rec.id, self.supervise_dir, self._dir(rec))
        if st.status == "unknown":
            return Status("created")
        return Status(st.status, st.exit_code, st.restart_count, st.pid, st.started_at, st.finished_at)

    def is_running(self, rec: ContainerRecord) -> bool:
        return supervise.status(rec.id, self.supervise_dir, self._dir(rec)).shim_alive

    # ---- user-defined networks (compose's), for the containers' callers ---------------------------
    def ensure_network(self, spec: network.NetworkSpec):
        return network.ensure(self.root, self.net, spec, runner=self.runner)

    def network_exists(self, name: str) -> bool:
        return network.registry.get(self.root, self.net, name) is not None

    def networks_labelled(self, key: str, value: str) -> list[str]:
        return [n.name for n in network.registry.labelled(self.root, self.net, key, value)]

    def remove_network_if_unused(self, name: str) -> bool:
        if network.registry.in_use(network.endpoints(self.root), name):
            return False
        return network.remove_network(self.root, self.net, name, runner=self.runner, paths=self.net_paths)
