"""Agent delivery against a local account planting a wheel, for real: deliver() drives this
machine as if over SSH (commands as a login user made here, `sudo` ones as root, the wheels streamed
on root's stdin), with a real venv, the host's pip and the agent's wheelinstall. Another account made
here plants a dependency wheel — same name and size as the real one, with a .pth file that runs
as root at every start of the venv's Python — wherever it can: it must never be installed."""
from __future__ import annotations

import base64
import hashlib
import io
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from provisioner.remote.bundle import AgentBundle
from provisioner.runner import Result

pytestmark = [pytest.mark.privileged,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("setpriv", "useradd")), reason="needs setpriv, useradd")]
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def sh(*argv, check=True, **kw):
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=300, **kw)


def make_wheel(dest: Path, dist: str, version: str, files: dict[str, bytes], *, scripts: dict[str, str] | None = None,
               pad_to: int | None = None, requires: tuple[str, ...] = ()) -> Path:
    info = f"{dist}-{version}.dist-info"
    files = dict(files)
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
                                 + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    if scripts:
        files[f"{info}/entry_points.txt"] = ("[console_scripts]\n" + "".join(
            f"{k} = {v}\n" for k, v in scripts.items())).encode()
    record = "".join(f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
                     f"{len(d)}\n" for n, d in files.items()) + f"{info}/RECORD,,\n"
    path = dest / f"{dist}-{version}-py3-none-any.whl"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
        z.writestr(f"{info}/RECORD", record)
    if pad_to is not None:             # the real wheel's size: a zip comment makes up the difference
        short = pad_to - len(buf.getvalue())
        assert 0 <= short < 65535, short
        with zipfile.ZipFile(buf, "a") as z:
            z.comment = b"x" * short
    path.write_bytes(buf.getvalue())
    return path


def new_user(prefix: str):
    name = f"{prefix}{secrets.token_hex(3)}"
    sh("useradd", "--create-home", "--shell", "/bin/sh", name)
    return pwd.getpwnam(name)


def as_user(pw, *argv, input=None, check=True):
    return subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--reset-env",
                           "--", "/bin/sh", "-c", 'exec "$@"', "sh", *argv], input=input, capture_output=True,
                          check=check, timeout=300, cwd="/")


class LocalHost:
    """deliver()'s SSH, here: commands as the login user, `sudo` ones as root, puts as the login user."""

    def __init__(self, login):
        self.login, self.where = login, f"{login.pw_name}@localhost"

    def run(self, argv, *, check=True, input=None, timeout=None, sudo=False, **kw):
        if callable(input):            # the Runner contract's producer: what it sends, in order
            parts: list[bytes] = []
            input(parts.append)
            input = b"".join(parts)
        data = input.encode() if isinstance(input, str) else input
        if sudo:
            p = subprocess.run(list(argv), input=data, capture_output=True, timeout=timeout or 600)
        else:
            p = as_user(self.login, *argv, input=data, check=False)
        res = Result(tuple(argv), p.returncode, p.stdout.decode(), p.stderr.decode())
        if check and p.returncode:
            raise AssertionError(f"{argv} failed: {res.stderr}")
        return res


