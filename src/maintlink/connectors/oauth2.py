"""OAuth2 (authorization code + refresh token) pieces every OAuth2 connector shares.

* Starting an authorization: `new_state()`, `pkce_pair()` (RFC 7636, S256) and
  `authorization_url()`.
* The token endpoint: `OAuth2Client.exchange_code()` and `.refresh()` return the credential
  fields to store (`access_token`, `refresh_token`, `expires_at`), with failures classified
  (`invalid_grant` and `invalid_client` -> AUTH, 429 -> RATE_LIMITED, 5xx and network errors
  -> UNAVAILABLE).
* `OAuth2Connector`: a `Connector` that keeps a usable access token. It refreshes ahead of
  expiry through `credential_store.refresh(seen, renew)`, so one refresh happens at a time per
  connection and tokens another worker refreshed meanwhile are reused (refresh tokens may
  rotate: using one twice can revoke the whole grant). A request answered 401 is sent once
  more after a forced refresh.

Stored credentials are strings (the domain stores `dict[str, str]`): `expires_at` is an
ISO 8601 UTC timestamp.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import quote_plus

import httpx

from maintlink.connectors.base import Connector, ConnectorError, CredentialStore, FailureKind
from maintlink.connectors.http import (
    DEFAULT_TIMEOUT_SECONDS,
    MAX_ERROR_MESSAGE,
    classify_response,
    classify_transport_error,
)

# Refresh when less than this is left, so a token never expires in the middle of a request.
DEFAULT_REFRESH_MARGIN_SECONDS = 60.0
TOKEN_FIELDS: tuple[str, ...] = ("access_token", "refresh_token", "expires_at")
# Token endpoint errors (RFC 6749 5.2) that mean the grant or the client is no longer usable.
AUTH_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


# -- starting an authorization ---------------------------------------------------------------


def new_state() -> str:
    """An unguessable `state` value that ties the callback to the authorization request."""
    return secrets.token_urlsafe(24)


def new_code_verifier() -> str:
    """A PKCE code verifier: 64 characters of [A-Za-z0-9_-] (RFC 7636 allows 43 to 128)."""
    return secrets.token_urlsafe(48)


def code_challenge(verifier: str) -> str:
    """The S256 challenge of a verifier: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, code_challenge) for one authorization."""
    verifier = new_code_verifier()
    return verifier, code_challenge(verifier)


def authorization_url(
    authorize_url: str | httpx.URL,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    code_challenge: str | None = None,
    scope: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> str:
    """Where to send the browser: the authorization endpoint with the standard parameters."""
    params: dict[str, str] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": state,
    }
    if code_challenge:
        params["code_challenge"] = code_challenge
        params["code_challenge_method"] = "S256"
    if scope:
        params["scope"] = scope
    params.update(extra or {})
    return str(httpx.URL(authorize_url).copy_merge_params(params))


# -- the token endpoint ----------------------------------------------------------------------


def now_utc() -> datetime:
    return datetime.now(UTC)


def format_expiry(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_expiry(value: Any) -> datetime | None:
    """A stored `expires_at` (ISO 8601, or epoch seconds) as an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        try:
            parsed = datetime.fromtimestamp(float(text), UTC)
        except (ValueError, OverflowError, OSError):
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def token_fields(
    body: Any, *, now: datetime, previous_refresh_token: str | None = None, system: str
) -> dict[str, str]:
    """A token response as credential fields; the old refresh token stays if none came."""
    token = body.get("access_token") if isinstance(body, Mapping) else None
    if not isinstance(token, str) or not token:
        raise ConnectorError(
            FailureKind.PROVIDER_ERROR, f"{system} answered the token request without a token"
        )
    token_type = body.get("token_type")
    if isinstance(token_type, str) and token_type.lower() != "bearer":
        raise ConnectorError(
            FailureKind.PROVIDER_ERROR, f"{system} issued a {token_type} token, not a bearer one"
        )
    fields = {"access_token": token}
    refresh_token = body.get("refresh_token")
    if isinstance(refresh_token, str) and refresh_token:
        fields["refresh_token"] = refresh_token
    elif previous_refresh_token:
        fields["refresh_token"] = previous_refresh_token  # servers that do not rotate
    expires_in = body.get("expires_in")
    try:
        seconds = float(expires_in) if expires_in is not None else None
    except (TypeError, ValueError):
        seconds = None
    # Without expires_in the token is used until the system refuses it (then refreshed).
    fields["expires_at"] = (
        format_expiry(now + timedelta(seconds=max(0.0, seconds))) if seconds is not None else ""
    )
    return fields


def classify_token_error(response: httpx.Response, *, system: str) -> ConnectorError:
    """A refused token request: RFC 6749 error codes first, then the status code."""
    try:
        body = response.json()
    except ValueError:
        body = None
    code = body.get("error") if isinstance(body, Mapping) else None
    description = body.get("error_description") if isinstance(body, Mapping) else None
    status = response.status_code
    if isinstance(code, str):
        detail = f"{code}: {description}" if isinstance(description, str) else code
        detail = detail[:MAX_ERROR_MESSAGE]
        if code in AUTH_ERRORS:
            what = (
                "refused this connection's authorization; the customer must reconnect"
                if code == "invalid_grant"
                else "refused the OAuth client credentials"
            )
            return ConnectorError(
                FailureKind.AUTH, f"{system} {what} ({detail})", status_code=status
            )
        if code == "invalid_scope":
            return ConnectorError(
                FailureKind.PERMISSION_DENIED,
                f"{system} refused the scope ({detail})",
                status_code=status,
            )
        if status < 500 and status != 429:
            return ConnectorError(
                FailureKind.PROVIDER_ERROR,
                f"{system} refused the token request ({detail})",
                status_code=status,
            )
    if status == 401:
        return ConnectorError(
            FailureKind.AUTH,
            f"{system} refused the OAuth client credentials (HTTP 401)",
            status_code=status,
        )
    return classify_response(response, system=system)


