"""wheelinstall against pip itself: the same wheel installed by both into two fresh venvs gives the
same files and a working console script; an upgrade removes what the old version had; a wheel
whose content does not match its RECORD is refused before anything is touched."""
from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from provisioner.host import wheelinstall

SOURCE = Path(wheelinstall.__file__).read_text()


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(dirpath: Path, version: str, modules: dict[str, str], *, tamper: str | None = None) -> Path:
    info = f"demo_tool-{version}.dist-info"
    files = {f"demo_tool/{m}": text.encode() for m, text in modules.items()}
    files[f"demo_tool-{version}.data/scripts/demo-sh"] = b"#!python\nprint('from a data script')\n"
    files[f"demo_tool/_bin/helper"] = b"#!/bin/sh\necho helper\n"
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: demo-tool\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\ndemo = demo_tool.cli:main\n"
    record = "".join(f"{n},{_digest(d)},{len(d)}\n" for n, d in files.items()) + f"{info}/RECORD,,\n"
    if tamper:
        files[tamper] += b"# changed after RECORD was written\n"
    path = dirpath / f"demo_tool-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in files.items():
            zi = zipfile.ZipInfo(n)
            zi.external_attr = (stat.S_IFREG | (0o755 if n.endswith(("helper", "demo-sh")) else 0o644)) << 16
            zf.writestr(zi, d)
        zf.writestr(f"{info}/RECORD", record)
    return path


V1 = {"__init__.py": "", "cli.py": "def main():\n    print('demo one')\n", "old.py": "X = 1\n"}
V2 = {"__init__.py": "", "cli.py": "def main():\n    print('demo two')\n", "new.py": "Y = 2\n"}


def venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


def ours(env: Path, wheel: Path) -> subprocess.CompletedProcess:
    # as deliver runs it: this file's text on the venv python's stdin
    return subprocess.run([str(env / "bin" / "python"), "-", str(wheel)], input=SOURCE, text=True,
                          capture_output=True)


def tree(env: Path) -> set[str]:
    skip = {"INSTALLER", "RECORD", "REQUESTED", "direct_url.json"}
    return {str(p.relative_to(env)) for p in env.rglob("*")
            if p.is_file() and p.name not in skip and "__pycache__" not in p.parts and "demo" in str(p)}


def test_same_files_as_pip_and_the_console_script_runs(tmp_path):
    wheel = make_wheel(tmp_path, "1.0", V1)
    a, b = venv(tmp_path / "pip"), venv(tmp_path / "ours")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(a / "bin/python"), "install", "-q",
                    "--disable-pip-version-check", "--no-index", "--no-deps", "--no-compile", str(wheel)], check=True)
    res = ours(b, wheel)
    assert res.returncode == 0, res.stderr
    assert "installed demo_tool-1.0" in res.stdout
    assert tree(a) == tree(b) and len(tree(b)) >= 7
    for env in (a, b):
        assert subprocess.run([str(env / "bin/demo")], capture_output=True, text=True).stdout == "demo one\n"
        assert subprocess.run([str(env / "bin/demo-sh")], capture_output=True, text=True).stdout == \
            "from a data script\n"
    helper = next((b / "lib").rglob("_bin/helper"))
    assert os.access(helper, os.X_OK)
    info = next((b / "lib").rglob("demo_tool-1.0.dist-info"))
    assert (info / "INSTALLER").read_text() == "provisioner\n"
    rows = (info / "RECORD").read_text().splitlines()
    assert any(r.startswith("../../../bin/demo,sha256=") for r in rows)
    assert "demo_tool/old.py" in "\n".join(rows)


def test_upgrade_removes_what_the_old_version_had(tmp_path):
    env = venv(tmp_path / "env")
    assert ours(env, make_wheel(tmp_path, "1.0", V1)).returncode == 0
    subprocess.run([str(env / "bin/python"), "-c", "import demo_tool.old"], check=True)  # leaves byte code
    res = ours(env, make_wheel(tmp_path, "2.0", V2))
    assert res.returncode == 0, res.stderr
    site = next((env / "lib").glob("python*/site-packages"))
    assert not (site / "demo_tool/old.py").exists()
    assert not list(site.glob("demo_tool/__pycache__/old.*"))
    assert (site / "demo_tool/new.py").exists()
    assert sorted(p.name for p in site.glob("demo_tool-*.dist-info")) == ["demo_tool-2.0.dist-info"]
    assert subprocess.run([str(env / "bin/demo")], capture_output=True, text=True).stdout == "demo two\n"


def test_a_wheel_not_matching_its_record_changes_nothing(tmp_path):
    env = venv(tmp_path / "env")
    assert ours(env, make_wheel(tmp_path, "1.0", V1)).returncode == 0
    before = {p: p.read_bytes() for p in env.rglob("*") if p.is_file()}
    bad = make_wheel(tmp_path, "2.0", V2, tamper="demo_tool/cli.py")
    res = ours(env, bad)
    assert res.returncode == 1
    assert res.stderr.strip() == f"wheelinstall: {bad}: demo_tool/cli.py does not match its RECORD hash"
    assert {p: p.read_bytes() for p in env.rglob("*") if p.is_file()} == before


def test_refuses_what_is_not_a_wheel(tmp_path):
    env = venv(tmp_path / "env")
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    res = ours(env, junk)
    assert res.returncode == 1 and res.stderr.startswith("wheelinstall: ")
    with pytest.raises(wheelinstall.WheelError, match="expected one .dist-info"):
        empty = tmp_path / "empty.whl"
        with zipfile.ZipFile(empty, "w") as zf:
            zf.writestr("x.py", "")
        wheelinstall.install(str(empty))


