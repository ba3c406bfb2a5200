"""Compose files from the wild (tests/fixtures/compose-corpus, unmodified; SOURCES.md says where each
comes from): `provision up --dry-run` in each one's folder either plans it, or refuses it only for a
service that has `build:` and no `image:`, in one line naming it at file:line."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from provisioner.cli.main import main

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "compose-corpus"
FILES = sorted(p for p in CORPUS.rglob("*.y*ml"))
BUILD_ONLY = re.compile(r"error: (?P<file>[^:]+):(?P<line>\d+): services\.(?P<service>[\w.-]+): 'build' without "
                        r"'image' — provisioner builds no images; build it, push it, name it in image:")
# what the corpus gives today: a change in either list is a change in what provisioner accepts
REFUSED_FOR_BUILD = {
    "awesome-compose/angular/compose.yaml", "awesome-compose/aspnet-mssql/compose.yaml",
    "awesome-compose/fastapi-ollama/compose.yaml", "awesome-compose/nginx-aspnet-mysql/docker-compose.yaml",
    "awesome-compose/nginx-flask-mysql/compose.yaml", "awesome-compose/nginx-golang-postgres/compose.yaml",
    "awesome-compose/nginx-wsgi-flask/compose.yaml", "awesome-compose/react-java-mysql/compose.yaml",
    "awesome-compose/react-rust-postgres/compose.yaml", "awesome-compose/sparkjava-mysql/docker-compose.yaml",
    "awesome-compose/spring-postgres/compose.yaml", "awesome-compose/traefik-golang/docker-compose.yml",
    "example-voting-app/docker-compose.yml",
}


def _provision(capsys, *args: str):
    """The CLI as a user runs it (its error boundary included), in this process."""
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_the_corpus_is_at_least_thirty_files_each_listed_in_sources():
    assert len(FILES) >= 30
    sources = (CORPUS / "SOURCES.md").read_text()
    for p in FILES:
        assert f"`{p.relative_to(CORPUS)}`" in sources, p


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_up_dry_run_plans_it_or_refuses_only_a_build_only_service(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(path.parent)
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    code, stdout, stderr = _provision(capsys, "--root", str(tmp_path / "root"), "--json", "up", "--dry-run", "-f",
                                      path.name)
    rel = str(path.relative_to(CORPUS))
    if rel in REFUSED_FOR_BUILD:
        lines = stderr.strip().splitlines()
        assert code == 2 and BUILD_ONLY.fullmatch(lines[-1]), stderr
        m = BUILD_ONLY.fullmatch(lines[-1])
        text = path.read_text().splitlines()
        assert text[int(m["line"]) - 1].strip().rstrip(":") == m["service"]      # the line names the service
        assert all(ln.startswith("notice: ") for ln in lines[:-1])
        return
    assert code == 0, stderr
    actions = json.loads(stdout)
    assert actions and all(a["action"] == "create" for a in actions)
    assert all(ln.startswith("notice: ") for ln in stderr.strip().splitlines() if ln)
    assert not (tmp_path / "root").exists()      # a dry run touches nothing
