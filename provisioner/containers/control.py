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
from ..runspec.netopts import NetworkAttachment
from . import rootfsmount, supervise
from .container import ContainerRecord
from .create import stop_timeout
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
        self._halt(rec, stop_timeout(rec) if timeout is None else timeout)
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

    def connect_network(self, ref: str, att: NetworkAttachment) -> ContainerRecord:
        """Puts the container on one more user-defined network (Docker's network connect): kept on
        its record for its next start and, while it runs, joined at once (network.join: a veth on
        that network's bridge, the hosts files of it and its new peers rewritten)."""
        with self._locked(ref) as rec:
            if rec.config.get("network_mode"):
                raise ContainerError(f"container {rec.name} uses network mode {rec.config['network_mode']}")
            nets = [NetworkAttachment.from_json(a) for a in rec.config.get("networks") or []]
            if not nets or any(a.network == network.DEFAULT_NETWORK for a in nets + [att]):
                raise ContainerError(f"{rec.name}: the default bridge cannot be combined with user-defined networks")
            if any(a.network == att.network for a in nets):
                raise ContainerError(f"container {rec.name} is already on network {att.network}")
            if network.registry.get(self.root, self.net, att.network) is None:
                raise ContainerError(f"network {att.network} not found")
            if network.endpoint(self.root, rec.name) is not None:
                network.join(self.root, self.net, rec.name, att, runner=self.runner, paths=self.net_paths)
                self._pin_mac(network.endpoint(self.root, rec.name))
            rec.config["networks"] = [a.to_json() for a in nets + [att]]
            self.records.save(rec)
            return rec

    def disconnect_network(self, ref: str, name: str) -> ContainerRecord:
        """Takes the container off a user-defined network (Docker's network disconnect); a running
        one keeps its first network (network.leave)."""
        with self._locked(ref) as rec:
            nets = [NetworkAttachment.from_json(a) for a in rec.config.get("networks") or []]
            if not any(a.network == name for a in nets):
                raise ContainerError(f"container {rec.name} is not connected to network {name}")
            if len(nets) == 1:
                raise ContainerError(f"{rec.name}: {name} is its only network (a container here is on one at least)")
            if network.endpoint(self.root, rec.name) is not None:
                network.leave(self.root, self.net, rec.name, name, runner=self.runner, paths=self.net_paths)
            else:
                net = network.registry.get(self.root, self.net, name)
                if net is not None:   # a stopped container keeps its addresses: this one goes
                    with network.ipam.transaction_for(self.root, net.config, name) as allocs:
                        allocs.release(rec.name)
            rec.config["networks"] = [a.to_json() for a in nets if a.network != name]
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
