import pytest

from provisioner.errors import StackError
from provisioner.stack import load_stack
from provisioner.stack.placement import check_placement, for_host

BASE = """\
name: shop
hosts:
  - name: web
    services: [nginx, app]
  - name: db
    services: [redis]
services:
  redis:
    image: redis
  app:
    image: app
    depends_on: [{dep}]
  nginx:
    image: nginx
    links: [app]
"""


def _load(tmp_path, text):
    p = tmp_path / "stack.yml"
    p.write_text(text)
    return load_stack(p)


def test_services_for_a_host_in_dependency_order(tmp_path):
    stack = _load(tmp_path, BASE.replace("depends_on: [{dep}]", "command: [sleep, '1']"))
    web = for_host(stack, "web")
    assert web.order == ("app", "nginx") and set(web.services) == {"app", "nginx"}
    assert tuple(for_host(stack, "db").services) == ("redis",)


def test_a_dependency_on_another_host_is_an_error_at_the_service(tmp_path):
    stack = _load(tmp_path, BASE.replace("{dep}", "redis"))
    with pytest.raises(StackError, match=r"stack.yml:11: service 'app' on host 'web' links to or depends on 'redis', "
                                         r"which runs on 'db'"):
        check_placement(stack)


def test_unplaced_and_twice_placed_services(tmp_path):
    stack = _load(tmp_path, BASE.replace("depends_on: [{dep}]", "command: [x]").replace(
        "    services: [redis]\n", "    services: []\n"))
    with pytest.raises(StackError, match=r"stack.yml:9: service 'redis' is placed on no host"):
        check_placement(stack)
    stack = _load(tmp_path, BASE.replace("depends_on: [{dep}]", "command: [x]").replace(
        "[redis]", "[redis, app]"))
    with pytest.raises(StackError, match=r"stack.yml:5: service 'app' is placed on hosts 'web' and 'db'"):
        check_placement(stack)


def test_unknown_host(tmp_path):
    stack = _load(tmp_path, BASE.replace("depends_on: [{dep}]", "command: [x]"))
    with pytest.raises(StackError, match=r"host 'cache' is not in stack 'shop' \(hosts: web, db\)"):
        for_host(stack, "cache")
