"""Local cloud, pure parts: disk identities, qemu argv, NoCloud seed, console host keys, state."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from provisioner.clouds.local import LocalCloud, PortForward, VmSpec, VolumeDisk, local_nvme_role
from provisioner.clouds.local import qemu, seed, state
from provisioner.clouds.local.console import read_host_keys
from provisioner.clouds.local.spec import aws_volume_serial, plan_disks
from provisioner.errors import CloudError, ConfigError, ImageError
from provisioner.testing import FakeRunner
from provisioner.vmimage import VmImage

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOxrcPob4kM2M9D1xfGlYLHoY+WEdMYFn3gwCDIkyY/G op@laptop"
IMAGE = VmImage(disk=Path("/cache/disk.raw"), format="raw", kernel=Path("/cache/vmlinuz"),
                initrd=Path("/cache/initrd.img"), append="root=/dev/vda console=ttyS0")


def files(tmp: Path) -> qemu.QemuFiles:
    return qemu.QemuFiles(tmp / "root.qcow2", tmp / "seed.iso", tmp / "console.log", tmp / "qemu.pid", tmp)


def test_aws_disks_serials_tell_ebs_from_instance_store():
    spec = VmSpec("s", "web", KEY, style="aws", ephemeral=2, volumes=(VolumeDisk("data", 100),))
    disks = plan_disks(spec, "tok")
    assert [(d.role, d.bus) for d in disks] == [("ephemeral", "nvme")] * 2 + [("volume", "nvme")]
    eph, vol = disks[0].serial, disks[2].serial
    assert eph.startswith("AWS") and len(eph) == 20 and disks[0].serial != disks[1].serial
    assert vol == aws_volume_serial("s", "web", "data") and vol.startswith("vol") and len(vol) == 20
    # stable across launches (a kept volume keeps its id); instance store is new per launch
    assert plan_disks(spec, "other")[2].serial == vol and plan_disks(spec, "other")[0].serial != eph
    assert local_nvme_role(vol) == "volume" and local_nvme_role(eph) == "ephemeral"
    assert local_nvme_role("deadbeef") is None


def test_gce_disks_are_scsi_with_google_identity():
    spec = VmSpec("s", "db", KEY, style="gce", ephemeral=1, volumes=(VolumeDisk("pgdata", 100),))
    d = plan_disks(spec)
    assert [(x.bus, x.vendor, x.product, x.serial) for x in d] == [
        ("scsi", "Google", "EphemeralDisk", "local-ssd-0"), ("scsi", "Google", "PersistentDisk", "pgdata")]


def test_qemu_argv_forwards_on_loopback_only_and_presents_disks(tmp_path):
    spec = VmSpec("s", "web", KEY, style="aws", ephemeral=1, volumes=(VolumeDisk("data", 100),),
                  ports=(PortForward(8080, 80), PortForward(5353, 53, "udp")))
    argv = qemu.argv(spec, IMAGE, files(tmp_path), plan_disks(spec, "t"), 2222, "tcg")
    net = argv[argv.index("-netdev") + 1]
    assert net == ("user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8080-:80,"
                   "hostfwd=udp:127.0.0.1:5353-:53")
    assert "-daemonize" in argv and argv[argv.index("-m") + 1] == "1024"
    assert argv[argv.index("-kernel") + 1] == "/cache/vmlinuz"
    nvme = [a for a in argv if a.startswith("nvme,")]
    assert len(nvme) == 2 and any("serial=vol" in a for a in nvme) and any("serial=AWS" in a for a in nvme)
    assert f"file:{tmp_path / 'console.log'}" in argv


def test_qemu_argv_gce_uses_one_virtio_scsi_controller(tmp_path):
    spec = VmSpec("s", "db", KEY, style="gce", ephemeral=2)
    argv = qemu.argv(spec, VmImage(Path("/x.qcow2"), "qcow2"), files(tmp_path), plan_disks(spec), 2222, "kvm")
    assert argv.count("virtio-scsi-pci,id=scsi0") == 1
    assert "-kernel" not in argv  # a user's cloud image boots with its own bootloader
    scsi = [a for a in argv if a.startswith("scsi-hd,")]
    assert scsi[1].endswith("vendor=Google,product=EphemeralDisk,serial=local-ssd-1")


@pytest.mark.parametrize("kw, msg", [
    ({"host": "Web_1"}, "host name 'Web_1'"),
    ({"style": "azure"}, "disk style 'azure' unknown"),
    ({"ports": (PortForward(80, 80), PortForward(80, 81))}, "host port 80/tcp forwarded twice"),
    ({"volumes": (VolumeDisk("a", 1), VolumeDisk("a", 1))}, "duplicate volume names"),
    ({"memory_mb": 64}, "too little"),
])
def test_spec_validation(kw, msg):
    args = {"stack": "s", "host": "web", "ssh_public_key": KEY, **kw}
    with pytest.raises(ConfigError, match=msg):
        VmSpec(**args).validate()


def test_seed_documents():
    spec = VmSpec("s", "web", KEY)
    ud = seed.user_data(spec)
    assert ud.startswith("#cloud-config\n")
    doc = yaml.safe_load(ud)
    assert doc["users"][0]["ssh_authorized_keys"] == [KEY] and doc["ssh_pwauth"] is False
    assert doc["hostname"] == "web"
    net = yaml.safe_load(seed.network_config(spec))
    assert net["ethernets"]["nic0"]["match"]["macaddress"] == seed.mac_for("s", "web")
    assert yaml.safe_load(seed.meta_data(spec, "i-1")) == {"instance-id": "i-1", "local-hostname": "web"}


def test_seed_iso_built_with_genisoimage_label_cidata(tmp_path):
    fake = FakeRunner().expect(["genisoimage"], prefix=True)
    seed.build_seed(VmSpec("s", "web", KEY), "i-1", tmp_path / "seed", tmp_path / "seed.iso", fake)
    argv = fake.calls[0]
    assert argv[argv.index("-volid") + 1] == "cidata"
    assert {Path(a).name for a in argv[-3:]} == {"user-data", "meta-data", "network-config"}


CONSOLE = """\
[   35.6] cloud-init[329]: ci-info: +-------+
<14>Nov 22 21:42:20 cloud-init: #############################################################
<14>Nov 22 21:42:20 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----
<14>Nov 22 21:42:20 cloud-init: 256 SHA256:tCHv+FM7ESf8kZDNfufD0DLbUIEpb7eVw4adw+jAFDA root@web (ECDSA)
<14>Nov 22 21:42:21 cloud-init: 256 SHA256:nhhGY2sMAAhlZ1UJ7o5u71M4OvOQm1x1aeREi77bk6s root@web (ED25519)
<14>Nov 22 21:42:21 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----
-----BEGIN SSH HOST KEY KEYS-----
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL7+tVNsyGWDB4HBQd+CwVwT+2DLMw/QyDhBbBQUkf3J root@web
-----END SSH HOST KEY KEYS-----
"""


def test_host_keys_read_from_a_recorded_console_log(tmp_path):
    log = tmp_path / "console.log"
    assert read_host_keys(log) == ([], [])
    log.write_text(CONSOLE.split("-----END SSH HOST KEY FINGERPRINTS")[0])  # block not finished yet
    assert read_host_keys(log)[0] == []
    log.write_text(CONSOLE)
    fps, keys = read_host_keys(log)
    assert fps == [{"type": "ECDSA", "sha256": "SHA256:tCHv+FM7ESf8kZDNfufD0DLbUIEpb7eVw4adw+jAFDA"},
                   {"type": "ED25519", "sha256": "SHA256:nhhGY2sMAAhlZ1UJ7o5u71M4OvOQm1x1aeREi77bk6s"}]
    assert keys == ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL7+tVNsyGWDB4HBQd+CwVwT+2DLMw/QyDhBbBQUkf3J"]


def test_state_roundtrip_and_dead_pid(tmp_path):
    st = state.VmState(stack="s", host="h", pid=999999999, ssh_port=2222)
    state.save(tmp_path, st)
    assert state.load(tmp_path) == st
    assert not state.qemu_alive(st.pid, tmp_path)
    assert state.stop(st.pid, tmp_path)


def test_launch_with_missing_image_creates_nothing(tmp_path):
    fake = FakeRunner()
    cloud = LocalCloud(tmp_path, fake, image=None, cache=tmp_path / "cache")
    with pytest.raises(ImageError, match="VM image missing: no debian-12 base image at .*build-vm"):
        cloud.launch(VmSpec("s", "h", KEY))
    assert fake.calls == [] and not (tmp_path / "local").exists()


def test_failed_qemu_start_removes_what_launch_created(tmp_path):
    fake = (FakeRunner().expect(["qemu-img", "create"], prefix=True).expect(["genisoimage"], prefix=True)
            .expect([qemu.QEMU], prefix=True, returncode=1,
                    stderr="qemu-system-x86_64: -netdev user: Could not set up host forwarding rule "
                           "'tcp:127.0.0.1:8080-:80'"))
    cloud = LocalCloud(tmp_path, fake, image=IMAGE, accel="tcg")
    spec = VmSpec("s", "web", KEY, ephemeral=1, volumes=(VolumeDisk("data", 10),), ports=(PortForward(8080, 80),))
    import provisioner.clouds.local.driver as driver

    orig = driver.state.port_free
    driver.state.port_free = lambda *a, **k: True
    try:
        with pytest.raises(CloudError, match=r"port forward tcp:127.0.0.1:8080-:80 could not be set up"):
            cloud.launch(spec)
    finally:
        driver.state.port_free = orig
    assert not (tmp_path / "local" / "s").exists()


def test_kept_volume_is_reattached_not_recreated(tmp_path):
    vol = tmp_path / "local" / "s" / "web" / "volumes" / "data.qcow2"
    vol.parent.mkdir(parents=True)
    vol.write_bytes(b"data")
    fake = (FakeRunner().expect(["qemu-img", "create"], prefix=True).expect(["genisoimage"], prefix=True)
            .expect([qemu.QEMU], prefix=True, returncode=1, stderr="boom"))
    cloud = LocalCloud(tmp_path, fake, image=IMAGE, accel="tcg")
    with pytest.raises(CloudError, match="qemu failed to start web: boom"):
        cloud.launch(VmSpec("s", "web", KEY, volumes=(VolumeDisk("data", 10),)))
    created = [c[-2] for c in fake.commands("qemu-img")]
    assert str(vol) not in created
    assert vol.read_bytes() == b"data"  # a failed launch never removes a volume it did not create


def test_unknown_accelerator():
    with pytest.raises(CloudError, match="accelerator 'xen' unknown"):
        LocalCloud(Path("/nonexistent"), FakeRunner(), accel="xen")


def test_status_of_nothing_and_destroy_of_nothing(tmp_path):
    cloud = LocalCloud(tmp_path, FakeRunner())
    assert cloud.status() == [] and cloud.destroy("nope") == []
    st = state.VmState(stack="s", host="h", pid=999999999, ssh_port=1)
    state.save(state.host_dir(tmp_path, "s", "h"), st)
    rows = cloud.status("s")
    assert [(r["host"], r["state"]) for r in rows] == [("h", "stopped")]
    assert json.dumps(rows)
    assert cloud.destroy("s") == ["h"] and not (tmp_path / "local" / "s").exists()


# ---- the CloudDriver adapter -------------------------------------------------------------------

def _hostplan(rules, volumes=()):
    from provisioner.clouds.base import HostPlan
    from provisioner.stack import CloudSettings, RootDisk

    settings = CloudSettings("local", "qemu", "bookworm", None, None, None, None, {}, False, RootDisk())
    return HostPlan(stack="s", host="web", cloud="local", resource_name="s-web", settings=settings, rules=rules,
                    volumes=volumes, ephemeral_count=0, ephemeral_interface=None, user_data="#cloud-config\n",
                    tags={}, ssh_public_key=KEY)


def test_adapter_forwards_published_ports_not_ssh():
    from provisioner.clouds.base import FirewallRule
    from provisioner.clouds.local.adapter import _forwards

    hp = _hostplan((FirewallRule("tcp", 22, 22, "10.0.0.0/8"), FirewallRule("tcp", 8080, 8081, "0.0.0.0/0"),
                    FirewallRule("udp", 53, 53, "0.0.0.0/0")))
    assert _forwards(hp) == (PortForward(8080, 8080), PortForward(8081, 8081), PortForward(53, 53, "udp"))
    with pytest.raises(CloudError, match="too wide"):
        _forwards(_hostplan((FirewallRule("tcp", 1000, 2000, "0.0.0.0/0"),)))


def test_adapter_finds_instances_and_kept_volumes_from_the_state_tree(tmp_path):
    from provisioner.clouds.local.adapter import LocalDriver

    driver = LocalDriver(LocalCloud(tmp_path, FakeRunner()))
    hdir = state.host_dir(tmp_path, "s", "web")
    (hdir / "volumes").mkdir(parents=True)
    (hdir / "volumes" / "data.qcow2").write_bytes(b"")
    (hdir / "volumes" / "data.json").write_text(json.dumps({"serial": "vol" + "a" * 17, "keep": True}))
    (hdir / "root.qcow2").write_bytes(b"")
    state.save(hdir, state.VmState(stack="s", host="web", pid=999999999, instance_id="i-1",
                                   disks=[{"role": "volume", "name": "data", "serial": "vol" + "a" * 17}]))
    found = driver.find("s")
    assert [(r.kind, r.name, r.state) for r in found] == [("instance", "s-web", "stopped"),
                                                           ("volume", "data", "available")]
    assert found[1].id == "vol" + "a" * 17 and found[1].extra["tags"]["provisioner-keep"] == "true"
    driver.delete(found[0])  # the instance goes, its volume stays until deleted itself
    assert [r.kind for r in driver.find("s")] == ["volume"]
    driver.delete(found[1])
    assert driver.find("s") == [] and not (tmp_path / "local" / "s").exists()


def test_status_without_a_stack_lists_every_local_stack(tmp_path):
    from click.testing import CliRunner

    from provisioner.cli.main import cli

    for stack, host in (("shop", "web"), ("blog", "db")):
        hdir = state.host_dir(tmp_path, stack, host)
        hdir.mkdir(parents=True)
        (hdir / "root.qcow2").write_bytes(b"")
        state.save(hdir, state.VmState(stack=stack, host=host, pid=999999999, instance_id=f"i-{host}"))
    res = CliRunner().invoke(cli, ["--root", str(tmp_path), "--json", "status", "--cloud", "local"])
    assert res.exit_code == 0, res.output
    found = json.loads(res.stdout)["resources"]
    assert sorted((r["extra"]["tags"]["provisioner-stack"], r["host"], r["kind"]) for r in found) == [
        ("blog", "db", "instance"), ("shop", "web", "instance")]


def test_adapter_console_output_strips_the_syslog_prefix(tmp_path):
    from provisioner.clouds.base import Resource
    from provisioner.clouds.console import parse_host_keys
    from provisioner.clouds.local.adapter import LocalDriver

    driver = LocalDriver(LocalCloud(tmp_path, FakeRunner()))
    hdir = state.host_dir(tmp_path, "s", "web")
    hdir.mkdir(parents=True)
    (hdir / "console.log").write_text(CONSOLE)
    text = driver.console_output(Resource("instance", "i-1", "s-web", "web", extra={"stack": "s"}))
    keys = parse_host_keys(text)
    assert keys.fingerprints["ED25519"] == "SHA256:nhhGY2sMAAhlZ1UJ7o5u71M4OvOQm1x1aeREi77bk6s"


def test_adapter_check_refuses_a_taken_port_and_a_missing_image(tmp_path):
    import socket

    from provisioner.clouds.base import FirewallRule, LaunchPlan
    from provisioner.clouds.local.adapter import LocalDriver

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        hp = _hostplan((FirewallRule("tcp", port, port, "0.0.0.0/0"),))
        plan = LaunchPlan("s", "local", "k", KEY, {"web": "x"}, {"web": "x"}, (hp,))
        with pytest.raises(CloudError, match=f"port 127.0.0.1:{port}/tcp for host web is already in use"):
            LocalDriver(LocalCloud(tmp_path, FakeRunner(), image=IMAGE)).check(plan)
        with pytest.raises(ImageError, match="VM image missing"):
            LocalDriver(LocalCloud(tmp_path, FakeRunner(), cache=tmp_path / "c")).check(plan)


def test_make_local_driver_ignores_cloud_only_options(tmp_path):
    from provisioner.clouds.local.adapter import LocalDriver, make_local_driver

    d = make_local_driver(root=tmp_path, runner=FakeRunner(), region="us-east-1", project=None, endpoint=None,
                          style="gce")
    assert isinstance(d, LocalDriver) and d.name == "local" and d.style == "gce" and d.cloud.root == tmp_path
    assert d.find("nothing") == []


def test_destroying_one_host_leaves_the_others_and_keeps_its_volumes(tmp_path):
    from provisioner.clouds.launch import destroy
    from provisioner.clouds.local.adapter import LocalDriver

    driver = LocalDriver(LocalCloud(tmp_path, FakeRunner()))
    for host in ("web", "db"):
        hdir = state.host_dir(tmp_path, "s", host)
        (hdir / "volumes").mkdir(parents=True)
        (hdir / "volumes" / "data.qcow2").write_bytes(host.encode())
        (hdir / "volumes" / "data.json").write_text(json.dumps({"serial": f"vol{host:0>17}", "keep": False}))
        (hdir / "root.qcow2").write_bytes(b"")
        state.save(hdir, state.VmState(stack="s", host=host, pid=999999999, instance_id=f"i-{host}",
                                       disks=[{"role": "volume", "name": "data", "serial": f"vol{host:0>17}"}]))
    with pytest.raises(CloudError, match=r"^local: stack 's' has nothing for host\(s\) wbe \(hosts with resources: "
                                         r"db, web\)$"):
        destroy(driver, "s", hosts=("wbe",))
    removed, kept = destroy(driver, "s", hosts=("web",), keep_volumes=True)
    assert [(r.kind, r.host) for r in removed] == [("instance", "web")]
    assert [(r.kind, r.host) for r in kept] == [("volume", "web")]
    assert sorted((r.host, r.kind) for r in driver.find("s")) == [("db", "instance"), ("db", "volume"),
                                                                   ("web", "volume")]
    assert (state.host_dir(tmp_path, "s", "web") / "volumes" / "data.qcow2").read_bytes() == b"web"
