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

`run` checks every input first, then creates step by step with an undo stack: a failure at any
step removes whatever the earlier steps made (snapshot, volumes it created, netns, veth, rules,
record) before the error is raised.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

from .. import native
from ..errors import ConfigError, ContainerError, ImageError, ProvisionerError
from ..fsutil import atomic_write
from . import btrfs, bundle, network, reference, seccomp, supervise, volumes
from .container import ContainerRecord, Containers, check_name
from .network.manage import SystemPaths
from .network.ports import parse_ports
from .runtime import DEFAULT_STATE_ROOT, Runtime

log = logging.getLogger(__name__)

_PKG_PARENT = Path(__file__).resolve().parents[2]  # the directory holding the provisioner package
NETWORK_CONFIG = "network.json"   # optional <root>/containers/network.json: NetworkConfig fields
STOP_TIMEOUT = 10.0
START_WAIT = 15.0


@dataclass
class RunRequest:
    """`provision container run`, parsed by the CLI but not yet checked."""

    image: str
    command: tuple[str, ...] = ()
    name: str | None = None
    detach: bool = False
    ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    restart: str = "no"
    memory: str | None = None
    cpus: str | None = None
    user: str | None = None
    workdir: str | None = None
    entrypoint: str | None = None
    hostname: str | None = None
    rm: bool = False
    insecure_registries: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()


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


def parse_link(text: str) -> tuple[str, str]:
    name, _, alias = text.partition(":")
    if not name or (":" in alias):
        raise ConfigError(f"bad --link {text!r} (want NAME[:ALIAS])")
    return name, alias or name