def test_shipped_byte_code_is_what_the_host_imports(tmp_path):
    from provisioner.remote import bytecode

    wheel = make_wheel(tmp_path, "1.0", V1)
    assert bytecode.add_to_wheel(wheel) == 3    # the package's three modules; not the data script
    with zipfile.ZipFile(wheel) as zf:
        assert f"demo_tool/__pycache__/cli.{sys.implementation.cache_tag}.pyc" in zf.namelist()
    env = venv(tmp_path / "env")
    res = ours(env, wheel)                      # also checks the new RECORD rows
    assert res.returncode == 0, res.stderr
    site = next((env / "lib").glob("python*/site-packages"))
    pyc = site / f"demo_tool/__pycache__/cli.{sys.implementation.cache_tag}.pyc"
    shipped = pyc.read_bytes()
    assert shipped[4:8] == (0b11).to_bytes(4, "little")   # hash-checked: mtimes do not matter
    run = subprocess.run([str(env / "bin/python"), "-v", "-c", "import demo_tool.cli as c; c.main()"],
                         capture_output=True, text=True)
    assert run.stdout == "demo one\n"
    assert f"code object from '{pyc}'" in run.stderr   # loaded, not compiled again
    assert pyc.read_bytes() == shipped
    # the old version's byte code goes with it on an upgrade
    v2 = make_wheel(tmp_path / "v2" if (tmp_path / "v2").mkdir() is None else tmp_path, "2.0", V2)
    bytecode.add_to_wheel(v2)
    assert ours(env, v2).returncode == 0
    assert not list(site.glob("demo_tool/__pycache__/old.*")) and list(site.glob("demo_tool/__pycache__/new.*"))


def test_an_upgrade_in_place_writes_only_what_changed(tmp_path):
    """The agent's upgrade on a reused host: same version number, one module changed. Only that
    module (and RECORD) is written; every other file keeps its inode and mtime; the result is what
    a fresh install of the new wheel gives."""
    env = venv(tmp_path / "env")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    v1 = make_wheel(tmp_path / "a", "1.0", V1)
    v1b = make_wheel(tmp_path / "b", "1.0", {**V1, "cli.py": "def main():\n    print('demo one, fixed')\n"})
    assert ours(env, v1).returncode == 0
    site = next((env / "lib").glob("python*/site-packages"))
    files = [p for p in env.rglob("*") if p.is_file() and "demo" in str(p) and p.name != "RECORD"]
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    res = ours(env, v1b)
    assert res.returncode == 0, res.stderr
    assert "(2 written, " in res.stdout          # cli.py and RECORD
    changed = {p for p in files if (p.stat().st_ino, p.stat().st_mtime_ns) != before[p]}
    assert changed == {site / "demo_tool/cli.py"}
    assert subprocess.run([str(env / "bin/demo")], capture_output=True, text=True).stdout == "demo one, fixed\n"
    fresh = venv(tmp_path / "fresh")
    assert ours(fresh, v1b).returncode == 0
    fresh_site = next((fresh / "lib").glob("python*/site-packages"))
    def record(site):   # scripts name their venv's python, so only their paths compare
        rows = (site / "demo_tool-1.0.dist-info/RECORD").read_text().splitlines()
        return sorted(r.split(",")[0] if r.startswith("../") else r for r in rows)
    assert tree(env) == tree(fresh) and record(site) == record(fresh_site)


def test_an_installed_file_changed_on_disk_is_written_again(tmp_path):
    env = venv(tmp_path / "env")
    wheel = make_wheel(tmp_path, "1.0", V1)
    assert ours(env, wheel).returncode == 0
    site = next((env / "lib").glob("python*/site-packages"))
    (site / "demo_tool/cli.py").write_text("def main():\n    print('edited by hand on the host')\n")
    (site / "demo_tool/_bin/helper").chmod(0o644)
    res = ours(env, wheel)
    assert res.returncode == 0 and "(3 written, " in res.stdout
    assert subprocess.run([str(env / "bin/demo")], capture_output=True, text=True).stdout == "demo one\n"
    assert os.access(site / "demo_tool/_bin/helper", os.X_OK)


def test_a_partial_wheel_installs_over_the_version_it_was_made_against(tmp_path):
    from provisioner.remote.bundle import partial_wheel

    env = venv(tmp_path / "env")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    v1 = make_wheel(tmp_path / "a", "1.0", V1)
    v1b = make_wheel(tmp_path / "b", "1.0", {**V1, "cli.py": "def main():\n    print('patched')\n"})
    data, sent, total = partial_wheel(v1, v1b)
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as z:
        names = z.namelist()
    assert "demo_tool/cli.py" in names and "demo_tool/old.py" not in names and sent == len(names) < total
    part = tmp_path / "part" / v1b.name
    part.parent.mkdir()
    part.write_bytes(data)
    # over nothing installed: refused with 3, nothing written
    fresh = venv(tmp_path / "fresh")
    before = sorted(str(p) for p in fresh.rglob("*"))
    res = ours(fresh, part)
    assert res.returncode == 3 and "is neither in this partial wheel nor installed as its RECORD says" in res.stderr
    assert sorted(str(p) for p in fresh.rglob("*")) == before
    # over v1: the result is v1b's
    assert ours(env, v1).returncode == 0
    res = ours(env, part)
    assert res.returncode == 0, res.stderr
    assert subprocess.run([str(env / "bin/demo")], capture_output=True, text=True).stdout == "patched\n"
    site = next((env / "lib").glob("python*/site-packages"))
    assert (site / "demo_tool/old.py").read_text() == "X = 1\n"
