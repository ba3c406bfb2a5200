"""Deploying a compose file with no hosts: section: one host on the local cloud; the files it names
(env files, secret and config files) travel beside the stack file, and the variables it was
interpolated with (and its name) in /etc/provisioner/.provision.env, so the host reads the same
stack as the operator's machine did."""
from __future__ import annotations

import os
import shutil

import pytest

from provisioner.deploy.plan import REMOTE_ENV, plan_deploy
from provisioner.errors import ConfigError
from provisioner.stack import load_stack
from provisioner.stack.project import ProjectOptions

COMPOSE = """\
services:
  web:
    image: registry.local/web:${TAG:-1}
    ports: ["${PORT}:80"]
    env_file: web.env
    secrets: [pw]
    environment:
      HOME_DIR: ${HOME_DIR}
      FROM_SHELL:
secrets:
  pw:
    file: ./secrets/pw.txt
"""


@pytest.fixture
def project(tmp_path):
    d = tmp_path / "Shop Front"
    (d / "secrets").mkdir(parents=True)
    (d / "compose.yaml").write_text(COMPOSE)
    (d / ".env").write_text("PORT=8080\n")
    (d / "web.env").write_text("A=1\n")
    (d / "secrets" / "pw.txt").write_text("hunter2\n")
    os.chmod(d / "secrets" / "pw.txt", 0o600)
    return d


def test_a_file_without_hosts_deploys_to_one_local_host_with_its_files_and_variables(project, tmp_path):
    stack = load_stack(project / "compose.yaml", project=ProjectOptions(environ={"HOME_DIR": "/home/op",
                                                                               "FROM_SHELL": "yes"}))
    assert stack.name == "shopfront" and [h.name for h in stack.hosts] == ["main"] and stack.implicit_hosts
    # its container store: one instance-store disk as btrfs (the store needs btrfs; the VM's root is not)
    main = stack.hosts[0]
    assert main.ephemeral.count == 1 and main.disks.ephemeral.mount == "/var/lib/provisioner"
    plan = plan_deploy(stack, "local")
    (host,) = plan.hosts
    assert host.services == ("web",) and host.tcp_ports == (8080,)
    assert host.files == ((str(project / "web.env"), "/etc/provisioner/web.env"),
                          (str(project / "secrets" / "pw.txt"), "/etc/provisioner/secrets/pw.txt"))
    assert host.project_env == ('COMPOSE_PROJECT_NAME="shopfront"\nFROM_SHELL="yes"\nHOME_DIR="/home/op"\n'
                                'PORT="8080"\n')
    with pytest.raises(ConfigError, match="the stack has no hosts: section: it deploys to the local cloud"):
        plan_deploy(stack, "aws")

    # the host's copy: /etc/provisioner/{stack.yml,.provision.env,...}, in a folder of another name and
    # an environment of its own (root's, with its own HOME_DIR): the same stack
    remote = tmp_path / "etc" / "provisioner"
    (remote / "secrets").mkdir(parents=True)
    shutil.copy(project / "compose.yaml", remote / "stack.yml")
    shutil.copy(project / "web.env", remote / "web.env")
    shutil.copy(project / "secrets" / "pw.txt", remote / "secrets" / "pw.txt")
    (remote / REMOTE_ENV.rsplit("/", 1)[1]).write_text(host.project_env)
    there = load_stack(remote / "stack.yml", project=ProjectOptions(environ={"HOME_DIR": "/root", "TAG": "9"}))
    assert there.name == stack.name and there.services["web"].image == "registry.local/web:1"
    assert there.services["web"].env == ("HOME_DIR=/home/op", "FROM_SHELL=yes")
    assert there.services["web"].ports == stack.services["web"].ports


def test_up_and_ps_on_the_host_take_the_implicit_host(project, tmp_path, capsys):
    from provisioner.cli.main import main

    for cmd in (["up", "--dry-run"], ["ps"]):
        with pytest.raises(SystemExit) as exc:
            main(["--root", str(tmp_path / "root"), "--json", *cmd, "-f", str(project / "compose.yaml"),
                  "--host", "main"])
        out = capsys.readouterr()
        assert exc.value.code == 0, out.err
        assert "web" in out.out

