"""exec / logs / wait / ps / inspect: reaching into running containers and reading their state;
and `run -it` attached to this terminal. Part of lifecycle.Manager (a mixin)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import ContainerError
from ..runspec.env import parse_env
from . import bundle, supervise, volumes
from .. import network
from .container import ContainerRecord

if TYPE_CHECKING:
    from ..runspec.request import RunRequest
    from .lifecycle import Status
    from .runtime import Runtime


class Accessing:
    """What `exec`, `logs`, `ps` and `inspect` do."""

    def exec(self, ref: str, argv: list[str], *, env: tuple[str, ...] = (), user: str | None = None,
             workdir: str | None = None):
        """Runs `argv` in the running container through the Runner (output captured)."""
        return self.runner.run(self.exec_argv(ref, argv, env=env, user=user, workdir=workdir), check=False)

    def exec_attached(self, ref: str, argv: list[str], **kw) -> int:
        """`docker exec -i`: the command shares our stdin/stdout/stderr and its output appears as
        it is written (the Runner's interactive run). Returns its exit code."""
        return self.runner.interactive(self.exec_argv(ref, argv, **kw))

    def exec_tty(self, ref: str, argv: list[str], *, interactive: bool, **kw) -> int:
        """`docker exec -t[i]`: the command gets a pty (the runtime's console socket) proxied to our
        stdin/stdout; returns its exit code."""
        from . import console

        with console.console_socket() as (sock, path):
            full = self.exec_argv(ref, argv, console_socket=path, **kw)
            return console.run_with_tty(self.runner, full, sock, interactive=interactive)

    def run_foreground(self, req: RunRequest) -> int:
        """`docker run -it` / `-i`: the container's process shares this terminal (with -t the runtime
        proxies its pty to our stdin and stdout, raw mode included; with -i alone it reads our stdin);
        returns its exit code. The container stays, exited, unless --rm."""
        rec = self.run(req, foreground=True)
        code = int(rec.state.get("exit_code") or 0)
        if req.rm and self.records.find(rec.id) is not None:
            self.rm(rec.id, force=True, remove_volumes=True)
        return code

    def _attached(self, rec: ContainerRecord, path: Path, rt: Runtime) -> None:
        argv = [rt.path, "--root", rt.state_root, "run", "--bundle", str(path), rec.id]
        try:
            code = self.runner.interactive(argv)
        finally:
            rec.state["exit_code"] = code if "code" in locals() else 137
            supervise.record_attached(rec.id, self.supervise_dir, "exited", rec.state["exit_code"])
            self._reap_runtime(rt, rec.id)
            if network.endpoint(self.root, rec.name) is not None:
                network.disconnect(self.root, self.net, rec.name, runner=self.runner, keep_address=True,
                                   paths=self.net_paths)
            self.records.save(rec)

    def exec_argv(self, ref: str, argv: list[str], *, env: tuple[str, ...] = (), user: str | None = None,
                  workdir: str | None = None, console_socket: str | None = None) -> list[str]:
        rec = self.records.get(ref)
        if not self.is_running(rec):
            raise ContainerError(f"container {rec.name} is not running")
        rt = self.runtime()
        args = [rt.path, "--root", rt.state_root, "exec"]
        if console_socket:
            args += ["--tty", "--console-socket", console_socket]
        for k, v in parse_env(env):
            args += ["--env", f"{k}={v}"]
        if workdir:
            args += ["--cwd", workdir]
        if user:
            rootfs = self._dir(rec) / "rootfs"
            u = bundle.resolve_user(user, volumes.read_in(rootfs, "/etc/passwd"), volumes.read_in(rootfs, "/etc/group"))
            args += ["--user", f"{u.uid}:{u.gid}"]
        return args + [rec.id, "--", *argv]

    def health(self, rec: ContainerRecord) -> supervise.Health | None:
        """The healthcheck's state as the container's shim last wrote it (None: no healthcheck)."""
        if not rec.config.get("healthcheck"):
            return None
        return supervise.health(rec.id, self.supervise_dir)

    def check_health_now(self, rec: ContainerRecord) -> bool:
        """A healthcheck now rather than at the next interval (the shim's SIGUSR1)."""
        return bool(rec.config.get("healthcheck")) and supervise.check_health_now(rec.id, self.supervise_dir)

    def logs(self, ref: str, *, tail: int | None = None, follow: bool = False,
             since: str | None = None, idle_marks: bool = False) -> Iterator[supervise.LogLine | None]:
        """The log lines (shimlogs.logs: `idle_marks` adds a None whenever a follower waits)."""
        rec = self.records.get(ref)
        return supervise.logs(rec.id, self._dir(rec), tail=tail, follow=follow, state_dir=self.supervise_dir,
                              since=since, idle_marks=idle_marks)

    def wait(self, rec: ContainerRecord) -> Status:
        while self.is_running(rec):
            time.sleep(0.05)
        return self.status(rec)

    def ps(self, all_: bool = False) -> list[dict]:
        return [d for _, d in self.ps_records(all_)]

    def ps_records(self, all_: bool = False) -> list[tuple[ContainerRecord, dict]]:
        """ps with each container's record: the records are read once for the sweep and the listing."""
        records = self.records.all()
        gone = set(self.reap(records))
        out = []
        for rec in records:
            if rec.name in gone:
                continue
            st = self.status(rec)
            if not all_ and st.state not in ("running", "restarting"):
                continue
            out.append((rec, self.describe(rec, st)))
        return out

    def describe(self, rec: ContainerRecord, st: Status | None = None) -> dict:
        st = st or self.status(rec)
        ep = network.endpoint(self.root, rec.name)
        health = self.health(rec)
        return {"id": rec.id, "name": rec.name, "image": rec.image, "image_id": rec.image_id,
                "created": rec.created, "status": st.to_json(), "restart": rec.config.get("restart", "no"),
                "command": _command(rec), "ports": [str(p) for p in ep.ports] if ep else list(rec.config["ports"]),
                "address": ep.address if ep else None, "mounts": rec.config.get("mounts", []),
                "networks": {a.network: {"address": a.address, "gateway": a.gateway, "aliases": list(a.aliases),
                                         "prefixlen": a.prefixlen}
                             for a in ep.attachments} if ep else {},
                "network_mode": rec.config.get("network_mode"), "labels": rec.config.get("labels", {}),
                "options": rec.config["options"], "links": rec.config["links"],
                "health": health.to_json() if health is not None else None}

    def inspect(self, ref: str | ContainerRecord) -> dict:
        """`ref`: a name, id or id prefix, or the record itself (already looked up)."""
        rec = ref if isinstance(ref, ContainerRecord) else self.records.get(ref)
        info = self.describe(rec)
        info["rootfs"] = str(self._dir(rec) / "rootfs")
        info["log"] = str(self._dir(rec) / f"{rec.id}.log")
        info["image_config"] = rec.config["image_config"]
        cfg = self._dir(rec) / "bundle" / "config.json"
        if cfg.exists():
            spec = json.loads(cfg.read_text())
            info["process"] = {k: spec["process"][k] for k in ("args", "env", "cwd", "user")}
            info["resources"] = spec["linux"].get("resources", {})
            info["cgroups_path"] = spec["linux"].get("cgroupsPath")
        return info


def _command(rec: ContainerRecord) -> str:
    try:
        return " ".join(bundle.process_args(rec.config["image_config"],
                                            bundle.RunOptions.from_json(rec.config["options"])))
    except ContainerError:
        return ""
