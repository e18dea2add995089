"""The shared OAuth2 pieces (`maintlink.connectors.oauth2`) against a scripted token endpoint."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from maintlink.connectors.base import ConnectorError, CredentialField, FailureKind
from maintlink.connectors.oauth2 import (
    OAuth2Client,
    OAuth2Connector,
    authorization_url,
    code_challenge,
    format_expiry,
    new_state,
    parse_expiry,
    pkce_pair,
    token_fields,
)

TOKEN_URL = "https://idp.example/oauth/token"
API_URL = "https://api.example/me"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Provider:
    """A token endpoint with rotating refresh tokens and an API that checks the token."""

    def __init__(self) -> None:
        self.issued = 0
        self.valid: set[str] = set()
        self.refresh_tokens = {"rt-0"}
        self.token_requests: list[httpx.Request] = []
        self.api_requests: list[httpx.Request] = []
        self.expires_in: int | None = 3600
        self.delay = 0.0
        self.refuse_all = False

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            self.token_requests.append(request)
            await asyncio.sleep(self.delay)
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            if form.get("refresh_token") not in self.refresh_tokens:
                return httpx.Response(400, json={"error": "invalid_grant"})
            self.refresh_tokens.discard(form["refresh_token"])
            self.issued += 1
            access, refresh = f"at-{self.issued}", f"rt-{self.issued}"
            self.valid.add(access)
            self.refresh_tokens.add(refresh)
            body: dict[str, Any] = {
                "access_token": access,
                "token_type": "bearer",
                "refresh_token": refresh,
            }
            if self.expires_in is not None:
                body["expires_in"] = self.expires_in
            return httpx.Response(200, json=body)
        self.api_requests.append(request)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.valid or self.refuse_all:
            return httpx.Response(401, text="<html>Logon failed</html>")
        return httpx.Response(200, json={"me": token})


class Demo(OAuth2Connector):
    slug: ClassVar[str] = "demo"
    name: ClassVar[str] = "Demo"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()

    def oauth_client(self, credentials: Mapping[str, Any]) -> OAuth2Client:
        return OAuth2Client(
            TOKEN_URL, credentials["client_id"], credentials["client_secret"], system="Demo"
        )


class LockedStore:
    """The domain's CredentialStore in memory (a lock, re-read, renew only if unchanged)."""

    def __init__(self, credentials: Mapping[str, Any]) -> None:
        self.current = dict(credentials)
        self.lock = asyncio.Lock()
        self.renewals = 0

    async def refresh(
        self,
        seen: Mapping[str, Any],
        renew: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]],
    ) -> Mapping[str, Any]:
        async with self.lock:
            if dict(self.current) != dict(seen):
                return self.current
            self.current = dict(await renew(self.current))
            self.renewals += 1
            return self.current


def credentials(access: str = "at-x", expires_in: float | None = 3600) -> dict[str, str]:
    expires = "" if expires_in is None else format_expiry(NOW + timedelta(seconds=expires_in))
    return {
        "client_id": "cid",
        "client_secret": "secret",
        "refresh_token": "rt-0",
        "access_token": access,
        "expires_at": expires,
    }


def demo(provider: Provider, creds: Mapping[str, str], store: Any = None, **settings: Any) -> Demo:
    http = httpx.AsyncClient(transport=httpx.MockTransport(provider.handle))
    conn = Demo(creds, http, settings, store)
    conn.clock = lambda: NOW
    return conn


# -- authorization -----------------------------------------------------------------------------


def test_pkce_and_state() -> None:
    # RFC 7636, appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128 and re.fullmatch(r"[A-Za-z0-9_-]+", verifier)
    assert challenge == code_challenge(verifier) and "=" not in challenge
    assert new_state() != new_state() and len(new_state()) >= 32


