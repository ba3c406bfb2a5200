"""runspec's typed container options added for compose's per-service keys: each value parsed
once, the same for `container run` flags and a stack's service; every bad value one ConfigError."""
from __future__ import annotations

import pytest

from provisioner.errors import ConfigError
from provisioner.runspec.kernel import Ulimit, make_ulimit, parse_sysctls, parse_ulimit
from provisioner.runspec.mounts import VolumeSpec, parse_long_volume, parse_mount_flag, parse_tmpfs, parse_volume
from provisioner.runspec.netopts import (
    DnsConfig, ExtraHost, NetworkAttachment, NetworkMode, parse_dns, parse_extra_host, parse_network_mode,
)
from provisioner.runspec.privileges import ALL_CAPS, DEFAULT_CAPS, Privileges, normalize_cap
from provisioner.runspec.process import (
    LogConfig, Platform, check_platform, check_signal, parse_log_config, parse_platform, parse_pull_policy,
)
from provisioner.runspec.request import from_flags
from provisioner.runspec.secrets import parse_mode, target_for


def test_capabilities_follow_dockers_tweak_rules():
    assert normalize_cap("net_admin") == normalize_cap("CAP_NET_ADMIN") == "CAP_NET_ADMIN"
    assert normalize_cap("all") == "ALL"
    with pytest.raises(ConfigError, match="unknown capability 'NET_WIZARD'"):
        normalize_cap("NET_WIZARD")
    assert Privileges().capabilities() == sorted(DEFAULT_CAPS)
    p = Privileges.parse(["NET_ADMIN", "sys_ptrace"], ["MKNOD", "CAP_NET_RAW"])
    assert set(p.capabilities()) == set(DEFAULT_CAPS) - {"CAP_MKNOD", "CAP_NET_RAW"} | {"CAP_NET_ADMIN", "CAP_SYS_PTRACE"}
    assert Privileges.parse(["ALL"], ["CHOWN"]).capabilities() == sorted(ALL_CAPS)   # Docker: drops ignored with ALL
    assert Privileges.parse(["NET_BIND_SERVICE"], ["ALL"]).capabilities() == ["CAP_NET_BIND_SERVICE"]
    assert Privileges(privileged=True).capabilities(last_cap=37) == sorted(ALL_CAPS[:38])


def test_ulimits_and_sysctls():
    assert parse_ulimit("nofile=1024:2048") == Ulimit("nofile", 1024, 2048)
    assert parse_ulimit("nproc=512") == Ulimit("nproc", 512, 512)
    assert make_ulimit("memlock", -1, -1).oci() == {"type": "RLIMIT_MEMLOCK", "soft": 2 ** 64 - 1, "hard": 2 ** 64 - 1}
    for bad, msg in (("nofile", "want NAME=SOFT"), ("files=1", "unknown ulimit 'files'"), ("nofile=9:3", "above")):
        with pytest.raises(ConfigError, match=msg):
            parse_ulimit(bad)
    assert parse_sysctls(["net.core.somaxconn=1024", "kernel.shmmax=1"]) == (
        ("net.core.somaxconn", "1024"), ("kernel.shmmax", "1"))
    assert parse_sysctls({"net/ipv4/ip_forward": 1}) == (("net.ipv4.ip_forward", "1"),)
    with pytest.raises(ConfigError, match="not namespaced"):
        parse_sysctls(["kernel.panic=1"])
    with pytest.raises(ConfigError, match="not allowed with the host's network"):
        parse_sysctls(["net.core.somaxconn=1"], host_network=True)


def test_network_values():
    assert parse_network_mode("host") == NetworkMode("host")
    assert parse_network_mode("container:db") == NetworkMode("container", "db")
    assert parse_network_mode("front") is None
    assert parse_extra_host("db:10.0.0.5") == ExtraHost("db", "10.0.0.5")
    assert parse_extra_host("db=::1") == ExtraHost("db", "::1")
    assert parse_extra_host("gw:host-gateway") == ExtraHost("gw", "host-gateway")
    with pytest.raises(ConfigError, match="not an IP address"):
        parse_extra_host("db:nowhere")
    assert parse_dns(["1.1.1.1"], ["example.com"], ["ndots:2"]) == DnsConfig(("1.1.1.1",), ("example.com",),
                                                                            ("ndots:2",))
    with pytest.raises(ConfigError, match="bad DNS server"):
        parse_dns(["dns.example"])


def test_process_values():
    assert check_signal("term") == check_signal("15") == "SIGTERM"
    assert check_signal("SIGRTMIN+3") == "SIGRTMIN+3"
    with pytest.raises(ConfigError, match="unknown signal"):
        check_signal("SIGNOPE")
    assert parse_platform("linux/x86_64") == Platform("linux", "amd64")
    assert str(parse_platform("linux/arm64/v8")) == "linux/arm64/v8"
    check_platform(Platform("linux", "amd64"), machine="x86_64")
    with pytest.raises(ConfigError, match="platform linux/arm64 is not this host's \\(linux/amd64\\)"):
        check_platform(Platform("linux", "arm64"), machine="x86_64")
    assert parse_pull_policy("if_not_present") == "missing"
    assert parse_log_config("json-file", {"max-size": "10m", "max-file": "3", "labels": "x"}) == \
        LogConfig("json-file", 10 << 20, 3)
    with pytest.raises(ConfigError, match="logging driver 'syslog' is not available"):
        parse_log_config("syslog", {})
    with pytest.raises(ConfigError, match="log option 'fluentd-address'"):
        parse_log_config("json-file", {"fluentd-address": "x"})


