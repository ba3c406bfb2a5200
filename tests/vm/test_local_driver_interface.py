"""The local cloud behind the clouds' CloudDriver interface: clouds.launch.launch/status_of/destroy
boot a VM from the stack's own cloud-init template, read its host keys from the console, and
destroy it by "tags" (the state tree), keeping a keep:true volume.
"""
from __future__ import annotations

import socket

import pytest

from provisioner.clouds.base import FirewallRule, HostPlan, LaunchPlan, VolumePlan
from provisioner.clouds.launch import Timeouts, destroy, launch, status_of
from provisioner.clouds.local.adapter import LocalDriver
from provisioner.clouds.userdata import host_context, render_user_data
from provisioner.host.ssh import SshClient, target_for
from provisioner.stack import CloudSettings, RootDisk

from conftest import public_key
from vmhelpers import qemu_processes_for, wait_not_listening

pytestmark = pytest.mark.vm

STACK = "vmiface"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_clouds_launch_and_destroy_drive_the_local_cloud(cloud, operator_key):
    key = public_key(operator_key)
    web = _port()
    vols = [{"name": "data", "device": "data", "size_gb": 1}]
    user_data = render_user_data(host_context(stack=STACK, host="app", cloud="local", services=["web"],
                                              ssh_public_key=key, volumes=vols))
    settings = CloudSettings("local", "qemu", "bookworm", None, None, None, None, {}, False, RootDisk())
    hp = HostPlan(stack=STACK, host="app", cloud="local", resource_name=f"{STACK}-app", settings=settings,
                  rules=(FirewallRule("tcp", 22, 22, "127.0.0.1/32"), FirewallRule("tcp", web, web, "0.0.0.0/0")),
                  volumes=(VolumePlan("data", 1, None, False, True, None, "data", {}),),
                  ephemeral_count=2, ephemeral_interface="nvme", user_data=user_data, tags={},
                  ssh_public_key=key)
    plan = LaunchPlan(stack=STACK, cloud="local", key_name=f"provisioner-{STACK}", public_key=key,
                      ssh_cidr={"app": "127.0.0.1/32"}, ssh_cidr_source={"app": "test"}, hosts=(hp,))
    driver = LocalDriver(cloud, style="aws")
    try:
        result = launch(plan, driver, timeouts=Timeouts(running=60, host_keys=480, interval=1.0), status=print)
        (host,) = result.hosts
        assert host.host_keys is not None and "ED25519" in host.host_keys.fingerprints
        assert [v.name for v in host.volumes] == ["data"] and host.volumes[0].id.startswith("vol")
        st = cloud.state(STACK, "app")
        # the stack template's default user (Debian: "debian") got the key; host key pinned from the console
        with SshClient(target_for(host.host_keys.fingerprints.values(), st.ssh_port, "debian", operator_key)) as ssh:
            ssh.wait_ready(timeout=120)
            assert "50-provisioner-boot" in ssh.run(["ls", "/var/lib/cloud/scripts/per-boot"]).stdout
            assert '"stack": "vmiface"' in ssh.run(["cat", "/etc/provisioner/host.json"]).stdout
        kinds = sorted(r.kind for r in status_of(driver, STACK))
        assert kinds == ["instance", "volume"]
        removed, kept = destroy(driver, STACK, status=print)
        assert [r.kind for r in removed] == ["instance"] and [v.name for v in kept] == ["data"]
        hdir = cloud.host_dir(STACK, "app")
        assert qemu_processes_for(hdir) == []
        assert wait_not_listening(st.ssh_port) and wait_not_listening(web)
        assert [p.name for p in hdir.iterdir()] == ["volumes"]
    finally:
        cloud.destroy(STACK)