@pytest.fixture
def world():
    base = Path(tempfile.mkdtemp(prefix="prov-wheels-", dir="/var/tmp"))
    base.chmod(0o755)
    (base / "vartmp").mkdir(mode=0o1777)
    (base / "vartmp").chmod(0o1777)                      # like /var/tmp
    (base / "opt").mkdir()                               # like /opt: root's, 0755
    login, attacker = new_user("pdep"), new_user("patk")
    try:
        yield base, login, attacker
    finally:
        for u in (login, attacker):
            sh("userdel", "--remove", u.pw_name, check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_a_planted_wheel_is_never_installed(world, tmp_path, monkeypatch):
    from provisioner.remote import deliver as d

    base, login, attacker = world
    src = tmp_path / "wheels"
    src.mkdir()
    agent = make_wheel(src, "provisioner", "0.0.1", {"provisioner_stub.py": b"def main():\n    print('provision, version 0.0.1')\n"},
                       scripts={"provision": "provisioner_stub:main"}, requires=("evdep",))
    dep = make_wheel(src, "evdep", "1.0", {"evdep.py": b"GENUINE = True\n", "evdep_data.txt": b"." * 2000})
    marker = base / "vartmp" / "pwned"
    evil_dir = base / "evil"           # readable by the accounts (pytest's tmp_path is root's alone)
    evil_dir.mkdir(mode=0o755)
    evil = make_wheel(evil_dir, "evdep", "1.0", {"evdep.py": b"GENUINE = False\n",
                                                 "zzz-evil.pth": f"import os; open('{marker}', 'w').write(str(os.getuid()))\n".encode()},
                      pad_to=dep.stat().st_size)
    assert evil.name == dep.name and evil.stat().st_size == dep.stat().st_size
    bundle = AgentBundle(agent, (dep,), PY)
    staging, venv = base / "opt" / "provisioner" / "wheels", base / "opt" / "provisioner" / "venv"
    old_staging = base / "vartmp" / "provisioner-wheels"     # where delivery staged before
    # the attacker plants wherever it can: the old staging path, and (refused) the new one
    as_user(attacker, "mkdir", "-p", str(old_staging))
    as_user(attacker, "chmod", "0777", str(old_staging))
    as_user(attacker, "cp", str(evil), str(old_staging / evil.name), check=False)
    planted_new = as_user(attacker, "cp", str(evil), str(staging / evil.name), check=False)
    host = LocalHost(login)
    d.deliver(host, bundle, home=str(base / "opt" / "provisioner"), venv=str(venv), staging=str(staging),
              link=str(base / "opt" / "provision"))   # not this machine's /usr/local/bin
    assert not marker.exists(), f"the planted wheel ran as uid {marker.read_text()}"
    site = next(venv.glob("lib/python*/site-packages"))
    assert (site / "evdep.py").read_text() == "GENUINE = True\n" and not (site / "zzz-evil.pth").exists()
    assert planted_new.returncode != 0
    st = staging.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o700)
    assert sorted(p.name for p in staging.glob("*.whl")) == sorted([agent.name, dep.name])
    assert (old_staging / evil.name).exists()      # left where it was planted, never read


def _made_here(cache: Path, key: str, wheel: Path) -> Path:
    """`wheel` as remote/bundle.agent_wheel leaves it in its cache: beside its content digest."""
    from provisioner.remote.bundle import content_digest

    d = cache / "agent" / key
    d.mkdir(parents=True)
    shutil.copy(wheel, d / wheel.name)
    (d / "content").write_text(content_digest(wheel) + "\n")
    (d / ".complete").write_text("")
    return d / wheel.name


def test_a_new_agent_travels_as_its_changed_files_and_a_host_that_differs_gets_the_whole_wheel(world, tmp_path):
    from provisioner.remote import deliver as d

    base, login, _attacker = world
    cache = tmp_path / "cache"
    modules = {f"provisioner_stub/m{i}.py": (f"# module {i}\n" + "X = 1\n" * 2000).encode() for i in range(20)}

    def agent(version_text: str, key: str) -> AgentBundle:
        src = tmp_path / key
        src.mkdir()
        files = {**modules, "provisioner_stub/__init__.py": f"def main():\n    print({version_text!r})\n".encode()}
        wheel = make_wheel(src, "provisioner", "0.0.1", files, scripts={"provision": "provisioner_stub:main"},
                           requires=("evdep",))
        return AgentBundle(_made_here(cache, key, wheel), (dep,), PY)

    (tmp_path / "deps").mkdir()
    dep = make_wheel(tmp_path / "deps", "evdep", "1.0", {"evdep.py": b"GENUINE = True\n"})
    staging, venv, link = base / "opt/provisioner/wheels", base / "opt/provisioner/venv", base / "opt/provision"
    host = LocalHost(login)
    sent = []

    def deliver(bundle):
        facts = d.parse_probe(host.run(["sh", "-c", d.probe_script(str(venv))], sudo=True).stdout, host.where)
        said = []
        report = d.deliver(host, bundle, home=str(base / "opt/provisioner"), venv=str(venv), staging=str(staging),
                           link=str(link), facts=facts, progress=said.append)
        sent.append(report.bytes_sent)
        assert sh(str(link)).stdout == sh(str(venv / "bin/python"), "-c",
                                          "import provisioner_stub; provisioner_stub.main()").stdout
        return sh(str(link)).stdout, said

    first = agent("one", "a")
    assert deliver(first)[0] == "one\n"                         # a new host: the whole set
    out, said = deliver(agent("two", "b"))
    assert out == "two\n" and any("(5 of its 25 files: what changed" in m for m in said), said   # __init__ + dist-info
    assert sent[1] < first.project_wheel.stat().st_size / 4
    site = next(venv.glob("lib/python*/site-packages"))
    assert (site / "provisioner_stub/m3.py").read_bytes() == modules["provisioner_stub/m3.py"]
    # the host's files are not what its record says: the partial wheel is refused, the whole one installs
    (site / "provisioner_stub/m3.py").unlink()
    out, said = deliver(agent("three", "c"))
    assert out == "three\n" and any("sending the whole wheel" in m for m in said)
    assert (site / "provisioner_stub/m3.py").read_bytes() == modules["provisioner_stub/m3.py"]