@dataclass
class Manager:
    root: Path
    runner: object
    net: network.NetworkConfig | None = None
    runtime_path: str | None = None
    runtime_state: str = DEFAULT_STATE_ROOT
    shim: str | None = None
    net_paths: SystemPaths = field(default_factory=SystemPaths)
    cgroup_parent: str = "/provisioner"

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
        from .store import Store  # needs btrfs under root: only when an image is wanted

        return Store(self.root, self.runner)

    # ---- status -----------------------------------------------------------------------------
    def status(self, rec: ContainerRecord) -> Status:
        st = supervise.status(rec.id, self.supervise_dir, self._dir(rec))
        if st.status == "unknown":
            return Status("created")
        return Status(st.status, st.exit_code, st.restart_count, st.pid, st.started_at, st.finished_at)

    def is_running(self, rec: ContainerRecord) -> bool:
        return supervise.status(rec.id, self.supervise_dir, self._dir(rec)).shim_alive

    # ---- run ----------------------------------------------------------------------------------
    def check(self, req: RunRequest) -> dict:
        """Every input checked, nothing touched: the container's config."""
        if req.name:
            check_name(req.name)
        opts_env = list(bundle.parse_env(req.env))
        env_file_entries: list[tuple[str, str]] = []
        for f in req.env_files:
            try:
                text = Path(f).read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read env file ({exc.strerror})", f) from exc
            env_file_entries += bundle.parse_env_file(text, f)
        ports = list(req.ports)
        parse_ports(ports)
        specs = [volumes.parse_volume(v) for v in req.volumes]
        volumes.check_unique(specs)
        links = [parse_link(x) for x in req.links]
        policy = supervise.RestartPolicy.parse(req.restart)
        if req.rm and policy.name != "no":
            raise ConfigError("--rm and --restart cannot be used together (as in Docker)")
        security = seccomp.parse_security_opts(req.security_opt, caps=bundle.DEFAULT_CAPS)
        opts = bundle.RunOptions(
            command=tuple(req.command), entrypoint=req.entrypoint, env=tuple(env_file_entries + opts_env),
            user=req.user, workdir=req.workdir, hostname=req.hostname or "",
            memory=bundle.parse_memory(req.memory) if req.memory else None,
            cpu_quota=bundle.parse_cpus(req.cpus) if req.cpus else None,
            seccomp=security["seccomp"], no_new_privileges=security["no_new_privileges"],
        )
        if req.workdir and not req.workdir.startswith("/"):
            raise ConfigError(f"--workdir {req.workdir!r} is not an absolute path")
        reference.parse(req.image)
        return {"options": opts.to_json(), "ports": ports, "volumes": [s.to_json() for s in specs],
                "links": [list(x) for x in links], "restart": str(policy), "rm": req.rm,
                "auto_remove": req.rm and req.detach}

    def _image(self, ref: str, insecure: tuple[str, ...]):
        store = self._store()
        key = str(reference.parse(ref))
        try:
            return store.get_image(key)
        except ImageError:
            pass
        from .pull import pull

        log.info("unable to find image %r locally; pulling it", ref)
        try:
            return pull(ref, store, self.root, insecure_registries=insecure, runner=self.runner).record
        except ProvisionerError as exc:
            raise ImageError(f"unable to find image {ref!r} locally, and pulling it failed: {exc}") from exc

    def run(self, req: RunRequest) -> ContainerRecord:
        """Creates and starts a container; returns its record once the runtime has started it."""
        self.reap()
        config = self.check(req)
        for target, _alias in config["links"]:
            other = self.records.find(target)
            if other is None or not self.is_running(other):
                raise ContainerError(f"cannot link to {target}: no running container with that name")
        image = self._image(req.image, req.insecure_registries)
        config["image_config"] = (image.config or {}).get("config") or {}
        rec = self.records.reserve(req.name, req.image, image.id, config)
        undo: list[tuple[str, Callable[[], None]]] = [("record", lambda: self.records.delete(rec))]
        with self.records.op_lock(rec.id):
            try:
                self._create(rec, image, undo)
                self._start(rec, fresh=True, undo=undo)
            except BaseException:
                self._undo(rec, undo)
                raise
        return rec

    def _undo(self, rec: ContainerRecord, undo) -> None:
        for what, fn in reversed(undo):
            try:
                fn()
            except (ProvisionerError, OSError) as exc:
                log.warning("%s: rollback of %s failed: %s", rec.name, what, exc)

    def _create(self, rec: ContainerRecord, image, undo) -> None:
        d = self._dir(rec)
        rootfs = d / "rootfs"
        store = self._store()
        if image.top_chain:
            store.snapshot(image.top_chain, rootfs)
        else:
            btrfs.create(self.runner, rootfs)
        undo.append(("rootfs snapshot", lambda: btrfs.delete(self.runner, rootfs)))
        img_cfg = rec.config["image_config"]
        specs = [volumes.VolumeSpec.from_json(s) for s in rec.config["volumes"]]
        wanted = {s.destination for s in specs}
        for dest in sorted(img_cfg.get("Volumes") or {}):
            norm = os.path.normpath(dest)
            if norm not in wanted:  # the image's VOLUME: an anonymous volume unless -v covers it
                specs.append(volumes.VolumeSpec("anonymous", "", norm))
        resolved = []
        for s in specs:
            if s.kind == "bind":
                Path(s.source).mkdir(parents=True, exist_ok=True)  # docker run -v creates it too
                resolved.append(s)
                continue
            name = s.source or self.volumes.new_anonymous_name()
            if self.volumes.create(name, anonymous=s.kind == "anonymous"):
                undo.append((f"volume {name}", lambda n=name: self.volumes.remove(n)))
                self._copy_up(rootfs, s.destination, self.volumes.path(name))
            resolved.append(volumes.VolumeSpec(s.kind, name, s.destination, s.readonly))
        rec.config["mounts"] = [s.to_json() for s in resolved]
        workdir = rec.config["options"].get("workdir") or img_cfg.get("WorkingDir")
        if workdir:
            volumes.make_dir_in(rootfs, workdir)
        rec.state["phase"] = "created"
        self.records.save(rec)

    def _copy_up(self, rootfs: Path, dest: str, volume: Path) -> None:
        """A new volume starts with the image's content at its mount point (Docker does the same)."""
        src = volumes.resolve_in(rootfs, dest)
        if not src.is_dir() or src.is_symlink():
            return
        if any(src.iterdir()):
            self.runner.run(["cp", "-a", "--reflink=auto", "-T", str(src), str(volume)])
        st = src.stat()  # an empty directory still gives its owner and mode (redis's /var/lib/redis)
        os.chown(volume, st.st_uid, st.st_gid)
        os.chmod(volume, st.st_mode & 0o7777)

    def _bundle(self, rec: ContainerRecord, ep) -> Path:
        d = self._dir(rec)
        rootfs = d / "rootfs"
        opts = bundle.RunOptions.from_json(rec.config["options"])
        if not opts.hostname:
            opts = replace(opts, hostname=ep.hostname)
        mounts = []
        for m in rec.config.get("mounts", []):
            spec = volumes.VolumeSpec.from_json(m)
            src = spec.source if spec.kind == "bind" else str(self.volumes.path(spec.source))
            mounts.append(bundle.Mount(spec.destination, src, spec.readonly))
        inputs = bundle.BundleInputs(
            rootfs=str(rootfs), cgroups_path=f"{self.cgroup_parent}/{rec.id}",
            passwd=volumes.read_in(rootfs, "/etc/passwd"), group=volumes.read_in(rootfs, "/etc/group"),
            netns_path=ep.netns_path, network_mounts=ep.oci_mounts(), volume_mounts=mounts,
            link_env={**ep.env, **self._linked_env(rec)})
        cfg = bundle.build_config(rec.config["image_config"], opts, inputs)
        (d / "bundle").mkdir(exist_ok=True)
        atomic_write(d / "bundle" / "config.json", json.dumps(cfg, indent=2) + "\n")
        return d / "bundle"

    def _linked_env(self, rec: ContainerRecord) -> dict[str, str]:
        """<ALIAS>_ENV_<K> for each linked container's own environment (image Env + its -e), as
        Docker gives; the network layer knows addresses and ports, not environments."""
        out: dict[str, str] = {}
        for target, alias in rec.config.get("links", []):
            other = self.records.find(target)
            if other is None:
                continue
            env = dict(e.partition("=")[::2] for e in other.config["image_config"].get("Env") or [])
            env.update({k: v for k, v in other.config["options"].get("env") or []})
            prefix = network.hosts.env_prefix(alias)
            out.update({f"{prefix}_ENV_{k}": v for k, v in env.items() if k not in ("HOME", "PATH")})
        return out

    def _pin_mac(self, ep) -> None:
        """The container's MAC from its address, as Docker does (02:42 + the IPv4 bytes): a
        restarted container keeps its address, and with the same MAC its neighbours' ARP caches
        stay right (with a fresh random MAC, a linker reaches it again only after ~1 min)."""
        mac = "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ep.address).packed)
        self.runner.run(["nsenter", f"--net={ep.netns_path}", "ip", "link", "set", "dev", self.net.inner_ifname,
                         "address", mac])

    def _connect(self, rec: ContainerRecord):
        img_cfg = rec.config["image_config"]
        return network.connect(
            self.root, self.net, rec.name, runner=self.runner, paths=self.net_paths,
            hostname=rec.config["options"].get("hostname") or rec.id[:12], ports=list(rec.config["ports"]),
            exposed=bundle.exposed_ports(img_cfg), links=[tuple(x) for x in rec.config["links"]])

    def _start(self, rec: ContainerRecord, *, fresh: bool, undo=None) -> None:
        undo = undo if undo is not None else []
        if network.endpoint(self.root, rec.name) is None:
            ep = self._connect(rec)
            undo.append(("network", lambda: network.disconnect(self.root, self.net, rec.name, runner=self.runner,
                                                              keep_address=not fresh, paths=self.net_paths)))
            self._pin_mac(ep)
        else:
            ep = network.endpoint(self.root, rec.name)
        path = self._bundle(rec, ep)
        rt = self.runtime()
        self._reap_runtime(rt, rec.id)
        argv = [rt.path, "--root", rt.state_root, "run", "--bundle", str(path), rec.id]
        opts = bundle.RunOptions.from_json(rec.config["options"])
        supervise.start(rec.id, argv, rec.config.get("restart", "no"), self._dir(rec), self.supervise_dir,
                        runner=self.runner, stop_signal=bundle.stop_signal(rec.config["image_config"], opts),
                        stop_timeout=STOP_TIMEOUT, shim=self.shim, exit_command=self._exit_command(rec))
        undo.append(("supervisor", lambda: (self._halt(rec, 0),
                                            supervise.remove(rec.id, self._dir(rec), self.supervise_dir))))
        self._wait_started(rec, rt)
        rec.state.pop("stopped_by_user", None)
        self.records.save(rec)

    def _exit_command(self, rec: ContainerRecord) -> list[str] | None:
        """What the shim runs when a `run -d --rm` container is done: `container autoremove ID`
        with this Python and this package (found by path: the shim runs it from / with the
        caller's environment). An attached `run --rm` is removed by the CLI waiting for it."""
        if not rec.config.get("auto_remove"):
            return None
        boot = "import sys; sys.path.insert(0, sys.argv.pop(1)); from provisioner.cli.main import main; main()"
        return [sys.executable, "-c", boot, str(_PKG_PARENT), "--root", str(self.root.resolve()), "container",
                "autoremove", rec.id]

    def autoremove(self, ref: str) -> bool:
        """Removes a `--rm` container once it has exited (with its anonymous volumes); anything
        else, or a container already gone, is left alone. The shim's exit command; `reap` is
        the sweep that catches what it missed (a shim killed, an older record)."""
        rec = self.records.find(ref)
        if rec is None:
            return False
        with self.records.op_lock(rec.id):
            rec = self.records.find(rec.id)
            if rec is None or not rec.config.get("rm") or rec.state.get("phase") != "created" \
                    or self.status(rec).state not in ("exited", "dead"):
                return False  # gone, restarted meanwhile (`restart` holds the lock), or not --rm
            self._rm(rec, True, True)
            return True

    def _wait_started(self, rec: ContainerRecord, rt: Runtime) -> None:
        """Until the runtime reports the container running, or the supervisor's child ended.
        A runtime failure (bad config, missing executable) is the error of `run`/`start`."""
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            st = supervise.status(rec.id, self.supervise_dir, self._dir(rec))
            if st.status in ("running",) and st.restart_count == 0:
                try:
                    if rt.state(rec.id).status == "running":
                        return
                except ContainerError:
                    pass
            elif st.status in ("exited", "dead", "restarting") or st.restart_count:
                # the shim may record the exit before it has drained the last output into the log
                grace = time.monotonic() + (1.0 if st.exit_code else 0.0)
                while True:
                    err = self._runtime_error(rec)
                    if err:
                        raise ContainerError(f"cannot start container {rec.name}: {err}")
                    if time.monotonic() >= grace:
                        return
                    time.sleep(0.05)
            time.sleep(0.02)
        raise ContainerError(f"container {rec.name} did not start within {START_WAIT:g}s")

    def _runtime_error(self, rec: ContainerRecord) -> str | None:
        for line in supervise.logs(rec.id, self._dir(rec), state_dir=self.supervise_dir):
            text = line.text.strip()
            if line.stream == "stderr" and text.startswith(("provision-runtime:", "time=", "ERRO")):
                return text.removeprefix("provision-runtime: ")
        return None

    # ---- stop / start / restart / rm -----------------------------------------------------------
    def _reap_runtime(self, rt: Runtime, cid: str) -> None:
        """Make sure no runtime container with this id is left (its `run` was SIGKILLed)."""
        try:
            rt.state(cid)
        except ContainerError:
            return
        try:
            rt.kill(cid, "KILL", all_processes=True)
        except ContainerError:
            pass
        rt.delete(cid, force=True)

    def _halt(self, rec: ContainerRecord, timeout: float | None) -> None:
        supervise.stop(rec.id, self.supervise_dir, timeout, log_dir=self._dir(rec))
        self._reap_runtime(self.runtime(), rec.id)

    @contextlib.contextmanager
    def _locked(self, ref: str) -> Iterator[ContainerRecord]:
        """The record, under the container's operation lock (re-read once the lock is held:
        whoever held it before may have changed or removed the container)."""
        cid = self.records.get(ref).id
        with self.records.op_lock(cid):
            yield self.records.get(cid)

    def stop(self, ref: str, timeout: float | None = None) -> ContainerRecord:
        with self._locked(ref) as rec:
            return self._stop(rec, timeout)

    def _stop(self, rec: ContainerRecord, timeout: float | None) -> ContainerRecord:
        self._halt(rec, STOP_TIMEOUT if timeout is None else timeout)
        if network.endpoint(self.root, rec.name) is not None:
            network.disconnect(self.root, self.net, rec.name, runner=self.runner, keep_address=True,
                               paths=self.net_paths)
        rec.state["stopped_by_user"] = True
        self.records.save(rec)
        return rec

    def start(self, ref: str) -> ContainerRecord:
        with self._locked(ref) as rec:
            return self._start_stopped(rec)

    def _start_stopped(self, rec: ContainerRecord) -> ContainerRecord:
        if self.is_running(rec):
            return rec
        undo: list = []
        try:
            self._start(rec, fresh=False, undo=undo)
        except BaseException:
            self._undo(rec, undo)
            raise
        return rec

    def restart(self, ref: str, timeout: float | None = None) -> ContainerRecord:
        with self._locked(ref) as rec:
            self._stop(rec, timeout)
            return self._start_stopped(rec)

    def rm(self, ref: str, *, force: bool = False, remove_volumes: bool = False) -> ContainerRecord:
        with self._locked(ref) as rec:
            return self._rm(rec, force, remove_volumes)

    def _rm(self, rec: ContainerRecord, force: bool, remove_volumes: bool) -> ContainerRecord:
        if self.is_running(rec):
            if not force:
                raise ContainerError(f"container {rec.name} is running: stop it first or use rm -f")
            self._halt(rec, 0)
        else:
            self._reap_runtime(self.runtime(), rec.id)
        rec.state["phase"] = "removing"
        self.records.save(rec)
        supervise.remove(rec.id, self._dir(rec), self.supervise_dir)
        network.disconnect(self.root, self.net, rec.name, runner=self.runner, paths=self.net_paths)
        rootfs = self._dir(rec) / "rootfs"
        if btrfs.is_subvolume(rootfs):
            btrfs.delete(self.runner, rootfs)
        if remove_volumes:
            for m in rec.config.get("mounts", []):
                if m["kind"] == "anonymous":
                    self.volumes.remove(m["source"])
        self.records.delete(rec)
        return rec

    def reap(self) -> list[str]:
        """Removes `--rm` containers that have exited (a detached one has nobody waiting for it)."""
        gone = []
        for rec in self.records.all():
            if rec.config.get("rm") and rec.state.get("phase") == "created" \
                    and self.status(rec).state in ("exited", "dead"):
                try:
                    self.rm(rec.id, force=True, remove_volumes=True)
                except ContainerError:
                    if self.records.find(rec.id) is not None:
                        raise
                    continue  # removed meanwhile by another command
                gone.append(rec.name)
        return gone

    # ---- exec / logs / ps / inspect -------------------------------------------------------------
    def exec(self, ref: str, argv: list[str], *, env: tuple[str, ...] = (), user: str | None = None,
             workdir: str | None = None):
        """Runs `argv` in the running container through the Runner (output captured)."""
        return self.runner.run(self.exec_argv(ref, argv, env=env, user=user, workdir=workdir), check=False)

    def exec_attached(self, ref: str, argv: list[str], **kw) -> int:
        """`docker exec -i`: the command shares our stdin/stdout/stderr and its output appears as
        it is written, so this is a streaming process run with subprocess directly (the Runner
        captures output until exit). Returns its exit code."""
        import subprocess

        return subprocess.run(self.exec_argv(ref, argv, **kw)).returncode

    def exec_tty(self, ref: str, argv: list[str], *, interactive: bool, **kw) -> int:
        """`docker exec -t[i]`: the command gets a pty (the runtime's console socket) proxied to our
        stdin/stdout; returns its exit code."""
        from . import console

        with console.console_socket() as (sock, path):
            full = self.exec_argv(ref, argv, console_socket=path, **kw)
            return console.run_with_tty(full, sock, interactive=interactive)

    def exec_argv(self, ref: str, argv: list[str], *, env: tuple[str, ...] = (), user: str | None = None,
                  workdir: str | None = None, console_socket: str | None = None) -> list[str]:
        rec = self.records.get(ref)
        if not self.is_running(rec):
            raise ContainerError(f"container {rec.name} is not running")
        rt = self.runtime()
        args = [rt.path, "--root", rt.state_root, "exec"]
        if console_socket:
            args += ["--tty", "--console-socket", console_socket]
        for k, v in bundle.parse_env(env):
            args += ["--env", f"{k}={v}"]
        if workdir:
            args += ["--cwd", workdir]
        if user:
            rootfs = self._dir(rec) / "rootfs"
            u = bundle.resolve_user(user, volumes.read_in(rootfs, "/etc/passwd"), volumes.read_in(rootfs, "/etc/group"))
            args += ["--user", f"{u.uid}:{u.gid}"]
        return args + [rec.id, "--", *argv]

    def logs(self, ref: str, *, tail: int | None = None, follow: bool = False) -> Iterator[supervise.LogLine]:
        rec = self.records.get(ref)
        return supervise.logs(rec.id, self._dir(rec), tail=tail, follow=follow, state_dir=self.supervise_dir)

    def wait(self, rec: ContainerRecord) -> Status:
        while self.is_running(rec):
            time.sleep(0.05)
        return self.status(rec)

    def ps(self, all_: bool = False) -> list[dict]:
        self.reap()
        out = []
        for rec in self.records.all():
            st = self.status(rec)
            if not all_ and st.state not in ("running", "restarting"):
                continue
            out.append(self.describe(rec, st))
        return out

    def describe(self, rec: ContainerRecord, st: Status | None = None) -> dict:
        st = st or self.status(rec)
        ep = network.endpoint(self.root, rec.name)
        return {"id": rec.id, "name": rec.name, "image": rec.image, "image_id": rec.image_id,
                "created": rec.created, "status": st.to_json(), "restart": rec.config.get("restart", "no"),
                "command": _command(rec), "ports": [str(p) for p in ep.ports] if ep else list(rec.config["ports"]),
                "address": ep.address if ep else None, "mounts": rec.config.get("mounts", []),
                "options": rec.config["options"], "links": rec.config["links"]}

    def inspect(self, ref: str) -> dict:
        rec = self.records.get(ref)
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
