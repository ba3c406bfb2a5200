"""`run`: check a request, create a container (snapshot, volumes, bundle) and start it under its
supervisor; also the start step `start`/`restart` reuse. Part of lifecycle.Manager (a mixin: the
Manager holds root, runner, records, volumes, net and the runtime settings).

`run` checks every input first, then creates step by step with an undo stack: a failure at any
step removes whatever the earlier steps made (snapshot, volumes it created, netns, veth, rules,
record) before the error is raised.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .. import network
from ..errors import ConfigError, ContainerError, ImageError, ProvisionerError
from ..fsutil import atomic_write
from ..images import btrfs, reference
from ..runspec import seccomp
from ..runspec.env import parse_env, parse_env_file
from ..runspec.health import resolve as resolve_health
from ..runspec.mounts import VolumeSpec
from ..runspec.process import DEFAULT_STOP_TIMEOUT, check_platform
from ..runspec.request import RunRequest
from . import bundle, cgroupparent, hostfacts, netmode, rootfsmount, supervise, volumes
from .container import ContainerRecord, check_name
from .runtime import Runtime

log = logging.getLogger("provisioner.containers.lifecycle")

_PKG_PARENT = Path(__file__).resolve().parents[2]  # the directory holding the provisioner package
STOP_TIMEOUT = DEFAULT_STOP_TIMEOUT
START_WAIT = 15.0
RELAY_DIR = "/run/provisioner/attach"


def stop_timeout(rec: ContainerRecord) -> float:
    """--stop-timeout / stop_grace_period: seconds from the stop signal to SIGKILL (-1: for ever)."""
    t = rec.config.get("stop_timeout")
    if t is None:
        return STOP_TIMEOUT
    return 365 * 86400.0 if t < 0 else float(t)


# the exit command's program: `container autoremove` — unless the record is gone or already being
# removed (by an Engine API client waiting for the removal, which got there first), seen before the
# CLI's imports, the bulk of its 0.3 s and more (autoremove checks the same again under the lock)
_AUTOREMOVE_BOOT = """import json, sys
try:
    with open(sys.argv[3] + "/containers/" + sys.argv[-1] + "/container.json") as f:
        if (json.load(f).get("state") or {}).get("phase") != "created":
            sys.exit(0)
except FileNotFoundError:
    sys.exit(0)
except (OSError, ValueError, AttributeError):
    pass