def test_authorization_url() -> None:
    url = authorization_url(
        "https://idp.example/authorize?tenant=t1",
        client_id="c 1",
        redirect_uri="https://app.example/cb?x=1",
        state="s",
        code_challenge="ch",
        scope="read write",
    )
    parts = urlsplit(url)
    assert parts.netloc == "idp.example" and parts.path == "/authorize"
    assert {k: v[0] for k, v in parse_qs(parts.query).items()} == {
        "tenant": "t1",
        "response_type": "code",
        "client_id": "c 1",
        "redirect_uri": "https://app.example/cb?x=1",
        "state": "s",
        "code_challenge": "ch",
        "code_challenge_method": "S256",
        "scope": "read write",
    }
    plain = authorization_url("https://idp.example/a", client_id="c", redirect_uri="r", state="s")
    assert "code_challenge" not in plain and "scope" not in plain


# -- the token endpoint --------------------------------------------------------------------------


async def test_token_requests() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "access_token": "a",
                "token_type": "Bearer",
                "expires_in": 600,
                "refresh_token": "r2",
            },
        )

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = OAuth2Client(TOKEN_URL, "my id", "s3cr:t", system="IdP")
    tokens = await client.exchange_code(
        http, code="c", redirect_uri="https://app/cb", code_verifier="v" * 43, now=NOW
    )
    assert tokens == {
        "access_token": "a",
        "refresh_token": "r2",
        "expires_at": format_expiry(NOW + timedelta(seconds=600)),
    }
    request = seen[0]
    # RFC 6749 2.3.1: id and secret form-encoded, then HTTP Basic.
    expected = base64.b64encode(b"my+id:s3cr%3At").decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    assert form == {
        "grant_type": "authorization_code",
        "code": "c",
        "redirect_uri": "https://app/cb",
        "code_verifier": "v" * 43,
    }

    post = OAuth2Client(TOKEN_URL, "cid", "sec", auth_method="post")
    await post.refresh(http, "r1", scope="s")
    form = {k: v[0] for k, v in parse_qs(seen[1].content.decode()).items()}
    assert form == {
        "grant_type": "refresh_token",
        "refresh_token": "r1",
        "scope": "s",
        "client_id": "cid",
        "client_secret": "sec",
    }
    assert "authorization" not in seen[1].headers


