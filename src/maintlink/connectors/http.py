"""HTTP plumbing every connector shares: one place that turns httpx errors and status codes
into `ConnectorError` kinds, so all connectors classify failures the same way.

A connector sends through `send()` (or calls `classify_response` / `classify_transport_error`
itself when a system needs special cases, e.g. errors inside a 200 body).
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from maintlink.connectors.base import ConnectorError, FailureKind

DEFAULT_TIMEOUT_SECONDS = 10.0
# Host names (IDNA-encoded), IPv4 and IPv6 literals; anything else cannot be dialled.
_HOST = re.compile(r"[A-Za-z0-9._\-]+|[0-9A-Fa-f:.]+")
MAX_ERROR_MESSAGE = 500


def parse_base_url(value: Any, *, label: str = "Instance URL") -> httpx.URL:
    """A usable http(s) base URL, or INVALID_CONFIGURATION saying what is wrong with it."""
    if not isinstance(value, str) or not value.strip():
        raise ConnectorError(FailureKind.INVALID_CONFIGURATION, f"{label} is missing")
    try:
        url = httpx.URL(value.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ConnectorError(
            FailureKind.INVALID_CONFIGURATION, f"{label} is not a valid URL: {exc}"
        ) from exc
    host = url.raw_host.decode("ascii", "replace")  # IDNA-encoded, so plain ASCII when valid
    if url.scheme not in ("http", "https") or not _HOST.fullmatch(host):
        raise ConnectorError(
            FailureKind.INVALID_CONFIGURATION,
            f"{label} must be an http:// or https:// URL with a host name",
        )
    if url.query or url.fragment:
        raise ConnectorError(
            FailureKind.INVALID_CONFIGURATION, f"{label} must not have a query or fragment"
        )
    return url


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (it may be a number of seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def error_message(response: httpx.Response) -> str:
    """The provider's own reason, from the common error body shapes, else a short default."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, Mapping):
        error = body.get("error", body.get("Error"))
        if isinstance(error, Mapping):
            message = error.get("message", error.get("Message"))
            if isinstance(message, Mapping):  # OData: {"message": {"lang", "value"}}
                message = message.get("value")
        elif isinstance(error, str):
            message = error
        message = message or body.get("message") or body.get("detail")
    if not isinstance(message, str) or not message.strip():
        text = response.text.strip() if not isinstance(body, Mapping) else ""
        message = text if text and len(text) < 200 and "<" not in text else None
    if not message:
        message = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    return message[:MAX_ERROR_MESSAGE]


def classify_response(response: httpx.Response, *, system: str = "The system") -> ConnectorError:
    """The ConnectorError for a non-2xx answer."""
    status = response.status_code
    message = error_message(response)
    if status == 401:
        kind = FailureKind.AUTH
    elif status == 403:
        kind = FailureKind.PERMISSION_DENIED
    elif status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is None:
            retry_after = parse_retry_after(response.headers.get("X-Rate-Limit-Reset"))
        return ConnectorError(
            FailureKind.RATE_LIMITED, message, status_code=status, retry_after=retry_after
        )
    elif status >= 500 or status == 408:
        kind = FailureKind.UNAVAILABLE
        message = f"{system} answered {status}: {message}"
    else:
        kind = FailureKind.PROVIDER_ERROR
    return ConnectorError(kind, message, status_code=status)


def classify_transport_error(exc: httpx.HTTPError, *, system: str = "The system") -> ConnectorError:
    """The ConnectorError for a request that got no usable HTTP answer."""
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ConnectorError(FailureKind.INVALID_CONFIGURATION, f"Invalid URL: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return ConnectorError(FailureKind.UNAVAILABLE, f"{system} did not answer in time")
    if isinstance(exc, httpx.ConnectError):
        return ConnectorError(FailureKind.UNAVAILABLE, f"Cannot connect to {system}: {exc}")
    if isinstance(exc, httpx.TransportError):
        # Dropped connections, resets, protocol violations: the system is not answering.
        return ConnectorError(FailureKind.UNAVAILABLE, f"{system} dropped the connection: {exc}")
    return ConnectorError(FailureKind.PROVIDER_ERROR, f"{system}: {exc}")


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: httpx.URL | str,
    *,
    system: str = "The system",
    request_timeout: float = DEFAULT_TIMEOUT_SECONDS,
    **kwargs: Any,
) -> httpx.Response:
    """Send a request; a 2xx answer comes back, everything else raises ConnectorError."""
    try:
        response = await http.request(method, url, timeout=request_timeout, **kwargs)
    except httpx.HTTPError as exc:
        raise classify_transport_error(exc, system=system) from exc
    if not response.is_success:
        raise classify_response(response, system=system)
    return response


def json_body(response: httpx.Response, *, system: str = "The system") -> Any:
    """The decoded JSON of a 2xx answer; a non-JSON answer is a PROVIDER_ERROR."""
    try:
        return response.json()
    except ValueError as exc:
        raise ConnectorError(
            FailureKind.PROVIDER_ERROR,
            f"{system} answered {response.status_code} with a body that is not JSON",
            status_code=response.status_code,
        ) from exc
