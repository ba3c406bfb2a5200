import pytest

from provisioner.images import reference
from provisioner.errors import ImageError

D = "sha256:" + "a" * 64

VALID = [
    # input, domain, path, tag, digest, str
    ("redis", "docker.io", "library/redis", "latest", None, "docker.io/library/redis:latest"),
    ("redis:7", "docker.io", "library/redis", "7", None, "docker.io/library/redis:7"),
    ("library/redis:7", "docker.io", "library/redis", "7", None, "docker.io/library/redis:7"),
    ("bitnami/redis", "docker.io", "bitnami/redis", "latest", None, "docker.io/bitnami/redis:latest"),
    ("docker.io/redis", "docker.io", "library/redis", "latest", None, "docker.io/library/redis:latest"),
    ("index.docker.io/redis", "docker.io", "library/redis", "latest", None, "docker.io/library/redis:latest"),
    ("localhost/foo", "localhost", "foo", "latest", None, "localhost/foo:latest"),
    ("localhost:5000/a/b:v1.2-rc_3", "localhost:5000", "a/b", "v1.2-rc_3", None, "localhost:5000/a/b:v1.2-rc_3"),
    ("127.0.0.1:5000/a/b@" + D, "127.0.0.1:5000", "a/b", None, D, "127.0.0.1:5000/a/b@" + D),
    ("host:5000/a/b:t@" + D, "host:5000", "a/b", "t", D, "host:5000/a/b:t@" + D),
    ("quay.io/coreos/etcd", "quay.io", "coreos/etcd", "latest", None, "quay.io/coreos/etcd:latest"),
    ("gcr.io/a__b/c-d.e_f", "gcr.io", "a__b/c-d.e_f", "latest", None, "gcr.io/a__b/c-d.e_f:latest"),
    ("a---b", "docker.io", "library/a---b", "latest", None, "docker.io/library/a---b:latest"),
    ("[::1]:5000/x", "[::1]:5000", "x", "latest", None, "[::1]:5000/x:latest"),
    ("Registry.Example/x", "Registry.Example", "x", "latest", None, "Registry.Example/x:latest"),
]


@pytest.mark.parametrize("text,domain,path,tag,digest,full", VALID)
def test_parse_valid(text, domain, path, tag, digest, full):
    ref = reference.parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert str(ref) == full
    assert reference.parse(str(ref)) == ref  # normal form is a fixed point


INVALID = [
    ("", "empty"),
    ("Redis", "lower-case"),
    ("redis:", "bad tag"),
    ("redis:-x", "bad tag"),
    ("redis:" + "x" * 129, "bad tag"),
    ("a//b", "bad repository name component ''"),
    ("a/b_", "bad repository name component"),
    ("_a", "bad repository name component"),
    ("a..b", "bad repository name component"),
    ("redis@sha256:abc", "bad digest"),
    ("redis@md5:" + "a" * 32, "unsupported algorithm"),
    ("redis@sha256:" + "A" * 64, "lower-case hex"),
    (" redis", "whitespace"),
    ("re dis", "whitespace"),
    ("host_x:5000/a", "bad registry host"),
    ("-host.com/a", "bad registry host"),
    (":tag", "missing repository name"),
    ("a/" + "b" * 300, "longer than 255"),
]


@pytest.mark.parametrize("text,why", INVALID)
def test_parse_invalid_names_the_reference(text, why):
    with pytest.raises(ImageError) as exc:
        reference.parse(text)
    msg = str(exc.value)
    assert msg.startswith(f"invalid image reference {text!r}: ")
    assert why in msg
    assert "\n" not in msg


def test_properties():
    ref = reference.parse("redis:7")
    assert ref.api_host == "registry-1.docker.io"
    assert ref.familiar == "redis:7"
    assert ref.lookup == "7"
    pinned = reference.parse("127.0.0.1:5000/x@" + D)
    assert pinned.api_host == "127.0.0.1:5000"
    assert pinned.lookup == D
    assert pinned.familiar == "127.0.0.1:5000/x@" + D
    assert reference.parse("bitnami/redis").familiar == "bitnami/redis:latest"
    assert ref.with_digest(D).lookup == D


def test_looks_like_id():
    assert reference.looks_like_id("0123456789ab")
    assert reference.looks_like_id("sha256:" + "0" * 64)
    assert not reference.looks_like_id("redis")
    assert not reference.looks_like_id("abc")
