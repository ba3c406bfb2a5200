"""Provider errors -> one-line CloudErrors, in ONE place (cf. libcloud's `parse_error`).

Both drivers wrap every provider call in `provider_call(cloud, action)`; nothing else catches
libcloud exceptions. The error class tells the retry layer what may be retried.
"""
from __future__ import annotations

import contextlib
import re
import socket

from ..errors import CloudError


class CloudAuthError(CloudError):
    """Credentials missing or rejected."""


class CloudQuotaError(CloudError):
    """A quota or limit stops the request."""


class CloudNotFound(CloudError):
    """The named resource (image, zone, instance, ...) does not exist (yet)."""


class CloudThrottled(CloudError):
    """The provider asked us to slow down; always retried with backoff."""


class CloudInvalid(CloudError):
    """The provider rejected a parameter (instance type, zone, ...)."""


_AWS_CODE = re.compile(r"^\s*([A-Za-z]+(?:\.[A-Za-z]+)*):\s*(.*)$", re.S)

# (pattern on the provider's code, error class, what to tell the user)
_AWS_TABLE = [
    (r"^(AuthFailure|InvalidClientTokenId|SignatureDoesNotMatch|UnauthorizedOperation|OptInRequired|"
     r"UnrecognizedClientException|MissingAuthenticationToken)$", CloudAuthError, "credentials rejected"),
    (r"^(RequestLimitExceeded|Throttling|ThrottlingException)$", CloudThrottled, "throttled"),
    (r"LimitExceeded$|^InsufficientInstanceCapacity$|^MaxSpotInstanceCountExceeded$", CloudQuotaError,
     "quota or capacity exceeded"),
    (r"^InvalidAMIID\.", CloudNotFound, "unknown image (AMI)"),
    (r"\.NotFound$|^InvalidInstanceID\.", CloudNotFound, "not found"),
    (r"^(InvalidZone\.|InvalidAvailabilityZone|InvalidInstanceType|Unsupported)", CloudInvalid, "invalid setting"),
]
_GCE_TABLE = [
    (r"^(rateLimitExceeded|userRateLimitExceeded|RATE_LIMIT_EXCEEDED)$", CloudThrottled, "throttled"),
    (r"^(QUOTA_EXCEEDED|quotaExceeded|ZONE_RESOURCE_POOL_EXHAUSTED.*)$", CloudQuotaError,
     "quota or capacity exceeded"),
    (r"^(authError|unauthorized|forbidden|401|403|accessNotConfigured)$", CloudAuthError, "credentials rejected"),
    (r"^(notFound|404)$", CloudNotFound, "not found"),
    (r"^(invalid|badRequest|400|required|conflict|alreadyExists|resourceInUseByAnotherResource|"
     r"RESOURCE_ALREADY_EXISTS|RESOURCE_IN_USE.*)$", CloudInvalid, "rejected"),
]


def _classify(table, code: str):
    for pattern, cls, label in table:
        if re.search(pattern, code):
            return cls, label
    return CloudError, "failed"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def translate(exc: BaseException, cloud: str, action: str) -> CloudError:
    """Turn any provider/libcloud/socket exception into a CloudError with a one-line message."""
    if isinstance(exc, CloudError):
        return exc
    from libcloud.common.exceptions import BaseHTTPError
    from libcloud.common.types import InvalidCredsError, LibcloudError

    if isinstance(exc, (ConnectionError, socket.error, TimeoutError)) or type(exc).__module__.startswith(
            ("requests", "urllib3")):
        return CloudError(f"{cloud}: {action}: cannot reach the API endpoint ({_one_line(exc)})",
                          code="unreachable")
    if isinstance(exc, InvalidCredsError):
        msg = getattr(exc, "value", None) or str(exc)
        return CloudAuthError(f"{cloud}: {action}: credentials rejected ({_one_line(msg)})", code="auth")
    if cloud == "gce":
        from libcloud.common.google import GoogleAuthError, GoogleBaseError

        if isinstance(exc, GoogleAuthError):
            return CloudAuthError(f"gce: {action}: credentials rejected ({_one_line(exc.value)})", code="auth")
        if isinstance(exc, GoogleBaseError):
            code = str(exc.code if exc.code is not None else exc.http_code)
            value = exc.value
            msg = value.get("message", value) if isinstance(value, dict) else value
            cls, label = _classify(_GCE_TABLE, code)
            if (cls is CloudError and exc.http_code in (401, 403)) or action == "authenticate":
                # the OAuth token endpoint answers {"error": "invalid_grant"} (no code) for a bad key
                cls, label = CloudAuthError, "credentials rejected"
            return cls(f"gce: {action}: {label}: {_one_line(msg)} [{code}]", code=code)
    text = str(getattr(exc, "message", None) or exc)
    m = _AWS_CODE.match(text)
    if m:
        code, msg = m.group(1), m.group(2)
        cls, label = _classify(_AWS_TABLE, code)
        return cls(f"{cloud}: {action}: {label}: {_one_line(msg)} [{code}]", code=code)
    if isinstance(exc, BaseHTTPError):
        code = str(exc.code)
        cls = CloudThrottled if exc.code in (429, 503) else CloudAuthError if exc.code in (401, 403) else CloudError
        return cls(f"{cloud}: {action}: HTTP {code}: {_one_line(text)}", code=code)
    if isinstance(exc, LibcloudError):
        return CloudError(f"{cloud}: {action}: {_one_line(exc.value)}", code="libcloud")
    return CloudError(f"{cloud}: {action}: {type(exc).__name__}: {_one_line(text)}", code="unexpected")


@contextlib.contextmanager
def provider_call(cloud: str, action: str):
    """Wrap one provider call: every exception leaves as a translated CloudError."""
    try:
        yield
    except CloudError:
        raise
    except Exception as exc:  # the one translation boundary for provider exceptions
        raise translate(exc, cloud, action) from exc
