"""The local cloud: qemu VMs on this machine, launched, inspected and destroyed like cloud hosts.

State is kept per host under `<root>/local/<stack>/<host>/` (state.json, overlay, seed, console
log, ephemeral disks, `volumes/`). A failed launch removes what it created and leaves nothing
running; destroy stops qemu (which frees its forwarded ports) and removes the files, keeping
`volumes/` when asked to.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ... import hostos
from ...errors import CloudError, CommandError
from ...fsutil import atomic_write
from ...runner import Runner
from ...sysinfo import kvm_usable
from ...vmimage import VmImage, open_image
from . import qemu, state
from .console import read_host_keys
from .seed import build_seed
from .spec import DiskPlan, VmSpec, plan_disks
from .state import VmState

ACCEL_FILE = "accel.json"


class LocalCloud:
    name = "local"

    def __init__(self, root: Path, runner: Runner | None = None, *, image: Path | VmImage | None = None,
                 cache: Path | None = None, accel: str | None = None,
                 progress: Callable[[str], None] = lambda _m: None):
        self.root = Path(root)
        self.runner = runner or Runner()
        self._image = image
        self.cache = cache
        self.accel = accel or os.environ.get("PROVISION_LOCAL_ACCEL", "auto")
        if self.accel not in ("auto", "kvm", "tcg"):
            raise CloudError(f"local cloud: accelerator {self.accel!r} unknown (auto, kvm or tcg)")
        self.progress = progress

    # ---- reading ---------------------------------------------------------------------------
    def image(self, system: str = hostos.DEFAULT) -> VmImage:
        """The image a VM of host OS `system` boots: the one given, else the build for that OS."""
        if isinstance(self._image, VmImage):
            return self._image
        return open_image(self._image, self.runner, self.cache, system=system)

    def host_dir(self, stack: str, host: str) -> Path:
        return state.host_dir(self.root, stack, host)

    def status(self, stack: str | None = None) -> list[dict]:
        base = self.root / "local"
        stacks = [stack] if stack else sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        out = []
        for s in stacks:
            sdir = base / s
            if not sdir.is_dir():
                continue
            for hdir in sorted(p for p in sdir.iterdir() if p.is_dir()):
                st = state.load(hdir)
                if st is None:
                    continue
                alive = state.qemu_alive(st.pid, hdir)
                out.append({"stack": s, "host": st.host, "cloud": "local",
                            "state": "running" if alive else "stopped", "pid": st.pid if alive else None,
                            "ssh": f"{st.user}@127.0.0.1:{st.ssh_port}", "ports": st.ports,
                            "disks": st.disks, "accel": st.accel, "boot_seconds": st.boot_seconds,
                            "fingerprints": [f["sha256"] for f in st.fingerprints]})
        return out

    def state(self, stack: str, host: str) -> VmState:
        st = state.load(self.host_dir(stack, host))
        if st is None:
            raise CloudError(f"local cloud: no host {host!r} in stack {stack!r} (not launched)")
        return st

    # ---- acting ----------------------------------------------------------------------------
    def launch(self, spec: VmSpec, *, wait: bool = True, timeout: float = 600.0) -> VmState:
        spec.validate()
        directory = self.host_dir(spec.stack, spec.host)
        old = state.load(directory)
        if old is not None and state.qemu_alive(old.pid, directory):
            raise CloudError(f"local cloud: host {spec.host!r} of stack {spec.stack!r} is already running "
                             f"(pid {old.pid}); destroy it first")
        image = self.image(spec.os)  # ImageError (one clear line) before anything is created
        for p in spec.ports:
            if not state.port_free(p.host_port, p.proto):
                raise CloudError(f"local cloud: port 127.0.0.1:{p.host_port}/{p.proto} (forward to "
                                 f"{spec.host}:{p.guest_port}) is already in use; pick another host port")
        created: list[Path] = []
        existed = directory.exists()
        try:
            st = self._create_and_start(spec, image, directory, created)
            if wait:
                self.wait_ready(st, timeout=timeout)
            return st
        except BaseException:
            self._undo(directory, created, existed)
            raise

    def _create_and_start(self, spec: VmSpec, image: VmImage, directory: Path, created: list[Path]) -> VmState:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / state.VOLUMES).mkdir(exist_ok=True)
        instance_id = "i-" + secrets.token_hex(8)
        disks = plan_disks(spec, instance_id)
        files = qemu.QemuFiles(overlay=directory / "root.qcow2", seed=directory / "seed.iso",
                               console=directory / "console.log", pidfile=directory / "qemu.pid",
                               state_dir=directory)
        for f in (files.overlay, files.seed, files.console, files.pidfile):
            f.unlink(missing_ok=True)
            created.append(f)
        self.progress(f"local: {spec.host}: overlay on {image.disk}")
        self.runner.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.disk), "-F", image.format,
                         str(files.overlay), f"{spec.root_gb}G"])
        for d in disks:
            path = directory / d.file
            if d.role == "volume":
                # What a volume is outlives the VM's state.json (destroy --keep-volumes).
                meta = path.with_suffix(".json")
                if not path.exists():
                    created.append(meta)
                atomic_write(meta, json.dumps({"serial": d.serial, "keep": d.keep}) + "\n")
                if path.exists():
                    continue  # a kept volume: reattach it as is, never recreate it
            path.unlink(missing_ok=True)
            created.append(path)
            self.runner.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{d.size_mb}M"])
        seed_dir = directory / "seed"
        created.append(seed_dir)
        build_seed(spec, instance_id, seed_dir, files.seed, self.runner)
        st = VmState(stack=spec.stack, host=spec.host, user=spec.user, instance_id=instance_id,
                     ports=[asdict(p) for p in spec.ports], disks=[asdict(d) for d in disks],
                     image=str(image.disk))
        created.append(directory / state.STATE)
        self._start(spec, image, files, disks, st)
        return st

    def _start(self, spec: VmSpec, image: VmImage, files: qemu.QemuFiles, disks: list[DiskPlan],
               st: VmState) -> None:
        accel = self._choose_accel()
        ssh_port = state.free_port()
        argv = qemu.argv(spec, image, files, disks, ssh_port, accel)
        self.progress(f"local: {spec.host}: starting qemu ({accel}, {spec.memory_mb} MiB, ssh on 127.0.0.1:{ssh_port})")
        st.started = time.time()
        try:
            # qemu -daemonize returns once the VM is set up (or failed to be), so the Runner
            # seam suffices: errors such as a taken forward come back as a failed command.
            self.runner.run(argv, timeout=60)
        except CommandError as exc:
            if "host forwarding rule" in exc.stderr:
                rule = exc.stderr.split("rule", 1)[1].strip().strip("'").split("'")[0]
                raise CloudError(f"local cloud: port forward {rule} could not be set up: the port is already in "
                                 f"use on 127.0.0.1") from exc
            raise CloudError(f"local cloud: qemu failed to start {spec.host}: "
                             f"{exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else exc}") from exc
        st.pid = state.read_pidfile(files.pidfile)
        st.ssh_port, st.accel = ssh_port, accel
        state.save(files.state_dir, st)
        if accel == "kvm" and self.accel == "auto" and not self._kvm_verdict_known():
            if not self._console_moves(files.console, qemu.KVM_FIRST_OUTPUT_S, st.pid, files.state_dir):
                self.progress(f"local: no console output under KVM after {qemu.KVM_FIRST_OUTPUT_S:.0f}s: "
                              "this machine's KVM does not run guests; falling back to TCG")
                state.stop(st.pid, files.state_dir)
                self._record_kvm(False)
                files.console.unlink(missing_ok=True)
                self.runner.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.disk), "-F",
                                 image.format, str(files.overlay), f"{spec.root_gb}G"])
                return self._start(spec, image, files, disks, st)
            self._record_kvm(True)

    def wait_ready(self, st: VmState, timeout: float = 600.0) -> VmState:
        """Poll until cloud-init printed the host key fingerprints and sshd answers; record boot time."""
        directory = self.host_dir(st.stack, st.host)
        console = directory / "console.log"
        deadline = time.monotonic() + timeout
        while True:
            if not state.qemu_alive(st.pid, directory):
                tail = console.read_text(errors="replace").strip().splitlines()[-3:] if console.exists() else []
                raise CloudError(f"local cloud: VM {st.host} stopped while booting; console tail: {' | '.join(tail)}")
            fps, keys = read_host_keys(console)
            if fps and state.listening(st.ssh_port):
                break
            if time.monotonic() > deadline:
                raise CloudError(f"local cloud: VM {st.host} not ready after {timeout:.0f}s (no SSH host key "
                                 f"fingerprints on the console {console})")
            time.sleep(0.5)
        st.fingerprints, st.host_keys = fps, keys
        st.boot_seconds = round(time.time() - st.started, 1)
        state.save(directory, st)
        self.progress(f"local: {st.host}: booted in {st.boot_seconds}s ({st.accel}); host keys "
                      + ", ".join(f"{f['type']} {f['sha256']}" for f in fps))
        return st

    def destroy(self, stack: str, *, keep_volumes: bool = False) -> list[str]:
        """Stop every VM of `stack` and remove its files; returns the hosts destroyed."""
        sdir = self.root / "local" / stack
        if not sdir.is_dir():
            return []
        done = []
        for hdir in sorted(p for p in sdir.iterdir() if p.is_dir()):
            self.destroy_host(stack, hdir.name, keep_volumes=keep_volumes)
            done.append(hdir.name)
        if sdir.is_dir() and not any(sdir.iterdir()):
            sdir.rmdir()
        return done

    def volumes(self, stack: str, host: str) -> list[dict]:
        """The volume files of a host (also after its VM is gone): name, file, serial, keep."""
        out = []
        for f in sorted((self.host_dir(stack, host) / state.VOLUMES).glob("*.qcow2")):
            try:
                meta = json.loads(f.with_suffix(".json").read_text())
            except (OSError, ValueError):
                meta = {}
            out.append({"name": f.stem, "file": str(f), "serial": meta.get("serial", f.stem),
                        "keep": bool(meta.get("keep", False))})
        return out

    def destroy_host(self, stack: str, host: str, *, keep_volumes: bool = False) -> None:
        hdir = self.host_dir(stack, host)
        if not hdir.is_dir():
            return
        st = state.load(hdir)
        pid = st.pid if st else state.read_pidfile(hdir / "qemu.pid")
        if not state.stop(pid, hdir):
            raise CloudError(f"local cloud: could not stop qemu pid {pid} of {stack}/{host}")
        self._remove_host_files(hdir, keep_volumes)
        sdir = hdir.parent
        if sdir.is_dir() and not any(sdir.iterdir()):
            sdir.rmdir()

    def remove_volume(self, stack: str, host: str, name: str) -> None:
        """Delete one volume's disk file (refused while its VM runs)."""
        hdir = self.host_dir(stack, host)
        st = state.load(hdir)
        if st is not None and state.qemu_alive(st.pid, hdir):
            raise CloudError(f"local cloud: volume {name} of {stack}/{host} is attached to a running VM")
        (hdir / state.VOLUMES / f"{name}.qcow2").unlink(missing_ok=True)
        (hdir / state.VOLUMES / f"{name}.json").unlink(missing_ok=True)
        for d in (hdir / state.VOLUMES, hdir, hdir.parent):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()

    # ---- helpers ---------------------------------------------------------------------------
    def _remove_host_files(self, hdir: Path, keep_volumes: bool) -> None:
        for p in hdir.iterdir():
            if p.name == state.VOLUMES and keep_volumes:
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        if not any(hdir.iterdir()):
            hdir.rmdir()

    def _undo(self, directory: Path, created: list[Path], existed: bool) -> None:
        st = state.load(directory)
        pid = st.pid if st and st.pid else state.read_pidfile(directory / "qemu.pid")
        state.stop(pid, directory)
        for p in created:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        vols = directory / state.VOLUMES
        if vols.is_dir() and not any(vols.iterdir()):
            vols.rmdir()
        if not existed and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
            if not any(directory.parent.iterdir()):
                directory.parent.rmdir()

    def _choose_accel(self) -> str:
        if self.accel != "auto":
            return self.accel
        ok, _detail = kvm_usable()
        if not ok:
            return "tcg"
        verdict = self._read_accel()
        return "tcg" if verdict.get("kvm_runs_guests") is False and verdict.get("kernel") == os.uname().release \
            else "kvm"

    def _read_accel(self) -> dict:
        try:
            return json.loads((self.root / "local" / ACCEL_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _kvm_verdict_known(self) -> bool:
        v = self._read_accel()
        return v.get("kernel") == os.uname().release and "kvm_runs_guests" in v

    def _record_kvm(self, works: bool) -> None:
        atomic_write(self.root / "local" / ACCEL_FILE,
                     json.dumps({"kvm_runs_guests": works, "kernel": os.uname().release,
                                 "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")

    @staticmethod
    def _console_moves(console: Path, seconds: float, pid: int, directory: Path) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if b"Linux version" in console.read_bytes() or console.stat().st_size > 4096:
                    return True
            except FileNotFoundError:
                pass
            if not state.qemu_alive(pid, directory):
                return False
            time.sleep(0.25)
        return False
