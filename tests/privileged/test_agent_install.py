"""The agent delivered from a plain install (`pip install .` into a venv, no source tree in reach):
its wheel is made from the installed files, delivered through the Runner contract — here this
machine's own Runner, into temporary paths, as a host's root would get it over SSH — and the
installed agent runs without the operator's libraries. And the staging directory is root's alone:
a wheel planted there beforehand by another account is never installed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.privileged
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv with provisioner installed as a user would: `pip install .` (a wheel, not editable)."""
    venv = tmp_path_factory.mktemp("plain") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(REPO)],
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    return venv


def _in_venv(venv: Path, code: str, cwd: Path) -> str:
    """Python code run by the venv's interpreter, away from the checkout (cwd elsewhere, no PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([str(venv / "bin" / "python"), "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=1200, cwd=cwd, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def _deliver(venv: Path, target: Path, cache: Path) -> dict:
    return json.loads(_in_venv(venv, f"""
        import json, provisioner
        from provisioner.remote.bundle import AgentBundles
        from provisioner.remote.deliver import deliver
        from provisioner.runner import Runner
        r = deliver(Runner(), AgentBundles(Runner(), cache={str(cache)!r}), home={str(target)!r},
                    venv={str(target / "venv")!r}, staging={str(target / "wheels")!r},
                    link={str(target / "provision")!r})
        print(json.dumps({{"sent": r.sent, "skipped": r.skipped, "module": provisioner.__file__}}))
    """, cwd=target.parent))


def test_a_plain_install_delivers_an_agent_that_runs_without_the_operator_libraries(installed, tmp_path):
    target, cache = tmp_path / "host", tmp_path / "cache"
    first = _deliver(installed, target, cache)
    assert first["module"].startswith(str(installed)) and str(REPO) not in first["module"]
    assert any(n.startswith("provisioner-") for n in first["sent"]) and len(first["sent"]) > 3   # deps too
    (wheel,) = (cache / "agent").glob("*/provisioner-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert "provisioner/_bin/provision-runtime" in names and "provisioner/_bin/provision-shim" in names
    agent = target / "provision"
    for args in (["--version"], ["host", "--help"], ["image", "--help"], ["up", "--help"]):
        p = subprocess.run([str(agent), *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, (args, p.stderr)
    pip_list = subprocess.run([str(target / "venv" / "bin" / "python"), "-c",
                               "import importlib.metadata as m; print(sorted(d.metadata['Name'].lower() "
                               "for d in m.distributions()))"], capture_output=True, text=True, check=True).stdout
    assert "click" in pip_list and "paramiko" not in pip_list and "apache-libcloud" not in pip_list
    assert "jinja2" not in pip_list
    assert oct((target / "wheels").stat().st_mode & 0o777) == "0o700" and (target / "wheels").stat().st_uid == 0
    again = _deliver(installed, target, cache)   # unchanged: the probe only
    assert again["sent"] == [] and len(again["skipped"]) == len(first["sent"])


@pytest.mark.parametrize("plant", ["directory", "symlink"])
def test_a_staging_directory_another_account_prepared_is_not_used(installed, tmp_path, plant):
    """Another local account pre-creates the staging directory — its own, with a 'dependency'
    wheel planted in it, or a symlink to a directory it controls — hoping root installs from it or
    writes into it (where the account could swap a wheel between the hash check and the install)."""
    target, cache = tmp_path / "host", tmp_path / "cache"
    target.mkdir()
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o777)
    evil = theirs / "click-99.0-py3-none-any.whl"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("click/__init__.py", "raise SystemExit('planted click ran')\n")
    for p in (theirs, evil):
        os.chown(p, 65534, 65534)
    stage = target / "wheels"
    if plant == "symlink":
        stage.symlink_to(theirs)
        os.lchown(stage, 65534, 65534)
    else:
        theirs.rename(stage)
        theirs = stage
    _deliver(installed, target, cache)
    assert not stage.is_symlink() and stage.stat().st_uid == 0 and oct(stage.stat().st_mode & 0o777) == "0o700"
    assert not any(stage.glob("click-99*")) and not any(p.name.endswith(".whl") and p != evil
                                                          for p in (tmp_path / "theirs").glob("*")
                                                          if (tmp_path / "theirs").exists())
    p = subprocess.run([str(target / "provision"), "--version"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "planted" not in p.stderr, p.stderr
