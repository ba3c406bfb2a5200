"""Names validated with a pattern must be the whole string: `re.match` with `$` also accepts a
trailing newline ("redis:7\n"), which then travels into URLs, headers, file names and nft/sysctl
input. Each case below is a name that passed before and must now be refused."""
from __future__ import annotations

import pytest

from provisioner.errors import ProvisionerError

D = "sha256:" + "a" * 64


def _refuses(fn, *args):
    with pytest.raises(ProvisionerError):
        fn(*args)


@pytest.mark.parametrize("text", ["redis:7\n", "registry.example\n/app:1", "app\n:1", "app@" + D + "\n",
                                  "localhost:5000/a/b\n"])
def test_image_references_with_a_trailing_newline_are_refused(text):
    from provisioner.images import reference

    _refuses(reference.parse, text)


def test_store_digests_container_and_network_names():
    from provisioner.containers.container import check_name
    from provisioner.images.store import check_digest
    from provisioner.network.model import NetworkConfig

    _refuses(check_digest, D + "\n")
    _refuses(check_name, "web\n")
    _refuses(lambda: NetworkConfig(bridge="br0\n"))
    _refuses(lambda: NetworkConfig(table="t\n"))


def test_network_endpoint_snapshot_and_disk_names():
    from provisioner.disks import snapshot
    from provisioner.network import manage

    _refuses(manage._check_name, "web\n")
    _refuses(snapshot._check_name, "snap\n")


def test_host_config_users_groups_and_sysctl_keys():
    from provisioner.host import config

    _refuses(config.parse, {"host": "h", "users": [{"name": "deploy\n"}]}, "host.yml")
    _refuses(config.parse, {"host": "h", "users": [{"name": "d", "groups": ["sudo\n"]}]}, "host.yml")
    _refuses(config.parse, {"host": "h", "sysctl": {"net.core.somaxconn\n": 1}}, "host.yml")


def test_image_stream_blob_names():
    import io
    import tarfile

    from provisioner.images.imagereceive import _entries

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ti = tarfile.TarInfo("blobs/sha256/" + "a" * 64 + "\n")
        tar.addfile(ti, io.BytesIO(b""))
    buf.seek(0)
    with pytest.raises(ProvisionerError, match="unexpected entry"):
        list(_entries(buf))