def _form_encode(value: str) -> str:
    # RFC 6749 2.3.1: client id and secret are form-encoded before the Basic encoding.
    return quote_plus(value, safe="")


@dataclass(frozen=True)
class OAuth2Client:
    """One OAuth2 client of one authorization server: talks to its token endpoint."""

    token_url: str
    client_id: str
    client_secret: str | None = None
    system: str = "The system"
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    # "basic": HTTP Basic (what every server must accept); "post": id and secret in the body.
    auth_method: Literal["basic", "post"] = "basic"

    async def exchange_code(
        self,
        http: httpx.AsyncClient,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """Trade an authorization code (single use) for tokens."""
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            data["code_verifier"] = code_verifier
        body = await self._token_request(http, data)
        return token_fields(body, now=now or now_utc(), system=self.system)

    async def refresh(
        self,
        http: httpx.AsyncClient,
        refresh_token: str,
        *,
        scope: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """New tokens for a refresh token (which the server may rotate)."""
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scope:
            data["scope"] = scope
        body = await self._token_request(http, data)
        return token_fields(
            body, now=now or now_utc(), previous_refresh_token=refresh_token, system=self.system
        )

    async def _token_request(self, http: httpx.AsyncClient, data: dict[str, str]) -> Any:
        headers = {"Accept": "application/json"}
        if self.auth_method == "basic":
            raw = f"{_form_encode(self.client_id)}:{_form_encode(self.client_secret or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(raw.encode()).decode()
        else:
            data = {**data, "client_id": self.client_id}
            if self.client_secret:
                data["client_secret"] = self.client_secret
        try:
            response = await http.post(
                self.token_url, data=data, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc, system=self.system) from exc
        if not response.is_success:
            raise classify_token_error(response, system=self.system)
        try:
            return response.json()
        except ValueError as exc:
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR,
                f"{self.system} answered the token request with a body that is not JSON",
                status_code=response.status_code,
            ) from exc


# -- a connector that keeps its access token fresh --------------------------------------------


class OAuth2Connector(Connector):
    """Base for OAuth2 connectors: `send_authorized` sends with a usable bearer token.

    Subclasses implement `oauth_client(credentials)` (the token endpoint and client for those
    credentials) and may override `_send_with_token` to add headers or cookies.
    """

    auth_type = "oauth2"
    refresh_margin_seconds: ClassVar[float] = DEFAULT_REFRESH_MARGIN_SECONDS

    def __init__(
        self,
        credentials: Mapping[str, Any],
        http: httpx.AsyncClient,
        settings: Mapping[str, Any] | None = None,
        credential_store: CredentialStore | None = None,
    ) -> None:
        super().__init__(credentials, http, settings, credential_store)
        # One refresh at a time within this connector (several listings may share it); the
        # credential store serializes refreshes across connectors and workers.
        self._token_lock = asyncio.Lock()
        self.clock: Callable[[], datetime] = now_utc

    def oauth_client(self, credentials: Mapping[str, Any]) -> OAuth2Client:
        raise NotImplementedError

    @property
    def refresh_margin(self) -> float:
        return float(self.settings.get("token_refresh_margin_seconds", self.refresh_margin_seconds))

    def token_is_fresh(self, credentials: Mapping[str, Any]) -> bool:
        """An access token that will not expire within the margin (unknown expiry: fresh)."""
        if not credentials.get("access_token"):
            return False
        expires_at = parse_expiry(credentials.get("expires_at"))
        if expires_at is None:
            return True
        return (expires_at - self.clock()).total_seconds() > self.refresh_margin

    async def access_token(self, *, rejected: str | None = None) -> str:
        """A usable access token. `rejected`: the system refused this one, refresh anyway
        (unless a newer one arrived meanwhile)."""
        async with self._token_lock:
            current = self.credentials.get("access_token")
            if rejected is not None:
                if current and current != rejected:
                    return str(current)  # another request of this connector refreshed
            elif self.token_is_fresh(self.credentials):
                return str(current)
            fresh = await self.credential_store.refresh(dict(self.credentials), self._renew)
            self.credentials = dict(fresh)
        token = self.credentials.get("access_token")
        if not isinstance(token, str) or not token:
            raise ConnectorError(
                FailureKind.AUTH, f"{self.name} has no access token for this connection"
            )
        return token

    async def _renew(self, current: Mapping[str, Any]) -> Mapping[str, Any]:
        """What the credential store calls, under its lock, with the stored credentials."""
        refresh_token = current.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token.strip():
            raise ConnectorError(
                FailureKind.AUTH,
                f"The {self.name} access token expired and there is no refresh token; "
                "the customer must reconnect",
            )
        tokens = await self.oauth_client(current).refresh(
            self.http, refresh_token.strip(), now=self.clock()
        )
        return {**current, **tokens}

    async def send_authorized(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send with a bearer token; after a 401, refresh once and send again.

        Returns the final answer whatever its status (the caller classifies it); network
        failures raise ConnectorError.
        """
        token = await self.access_token()
        response = await self._send_with_token(token, method, url, **kwargs)
        if response.status_code != 401:
            return response
        token = await self.access_token(rejected=token)
        return await self._send_with_token(token, method, url, **kwargs)

    async def _send_with_token(
        self, token: str, method: str, url: str, **kwargs: Any
    ) -> httpx.Response:
        headers = {**(kwargs.pop("headers", None) or {}), "Authorization": f"Bearer {token}"}
        try:
            return await self.http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc, system=self.name) from exc
