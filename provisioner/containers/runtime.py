"""A thin wrapper over an OCI runtime binary (provision-runtime, or runc/crun: same CLI).

Every call goes through `provisioner.runner.Runner`; a failure becomes a ContainerError
carrying the runtime's own one-line message (the runtime names the config field at fault).
Bundles are built elsewhere (issue 5); this class only drives the lifecycle:
create → start → state / kill → delete, or `run` for all of it in one go.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..errors import CommandError, ContainerError
from ..runner import Result, Runner

DEFAULT_STATE_ROOT = "/run/provision-runtime"


@dataclass(frozen=True)
class ContainerState:
    """The OCI state object (runtime spec: "State")."""

    id: str
    status: str  # creating | created | running | stopped
    pid: int
    bundle: str
    oci_version: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> "ContainerState":
        d = json.loads(text)
        return cls(
            id=d["id"],
            status=d["status"],
            pid=int(d.get("pid") or 0),
            bundle=d.get("bundle", ""),
            oci_version=d.get("ociVersion", ""),
            annotations=d.get("annotations") or {},
        )


class Runtime:
    """Drives one OCI runtime binary with its own state directory (`--root`)."""

    def __init__(
        self,
        path: str,
        state_root: str = DEFAULT_STATE_ROOT,
        runner: Runner | None = None,
        log_file: str | None = None,
    ):
        self.path = str(path)
        self.state_root = str(state_root)
        self.runner = runner or Runner()
        self.log_file = log_file

    # -- plumbing -----------------------------------------------------------------------
    def _argv(self, *args: str) -> list[str]:
        argv = [self.path, "--root", self.state_root]
        if self.log_file:
            argv += ["--log", self.log_file, "--log-format", "json"]
        return argv + list(args)

    def _call(self, *args: str, container_id: str | None = None, timeout: float | None = 60,
              input: str | None = None) -> Result:
        try:
            return self.runner.run(self._argv(*args), timeout=timeout, input=input)
        except CommandError as exc:
            raise ContainerError(_one_line(exc.stderr) or str(exc), id=container_id, argv=exc.argv) from exc

    # -- lifecycle ----------------------------------------------------------------------
    def create(
        self,
        container_id: str,
        bundle: str,
        *,
        pid_file: str | None = None,
        console_socket: str | None = None,
        stdout: str = "/dev/null",
        stderr: str = "/dev/null",
    ) -> None:
        """The created process would otherwise inherit this call's captured pipes (and
        the Runner would wait for the container to close them), so its stdio goes to
        files: provision-runtime's --stdin/--stdout/--stderr extension. With a terminal,
        the console socket gets the pty instead."""
        args = ["create", "--bundle", str(bundle)]
        if not console_socket:
            args += ["--stdin", "/dev/null", "--stdout", str(stdout), "--stderr", str(stderr)]
        if pid_file:
            args += ["--pid-file", str(pid_file)]
        if console_socket:
            args += ["--console-socket", str(console_socket)]
        self._call(*args, container_id, container_id=container_id)

    def start(self, container_id: str) -> None:
        self._call("start", container_id, container_id=container_id)

    def state(self, container_id: str) -> ContainerState:
        res = self._call("state", container_id, container_id=container_id)
        return ContainerState.from_json(res.stdout)

    def kill(self, container_id: str, signal: str | int = "TERM", *, all_processes: bool = False) -> None:
        args = ["kill"] + (["--all"] if all_processes else []) + [container_id, str(signal)]
        self._call(*args, container_id=container_id)

    def delete(self, container_id: str, *, force: bool = False) -> None:
        args = ["delete"] + (["--force"] if force else []) + [container_id]
        self._call(*args, container_id=container_id)

    def run(self, container_id: str, bundle: str, *, timeout: float | None = None) -> Result:
        """create + start + wait. Returns the Result; its returncode is the process's exit
        code (128+N when killed by signal N). Raises ContainerError only when the runtime
        itself failed (its stderr carries "provision-runtime: ..." and nothing ran)."""
        argv = self._argv("run", "--bundle", str(bundle), container_id)
        res = self.runner.run(argv, check=False, timeout=timeout)
        if res.returncode != 0 and _runtime_failed(res.stderr):
            raise ContainerError(_one_line(res.stderr), id=container_id, argv=list(argv))
        return res

    def exec(self, container_id: str, argv: Sequence[str], *, timeout: float | None = None) -> Result:
        full = self._argv("exec", container_id, "--", *argv)
        res = self.runner.run(full, check=False, timeout=timeout)
        if res.returncode != 0 and _runtime_failed(res.stderr):
            raise ContainerError(_one_line(res.stderr), id=container_id, argv=list(full))
        return res

    def update(self, container_id: str, resources: Mapping) -> None:
        """New linux.resources (the spec's object) for a running container."""
        self._call("update", "-r", "-", container_id, container_id=container_id, input=json.dumps(dict(resources)))

    def pause(self, container_id: str) -> None:
        self._call("pause", container_id, container_id=container_id)

    def resume(self, container_id: str) -> None:
        self._call("resume", container_id, container_id=container_id)

    def pids(self, container_id: str) -> list[int]:
        """Host pids of every process in the container's cgroup (`ps`)."""
        return [int(p) for p in json.loads(self._call("ps", container_id, container_id=container_id).stdout)]

    def list(self) -> list[ContainerState]:
        out = self._call("list", "--format", "json").stdout
        return [ContainerState.from_json(json.dumps(d)) for d in json.loads(out or "[]")]

    def features(self) -> dict:
        return json.loads(self._call("features").stdout)

    def version(self) -> str:
        return self.runner.run([self.path, "--version"]).stdout.strip().splitlines()[0]


def _one_line(stderr: str) -> str:
    lines = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _runtime_failed(stderr: str) -> bool:
    last = _one_line(stderr)
    return last.startswith("provision-runtime:") or last.startswith("time=") or last.startswith("ERRO")
