"""The third-party libraries only the operator's side uses, which a host's agent goes without.

Import name → distribution name. Agent delivery leaves these distributions out of the wheels it
sends (remote/bundle.py); tests/unit/test_layering.py checks that nothing the agent runs imports
them; the CLI turns a command that needs one, run where it is missing, into one clear line.
"""
from __future__ import annotations

OPERATOR_LIBRARIES = {
    "paramiko": "paramiko",                          # SSH to hosts
    "libcloud": "apache-libcloud",                   # the cloud APIs
    "googleapiclient": "google-api-python-client",   # GCE through its discovery client (tests, optional)
    "jinja2": "Jinja2",                              # cloud-init user-data templates
}


def missing_operator_library(exc: ModuleNotFoundError) -> str | None:
    """The distribution an ImportError is about, when it is one of these."""
    name = (exc.name or "").split(".")[0]
    return OPERATOR_LIBRARIES.get(name)
