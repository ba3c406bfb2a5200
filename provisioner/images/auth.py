"""Registry credentials and auth challenges.

- Credentials come from `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`):
  `auths.<host>.auth` is base64 "user:password" (or separate `username`/`password`);
  docker.io's entry is keyed `https://index.docker.io/v1/`.
- A 401 carries `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` (token auth) or
  `Basic realm="…"`; `parse_challenge` turns the header into (scheme, params).
- Bearer tokens are cached per (realm, service, scope) until shortly before `expires_in`
  (default 60 s, per the token spec).
"""
from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")
DEFAULT_TOKEN_TTL = 60


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def docker_config_path(env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("DOCKER_CONFIG")
    if base:
        return Path(base) / "config.json"
    return Path(env.get("HOME") or Path.home()) / ".docker" / "config.json"


def _host_of(key: str) -> str:
    key = re.sub(r"^[a-z]+://", "", key)
    return key.split("/", 1)[0]


def load_credentials(host: str, path: Path | None = None, runner=None) -> Credentials | None:
    """Credentials for registry `host` (host[:port]) from a docker config.json, or None.

    Order as Docker: a `credHelpers` entry for the host, then inline `auths` credentials, then the
    `credsStore` helper. Helpers (`docker-credential-<name> get`, e.g. ecr-login, gcr) run through
    the Runner; an unknown host there ("credentials not found") means anonymous."""
    path = path or docker_config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"cannot read registry credentials: {err.strerror}", str(path)) from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"invalid JSON ({err})", str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a JSON object", str(path))
    wanted = {host}
    if host in DOCKER_HUB_KEYS or host == "docker.io":
        wanted |= set(DOCKER_HUB_KEYS)
    helpers = data.get("credHelpers") if isinstance(data.get("credHelpers"), dict) else {}
    for key, helper in helpers.items():
        if (_host_of(key) in wanted or key in wanted) and isinstance(helper, str) and helper:
            return _from_helper(helper, key, path, runner)
    auths = data.get("auths") if isinstance(data.get("auths"), dict) else {}
    for key, entry in auths.items():
        if _host_of(key) not in wanted and key not in wanted:
            continue
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise ConfigError(f"auths.{key}.auth is not base64 of user:password", str(path)) from None
            return Credentials(user, pw)
        if entry.get("username"):
            return Credentials(entry["username"], entry.get("password", ""))
    store = data.get("credsStore")
    if isinstance(store, str) and store:
        server = "https://index.docker.io/v1/" if host in DOCKER_HUB_KEYS else host
        return _from_helper(store, server, path, runner)
    return None


def _from_helper(helper: str, server: str, path: Path, runner) -> Credentials | None:
    from ..errors import CommandError
    from ..runner import Runner

    runner = runner or Runner()
    argv = [f"docker-credential-{helper}", "get"]
    try:
        result = runner.run(argv, input=server, timeout=60)
    except CommandError as err:
        if "credentials not found" in (err.stdout + err.stderr).lower():
            return None
        raise ConfigError(f"credential helper {argv[0]} failed for {server}: {err}", str(path)) from None
    try:
        body = json.loads(result.stdout)
        user, secret = body["Username"], body["Secret"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"credential helper {argv[0]} returned no Username/Secret for {server}", str(path)) from None
    return Credentials(user, secret)


_PARAM_RE = re.compile(r'\s*([a-zA-Z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y"` -> ("bearer", {"realm": "x", "service": "y"})."""
    header = (header or "").strip()
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if not m or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return scheme.lower(), params


class TokenCache:
    """Bearer tokens by (realm, service, scope), thread-safe (layers download in parallel)."""

    def __init__(self, clock=time.monotonic):
        self._tokens: dict[tuple, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, key: tuple) -> str | None:
        with self._lock:
            hit = self._tokens.get(key)
            if hit and hit[1] > self._clock():
                return hit[0]
            return None

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()

    def put(self, key: tuple, token: str, expires_in: float | None) -> None:
        ttl = expires_in if expires_in and expires_in > 0 else DEFAULT_TOKEN_TTL
        with self._lock:
            # Renew a little early so a token does not expire mid-request.
            self._tokens[key] = (token, self._clock() + max(ttl - 10, ttl / 2))