sys.path.insert(0, sys.argv.pop(1)); from provisioner.cli.main import main; main()
"""


class Creating:
    """check / run and the steps of creating and starting a container."""

    def check(self, req: RunRequest) -> dict:
        """What needs the host checked (name, env files, platform, bind sources), nothing touched:
        the container's config. The request's values were parsed and checked when it was made."""
        if req.name:
            check_name(req.name)
        env_file_entries: list[tuple[str, str]] = []
        for f in req.env_files:
            try:
                text = Path(f).read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read env file ({exc.strerror})", f) from exc
            env_file_entries += parse_env_file(text, f)
        if req.platform is not None:
            check_platform(req.platform)
        for v in req.volumes:
            if v.kind == "bind" and not v.create_host_path and not os.path.exists(v.source):
                raise ContainerError(f"bind mount source {v.source} does not exist (a long-syntax or --mount bind "
                                     "is not created; make it, or set bind.create_host_path)")
        host_network = req.network_mode is not None and req.network_mode.kind == "host"
        caps = None if req.privileges.is_default() else req.privileges.capabilities(hostfacts.last_cap())
        opts = bundle.RunOptions(
            command=tuple(req.command), entrypoint=req.entrypoint, env=tuple(env_file_entries + parse_env(req.env)),
            user=req.user, workdir=req.workdir, hostname=req.hostname or "", memory=req.memory,
            cpu_quota=req.cpu_quota, stop_signal=req.stop_signal,
            seccomp=seccomp.profile_for(req.security, caps or bundle.DEFAULT_CAPS),
            no_new_privileges=req.security.no_new_privileges, caps=tuple(caps) if caps is not None else None,
            privileged=req.privileges.privileged, read_only=req.read_only,
            ulimits=tuple((u.oci()["type"], u.oci()["soft"], u.oci()["hard"]) for u in req.ulimits),
            sysctls=req.sysctls, pids_limit=req.pids_limit, shm_size=req.shm_size,
            memory_reservation=req.memory_reservation, cpu_shares=req.cpu_shares, init=req.init, tty=req.tty,
            group_add=req.group_add,
        )
        reference.parse(req.image)
        config = {"options": opts.to_json(), "ports": [str(m) for m in req.ports],
                  "volumes": [s.to_json() for s in req.volumes], "links": [list(x) for x in req.links],
                  "restart": str(req.restart), "rm": req.rm, "auto_remove": req.rm and req.detach,
                  # a stack's own check; run() decides between it, the image's and the flags
                  **({"healthcheck": req.healthcheck.to_json()} if req.healthcheck else {})}
        # added with compose's keys: recorded only when set, so older records read the same
        later = {"networks": [a.to_json() for a in req.networks],
                 "network_mode": str(req.network_mode) if req.network_mode else None,
                 "extra_hosts": [[h.name, h.address] for h in req.extra_hosts],
                 "dns": [list(req.dns.servers), list(req.dns.search), list(req.dns.options)]
                 if not req.dns.is_default() else None,
                 "labels": dict(req.labels), "files": [f.to_json() for f in req.files],
                 "stop_timeout": req.stop_timeout, "keep_stdin": req.interactive or None,
                 "log": {"max_size": req.log.max_size, "max_files": req.log.max_files}
                 if (req.log.max_size or req.log.max_files) else None,
                 "host_network": host_network or None, "balance": req.balance_group,
                 "cloud_metadata": req.cloud_metadata or None, "replaces": req.replaces,
                 # the Engine API's OpenStdin/StdinOnce: attached clients feed it (containers.relay)
                 "stdin_open": req.interactive or None, "stdin_once": (req.interactive and req.stdin_once) or None}
        config.update({k: v for k, v in later.items() if v not in (None, [], {})})
        return config

    def _image(self, ref: str, insecure: tuple[str, ...], pull: str = "missing"):
        store = self._store()
        key = str(reference.parse(ref))
        if pull != "always":
            try:
                return store.get_image(key)
            except ImageError:
                if pull == "never":
                    raise ImageError(f"image {ref!r} is not here and its pull policy is never") from None
        from ..images.pull import pull as pull_image
        from ..images.sources import PullSettings

        log.info("pulling image %r (pull policy %s)", ref, pull)
        try:
            settings = PullSettings.here(insecure, self.runner)   # a host's remaps and delivered credentials
            return pull_image(ref, store, self.root, settings=settings).record
        except ProvisionerError as exc:
            raise ImageError(f"unable to find image {ref!r} locally, and pulling it failed: {exc}") from exc

    def run(self, req: RunRequest, *, start: bool = True, foreground: bool = False) -> ContainerRecord:
        """Creates and starts a container; returns its record once the runtime has started it.
        `start=False` (the Engine API's create): made, not started; `start` starts it.
        `foreground` (run -i/-t without -d): the runtime runs attached to this process's terminal
        with no supervisor, and run returns once it has exited (rec.state["exit_code"])."""
        if foreground and str(req.restart) != "no":
            raise ConfigError("--restart needs -d with -i/-t here (attached, nobody supervises the container)")
        self.reap()
        config = self.check(req)
        for target, _alias in config["links"]:
            other = self.records.find(target)
            if other is None or not self.is_running(other):
                raise ContainerError(f"cannot link to {target}: no running container with that name")
        if req.network_mode is not None and req.network_mode.kind == "container":
            other = self.records.find(req.network_mode.container)
            if other is None or not self.is_running(other):
                raise ContainerError(f"cannot join {req.network_mode.container}'s network: no running container "
                                     "with that name")
        image = self._image(req.image, req.insecure_registries, req.pull)
        config["image_config"] = (image.config or {}).get("config") or {}
        # the image's HEALTHCHECK unless the run changes, replaces or disables it; run by the shim
        health = resolve_health(req.health_flags, config["image_config"], config.pop("healthcheck", None))
        if health is not None:
            config["healthcheck"] = health
        rec = self.records.reserve(req.name, req.image, image.id, config)
        undo: list[tuple[str, Callable[[], None]]] = [("record", lambda: self.records.delete(rec))]
        with self.records.op_lock(rec.id):
            try:
                self._create(rec, image, undo)
                hostfacts.write_files(self._dir(rec), req.files)
                if foreground:
                    path, rt = self._ready(rec, fresh=True, undo=undo)
                elif start:
                    self._start(rec, fresh=True, undo=undo)
            except BaseException:
                self._undo(rec, undo)
                raise
        if foreground:
            self._attached(rec, path, rt)
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
        undo.append(("rootfs snapshot", lambda: (rootfsmount.release(self.runner, rootfs),
                                                  btrfs.delete(self.runner, rootfs))))
        img_cfg = rec.config["image_config"]
        specs = [VolumeSpec.from_json(s) for s in rec.config["volumes"]]
        wanted = {s.destination for s in specs}
        for dest in sorted(img_cfg.get("Volumes") or {}):
            norm = os.path.normpath(dest)
            if norm not in wanted:  # the image's VOLUME: an anonymous volume unless -v covers it
                specs.append(VolumeSpec("anonymous", "", norm))
        resolved = []
        for s in specs:
            if s.kind == "tmpfs":
                resolved.append(s)
                continue
            if s.kind == "bind":
                if s.create_host_path:
                    Path(s.source).mkdir(parents=True, exist_ok=True)  # docker run -v creates it too
                resolved.append(s)
                continue
            name = s.source or self.volumes.new_anonymous_name()
            if self.volumes.create(name, anonymous=s.kind == "anonymous"):
                undo.append((f"volume {name}", lambda n=name: self.volumes.remove(n)))
                if not s.nocopy and not s.subpath:
                    self._copy_up(rootfs, s.destination, self.volumes.path(name))
            if s.subpath and not (self.volumes.path(name) / s.subpath).is_dir():
                raise ContainerError(f"volume {name} has no directory {s.subpath} (its subpath for {s.destination})")
            resolved.append(replace(s, source=name))
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
        if not opts.hostname or ep.host_network:
            opts = replace(opts, hostname=ep.hostname)
        mounts = []
        for m in rec.config.get("mounts", []):
            spec = VolumeSpec.from_json(m)
            if spec.kind == "tmpfs":
                mounts.append(bundle.Mount(spec.destination, "tmpfs", spec.readonly, "tmpfs",
                                           options=spec.tmpfs_options))
                continue
            src = spec.source if spec.kind == "bind" else str(self.volumes.path(spec.source))
            if spec.subpath:
                src = str(Path(src) / spec.subpath)
            mounts.append(bundle.Mount(spec.destination, src, spec.readonly, propagation=spec.propagation))
        mounts += hostfacts.file_mounts(d, rec.config.get("files", ()))
        inputs = bundle.BundleInputs(
            rootfs=str(rootfs), cgroups_path=f"{self.cgroup_parent}/{rec.id}",
            passwd=volumes.read_in(rootfs, "/etc/passwd"), group=volumes.read_in(rootfs, "/etc/group"),
            netns_path=ep.netns_path, network_mounts=ep.mounts, volume_mounts=mounts,
            link_env={**(ep.env or {}), **self._linked_env(rec)}, host_network=ep.host_network,
            init_path=hostfacts.init_path() if opts.init else None,
            host_devices=hostfacts.devices() if opts.privileged else (), last_cap=hostfacts.last_cap())
        cfg = bundle.build_config(rec.config["image_config"], opts, inputs)
        (d / "bundle").mkdir(mode=0o700, exist_ok=True)
        # the container's environment is in it: root's alone
        atomic_write(d / "bundle" / "config.json", json.dumps(cfg, indent=2) + "\n", mode=0o600)
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
        """Each interface's MAC from its address, as Docker does (02:42 + the IPv4 bytes): a restarted
        container keeps its addresses, and with the same MACs its neighbours' ARP caches stay right
        (with a fresh random MAC, a linker reaches it again only after ~1 min)."""
        for att in ep.attachments:
            mac = "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(att.address).packed)
            self.runner.run(["nsenter", f"--net={ep.netns_path}", "ip", "link", "set", "dev", att.ifname,
                             "address", mac])

    def _ready(self, rec: ContainerRecord, *, fresh: bool, undo) -> tuple[Path, Runtime]:
        """The network (connected, or reconnected after a reboot) and the bundle of a start."""
        if not netmode.needs_endpoint(rec):
            pass
        elif network.endpoint(self.root, rec.name) is None:
            ep = netmode.connect(self, rec, bundle.exposed_ports(rec.config["image_config"]))
            undo.append(("network", lambda: network.disconnect(self.root, self.net, rec.name, runner=self.runner,
                                                              keep_address=not fresh, paths=self.net_paths)))
            self._pin_mac(ep)
        else:
            ep = network.endpoint(self.root, rec.name)
            if ep.netns_path and not os.path.exists(ep.netns_path):
                # after a reboot (netns, veth, bridge and rules gone): bring the recorded endpoint
                # back as it was, as the boot-time restore does for what it restarts itself
                network.reconnect(self.root, self.net, rec.name, runner=self.runner, paths=self.net_paths)
        rootfsmount.ensure(self.runner, self._dir(rec) / "rootfs")   # setuid works on a nosuid store
        path = self._bundle(rec, netmode.placement(self, rec, rec.id[:12]))
        rt = self.runtime()
        self._reap_runtime(rt, rec.id)
        cgroupparent.delegate(self.cgroup_parent, self.cgroup_mount)   # v2: the files docker stats reads
        return path, rt

    def _start(self, rec: ContainerRecord, *, fresh: bool, undo=None) -> None:
        undo = undo if undo is not None else []
        path, rt = self._ready(rec, fresh=fresh, undo=undo)
        argv = [rt.path, "--root", rt.state_root, "run", "--bundle", str(path), rec.id]
        opts = bundle.RunOptions.from_json(rec.config["options"])
        logcfg = rec.config.get("log") or {}
        relayed = bool(opts.tty or rec.config.get("stdin_open"))
        if relayed:
            argv = self._relay_argv(rec, opts.tty) + argv
        supervise.start(rec.id, argv, rec.config.get("restart", "no"), self._dir(rec), self.supervise_dir,
                        runner=self.runner, stop_signal=bundle.stop_signal(rec.config["image_config"], opts),
                        stop_timeout=stop_timeout(rec), shim=self.shim, exit_command=self._exit_command(rec),
                        health=self._health(rec, rt), keep_stdin=bool(rec.config.get("keep_stdin")) and not relayed,
                        on_change=self._agent_command(rec, "balance", rec.config["balance"])
                        if rec.config.get("balance") else None,
                        **({"log_max_size": logcfg["max_size"]} if logcfg.get("max_size") else {}),
                        **({"log_max_files": logcfg["max_files"]} if logcfg.get("max_files") else {}))
        undo.append(("supervisor", lambda: (self._halt(rec, 0),
                                            supervise.remove(rec.id, self._dir(rec), self.supervise_dir))))
        self._wait_started(rec, rt)
        rec.state.pop("stopped_by_user", None)
        self.records.save(rec)
        if rec.config.get("balance"):
            self.rebalance(rec.config["balance"])

    def _health(self, rec: ContainerRecord, rt: Runtime) -> supervise.HealthCheck | None:
        """The shim runs the healthcheck as `exec` does (the runtime's exec of the test into the
        container, as the container's user); --pid-file names what to kill when a check times out."""
        hc = rec.config.get("healthcheck")
        if not hc:
            return None
        pid_file = str(supervise.ShimPaths.of(rec.id, self._dir(rec), self.supervise_dir).health_pid)
        argv = (rt.path, "--root", rt.state_root, "exec", "--pid-file", pid_file, rec.id, "--", *hc["test"])
        return supervise.HealthCheck(argv, hc["interval"], hc["timeout"], hc["retries"], hc["start_period"],
                                     start_interval=hc.get("start_interval", 0.0),
                                     pid_file=pid_file)

    def relay_socket(self, rec: ContainerRecord) -> Path:
        """Where a container with a tty or an open stdin takes attached clients (containers.relay):
        a short path (a unix socket's is at most 107 bytes), root's alone."""
        d = Path(RELAY_DIR)
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        return d / f"{rec.id}.sock"

    def _relay_argv(self, rec: ContainerRecord, tty: bool) -> list[str]:
        boot = "import sys; sys.path.insert(0, sys.argv.pop(1)); from provisioner.containers.relay import main; " \
               "sys.exit(main())"
        return [sys.executable, "-c", boot, str(_PKG_PARENT), "--socket", str(self.relay_socket(rec)),
                *(["--tty"] if tty else []), *(["--stdin"] if rec.config.get("stdin_open") else []),
                *(["--stdin-once"] if rec.config.get("stdin_once") else []), "--"]

    def _exit_command(self, rec: ContainerRecord) -> list[str] | None:
        """What the shim runs when a `run -d --rm` container is done: `container autoremove ID`.
        An attached `run --rm` is removed by the CLI waiting for it."""
        if not rec.config.get("auto_remove"):
            return None
        return [sys.executable, "-c", _AUTOREMOVE_BOOT, str(_PKG_PARENT), "--root", str(self.root.resolve()),
                "container", "autoremove", rec.id]

    def _agent_command(self, rec: ContainerRecord, *args: str) -> list[str]:
        """`provision --root R container ARGS…` with this Python and this package (found by path:
        the shim runs it from / with the caller's environment)."""
        boot = "import sys; sys.path.insert(0, sys.argv.pop(1)); from provisioner.cli.main import main; main()"
        return [sys.executable, "-c", boot, str(_PKG_PARENT), "--root", str(self.root.resolve()), "container",
                *args]

    def rebalance(self, group: str) -> list:
        """Points replica group `group`'s published ports at its ready replicas: running, and healthy
        when they have a healthcheck (the shim runs `container balance GROUP` on each change)."""
        ready = []
        for rec in self.records.all():
            if rec.config.get("balance") != group:
                continue
            st = self.status(rec)
            if st.state != "running":
                continue
            if rec.config.get("healthcheck"):
                health = self.health(rec)
                if health is None or health.status != "healthy":
                    continue
            ready.append(rec.name)
        return network.set_balance(self.root, self.net, group, ready, runner=self.runner, paths=self.net_paths)

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
