"""A compose project's name, environment and interpolation, decided as docker compose decides them."""
from __future__ import annotations

import pytest

from provisioner.errors import StackError
from provisioner.stack import load_stack
from provisioner.stack.dotenv import parse as parse_dotenv
from provisioner.stack.interpolate import substitute
from provisioner.stack.project import ProjectOptions, normalise


def _load(path, environ=None, **kw):
    return load_stack(path, hosts_required=False, project=ProjectOptions(environ=environ or {}, **kw))


def _write(folder, text, name="compose.yaml"):
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, env, expected", [
    ("a ${X} b", {"X": "1"}, ("a 1 b", [])),
    ("$X$$Y", {"X": "x"}, ("x$Y", [])),
    ("${X:-d} ${Y:-d} ${Z-d} ${E-d} ${E:-d}", {"X": "x", "E": ""}, ("x d d  d", [])),
    ("${X:+alt}|${E:+alt}|${E+alt}|${U+alt}", {"X": "x", "E": ""}, ("alt||alt|", [])),
    ("${U:-${X}-more}", {"X": "x"}, ("x-more", [])),
    ("$(cat f) $ 5 $1", {}, ("$(cat f) $ 5 $1", [])),
    ("${MISSING} and $ALSO", {}, (" and ", ["MISSING", "ALSO"])),
])
def test_substitution_follows_compose(text, env, expected):
    assert substitute(text, env.get) == expected


@pytest.mark.parametrize("text, message", [
    ("${X:?set X first}", "required variable X is missing a value: set X first"),
    ("${X?}", "required variable X is missing a value"),
    ("${X", "'${' is never closed"),
    ("${1X}", "names no variable"),
    ("${X%%y}", "invalid interpolation format"),
])
def test_substitution_errors(text, message):
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("$", r"\$").replace("{", r"\{")):
        substitute(text, {}.get)


def test_dotenv_format():
    text = ('# c\nexport A=1\nB = two words  # comment\nC="x\\ny ${A}"\nD=\'lit ${A}\'\nE="multi\nline"\n'
            "F=a#b\nG=\nH: yaml\n")
    assert parse_dotenv(text, ".env") == {"A": "1", "B": "two words", "C": "x\ny 1", "D": "lit ${A}",
                                          "E": "multi\nline", "F": "a#b", "G": "", "H": "yaml"}
    with pytest.raises(StackError, match=r"\.env:2: bad line"):
        parse_dotenv("A=1\nnot a line\n", ".env")
    with pytest.raises(StackError, match="never closed"):
        parse_dotenv('A="open\n', ".env")


def test_project_name_precedence_and_folder_normalisation(tmp_path):
    p = _write(tmp_path / "My_Shop.v2", "services: {}\n")
    assert _load(p).name == "my_shopv2"
    p2 = _write(tmp_path / "x", "name: fromfile\nservices: {}\n")
    assert _load(p2).name == "fromfile"
    assert _load(p2, {"COMPOSE_PROJECT_NAME": "fromenv"}).name == "fromenv"
    assert _load(p2, {"COMPOSE_PROJECT_NAME": "fromenv"}, name="fromflag").name == "fromflag"
    (tmp_path / "x" / ".env").write_text("COMPOSE_PROJECT_NAME=fromdotenv\n")
    assert _load(p2).name == "fromdotenv"
    assert normalise("__Hello World-1") == "helloworld-1"
    with pytest.raises(StackError, match="project name 'Bad Name' from -p/--project-name is not valid"):
        _load(p2, name="Bad Name")
    p3 = _write(tmp_path / "y", "name: ${N:-dflt}\nservices: {}\n")
    assert _load(p3).name == "dflt" and _load(p3, {"N": "nn"}).name == "nn"
    with pytest.raises(StackError, match=r"compose.yaml:1: name: 'Nope!' is not a valid project name"):
        _load(_write(tmp_path / "z", "name: Nope!\nservices: {}\n"))


def test_a_cloud_stack_name_must_suit_cloud_resources(tmp_path):
    p = _write(tmp_path / "my_app", "services: {}\n")
    assert _load(p).name == "my_app"
    with pytest.raises(StackError, match="the stack's name 'my_app' cannot name cloud resources"):
        load_stack(p, project=ProjectOptions(environ={}))


def test_interpolation_from_env_and_dotenv_with_notices_and_errors(tmp_path):
    d = tmp_path / "app"
    p = _write(d, "version: '3.8'\nservices:\n  web:\n    image: ${REG:-docker.io}/web:${TAG}\n"
                  "    environment:\n      - MODE=${MODE:-dev}\n      - KEEP=$$HOME\n      - PROJECT=${COMPOSE_PROJECT_NAME}\n"
                  "    command: echo ${UNSET}\n")
    (d / ".env").write_text("TAG=1.2\nMODE=prod\n")
    s = _load(p, {"MODE": "shell"})
    web = s.services["web"]
    assert web.image == "docker.io/web:1.2"
    assert web.env == ("MODE=shell", "KEEP=$HOME", "PROJECT=app")     # the command's environment wins
    assert web.command == ("echo",)
    assert s.notices == (f"{p}:1: 'version' is obsolete and ignored (the compose specification has none)",
                         f"{p}:9: the 'UNSET' variable is not set; it defaults to a blank string")
    assert s.variables["TAG"] == "1.2" and s.env_files == (str(d / ".env"),)
    other = tmp_path / "other.env"
    other.write_text("TAG=9\n")
    assert _load(p, env_files=(str(other),)).services["web"].image == "docker.io/web:9"
    _write(d, "services:\n  web:\n    image: x\n    environment:\n      A: ${NEED:?set NEED}\n", "bad.yaml")
    with pytest.raises(StackError, match=r"bad.yaml:5: required variable NEED is missing a value: set NEED"):
        _load(d / "bad.yaml")
    with pytest.raises(StackError, match="env file given with --env-file not found"):
        _load(p, env_files=(str(tmp_path / "none.env"),))