def test_mounts_long_short_tmpfs_and_mount_flag():
    assert parse_volume("data:/srv:ro,nocopy") == VolumeSpec("volume", "data", "/srv", True, nocopy=True)
    assert parse_volume("/h:/c:rshared,z") == VolumeSpec("bind", "/h", "/c", propagation="rshared")
    with pytest.raises(ConfigError, match="mode 'rbind' is not supported"):
        parse_volume("/h:/c:rbind")
    assert parse_long_volume({"type": "bind", "source": "/h", "target": "/c", "read_only": True}) == \
        VolumeSpec("bind", "/h", "/c", True, create_host_path=False)
    assert parse_long_volume({"type": "bind", "source": "/h", "target": "/c",
                              "bind": {"create_host_path": True}}).create_host_path
    assert parse_long_volume({"type": "volume", "source": "data", "target": "/d", "volume": {"nocopy": True}}) == \
        VolumeSpec("volume", "data", "/d", nocopy=True)
    assert parse_long_volume({"type": "volume", "target": "/cache"}) == VolumeSpec("anonymous", "", "/cache")
    assert parse_long_volume({"type": "tmpfs", "target": "/run", "tmpfs": {"size": "64m", "mode": "1777"}}) == \
        VolumeSpec("tmpfs", "", "/run", tmpfs_options=("size=67108864", "mode=1777"))
    for entry, msg in (({"type": "npipe", "target": "/x"}, "type 'npipe'"),
                       ({"type": "bind", "target": "/x"}, "needs 'source'"),
                       ({"type": "volume", "source": "v", "target": "/x", "bind": {}}, "'bind' options are for"),
                       ({"type": "volume", "source": "v", "target": "/x", "extra": 1}, "unsupported key")):
        with pytest.raises(ConfigError, match=msg):
            parse_long_volume(entry)
    assert parse_tmpfs("/run:size=64m,exec") == VolumeSpec("tmpfs", "", "/run", tmpfs_options=("size=64m", "exec"))
    with pytest.raises(ConfigError, match="not a tmpfs mount option"):
        parse_tmpfs("/run:bogus")
    assert parse_mount_flag("type=bind,src=/h,dst=/c,readonly") == VolumeSpec("bind", "/h", "/c", True,
                                                                               create_host_path=False)
    old = VolumeSpec("volume", "v", "/d")
    assert old.to_json() == {"kind": "volume", "source": "v", "destination": "/d", "readonly": False}
    assert VolumeSpec.from_json(VolumeSpec("tmpfs", "", "/t", tmpfs_options=("exec",)).to_json()).tmpfs_options == \
        ("exec",)


def test_secret_targets_and_modes():
    assert target_for("secret", "db", None) == "/run/secrets/db"
    assert target_for("secret", "db", "pw") == "/run/secrets/pw"
    assert target_for("config", "nginx", None) == "/nginx"
    assert parse_mode("0440") == parse_mode(0o440) == 0o440
    with pytest.raises(ConfigError):
        parse_mode("rw")


def test_run_flags_make_the_same_values():
    req = from_flags("busybox", cap_add=["NET_ADMIN"], cap_drop=["MKNOD"], read_only=True, tmpfs=["/run"],
                     ulimits=["nofile=10:20"], sysctls=["net.core.somaxconn=9"], pids_limit="50", shm_size="128m",
                     init=True, tty=True, interactive=True, stop_signal="INT", stop_timeout=3, platform="linux/amd64",
                     labels=["a=b", "c"], networks=["front"], network_aliases=["web"], ip="172.20.0.9",
                     add_hosts=["x:1.2.3.4"], dns=["9.9.9.9"], mounts=["type=volume,src=vol,dst=/v"])
    assert req.privileges == Privileges(("CAP_NET_ADMIN",), ("CAP_MKNOD",))
    assert (req.read_only, req.init, req.tty, req.interactive, req.stop_signal, req.stop_timeout) == \
        (True, True, True, True, "SIGINT", 3.0)
    assert (req.pids_limit, req.shm_size, req.labels) == (50, 128 << 20, (("a", "b"), ("c", "")))
    assert req.networks == (NetworkAttachment("front", ("web",), "172.20.0.9"),)
    assert [v.kind for v in req.volumes] == ["volume", "tmpfs"]
    assert from_flags("busybox", networks=["host"]).network_mode == NetworkMode("host")
    with pytest.raises(ConfigError, match="--network-alias and --ip need a user-defined --network"):
        from_flags("busybox", network_aliases=["x"])
    with pytest.raises(ConfigError, match="published ports have no meaning"):
        from_flags("busybox", networks=["host"], ports=["80:80"])
    with pytest.raises(ConfigError, match="cannot be combined"):
        from_flags("busybox", networks=["none", "front"])
