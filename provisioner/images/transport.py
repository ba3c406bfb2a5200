"""HTTP to one registry: scheme choice, auth, redirects, retries, and resumable verified blobs.

- HTTPS always, except plain HTTP for loopback hosts (localhost, 127.0.0.0/8, ::1) and for
  hosts named with `--insecure-registry` (tried over HTTPS without verification first, as
  Docker does, then HTTP).
- Redirects (blob downloads often answer 307 to a CDN) are followed by hand so that the
  `Authorization` header is never sent to a different host; a 401 from a redirect target is
  an error, not a challenge, so credentials only ever go to the registry host itself or to the
  token realm of a challenge the registry host itself answered.
- Connection resets, timeouts, 5xx and 429 are retried with exponential backoff; a 429/503
  `Retry-After` (seconds or HTTP date) is honoured.
- `BlobReader` is a file-like view of one blob that hashes the compressed bytes as they are
  read, resumes a broken download with `Range`, and raises RegistryError at EOF when the size
  or digest is wrong, so a consumer that drains it to EOF never commits bad data.
"""
from __future__ import annotations

import email.utils
import hashlib
import ipaddress
import logging
import random
import time
from typing import Callable
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from ..errors import RegistryError
from .auth import Credentials, TokenCache, load_credentials, parse_challenge

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 500, 502, 503, 504}
REDIRECT_STATUS = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 5
NETWORK_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # only reached for --insecure-registry


