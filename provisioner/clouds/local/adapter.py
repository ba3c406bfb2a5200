"""The local cloud behind the clouds' driver interface (`clouds.base.CloudDriver`).

`clouds.launch.launch/status_of/destroy` then drive qemu exactly as they drive AWS and GCE:
- the "firewall" is the set of 127.0.0.1 port forwards (it creates nothing by itself; the
  forwards are part of the VM's network device, so they appear and vanish with the VM);
- volumes are attached at VM start (qemu has no block-device hot attach worth the complexity
  here), so `create_instance` makes every disk of the HostPlan and `create_volume` returns the
  one it made; `attach_volume` has nothing left to do — like a block-device mapping at launch;
- the state is the directory tree under `<root>/local/<stack>/`, which `find` reads back.
"""
from __future__ import annotations

import time
from pathlib import Path

from ... import hostos
from ...errors import CloudError
from ..base import HostPlan, LaunchPlan, Resource, VolumePlan
from . import state
from .console import console_text
from .driver import LocalCloud
from .spec import PortForward, VmSpec, VolumeDisk

KEEP_TAG = "provisioner-keep"
GUEST_GATEWAY = "10.0.2.2"   # qemu user networking: the host, as its VMs see it
MAX_RANGE = 64  # a published port range becomes one forward per port


def _forwards(hp: HostPlan) -> tuple[PortForward, ...]:
    out = []
    for r in hp.rules:
        if r.first == 22 and r.last == 22 and r.protocol == "tcp":
            continue  # SSH has its own forward on a free port
        if r.last - r.first >= MAX_RANGE:
            raise CloudError(f"local cloud: host {hp.host}: port range {r.first}-{r.last} too wide to forward")
        out += [PortForward(p, p, r.protocol) for p in range(r.first, r.last + 1)]
    return tuple(out)


def _os(hp: HostPlan) -> str:
    return (hp.settings.options if hp.settings is not None else {}).get("os", hostos.DEFAULT)


