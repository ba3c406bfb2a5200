"""Cloud-init user-data from jinja2 templates (sandboxed, StrictUndefined).

Templates live in `templates/` at the top of a checkout, or in `provisioner/_templates` when
installed from a wheel. Every value is inserted through the `q` filter (a JSON string, which is a
valid YAML double-quoted scalar), so stack names or keys can never break the YAML.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from ..errors import ConfigError

TEMPLATE = "cloud-init/user-data.yaml.j2"
AGENT_PATH = "/usr/local/bin/provision"


def templates_dir() -> Path:
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "templates", here.parents[1] / "_templates"):
        if (candidate / TEMPLATE).is_file():
            return candidate
    raise ConfigError(f"cloud-init templates not found (looked for {TEMPLATE} under templates/ and "
                      "provisioner/_templates)")


def _q(value: Any) -> str:
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises here
    return json.dumps(value if isinstance(value, str) else str(value))


def environment(directory: Path | None = None) -> SandboxedEnvironment:
    env = SandboxedEnvironment(loader=jinja2.FileSystemLoader(str(directory or templates_dir())),
                               undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["q"] = _q
    return env


def render_user_data(context: dict[str, Any], directory: Path | None = None, template: str = TEMPLATE) -> str:
    """Render and self-check: the result must be a YAML mapping starting with '#cloud-config'."""
    try:
        text = environment(directory).get_template(template).render(**context)
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"template {template}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise ConfigError(f"template {template}: {exc}", getattr(exc, "filename", None),
                          getattr(exc, "lineno", None)) from None
    if not text.startswith("#cloud-config\n"):
        raise ConfigError(f"template {template} must start with '#cloud-config'")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"template {template} rendered invalid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"template {template} must render a YAML mapping")
    return text


def host_context(*, stack: str, host: str, cloud: str, services: list[str], ssh_public_key: str,
                 volumes: list[dict], agent_path: str = AGENT_PATH, ssh_cidr: str | None = None) -> dict[str, Any]:
    """`ssh_cidr`: the one SSH range, for the host's own firewall (the cloud firewall has it too)."""
    host_json = json.dumps({"stack": stack, "host": host, "cloud": cloud, "services": services,
                            "volumes": volumes, **({"ssh_cidr": ssh_cidr} if ssh_cidr else {})}, sort_keys=True)
    return {"stack": stack, "host": host, "cloud": cloud, "ssh_public_key": ssh_public_key,
            "host_json": host_json, "agent_path": agent_path, "mounts_dir": "/var/lib/provisioner"}
