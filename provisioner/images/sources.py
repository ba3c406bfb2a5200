"""What a machine knows about reaching registries, and opening the registry an image comes from.

`PullSettings` gathers it: the registries.conf remaps and mirrors, hosts allowed over plain HTTP
(--insecure-registry), credentials (a docker config.json: on a host, the root-only file deploy
delivers; on the operator's machine, ~/.docker/config.json with its credential helpers), and the
cloud instance's identity for the clouds' own registries. `open_image` tries each endpoint the
configuration gives for a reference in order and returns the first that serves it.

On a host the settings live under /etc/provisioner/registries/ (SETTINGS_DIR): registries.conf,
and auth.json (0600, root) when deploy delivered credentials.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from ..errors import ImageError, RegistryError
from .auth import Credentials, load_credentials
from .cloudauth import CloudCredentials
from .reference import Reference
from .registry import Platform, Registry, ResolvedImage
from .registryconf import RegistriesConf, load_conf

log = logging.getLogger(__name__)
SETTINGS_DIR = Path("/etc/provisioner/registries")
CONF_FILE = "registries.conf"
AUTH_FILE = "auth.json"


@dataclass(frozen=True)
class PullSettings:
    conf: RegistriesConf = field(default_factory=RegistriesConf)
    insecure: tuple[str, ...] = ()
    auth_file: Path | None = None          # a docker config.json; None: the user's own (~/.docker)
    cloud: CloudCredentials | None = None  # the instance's identity, for ECR / Artifact Registry hosts
    runner: object = None                  # for credential helpers

    @classmethod
    def on_host(cls, directory: Path = SETTINGS_DIR, insecure: Iterable[str] = (), runner=None) -> "PullSettings":
        """A host's settings: what deploy wrote under `directory`, and the instance's identity."""
        auth = directory / AUTH_FILE
        return cls(load_conf(directory / CONF_FILE), tuple(insecure), auth if auth.is_file() else None,
                   CloudCredentials(), runner)

    @classmethod
    def here(cls, insecure: Iterable[str] = (), runner=None, directory: Path = SETTINGS_DIR) -> "PullSettings":
        """This machine's settings: a host's (what deploy wrote under `directory`) when it is one,
        else the user's own docker config."""
        if directory.is_dir():
            return cls.on_host(directory, insecure, runner)
        return cls(insecure=tuple(insecure), runner=runner)

    def with_insecure(self, hosts: Iterable[str]) -> "PullSettings":
        return replace(self, insecure=tuple(dict.fromkeys((*self.insecure, *hosts))))

    def credentials(self, host: str) -> Credentials | None:
        found = load_credentials(host, path=self.auth_file, runner=self.runner)
        if found is None and self.cloud is not None:
            try:
                found = self.cloud.for_host(host)
            except RegistryError as exc:   # anonymous then: a public image still pulls, a private one
                log.warning("%s", exc)     # answers 401, and this says why there were no credentials
        return found

    def registry(self, ref: Reference, insecure: bool = False) -> Registry:
        hosts = {h.split("://", 1)[-1].rstrip("/") for h in self.insecure}
        insecure = insecure or ref.domain in hosts or ref.api_host in hosts
        return Registry(ref, insecure_hosts=[ref.api_host] if insecure else (),
                        credentials=self.credentials(ref.api_host) or False, runner=self.runner)


def open_image(ref: Reference, settings: PullSettings, platform: Platform | None = None
               ) -> tuple[Registry, ResolvedImage]:
    """The registry serving `ref` and the image it resolved to, trying mirrors then the location.
    A mirror that cannot be reached or lacks the image is passed over; the last error is raised."""
    last: Exception | None = None
    candidates = settings.conf.endpoints(ref)
    for where, insecure in candidates:
        try:
            reg = settings.registry(where, insecure)
            return reg, reg.resolve(platform)
        except (RegistryError, ImageError) as exc:
            if len(candidates) > 1:
                log.info("%s: %s did not serve it (%s)", ref.familiar, where.api_host, exc)
            last = exc
    assert last is not None
    raise last
