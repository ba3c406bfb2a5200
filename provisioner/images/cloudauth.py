"""Registry credentials from the cloud instance's own identity, for the clouds' registries.

- Amazon ECR (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`): the instance role's temporary keys from
  the instance metadata service (IMDSv2: a session token first, then the role's credentials), then
  ECR's GetAuthorizationToken signed with them (Signature Version 4) → user "AWS" and a password
  valid for 12 hours.
- Google Artifact Registry (`REGION-docker.pkg.dev`) and Container Registry (`gcr.io`,
  `*.gcr.io`): the service account's access token from the metadata server → user
  "oauth2accesstoken".

A token is kept until shortly before it expires and fetched again then. Nothing here is written
to disk, and the tokens never appear in a message. The metadata endpoints can be pointed
elsewhere (tests) with PROVISION_IMDS_ENDPOINT, PROVISION_ECR_ENDPOINT and
PROVISION_GCE_METADATA_ENDPOINT.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import requests

from ..errors import RegistryError
from .auth import Credentials

IMDS = "http://169.254.169.254"
GCE_METADATA = "http://metadata.google.internal"
ECR_HOST = re.compile(r"(\d{12})\.dkr\.ecr(-fips)?\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?")
GOOGLE_HOST = re.compile(r"([a-z0-9-]+-docker\.pkg\.dev|gcr\.io|[a-z]+\.gcr\.io)")
REFRESH_MARGIN = 300.0   # seconds before expiry a token is fetched again
TIMEOUT = (2.0, 10.0)


@dataclass(frozen=True)
class AwsKeys:
    access_key: str
    secret_key: str
    token: str | None = None


def sigv4_headers(method: str, url: str, body: bytes, *, region: str, service: str, keys: AwsKeys,
                  headers: dict[str, str], now: dt.datetime) -> dict[str, str]:
    """`headers` plus the Signature Version 4 ones (x-amz-date, the session token, Authorization)."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope_date = now.strftime("%Y%m%d")
    out = {**headers, "host": parts.netloc, "x-amz-date": amz_date}
    if keys.token:
        out["x-amz-security-token"] = keys.token
    names = sorted(k.lower() for k in out)
    lowered = {k.lower(): " ".join(str(v).split()) for k, v in out.items()}
    canonical = "\n".join([method, parts.path or "/", parts.query, *(f"{n}:{lowered[n]}" for n in names), "",
                           ";".join(names), hashlib.sha256(body).hexdigest()])
    scope = f"{scope_date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + keys.secret_key).encode()
    for part in (scope_date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={keys.access_key}/{scope}, "
                            f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return out


class CloudCredentials:
    """Credentials for a cloud registry host from this instance's identity (None for other hosts)."""

    def __init__(self, session: requests.Session | None = None, clock: Callable[[], float] = time.time,
                 env: dict | None = None):
        self.session = session or requests.Session()
        self.clock = clock
        env = os.environ if env is None else env
        self.imds = env.get("PROVISION_IMDS_ENDPOINT", IMDS).rstrip("/")
        self.ecr_endpoint = env.get("PROVISION_ECR_ENDPOINT")
        self.gce = env.get("PROVISION_GCE_METADATA_ENDPOINT", GCE_METADATA).rstrip("/")
        self._cache: dict[str, tuple[Credentials, float]] = {}
        self._lock = threading.Lock()

    def for_host(self, host: str) -> Credentials | None:
        ecr, google = ECR_HOST.fullmatch(host), GOOGLE_HOST.fullmatch(host)
        if not (ecr or google):
            return None
        with self._lock:
            hit = self._cache.get(host)
            if hit and hit[1] - REFRESH_MARGIN > self.clock():
                return hit[0]
            try:
                creds, expires = self._ecr(ecr.group(3)) if ecr else self._google()
            except (requests.RequestException, ValueError, KeyError, TypeError, IndexError) as exc:
                what = "the instance role (IMDSv2) and ECR" if ecr else "the metadata server's service account"
                raise RegistryError(f"registry {host}: no credentials from {what} ({type(exc).__name__}: "
                                    f"{str(exc)[:160]}); attach an identity at launch (aws: instance_profile, "
                                    "gce: service_account) or deliver credentials with deploy", host=host) from None
            self._cache[host] = (creds, expires)
            return creds

    # -- AWS ---------------------------------------------------------------------------------------
    def _imds_keys(self) -> AwsKeys:
        token = self.session.put(f"{self.imds}/latest/api/token", timeout=TIMEOUT,
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
        token.raise_for_status()
        h = {"X-aws-ec2-metadata-token": token.text}
        base = f"{self.imds}/latest/meta-data/iam/security-credentials/"
        role = self.session.get(base, headers=h, timeout=TIMEOUT)
        role.raise_for_status()
        name = role.text.split()[0]
        doc = self.session.get(base + name, headers=h, timeout=TIMEOUT)
        doc.raise_for_status()
        data = doc.json()
        return AwsKeys(data["AccessKeyId"], data["SecretAccessKey"], data.get("Token"))

    def _ecr(self, region: str) -> tuple[Credentials, float]:
        keys = self._imds_keys()
        url = self.ecr_endpoint or f"https://api.ecr.{region}.amazonaws.com/"
        body = b"{}"
        headers = sigv4_headers("POST", url, body, region=region, service="ecr", keys=keys,
                                now=dt.datetime.now(dt.timezone.utc),
                                headers={"Content-Type": "application/x-amz-json-1.1",
                                         "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"})
        resp = self.session.post(url, data=body, headers=headers, timeout=TIMEOUT)
        resp.raise_for_status()
        data = resp.json()["authorizationData"][0]
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        return Credentials(user, password), float(data["expiresAt"])

    # -- Google ------------------------------------------------------------------------------------
    def _google(self) -> tuple[Credentials, float]:
        resp = self.session.get(f"{self.gce}/computeMetadata/v1/instance/service-accounts/default/token",
                                headers={"Metadata-Flavor": "Google"}, timeout=TIMEOUT)
        resp.raise_for_status()
        data = resp.json()
        return Credentials("oauth2accesstoken", data["access_token"]), self.clock() + float(data["expires_in"])


def encode_auths(creds: dict[str, Credentials]) -> str:
    """A docker config.json holding exactly these credentials (what deploy delivers to a host)."""
    return json.dumps({"auths": {host: {"auth": base64.b64encode(f"{c.username}:{c.password}".encode()).decode()}
                                 for host, c in sorted(creds.items())}}, indent=2) + "\n"
