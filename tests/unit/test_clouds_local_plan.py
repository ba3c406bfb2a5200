"""`--cloud local` plans like the clouds: every host can go there, SSH only from loopback."""
from provisioner.clouds import make_driver
from provisioner.clouds.base import plan_launch
from provisioner.clouds.local.adapter import LocalDriver
from provisioner.stack import load_stack

STACK = """\
name: hello
hosts:
  - name: web
    services: [web]
    disks:
      ephemeral: {mount: /var/lib/provisioner, count: 2}
      volumes:
        - {name: data, mount: /srv/data, size: 1, keep: true}
  - name: db
    local: {style: gce, memory: 768, cpus: 2}
    disks:
      volumes:
        - {name: pg, mount: /srv/pg, size: 2}
services:
  web:
    image: 127.0.0.1:5000/hello/busybox:1
    ports: ["8080:80"]
"""


def test_hosts_without_a_local_block_get_defaults_and_loopback_ssh(tmp_path):
    p = tmp_path / "stack.yml"
    p.write_text(STACK)
    plan = plan_launch(load_stack(p), "local", "ssh-ed25519 AAAA k")
    web, db = plan.hosts
    assert plan.ssh_cidr == {"web": "127.0.0.1/32", "db": "127.0.0.1/32"}
    assert web.settings.options == {"style": "aws", "memory_mb": 1024, "cpus": 1, "os": "debian-12"}
    assert db.settings.options == {"style": "gce", "memory_mb": 768, "cpus": 2, "os": "debian-12"}
    assert web.ephemeral_count == 2 and [(v.name, v.device, v.keep) for v in web.volumes] == [("data", "/dev/sdf", True)]
    assert [v.device for v in db.volumes] == ["pg"]          # GCE style: the device name
    assert [str(r) for r in web.rules] == ["22/tcp from 127.0.0.1/32", "8080/tcp from 0.0.0.0/0"]
    assert '"cloud": "local"' in web.user_data or "local" in web.user_data


def test_the_metrics_port_is_forwarded_on_loopback_like_a_published_port(tmp_path):
    from provisioner.clouds.local.adapter import _forwards
    from provisioner.clouds.local.spec import PortForward

    p = tmp_path / "stack.yml"
    p.write_text(STACK.replace("    services: [web]\n", "    services: [web]\n    metrics: {port: 9273, allow_from: 10.0.2.2/32}\n",
                               1))
    web = plan_launch(load_stack(p), "local", "ssh-ed25519 AAAA k").hosts[0]
    assert "9273/tcp from 10.0.2.2/32" in [str(r) for r in web.rules]
    assert set(_forwards(web)) == {PortForward(8080, 8080, "tcp"), PortForward(9273, 9273, "tcp")}


def test_make_driver_local_keeps_state_under_root(tmp_path):
    d = make_driver("local", root=tmp_path)
    assert isinstance(d, LocalDriver) and d.name == "local" and d.cloud.root == tmp_path
    assert d.find("hello") == []


def test_instances_report_the_disk_style_they_were_launched_with(tmp_path):
    from dataclasses import asdict

    from provisioner.clouds.local import state
    from provisioner.clouds.local.spec import VmSpec, VolumeDisk, plan_disks

    d = make_driver("local", root=tmp_path)
    for style in ("aws", "gce"):
        spec = VmSpec("s", "h", "ssh-ed25519 AAAA k", style=style, ephemeral=1, volumes=(VolumeDisk("v", 1024),))
        st = state.VmState(stack="s", host="h", disks=[asdict(x) for x in plan_disks(spec)],
                           ports=[{"host_port": 8080, "guest_port": 8080, "proto": "tcp"}])
        inst = d._instance(st)
        assert inst.extra["style"] == style and inst.extra["ports"] == st.ports
