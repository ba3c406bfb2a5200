"""The debian-zookeeper recipe without root or network: its mmdebstrap options and cache key, its
layers and config, the entrypoint's zoo.cfg from the environment, and the bash 4lw client against
a fake server."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading

import pytest

from provisioner.imagebuild import recipes, zookeeper
from provisioner.imagebuild.layout import read_image
from provisioner.imagebuild.tarbuild import D, F, tar_bytes
from provisioner.runner import Result
from provisioner.testing import FakeRunner


def blob(layout, digest):
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def test_mmdebstrap_gets_the_slimming_options_and_they_key_the_cache(tmp_path):
    runner = FakeRunner(known_commands={"mmdebstrap"})
    seen = []

    def fake_mmdebstrap(argv):
        seen.append(argv)
        with open(argv[-1], "wb") as f:
            f.write(tar_bytes([F("etc/debian_version", "12\n")]))
        return Result(argv, 0, "", "")

    runner.expect(["mmdebstrap"], prefix=True, handler=fake_mmdebstrap)
    opts = zookeeper.mmdebstrap_options()
    slim = recipes.mmdebstrap_tar(runner, zookeeper.INCLUDE, cache=tmp_path, options=opts)
    plain = recipes.mmdebstrap_tar(runner, zookeeper.INCLUDE, cache=tmp_path)
    assert slim != plain and len(seen) == 2
    argv = seen[0]
    assert argv[-2] == "bookworm" and "--include=openjdk-17-jdk-headless,libzookeeper-java,usr-is-merged" in argv
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv
    assert "--dpkgopt=path-include=/usr/share/doc/*/copyright" in argv
    assert '--essential-hook=mkdir -p "$1/usr/share/man/man1"' in argv
    assert any("useradd --system --uid 999" in a for a in argv)
    # the jlinked runtime becomes a package that stands in for a JRE, then the JDK and JRE are purged
    (hook,) = [a.split("=", 1)[1] for a in argv if "jlink" in a]
    assert "--add-modules java.base,java.desktop," in hook and "--generate-cds-archive" in hook
    assert "Provides: java5-runtime-headless," in hook and "apt-get purge -y --auto-remove" in hook
    subprocess.run(["sh", "-n", "-c", hook], check=True)
    assert not [a for a in seen[1] if a.startswith(("--dpkgopt", "--customize-hook"))]
    # the earlier recipes keep the key (and so the cached tarballs) they had before options existed
    old = hashlib.sha256(json.dumps(["bookworm", "minbase", ["redis-server"], 1]).encode()).hexdigest()[:16]
    runner.expect(["mmdebstrap"], prefix=True, handler=fake_mmdebstrap)
    assert recipes.mmdebstrap_tar(runner, ["redis-server"], cache=tmp_path).name == \
        f"bookworm-minbase-redis-server-{old}.tar"


def test_recipe_layers_and_config(tmp_path, monkeypatch):
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(tar_bytes([D("usr"), D("etc"), D("var"), D("var/lib"), F("etc/debian_version", "12\n")]))
    seen = []
    monkeypatch.setattr(recipes, "mmdebstrap_tar", lambda runner, include, **kw: seen.append((include, kw)) or rootfs)
    assert recipes.build("debian-zookeeper", tmp_path / "l", FakeRunner()) == ["latest"]
    assert seen == [(recipes.BASE_INCLUDE, {"options": recipes.BASE_OPTIONS}),
                    (zookeeper.INCLUDE, {"options": zookeeper.mmdebstrap_options()})]
    manifest, config, _ = read_image(tmp_path / "l", "latest")
    assert len(manifest["layers"]) == 6
    top = tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(tmp_path / "l", manifest["layers"][-1]["digest"]))))
    assert top.getmember("usr/local/bin/zookeeper-entrypoint").mode == 0o755
    assert top.getmember("usr/local/bin/zk-ruok").mode == 0o755
    data = top.getmember("var/lib/zookeeper")
    assert (data.uid, data.gid) == (999, 999)
    c = config["config"]
    assert c["Entrypoint"] == ["/usr/local/bin/zookeeper-entrypoint"] and "Cmd" not in c
    assert set(c["ExposedPorts"]) == {"2181/tcp", "2888/tcp", "3888/tcp"}
    assert c["Volumes"] == {"/var/lib/zookeeper": {}}
    assert any(e.startswith("PATH=") for e in c["Env"]) and any(e.startswith("JVMFLAGS=-Xmx") for e in c["Env"])


def _entrypoint(tmp_path, env):
    script = tmp_path / "entry.sh"
    script.write_text(zookeeper.ENTRYPOINT)
    return subprocess.run(["sh", str(script), "--print-config"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], **env})


def test_entrypoint_is_valid_sh_and_starts_java_in_the_foreground(tmp_path):
    script = tmp_path / "entry.sh"
    script.write_text(zookeeper.ENTRYPOINT)
    subprocess.run(["sh", "-n", str(script)], check=True)
    last = zookeeper.ENTRYPOINT.rstrip().splitlines()
    assert "exec $drop java $JVMFLAGS" in zookeeper.ENTRYPOINT
    assert last[-1].strip().endswith("org.apache.zookeeper.server.quorum.QuorumPeerMain /etc/zookeeper/zoo.cfg")
    assert "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:" in last[-1]


def test_entrypoint_config_defaults_and_environment(tmp_path):
    res = _entrypoint(tmp_path, {})
    assert res.returncode == 0, res.stderr
    cfg = dict(line.split("=", 1) for line in res.stdout.splitlines())
    assert cfg["dataDir"] == "/var/lib/zookeeper" and cfg["clientPort"] == "2181"
    assert cfg["4lw.commands.whitelist"] == "ruok,srvr" and cfg["admin.enableServer"] == "false"
    res = _entrypoint(tmp_path, {"ZOO_MY_ID": "2", "ZOO_DATA_DIR": "/data", "ZOO_4LW_COMMANDS_WHITELIST": "*",
                                 "ZOO_SERVERS": "server.1=zk1:2888:3888;2181 server.2=zk2:2888:3888;2181"})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "dataDir=/data" in lines and "4lw.commands.whitelist=*" in lines
    assert lines[-2:] == ["server.1=zk1:2888:3888;2181", "server.2=zk2:2888:3888;2181"]


@pytest.mark.parametrize("bad", ["0", "256", "one", "-1", "1 2"])
def test_entrypoint_refuses_a_bad_server_id_in_one_line(tmp_path, bad):
    res = _entrypoint(tmp_path, {"ZOO_MY_ID": bad})
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.splitlines() == [f"zookeeper-entrypoint: ZOO_MY_ID must be a number from 1 to 255, not '{bad}'"]


@pytest.mark.skipif(not shutil.which("bash"), reason="bash is needed")
def test_ruok_client_against_a_fake_four_letter_word_server(tmp_path):
    answers = {b"ruok": b"imok", b"srvr": b"Zookeeper version: 3.8.0\nMode: standalone\n"}
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:   # like ZooKeeper: read the word, answer, close
                word = b""
                while len(word) < 4 and (chunk := conn.recv(4 - len(word))):
                    word += chunk
                conn.sendall(answers.get(word, b""))

    threading.Thread(target=serve, daemon=True).start()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in (("zk-4lw", zookeeper.FOUR_LW), ("zk-ruok", zookeeper.RUOK)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    try:
        ok = subprocess.run(["zk-ruok", "127.0.0.1", str(port)], capture_output=True, text=True, env=env)
        assert (ok.returncode, ok.stdout) == (0, "imok\n"), ok.stderr
        srvr = subprocess.run(["zk-4lw", "srvr", "127.0.0.1", str(port)], capture_output=True, text=True, env=env)
        assert srvr.returncode == 0 and "Mode: standalone" in srvr.stdout, srvr.stderr
        # a connection closed without a reply
        none = subprocess.run(["zk-4lw", "stat", "127.0.0.1", str(port)], capture_output=True, text=True, env=env)
        assert none.returncode == 1 and "no answer to stat" in none.stderr, none
    finally:
        server.shutdown(socket.SHUT_RDWR)   # wakes the blocked accept(); a bare close() would not
        server.close()
    refused = subprocess.run(["zk-ruok", "127.0.0.1", str(port)], capture_output=True, text=True, env=env)
    assert refused.returncode == 1 and refused.stdout == "", refused
