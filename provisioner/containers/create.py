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
from ..runspec.request import RunRequest
from . import bundle, cgroupparent, rootfsmount, supervise, volumes
from .container import ContainerRecord, check_name
from .runtime import Runtime

log = logging.getLogger("provisioner.containers.lifecycle")

_PKG_PARENT = Path(__file__).resolve().parents[2]  # the directory holding the provisioner package
STOP_TIMEOUT = 10.0
START_WAIT = 15.0
RELAY_DIR = "/run/provisioner/attach"


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
        """What needs the host checked (name, env files), nothing touched: the container's config.
        The request's values were parsed and checked when it was made."""
        if req.name:
            check_name(req.name)
        env_file_entries: list[tuple[str, str]] = []
        for f in req.env_files:
            try:
                text = Path(f).read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read env file ({exc.strerror})", f) from exc
            env_file_entries += parse_env_file(text, f)
        opts = bundle.RunOptions(
            command=tuple(req.command), entrypoint=req.entrypoint, env=tuple(env_file_entries + parse_env(req.env)),
            user=req.user, workdir=req.workdir, hostname=req.hostname or "", memory=req.memory,
            cpu_quota=req.cpu_quota, seccomp=seccomp.profile_for(req.security, bundle.DEFAULT_CAPS),
            no_new_privileges=req.security.no_new_privileges, tty=req.tty,
        )
        reference.parse(req.image)
        return {"options": opts.to_json(), "ports": [str(m) for m in req.ports],
                "volumes": [s.to_json() for s in req.volumes], "links": [list(x) for x in req.links],
                "restart": str(req.restart), "rm": req.rm, "auto_remove": req.rm and req.detach,
                **({"cloud_metadata": True} if req.cloud_metadata else {}),
                **({"labels": dict(req.labels)} if req.labels else {}),
                **({"stdin_open": True, "stdin_once": req.stdin_once} if req.interactive else {}),
                **({"replaces": req.replaces} if req.replaces else {}),
                **({"networks": [[n, list(a)] for n, a in network.normalize_groups(req.networks)]}
                   if req.networks else {}),
                # a stack's own check; run() decides between it, the image's and the flags
                **({"healthcheck": req.healthcheck.to_json()} if req.healthcheck else {})}

    def _image(self, ref: str, insecure: tuple[str, ...]):
        store = self._store()
        key = str(reference.parse(ref))
        try:
            return store.get_image(key)
        except ImageError:
            pass
        from ..images.pull import pull
        from ..images.sources import PullSettings

        log.info("unable to find image %r locally; pulling it", ref)
        try:
            settings = PullSettings.here(insecure, self.runner)   # a host's remaps and delivered credentials
            return pull(ref, store, self.root, settings=settings).record
        except ProvisionerError as exc:
            raise ImageError(f"unable to find image {ref!r} locally, and pulling it failed: {exc}") from exc

    def run(self, req: RunRequest, *, start: bool = True) -> ContainerRecord:
        """Creates and starts a container; returns its record once the runtime has started it.
        `start=False` (the Engine API's create): made, not started; `start` starts it."""
        self.reap()
        config = self.check(req)
        for target, _alias in config["links"]:
            other = self.records.find(target)
            if other is None or not self.is_running(other):
                raise ContainerError(f"cannot link to {target}: no running container with that name")
        image = self._image(req.image, req.insecure_registries)
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
                if start:
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
            if s.kind == "bind":
                Path(s.source).mkdir(parents=True, exist_ok=True)  # docker run -v creates it too
                resolved.append(s)
                continue
            name = s.source or self.volumes.new_anonymous_name()
            if self.volumes.create(name, anonymous=s.kind == "anonymous"):
                undo.append((f"volume {name}", lambda n=name: self.volumes.remove(n)))
                self._copy_up(rootfs, s.destination, self.volumes.path(name))
            resolved.append(VolumeSpec(s.kind, name, s.destination, s.readonly))
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
            spec = VolumeSpec.from_json(m)
            src = spec.source if spec.kind == "bind" else str(self.volumes.path(spec.source))
            mounts.append(bundle.Mount(spec.destination, src, spec.readonly))
        inputs = bundle.BundleInputs(
            rootfs=str(rootfs), cgroups_path=f"{self.cgroup_parent}/{rec.id}",
            passwd=volumes.read_in(rootfs, "/etc/passwd"), group=volumes.read_in(rootfs, "/etc/group"),
            netns_path=ep.netns_path, network_mounts=ep.oci_mounts(), volume_mounts=mounts,
            link_env={**ep.env, **self._linked_env(rec)})
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
            exposed=bundle.exposed_ports(img_cfg), links=[tuple(x) for x in rec.config["links"]],
            metadata=bool(rec.config.get("cloud_metadata")), standby_for=self._standing_by(rec),
            groups=[(n, tuple(a)) for n, a in rec.config.get("networks") or []])

    def _standing_by(self, rec: ContainerRecord) -> str | None:
        """The container whose ports `rec` is to take over, while that one still has them."""
        old = rec.config.get("replaces")
        return old if old and network.endpoint(self.root, old) is not None else None

    def _start(self, rec: ContainerRecord, *, fresh: bool, undo=None) -> None:
        undo = undo if undo is not None else []
        if network.endpoint(self.root, rec.name) is None:
            ep = self._connect(rec)
            undo.append(("network", lambda: network.disconnect(self.root, self.net, rec.name, runner=self.runner,
                                                              keep_address=not fresh, paths=self.net_paths)))
            self._pin_mac(ep)
        else:
            ep = network.endpoint(self.root, rec.name)
            if ep.netns_path and not os.path.exists(ep.netns_path):
                # after a reboot (netns, veth, bridge and rules gone): bring the recorded endpoint
                # back as it was, as the boot-time restore does for what it restarts itself
                ep = network.reconnect(self.root, self.net, rec.name, runner=self.runner, paths=self.net_paths)
        rootfsmount.ensure(self.runner, self._dir(rec) / "rootfs")   # setuid works on a nosuid store
        path = self._bundle(rec, ep)
        rt = self.runtime()
        self._reap_runtime(rt, rec.id)
        cgroupparent.delegate(self.cgroup_parent, self.cgroup_mount)   # v2: the files docker stats reads
        argv = [rt.path, "--root", rt.state_root, "run", "--bundle", str(path), rec.id]
        opts = bundle.RunOptions.from_json(rec.config["options"])
        if opts.tty or rec.config.get("stdin_open"):
            argv = self._relay_argv(rec, opts.tty) + argv
        supervise.start(rec.id, argv, rec.config.get("restart", "no"), self._dir(rec), self.supervise_dir,
                        runner=self.runner, stop_signal=bundle.stop_signal(rec.config["image_config"], opts),
                        stop_timeout=STOP_TIMEOUT, shim=self.shim, exit_command=self._exit_command(rec),
                        health=self._health(rec, rt))
        undo.append(("supervisor", lambda: (self._halt(rec, 0),
                                            supervise.remove(rec.id, self._dir(rec), self.supervise_dir))))
        self._wait_started(rec, rt)
        rec.state.pop("stopped_by_user", None)
        self.records.save(rec)

    def _health(self, rec: ContainerRecord, rt: Runtime) -> supervise.HealthCheck | None:
        """The shim runs the healthcheck as `exec` does (the runtime's exec of the test into the
        container, as the container's user); --pid-file names what to kill when a check times out."""
        hc = rec.config.get("healthcheck")
        if not hc:
            return None
        pid_file = str(supervise.ShimPaths.of(rec.id, self._dir(rec), self.supervise_dir).health_pid)
        argv = (rt.path, "--root", rt.state_root, "exec", "--pid-file", pid_file, rec.id, "--", *hc["test"])
        return supervise.HealthCheck(argv, hc["interval"], hc["timeout"], hc["retries"], hc["start_period"],
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
        """What the shim runs when a `run -d --rm` container is done: `container autoremove ID`
        with this Python and this package (found by path: the shim runs it from / with the
        caller's environment). An attached `run --rm` is removed by the CLI waiting for it."""
        if not rec.config.get("auto_remove"):
            return None
        return [sys.executable, "-c", _AUTOREMOVE_BOOT, str(_PKG_PARENT), "--root", str(self.root.resolve()),
                "container", "autoremove", rec.id]

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
