"""stop / start / restart / rm of existing containers, and the removal of exited `--rm` ones
(`autoremove`, run by the supervisor's exit command, and `reap`, the sweep behind it). Part of
lifecycle.Manager (a mixin). Each operation holds the container's operation lock."""
from __future__ import annotations

import contextlib
from typing import Iterator

from ..errors import ContainerError
from ..images import btrfs
from .. import network
from ..network import conntrack
from . import rootfsmount, supervise
from .container import ContainerRecord
from .create import STOP_TIMEOUT
from .runtime import Runtime


class Controlling:
    """Lifecycle operations on containers that exist."""

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

    def takeover(self, ref: str, old: str) -> str | None:
        """Container `ref` (run with `replaces=old`, standing by) takes `old`'s published ports
        over: one nftables transaction, then the kernel forgets the NAT of `old`'s connections
        that are not established (a client reusing a port in TIME_WAIT would otherwise still
        reach `old`). Returns `old`'s address, whose established connections drain (conntrack.drain)."""
        with self._locked(ref) as rec:
            was = network.takeover(self.root, self.net, rec.name, old, runner=self.runner, paths=self.net_paths)
            rec.config.pop("replaces", None)
            self.records.save(rec)
        if was is None:
            return None
        conntrack.flush_stale(self.runner, was.address)
        return was.address

    def set_networks(self, ref: str, networks) -> ContainerRecord:
        """The user networks the container is on and its aliases on each ((name, aliases) pairs):
        kept on the record for its next start, and, while it is connected, in the hosts files of
        it and its peers at once (Docker's network connect/disconnect)."""
        with self._locked(ref) as rec:
            nets = [[n, list(a)] for n, a in network.normalize_groups(networks)]
            if nets:
                rec.config["networks"] = nets
            else:
                rec.config.pop("networks", None)
            if network.endpoint(self.root, rec.name) is not None:
                network.regroup(self.root, rec.name, [(n, tuple(a)) for n, a in nets])
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
        rootfsmount.release(self.runner, rootfs)
        if btrfs.is_subvolume(rootfs):
            btrfs.delete(self.runner, rootfs)
        if remove_volumes:
            for m in rec.config.get("mounts", []):
                if m["kind"] == "anonymous":
                    self.volumes.remove(m["source"])
        self.records.delete(rec)
        return rec

    def reap(self, records: list[ContainerRecord] | None = None) -> list[str]:
        """Removes `--rm` containers that have exited (a detached one has nobody waiting for it);
        `records`: the records as just read (else they are read). Returns the names of those gone
        (removed here, or meanwhile by another command)."""
        gone = []
        for rec in self.records.all() if records is None else records:
            if rec.config.get("rm") and rec.state.get("phase") == "created" \
                    and self.status(rec).state in ("exited", "dead"):
                try:
                    self.rm(rec.id, force=True, remove_volumes=True)
                except ContainerError:
                    if self.records.find(rec.id) is not None:
                        raise
                    # removed meanwhile by another command
                gone.append(rec.name)
        return gone

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