def test_token_fields() -> None:
    fields = token_fields({"access_token": "a"}, now=NOW, previous_refresh_token="old", system="X")
    assert fields == {"access_token": "a", "refresh_token": "old", "expires_at": ""}
    for body in ({"token_type": "Bearer"}, {"access_token": "a", "token_type": "mac"}, ["a"]):
        with pytest.raises(ConnectorError) as caught:
            token_fields(body, now=NOW, system="X")
        assert caught.value.kind is FailureKind.PROVIDER_ERROR
    assert parse_expiry("2026-03-01T12:00:00Z") == NOW
    assert parse_expiry(str(NOW.timestamp())) == NOW
    assert parse_expiry("") is None and parse_expiry("soon") is None


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        (400, {"error": "invalid_grant", "error_description": "revoked"}, {}, FailureKind.AUTH),
        (401, {"error": "invalid_client"}, {}, FailureKind.AUTH),
        (400, {"error": "unauthorized_client"}, {}, FailureKind.AUTH),
        (400, {"error": "invalid_scope"}, {}, FailureKind.PERMISSION_DENIED),
        (400, {"error": "invalid_request"}, {}, FailureKind.PROVIDER_ERROR),
        (401, "<html>no</html>", {}, FailureKind.AUTH),
        (429, {"error": "slow_down"}, {"Retry-After": "7"}, FailureKind.RATE_LIMITED),
        (503, "<html>down</html>", {}, FailureKind.UNAVAILABLE),
        (404, "<html>no such page</html>", {}, FailureKind.PROVIDER_ERROR),
        (200, "not json", {}, FailureKind.PROVIDER_ERROR),
    ],
)
async def test_token_errors(
    status: int, body: Any, headers: dict[str, str], kind: FailureKind
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    with pytest.raises(ConnectorError) as caught:
        await OAuth2Client(TOKEN_URL, "c", "s", system="IdP").refresh(http, "r")
    assert caught.value.kind is kind
    assert caught.value.status_code == status
    assert "<" not in caught.value.message
    if kind is FailureKind.RATE_LIMITED:
        assert caught.value.retry_after == 7


async def test_token_endpoint_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    with pytest.raises(ConnectorError) as caught:
        await OAuth2Client(TOKEN_URL, "c", "s").refresh(http, "r")
    assert caught.value.kind is FailureKind.UNAVAILABLE


# -- OAuth2Connector ------------------------------------------------------------------------------


async def test_fresh_token_is_used_as_is() -> None:
    provider = Provider()
    provider.valid.add("at-x")
    conn = demo(provider, credentials(expires_in=3600))
    assert (await conn.send_authorized("GET", API_URL)).status_code == 200
    assert provider.token_requests == []


async def test_refresh_ahead_of_expiry() -> None:
    provider = Provider()
    conn = demo(provider, credentials(expires_in=30))  # inside the 60 s margin
    response = await conn.send_authorized("GET", API_URL)
    assert response.json() == {"me": "at-1"} and len(provider.token_requests) == 1
    assert conn.credentials["refresh_token"] == "rt-1"
    assert parse_expiry(conn.credentials["expires_at"]) == NOW + timedelta(seconds=3600)
    # A smaller margin keeps a token with 30 s left.
    provider.valid.add("at-x")
    relaxed = demo(provider, credentials(expires_in=30), token_refresh_margin_seconds=10)
    await relaxed.send_authorized("GET", API_URL)
    assert len(provider.token_requests) == 1


async def test_401_refreshes_once_and_retries_once() -> None:
    provider = Provider()
    conn = demo(provider, credentials(expires_in=None))  # unknown expiry: used until refused
    response = await conn.send_authorized("GET", API_URL)
    assert response.status_code == 200 and len(provider.token_requests) == 1
    assert [r.headers["authorization"] for r in provider.api_requests] == [
        "Bearer at-x",
        "Bearer at-1",
    ]
    # Still refused after the refresh: the 401 comes back (no loop), one refresh only.
    provider.refuse_all = True
    response = await conn.send_authorized("GET", API_URL)
    assert response.status_code == 401 and len(provider.token_requests) == 2


async def test_refresh_refused_or_impossible_is_auth() -> None:
    provider = Provider()
    provider.refresh_tokens.clear()  # the grant was revoked
    with pytest.raises(ConnectorError) as caught:
        await demo(provider, credentials(expires_in=0)).send_authorized("GET", API_URL)
    assert caught.value.kind is FailureKind.AUTH and "invalid_grant" in caught.value.message
    no_refresh = {**credentials(expires_in=0), "refresh_token": ""}
    with pytest.raises(ConnectorError) as caught:
        await demo(provider, no_refresh).send_authorized("GET", API_URL)
    assert caught.value.kind is FailureKind.AUTH and "reconnect" in caught.value.message


async def test_one_connector_many_tasks_one_refresh() -> None:
    provider = Provider()
    provider.delay = 0.05
    conn = demo(provider, credentials(expires_in=0))
    answers = await asyncio.gather(*(conn.send_authorized("GET", API_URL) for _ in range(5)))
    assert {a.status_code for a in answers} == {200} and len(provider.token_requests) == 1


async def test_two_workers_share_one_refresh() -> None:
    provider = Provider()
    provider.delay = 0.05
    creds = credentials(expires_in=0)
    store = LockedStore(creds)
    first, second = demo(provider, creds, store), demo(provider, creds, store)
    answers = await asyncio.gather(
        first.send_authorized("GET", API_URL), second.send_authorized("GET", API_URL)
    )
    assert [a.status_code for a in answers] == [200, 200]
    assert store.renewals == 1 and len(provider.token_requests) == 1
    assert first.credentials == second.credentials == store.current


async def test_refused_token_uses_what_another_worker_refreshed() -> None:
    provider = Provider()
    provider.valid.add("at-new")
    mine = credentials(access="at-old", expires_in=3600)
    store = LockedStore({**mine, "access_token": "at-new", "refresh_token": "rt-new"})
    conn = demo(provider, mine, store)
    response = await conn.send_authorized("GET", API_URL)
    assert response.json() == {"me": "at-new"}
    assert store.renewals == 0 and provider.token_requests == []
    assert conn.credentials["refresh_token"] == "rt-new"
