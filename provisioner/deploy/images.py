"""How a host gets its stack's images: it pulls them itself (the default), or they are pushed to it
over SSH from the operator's machine (`--images push`: air-gapped hosts, a registry the host
cannot reach).

Pull: the host's registries configuration (/etc/provisioner/registries/registries.conf — the
stack's `registries:` for that host, plus the remaps the cloud needs, e.g. the local cloud's view
of the operator's loopback) and exactly the credentials those pulls need, resolved here from the
operator's docker config (credential helpers included), travel over the verified SSH session into
a root-only file (auth.json, 0600). They are never in user-data, metadata, console output,
process arguments, logs or deploy's output. The host then runs `provision image pull`, which
downloads in parallel, resumes and checks every digest.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import replace
from typing import Callable, Iterable

from ..errors import CommandError, HostError
from ..images.auth import Credentials, load_credentials
from ..images.cloudauth import encode_auths
from ..images.reference import parse
from ..images.registryconf import RegistriesConf, RegistryRule
from ..images.sources import AUTH_FILE, CONF_FILE, SETTINGS_DIR
from ..runner import Runner

MODES = ("pull", "push")
PROVISION = ("provision",)


def host_conf(rules: RegistriesConf, refs: Iterable[str], seen_as: Callable[[str], str]) -> RegistriesConf:
    """The host's registries.conf: the stack's rules for it, plus a remap for each registry the
    host reaches under another address (`seen_as(registry) != registry`, e.g. 127.0.0.1:5000 as
    10.0.2.2:5000 from a local-cloud VM) that no rule of the stack covers already."""
    out = list(rules.rules)
    for ref in refs:
        r = parse(ref)
        there = seen_as(r.domain)
        if there != r.domain and rules.rule_for(r) is None and not any(x.prefix == r.domain for x in out):
            out.append(RegistryRule(r.domain, there, insecure=True))
    return replace(rules, rules=tuple(out))


def host_credentials(conf: RegistriesConf, refs: Iterable[str], lookup=load_credentials
                     ) -> dict[str, Credentials]:
    """Credentials for each registry endpoint the host will contact for `refs`, resolved here: a
    remapped location uses what the operator has for the registry it stands for, a mirror its own."""
    out: dict[str, Credentials] = {}
    for ref in refs:
        r = parse(ref)
        rule = conf.rule_for(r)
        mirrors = {m.location.split("/", 1)[0] for m in rule.mirrors} if rule else set()
        for where, _insecure in conf.endpoints(r):
            if where.api_host in out:
                continue
            creds = lookup(where.api_host if where.api_host in mirrors else r.api_host)
            if creds is not None:
                out[where.api_host] = creds
    return out


def pull_on_host(ssh: Runner, host: str, refs: list[str], conf: RegistriesConf, timeout: float = 3600.0
                 ) -> list[dict]:
    """`provision image pull` of every ref on the host, in one command; one report per ref."""
    try:
        res = ssh.run([*PROVISION, "--json", "image", "pull", "-q", *refs], sudo=True, timeout=timeout)
    except CommandError as exc:
        text = exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else str(exc)
        text = text.removeprefix("error: ")
        if "cannot reach registry" in text or "TLS failure" in text:
            registry = next((where.api_host for ref in refs for where, _ in conf.endpoints(parse(ref))
                             if where.api_host in text), "its registry")
            raise HostError(f"host {host} cannot reach registry {registry} ({text}); deploy with --images push to "
                            "send the images from this machine over SSH instead") from None
        raise HostError(f"host {host}: pulling its images failed: {text}") from None
    data = json.loads(res.stdout)
    results = data if isinstance(data, list) else [data]
    return [{"ref": ref, "digest": r["manifest_digest"], "delivery": "pull", "fetched_layers": r["fetched_layers"],
             "bytes": r["bytes"], "seconds": r["seconds"]} for ref, r in zip(refs, results)]