def host_only(host: str) -> str:
    """`127.0.0.1:5000` -> `127.0.0.1`, `[::1]:5000` -> `::1`."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    h = host_only(host)
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def retry_after(resp: requests.Response, default: float) -> float:
    value = resp.headers.get("Retry-After")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return default


class Transport:
    """Requests to one registry host, shared by all download threads (pooled connections)."""

    def __init__(
        self,
        host: str,
        *,
        subject: str,
        insecure: bool = False,
        credentials: Credentials | None | bool = True,
        session: requests.Session | None = None,
        retries: int = 6,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        max_retry_after: float = 60.0,
        timeout: tuple[float, float] = (10.0, 60.0),
        sleep: Callable[[float], None] = time.sleep,
        pool_size: int = 16,
        runner=None,
    ):
        self.host = host
        self.subject = subject  # the reference, for error messages
        self.insecure = insecure
        if credentials is True:
            credentials = load_credentials(host, runner=runner)
        self.credentials = credentials or None
        self.session = session or requests.Session()
        if session is None:
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.timeout = timeout
        self.sleep = sleep
        self.tokens = TokenCache()
        self._challenge: tuple[str, dict] | None = None
        self._scheme: str | None = "http" if is_loopback(host) else (None if insecure else "https")

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        if self._scheme is None:
            try:
                self.session.get(f"https://{self.host}/v2/", verify=False, timeout=self.timeout)
                self._scheme = "https"
            except NETWORK_ERRORS:
                log.info("%s: HTTPS failed, using HTTP (insecure registry)", self.host)
                self._scheme = "http"
        return self._scheme

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"

    def _delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * (2 ** attempt))
        return base * (0.5 + random.random() / 2)

    def _fail(self, why: str) -> RegistryError:
        return RegistryError(f"{self.subject}: {why}", reference=self.subject, host=self.host)

    def _auth_header(self, scope: str | None) -> str | None:
        if self._challenge is None:
            return None
        scheme, params = self._challenge
        if scheme == "bearer":
            return self._bearer(params, scope)
        if scheme == "basic" and self.credentials:
            return self.credentials.basic_header()
        return None

    def _bearer(self, params: dict, scope: str | None) -> str | None:
        realm = params.get("realm")
        if not realm:
            raise self._fail(f"registry {self.host} sent a Bearer challenge without a realm")
        scope = scope or params.get("scope")
        key = (realm, params.get("service"), scope)
        token = self.tokens.get(key)
        if token is None:
            token = self._fetch_token(realm, params.get("service"), scope)
        return f"Bearer {token}"

    def _fetch_token(self, realm: str, service: str | None, scope: str | None) -> str:
        query = {k: v for k, v in (("service", service), ("scope", scope)) if v}
        headers = {}
        realm_host = urlsplit(realm).netloc
        if self.credentials:
            # Never send a password in clear text unless the realm is local or declared insecure.
            if urlsplit(realm).scheme == "https" or is_loopback(realm_host) or (self.insecure and realm_host == self.host):
                headers["Authorization"] = self.credentials.basic_header()
        for attempt in range(self.retries + 1):
            try:
                resp = self.session.get(realm, params=query, headers=headers, timeout=self.timeout)
            except NETWORK_ERRORS as err:
                if attempt == self.retries:
                    raise self._fail(f"cannot reach token service {realm}: {err}") from None
                self.sleep(self._delay(attempt))
                continue
            if resp.status_code in RETRY_STATUS and attempt < self.retries:
                self.sleep(min(self.max_retry_after, retry_after(resp, self._delay(attempt))))
                continue
            break
        if resp.status_code in (401, 403):
            raise self._fail(f"unauthorized: token service {realm} refused the credentials"
                             + ("" if self.credentials else " (no credentials for " + self.host + " in docker config.json)"))
        if resp.status_code != 200:
            raise self._fail(f"token service {realm} answered HTTP {resp.status_code}")
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token, body = None, {}
        if not token:
            raise self._fail(f"token service {realm} returned no token")
        expires = body.get("expires_in")
        self.tokens.put((realm, service, scope), token, float(expires) if isinstance(expires, (int, float)) else None)
        return token

    # -- the one request loop --------------------------------------------------------------------
    def request(self, method: str, path: str, *, headers: dict | None = None, stream: bool = False,
                scope: str | None = None, what: str = "request") -> requests.Response:
        """Send with auth, redirects and retries; returns the final response (any non-retryable status)."""
        authed_once = False
        attempt = 0
        while True:
            try:
                resp = self._send(method, self.url(path), headers or {}, stream, scope)
            except requests.exceptions.SSLError as err:
                # A certificate problem does not go away by retrying.
                raise self._fail(f"{what}: TLS failure talking to {self.host} ({_short(err)}); for a registry "
                                 f"without a valid certificate use --insecure-registry {self.host}") from None
            except NETWORK_ERRORS as err:
                if attempt >= self.retries:
                    raise self._fail(f"{what}: cannot reach registry {self.host}: {_short(err)}") from None
                log.info("%s: %s failed (%s), retrying", self.host, what, _short(err))
                self.sleep(self._delay(attempt))
                attempt += 1
                continue
            if resp.status_code == 401 and self._answered_by_other(resp):
                # a redirect target (a CDN) is another party: its challenge is not the registry's,
                # and its realm must never receive the registry's credentials
                where = urlsplit(resp.url).netloc
                resp.close()
                raise self._fail(f"{what}: {where} (a redirect target) answered HTTP 401; only the registry "
                                 f"{self.host} itself may ask for credentials")
            if resp.status_code == 401:
                challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                resp.close()
                self.tokens.clear()  # a cached token the registry no longer accepts (revoked, clock skew)
                if not authed_once and challenge[0] in ("bearer", "basic"):
                    if challenge[0] == "basic" and not self.credentials:
                        raise self._fail(f"unauthorized: registry {self.host} needs a login "
                                         "(no credentials in docker config.json)")
                    self._challenge = challenge
                    authed_once = True
                    continue
                raise self._fail(f"unauthorized: registry {self.host} refused access"
                                 + ("" if self.credentials else " (no credentials in docker config.json)"))
            if resp.status_code in RETRY_STATUS:
                if attempt >= self.retries:
                    resp.close()
                    raise self._fail(f"{what}: registry {self.host} answered HTTP {resp.status_code} "
                                     f"after {attempt + 1} attempts")
                wait = retry_after(resp, self._delay(attempt)) if resp.status_code in (429, 503) else self._delay(attempt)
                resp.close()
                log.info("%s: HTTP %d on %s, retrying in %.2fs", self.host, resp.status_code, what, wait)
                self.sleep(min(wait, self.max_retry_after))
                attempt += 1
                continue
            return resp

    def _answered_by_other(self, resp: requests.Response) -> bool:
        """The response came from a host a redirect led to, not from the registry host itself."""
        url = getattr(resp, "url", None)
        return bool(url) and urlsplit(url).netloc != self.host

    def _send(self, method: str, url: str, headers: dict, stream: bool, scope: str | None) -> requests.Response:
        auth = self._auth_header(scope)
        for _ in range(MAX_REDIRECTS + 1):
            h = dict(headers)
            if auth and urlsplit(url).netloc == self.host:
                h["Authorization"] = auth
            verify = not self.insecure
            resp = self.session.request(method, url, headers=h, stream=stream, allow_redirects=False,
                                        timeout=self.timeout, verify=verify)
            if resp.status_code not in REDIRECT_STATUS or "Location" not in resp.headers:
                return resp
            url = urljoin(url, resp.headers["Location"])
            resp.close()
            target = urlsplit(url)
            if target.scheme != "https" and not (is_loopback(target.netloc) or self.insecure):
                raise self._fail(f"refusing redirect to {target.scheme}://{target.netloc} (not HTTPS)")
        raise self._fail(f"too many redirects (last: {url})")


def _short(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) < 160 else text[:157] + "..."


class ReadStream:
    """readinto()/readable() over read(), for the file-like streams handed to the layer store."""

    def read(self, n: int = -1) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


class BlobReader(ReadStream):
    """A file-like, verified, resumable stream of one blob (read the compressed bytes).

    `on_bytes(n)` is called for every chunk received (progress). At EOF the size and digest are
    checked; a mismatch raises RegistryError instead of returning the final b"".
    """

    def __init__(self, transport: Transport, repository: str, digest: str, size: int | None,
                 on_bytes: Callable[[int], None] | None = None, max_resumes: int = 10):
        algo = digest.split(":", 1)[0]
        if algo not in ("sha256", "sha512"):
            raise RegistryError(f"{transport.subject}: unsupported digest algorithm in {digest}")
        self.t = transport
        self.repository = repository
        self.digest = digest
        self.size = size
        self.on_bytes = on_bytes
        self.max_resumes = max_resumes
        self.resumes = 0
        self.offset = 0
        self._hash = hashlib.new(algo)
        self._resp: requests.Response | None = None
        self._done = False
        self.closed = False

    def _open(self) -> None:
        headers = {"Range": f"bytes={self.offset}-"} if self.offset else {}
        resp = self.t.request("GET", f"/v2/{self.repository}/blobs/{self.digest}", headers=headers,
                              stream=True, scope=f"repository:{self.repository}:pull",
                              what=f"blob {self.digest[:19]}")
        if resp.status_code == 404:
            resp.close()
            raise self.t._fail(f"blob {self.digest} not found in {self.t.host}/{self.repository}")
        if resp.status_code not in (200, 206):
            resp.close()
            raise self.t._fail(f"blob {self.digest[:19]}: registry answered HTTP {resp.status_code}")
        skip = 0
        if self.offset:
            start = _content_range_start(resp.headers.get("Content-Range")) if resp.status_code == 206 else None
            if start is None:
                skip = self.offset  # the server ignored Range: discard what we already have
            elif start != self.offset:
                resp.close()
                raise self.t._fail(f"blob {self.digest[:19]}: registry resumed at {start}, wanted {self.offset}")
        self._resp = resp
        while skip:
            chunk = resp.raw.read(min(skip, 1 << 20), decode_content=False)
            if not chunk:
                raise ConnectionError("stream ended while skipping to the resume offset")
            skip -= len(chunk)

    def _retry(self, err: BaseException) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        if self.resumes >= self.max_resumes:
            raise self.t._fail(f"blob {self.digest[:19]}: download kept failing at byte {self.offset} ({_short(err)})")
        log.info("blob %s broke at byte %d (%s); resuming", self.digest[:19], self.offset, _short(err))
        self.t.sleep(self.t._delay(self.resumes))
        self.resumes += 1

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        while True:
            try:
                if self._resp is None:
                    self._open()
                chunk = self._read1(n)
            except RegistryError:
                raise
            except NETWORK_ERRORS + (OSError,) as err:
                self._retry(err)
                continue
            if chunk:
                self.offset += len(chunk)
                self._hash.update(chunk)
                if self.size is not None and self.offset > self.size:
                    self._finish_fail(f"is larger than the {self.size} bytes its descriptor says")
                if self.on_bytes:
                    self.on_bytes(len(chunk))
                return chunk
            if self.size is not None and self.offset < self.size:
                self._retry(ConnectionError(f"stream ended early at {self.offset} of {self.size} bytes"))
                continue
            self._verify()
            return b""

    def _read1(self, n: int) -> bytes:
        # read1 returns what has arrived instead of filling `n`: when the connection breaks,
        # urllib3's read(n) would drop the bytes it had buffered and the resume would start earlier.
        raw = self._resp.raw
        if hasattr(raw, "read1"):
            return raw.read1(n)
        return raw.read(min(n, 64 * 1024), decode_content=False)

    def _finish_fail(self, why: str):
        self.close()
        raise self.t._fail(f"blob {self.digest} {why}; rejected")

    def _verify(self) -> None:
        got = f"{self._hash.name}:{self._hash.hexdigest()}"
        if got != self.digest:
            self._finish_fail(f"failed verification: content hashes to {got}")
        self._done = True
        self.close()

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _content_range_start(value: str | None) -> int | None:
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def read_all(reader: BlobReader, chunk: int = 1 << 20) -> bytes:
    return b"".join(iter(lambda: reader.read(chunk), b""))
