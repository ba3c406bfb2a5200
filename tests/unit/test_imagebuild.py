"""The test-image builder without root or network: layouts, recipes, splitting, push argv, mmdebstrap cache."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from provisioner.images.layers import apply_layer
from provisioner.errors import ImageError
from provisioner.imagebuild import recipes, treecmp
from provisioner.imagebuild.layout import REF_NAME, Layer, LayoutWriter, read_image
from provisioner.imagebuild.tarbuild import D, F, H, L, tar_bytes
from provisioner.runner import Result
from provisioner.testing import FakeRunner


def blob(layout, digest):
    return (layout / "blobs/sha256" / digest.split(":", 1)[1]).read_bytes()


def test_crafted_layout_is_a_valid_oci_layout(tmp_path):
    layout = tmp_path / "l"
    assert recipes.build("crafted", layout, FakeRunner()) == ["types", "whiteouts", "xattrs"]
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert [m["annotations"][REF_NAME] for m in index["manifests"]] == ["types", "whiteouts", "xattrs"]
    for path in (layout / "blobs/sha256").iterdir():  # content-addressed
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    manifest, config, digest = read_image(layout, "types")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    types = [d["mediaType"] for d in manifest["layers"]]
    assert types == ["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar"]
    first = gzip.decompress(blob(layout, manifest["layers"][0]["digest"]))
    assert config["rootfs"]["diff_ids"][0] == "sha256:" + hashlib.sha256(first).hexdigest()
    with pytest.raises(ImageError, match="tag 'nope' not found"):
        read_image(layout, "nope")


def test_docker_media_types_and_multiplatform_index(tmp_path):
    w = LayoutWriter(tmp_path / "d")
    desc = w.image([Layer((F("a", "1"),))], {"Cmd": ["x"]}, fmt="docker")
    w.tag(desc, "v1")
    manifest, config, _ = read_image(tmp_path / "d", "v1")
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    with pytest.raises(ImageError, match="cannot have zstd layers"):
        w.image([Layer((F("a", "1"),), compression="zstd")], fmt="docker")

    runner = FakeRunner().expect(["/bin/busybox", "--list"], stdout="sh\nls\nbusybox\n")
    assert recipes.build("multiplatform", tmp_path / "m", runner) == ["latest"]
    amd = read_image(tmp_path / "m", "latest", ("linux", "amd64"))
    arm = read_image(tmp_path / "m", "latest", ("linux", "arm64"))
    assert amd[1]["architecture"] == "amd64" and arm[1]["architecture"] == "arm64" and arm[1]["variant"] == "v8"
    assert amd[0]["layers"][0] == arm[0]["layers"][0]  # the busybox layer is shared
    with pytest.raises(ImageError, match="no manifest for platform linux/s390x"):
        read_image(tmp_path / "m", "latest", ("linux", "s390x"))


def test_busybox_recipe_applets_and_retag(tmp_path):
    runner = FakeRunner().expect(["/bin/busybox", "--list"], stdout="sh\nls\ncat\n")
    assert recipes.build("busybox", tmp_path / "b", runner, tag="1.0") == ["1.0"]
    index = json.loads((tmp_path / "b/index.json").read_text())
    assert [m["annotations"][REF_NAME] for m in index["manifests"]] == ["1.0"]
    manifest, config, _ = read_image(tmp_path / "b", "1.0")
    assert config["config"]["Cmd"] == ["sh"]
    dest = tmp_path / "root"
    for d in manifest["layers"]:
        apply_layer(io.BytesIO(blob(tmp_path / "b", d["digest"])), d["mediaType"], dest)
    assert {os.readlink(dest / "bin" / a) for a in ("sh", "ls", "cat")} == {"busybox"}
    assert (dest / "etc/passwd").read_text().startswith("root:x:0:0:")
    with pytest.raises(ImageError, match="writes several tags"):
        recipes.build("crafted", tmp_path / "c", FakeRunner(), tag="x")
    with pytest.raises(ImageError, match="unknown image recipe 'nope'"):
        recipes.build("nope", tmp_path / "n", FakeRunner())


@pytest.mark.parametrize("fmt,extra", [(None, []), ("docker", ["--format", "v2s2"])])
def test_push_runs_skopeo_copy(tmp_path, fmt, extra):
    argv = ["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false", *extra,
            f"oci:{tmp_path}:t", "docker://127.0.0.1:5000/a/b:t"]
    runner = FakeRunner().expect(argv)
    recipes.push(tmp_path, "127.0.0.1:5000/a/b:t", tag="t", runner=runner, fmt=fmt)
    assert runner.calls == [tuple(argv)]


def test_split_rootfs_tar_reassembles_to_the_same_tree(tmp_path):
    entries = [D("."), D("usr"), D("usr/share"), D("usr/share/doc"), F("usr/share/doc/README", "doc"),
               D("usr/lib"), F("usr/lib/libc.so", "libc", mode=0o755), D("etc"), F("etc/passwd", "root"),
               H("etc/passwd-hardlink", "etc/passwd"), H("usr/bin-lib-link", "usr/lib/libc.so"),
               D("var/lib/dpkg"), F("var/lib/dpkg/status", "ok"), L("lib", "usr/lib")]
    raw = tar_bytes(entries)
    (tmp_path / "rootfs.tar").write_bytes(raw)
    layers = recipes.split_rootfs_tar(tmp_path / "rootfs.tar")
    assert len(layers) == 4
    names = [tarfile.open(fileobj=io.BytesIO(t)).getnames() for t in layers]
    assert "usr/share/doc/README" in names[1] and "usr/lib/libc.so" in names[2]
    assert "usr/bin-lib-link" in names[2]  # a hardlink travels with its target
    assert "var/lib/dpkg/status" in names[3] and "var/lib/dpkg" in names[0]  # dirs in the base layer
    split, whole = tmp_path / "split", tmp_path / "whole"
    for t in layers:
        apply_layer(io.BytesIO(t), "application/vnd.oci.image.layer.v1.tar", split)
    apply_layer(io.BytesIO(raw), "application/vnd.oci.image.layer.v1.tar", whole)
    assert treecmp.diff(treecmp.describe(split, mtimes=False), treecmp.describe(whole, mtimes=False)) == []


def test_debian_images_share_their_base_layers(tmp_path, monkeypatch):
    base = tar_bytes([D("etc"), F("etc/debian_version", "12\n"), D("usr"), D("usr/lib"), F("usr/lib/libc.so", "c")])
    tars = {"base": base}
    for pkg in ("redis-server", "nginx-light"):
        tars[pkg] = tar_bytes([D("etc"), F("etc/debian_version", "12\n"), D("usr"), D("usr/lib"),
                               F("usr/lib/libc.so", "c"), F(f"usr/lib/{pkg}.so", pkg)])
    for name, raw in tars.items():
        (tmp_path / f"{name}.tar").write_bytes(raw)
    monkeypatch.setattr(recipes, "mmdebstrap_tar", lambda runner, include, **kw:
                        tmp_path / f"{'base' if include == recipes.BASE_INCLUDE else include[0]}.tar")
    layers = {}
    for recipe in ("debian-redis", "debian-nginx"):
        recipes.build(recipe, tmp_path / recipe, FakeRunner())
        layers[recipe] = [d["digest"] for d in read_image(tmp_path / recipe, "latest")[0]["layers"]]
    assert layers["debian-redis"][:4] == layers["debian-nginx"][:4]      # the base: same blobs
    assert layers["debian-redis"][4] != layers["debian-nginx"][4]
    assert "usr-is-merged" in recipes.DEBIAN_RECIPES["debian-redis"]["include"]


def test_mmdebstrap_tarball_is_cached_by_recipe(tmp_path):
    runner = FakeRunner(known_commands={"mmdebstrap"})

    def fake_mmdebstrap(argv):
        assert argv[-1].endswith(".tar") and "--include=redis-server" in argv and "--variant=minbase" in argv
        with open(argv[-1], "wb") as f:
            f.write(tar_bytes([F("etc/debian_version", "12\n")]))
        return Result(argv, 0, "", "")

    runner.expect(["mmdebstrap"], prefix=True, handler=fake_mmdebstrap, times=1)
    first = recipes.mmdebstrap_tar(runner, ["redis-server"], cache=tmp_path)
    again = recipes.mmdebstrap_tar(runner, ["redis-server"], cache=tmp_path)
    assert first == again and first.is_file() and len(runner.commands("mmdebstrap")) == 1
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp leftovers
    with pytest.raises(ImageError, match="mmdebstrap is not installed"):
        recipes.mmdebstrap_tar(FakeRunner(), ["nginx-light"], cache=tmp_path)


def test_cli_image_build_writes_the_layout_and_reports_json(tmp_path):
    from click.testing import CliRunner

    from provisioner.cli.main import cli

    res = CliRunner().invoke(cli, ["image", "build", "crafted", "--output", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["tags"] == ["types", "whiteouts", "xattrs"] and out["pushed"] == []
    assert read_image(tmp_path / "o", "whiteouts")[0]["layers"]
    res = CliRunner().invoke(cli, ["image", "build", "crafted", "-o", str(tmp_path / "p"), "--push", "h:5000/r:t"])
    assert res.exit_code != 0 and "give a repository without a tag" in str(res.exception)


@pytest.mark.parametrize("recipe,path,entry", [
    ("debian-mariadb", "usr/local/bin/mariadb-entrypoint", {"Entrypoint": ["/usr/local/bin/mariadb-entrypoint"]}),
    ("debian-python-app", "srv/app/status_app.py", {"Cmd": ["python3", "/srv/app/status_app.py"]}),
])
def test_debian_app_recipes_add_their_files_as_a_top_layer(tmp_path, monkeypatch, recipe, path, entry):
    base, rootfs = tmp_path / "base.tar", tmp_path / "rootfs.tar"
    base.write_bytes(tar_bytes([D("usr"), F("etc/debian_version", "12\n")]))
    rootfs.write_bytes(tar_bytes([D("usr"), F("usr/share/doc/x", "x"), F("etc/debian_version", "12\n")]))
    seen = []
    monkeypatch.setattr(recipes, "mmdebstrap_tar", lambda runner, include, **kw: seen.append((include, kw)) or
                        (base if include == recipes.BASE_INCLUDE else rootfs))
    assert recipes.build(recipe, tmp_path / "l", FakeRunner()) == ["latest"]
    opts = {"options": recipes.BASE_OPTIONS}
    assert seen == [(recipes.BASE_INCLUDE, opts), (recipes.DEBIAN_RECIPES[recipe]["include"], opts)]
    manifest, config, _ = read_image(tmp_path / "l", "latest")
    assert len(manifest["layers"]) == 6   # the base split in 4, what the packages changed, the recipe's files
    diff = tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(tmp_path / "l", manifest["layers"][4]["digest"]))))
    assert diff.getnames() == ["usr/share/doc/x"]
    top = tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(tmp_path / "l", manifest["layers"][-1]["digest"]))))
    assert top.getmember(path).isfile()
    assert {k: config["config"][k] for k in entry} == entry


def test_mariadb_entrypoint_is_valid_sh_and_writes_idempotent_init_sql(tmp_path):
    from provisioner.imagebuild.appfiles import MARIADB_ENTRYPOINT

    script = tmp_path / "entry.sh"
    script.write_text(MARIADB_ENTRYPOINT)
    import subprocess
    subprocess.run(["sh", "-n", str(script)], check=True)
    # run the SQL-writing part against a temp dir: everything between the install and the exec
    body = MARIADB_ENTRYPOINT.split("q() {", 1)[1].split("chown mysql:mysql \"$init\"", 1)[0]
    part = tmp_path / "part.sh"
    part.write_text("q() {" + body.replace("/run/mysqld/init.sql", str(tmp_path / "init.sql")))
    env = {"PATH": os.environ["PATH"], "MYSQL_DATABASE": "app", "MYSQL_USER": "o'neil", "MYSQL_PASSWORD": "a\\b"}
    subprocess.run(["sh", str(part)], check=True, env=env)
    assert (tmp_path / "init.sql").read_text().splitlines() == [
        "CREATE DATABASE IF NOT EXISTS `app`;",
        "CREATE USER IF NOT EXISTS 'o''neil'@'%' IDENTIFIED BY 'a\\\\b';",
        "GRANT ALL ON `app`.* TO 'o''neil'@'%';",
    ]


def test_status_app_answers_json_and_reports_a_redis_ping(tmp_path):
    import socket
    import subprocess
    import sys
    import threading
    import time
    import urllib.request

    from provisioner.imagebuild.appfiles import STATUS_APP

    fake = socket.create_server(("127.0.0.1", 0))
    def serve():  # every GET (health checks too) PINGs once
        while True:
            try:
                conn, _ = fake.accept()
            except OSError:
                return
            with conn:
                if conn.recv(64) == b"PING\r\n":
                    conn.sendall(b"+PONG\r\n")
    threading.Thread(target=serve, daemon=True).start()
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    (tmp_path / "app.py").write_text(STATUS_APP)
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "DB_HOST": "db", "REDIS_PORT": "tcp://10.0.0.9:6379",
           "REDIS_URL": f"redis://127.0.0.1:{fake.getsockname()[1]}/0"}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "app.py")], env=env)
    try:
        url = f"http://127.0.0.1:{port}/api/"
        deadline = time.monotonic() + 10
        while True:
            try:
                out = json.loads(urllib.request.urlopen(url, timeout=5).read())
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "status app did not come up"
                time.sleep(0.05)
        assert out["path"] == "/api/" and out["env"]["DB_HOST"] == "db"
        assert out["redis"]["host"] == "127.0.0.1" and out["redis"]["reply"] == "+PONG"
    finally:
        proc.terminate()
        proc.wait(5)
        # wake the blocked accept() first: a thread left in it on a closed descriptor takes the
        # connections of whatever socket reuses the number next (another test's server)
        fake.shutdown(socket.SHUT_RDWR)
        fake.close()