class LocalDriver:
    name = "local"

    def __init__(self, cloud: LocalCloud, *, style: str = "aws", memory_mb: int = 1024, boot_timeout: float = 600.0):
        self.cloud = cloud
        self.style = style
        self.memory_mb = memory_mb
        self.boot_timeout = boot_timeout
        self._pubkey = ""

    def registry_seen_as(self, registry: str) -> str:
        """A registry on this machine's loopback, as a VM reaches it: qemu's user network shows
        the host's loopback at the gateway address (127.0.0.1:5000 → 10.0.2.2:5000)."""
        host, sep, port = registry.rpartition(":") if not registry.endswith("]") else (registry, "", "")
        if not sep or not port.isdigit():
            host, port = registry, ""
        if host.strip("[]") in ("localhost", "::1") or host.startswith("127."):
            return f"{GUEST_GATEWAY}:{port}" if port else GUEST_GATEWAY
        return registry

    def check(self, plan: LaunchPlan) -> None:
        for hp in plan.hosts:
            self.cloud.image(_os(hp))  # ImageError when missing, before anything exists
            for f in _forwards(hp):
                if not state.port_free(f.host_port, f.proto):
                    raise CloudError(f"local cloud: port 127.0.0.1:{f.host_port}/{f.proto} for host {hp.host} "
                                     "is already in use")

    def import_key(self, plan: LaunchPlan) -> Resource | None:
        self._pubkey = plan.public_key  # it travels in the user-data; nothing to create
        return None

    def create_firewall(self, hp: HostPlan) -> Resource:
        fwd = _forwards(hp)
        return Resource("firewall", f"{hp.resource_name}-forwards", f"{hp.resource_name}-forwards", hp.host,
                        "active", {"forwards": [f"127.0.0.1:{f.host_port}->{f.guest_port}/{f.proto}" for f in fwd]})

    def create_instance(self, hp: HostPlan, key: Resource | None, firewall: Resource) -> Resource:
        pubkey = getattr(hp, "ssh_public_key", "") or self._pubkey
        opts = hp.settings.options if hp.settings is not None else {}
        spec = VmSpec(stack=hp.stack, host=hp.host, ssh_public_key=pubkey, style=opts.get("style", self.style),
                      cpus=opts.get("cpus", 1),
                      ephemeral=hp.ephemeral_count,
                      volumes=tuple(VolumeDisk(v.name, v.size_gb * 1024, v.keep) for v in hp.volumes),
                      ports=_forwards(hp), memory_mb=opts.get("memory_mb", self.memory_mb), os=_os(hp),
                      # the image's default user, who gets the key from the stack's user-data
                      user=hostos.host_os(_os(hp)).users["local"], user_data=hp.user_data)
        st = self.cloud.launch(spec, wait=False)
        return self._instance(st)

    def _instance(self, st: state.VmState) -> Resource:
        hdir = self.cloud.host_dir(st.stack, st.host)
        alive = state.qemu_alive(st.pid, hdir)
        return Resource("instance", st.instance_id or f"{st.stack}-{st.host}", f"{st.stack}-{st.host}", st.host,
                        "running" if alive else "stopped",
                        {"stack": st.stack, "pid": st.pid, "ssh": f"127.0.0.1:{st.ssh_port}", "user": st.user,
                         "accel": st.accel, "ports": st.ports,
                         "style": "gce" if any(d.get("bus") == "scsi" for d in st.disks) else "aws",
                         "tags": {"provisioner-stack": st.stack, "provisioner-host": st.host}})

    def instance_state(self, inst: Resource) -> Resource:
        st = self.cloud.state(inst.extra["stack"], inst.host)
        return self._instance(st)

    def create_volume(self, hp: HostPlan, vp: VolumePlan, inst: Resource) -> Resource:
        st = self.cloud.state(hp.stack, hp.host)
        disk = next((d for d in st.disks if d["role"] == "volume" and d["name"] == vp.name), None)
        if disk is None:
            raise CloudError(f"local cloud: volume {vp.name} of {hp.host} was not created with the VM")
        return self._volume(hp.stack, hp.host, vp.name, disk["serial"], keep=vp.keep)

    def _volume(self, stack: str, host: str, name: str, serial: str, keep: bool | None = None,
                attached: bool = True) -> Resource:
        tags = {"provisioner-stack": stack, "provisioner-host": host, "provisioner-volume": name}
        if keep is not None:
            tags[KEEP_TAG] = "true" if keep else "false"
        path = self.cloud.host_dir(stack, host) / state.VOLUMES / f"{name}.qcow2"
        return Resource("volume", serial, name, host, "in-use" if attached else "available",
                        {"stack": stack, "file": str(path), "tags": tags})

    def attach_volume(self, inst: Resource, vol: Resource, vp: VolumePlan) -> None:
        return None  # attached when qemu started (see the module docstring)

    def console_output(self, inst: Resource) -> str:
        return console_text(self.cloud.host_dir(inst.extra["stack"], inst.host) / "console.log")

    def find(self, stack: str | None) -> list[Resource]:
        """What exists for `stack`, or for every local stack when it is None."""
        base = self.cloud.root / "local"
        stacks = [stack] if stack else sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        out: list[Resource] = []
        for name in stacks:
            sdir = base / name
            if not sdir.is_dir():
                continue
            for hdir in sorted(p for p in sdir.iterdir() if p.is_dir()):
                st = state.load(hdir)
                running = st is not None and state.qemu_alive(st.pid, hdir)
                if st is not None and (hdir / "root.qcow2").exists():
                    out.append(self._instance(st))
                for vol in self.cloud.volumes(name, hdir.name):
                    out.append(self._volume(name, hdir.name, vol["name"], vol["serial"], keep=vol["keep"],
                                            attached=running))
        return out

    def delete(self, res: Resource) -> None:
        stack = res.extra.get("stack")
        if res.kind == "instance":
            self.cloud.destroy_host(stack, res.host, keep_volumes=True)
        elif res.kind == "volume":
            self.cloud.remove_volume(stack, res.host, res.name)

    def wait_deleted(self, res: Resource, timeout: float) -> bool:
        if res.kind != "instance":
            return True
        hdir = self.cloud.host_dir(res.extra["stack"], res.host)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not state.qemu_alive(int(res.extra.get("pid") or 0), hdir):
                return True
            time.sleep(0.2)
        return False


def make_local_driver(*, root: Path, runner=None, style: str = "aws", image: Path | None = None,
                      progress=lambda _m: None, **_cloud_options) -> LocalDriver:
    """What `clouds.make_driver("local", …)` should return. Region/project/endpoint options of the
    real clouds mean nothing here and are ignored; `root` is the CLI's --root (VM state lives there)."""
    return LocalDriver(LocalCloud(Path(root), runner, image=image, progress=progress), style=style)
