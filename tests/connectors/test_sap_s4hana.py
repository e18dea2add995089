"""SapS4HanaConnector against the SAP S/4HANA Cloud simulator over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from maintlink.connectors.base import ConnectorError, FailureKind
from maintlink.connectors.oauth2 import format_expiry, new_state, pkce_pair
from maintlink.connectors.sap_s4hana import SapS4HanaConnector, instance_root
from maintlink.domain.connections import check_credential_fields
from maintlink.sandbox.sap_s4hana import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    SapSystem,
    create_sap_s4hana_app,
    sap_keys,
)
from maintlink.sandbox.state import SandboxState
from tests.conftest import serve_app

CLIENT = {"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}
CONFIGURED_TYPES = "PM01=CORRECTIVE,PM03=PREVENTIVE,PM05=INSPECTION,PM06=OTHER"
REDIRECT = "https://app.example/connect/oauth/callback"
UNIFIED_ENUMS = {
    ("work_orders", "status"): {"OPEN", "IN_PROGRESS", "ON_HOLD", "COMPLETED", "CANCELLED"},
    ("work_orders", "priority"): {"NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL"},
    ("work_orders", "type"): {"CORRECTIVE", "PREVENTIVE", "INSPECTION", "OTHER"},
    ("assets", "status"): {"ACTIVE", "INACTIVE", "DECOMMISSIONED"},
    ("locations", "type"): {"FUNCTIONAL_LOCATION"},
    ("purchase_orders", "status"): {
        "DRAFT",
        "PENDING_APPROVAL",
        "APPROVED",
        "REJECTED",
        "PARTIALLY_RECEIVED",
        "RECEIVED",
        "CANCELLED",
    },
}


class LockedStore:
    """The domain's CredentialStore in memory: one refresh at a time (a lock), credentials
    re-read under it, `renew` only if they are still the ones the caller saw."""

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


@dataclass
class Sim:
    url: str
    state: SandboxState
    system: SapSystem
    client: httpx.AsyncClient
    requests: list[httpx.Request]
    statuses: list[tuple[str, int]]

    async def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.client.post(f"{self.url}{path}", json=body or {})
        response.raise_for_status()
        return response.json()

    async def grant(self, **body: Any) -> dict[str, Any]:
        """A new OAuth grant of the demo client, with its first tokens."""
        grant: dict[str, Any] = await self.control("/_sandbox/credentials", body)
        return grant

    def credentials(self, grant: Mapping[str, Any], *, access: bool = True) -> dict[str, str]:
        credentials = {"base_url": self.url, **CLIENT, "refresh_token": grant["refresh_token"]}
        if access:
            expiry = datetime.now(UTC) + timedelta(seconds=grant["expires_in"])
            credentials.update(access_token=grant["access_token"], expires_at=format_expiry(expiry))
        return credentials

    async def connector(
        self,
        grant: Mapping[str, Any] | None = None,
        *,
        access: bool = True,
        store: Any = None,
        credentials: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> SapS4HanaConnector:
        if credentials is None:
            credentials = self.credentials(grant or await self.grant(), access=access)
        return SapS4HanaConnector(credentials, self.client, settings, store)

    def keys(self, entity: str) -> set[str]:
        return set(sap_keys(self.state, entity).values())

    def token_calls(self) -> int:
        return sum(1 for r in self.requests if r.url.path.endswith("/oauth2/token"))

    def api(self, path_part: str) -> list[httpx.Request]:
        return [r for r in self.requests if path_part in r.url.path]


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    state = SandboxState(seed=7, size=40)
    app = create_sap_s4hana_app(state)
    requests: list[httpx.Request] = []
    statuses: list[tuple[str, int]] = []

    async def on_request(request: httpx.Request) -> None:
        requests.append(request)

    async def on_response(response: httpx.Response) -> None:
        statuses.append((response.request.url.path, response.status_code))

    hooks = {"request": [on_request], "response": [on_response]}
    async with serve_app(app) as url, httpx.AsyncClient(event_hooks=hooks) as client:
        yield Sim(url, state, app.state.sap, client, requests, statuses)


async def collect(conn: SapS4HanaConnector, entity: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [r async for page in conn.list_records(entity, **kwargs) for r in page.records]


async def expect(kind: FailureKind, call: Awaitable[Any]) -> ConnectorError:
    with pytest.raises(ConnectorError) as caught:
        await call
    assert caught.value.kind == kind, caught.value.message
    return caught.value


def _seconds(ts: str | None) -> datetime | None:
    if ts is None:
        return None
    return datetime.fromisoformat(ts).astimezone(UTC).replace(microsecond=0)


# -- contract and credentials ----------------------------------------------------------------


def test_declares_its_contract() -> None:
    cls = SapS4HanaConnector
    assert cls.slug == "sap_s4hana" and cls.auth_type == "oauth2"
    names = [f.name for f in cls.credential_fields]
    assert names[:4] == ["base_url", "client_id", "client_secret", "refresh_token"]
    assert {"access_token", "expires_at", "order_types", "product_types"} <= set(names)
    assert (
        cls.credential_fields[0].label == "Instance URL" and cls.credential_fields[0].type == "url"
    )
    secrets = {f.name for f in cls.credential_fields if f.secret}
    assert secrets == {"client_secret", "refresh_token", "access_token"}
    assert not cls.reports_deletions and cls.writable_entities == ("work_orders",)
    assert set(cls.entities) == {
        "work_orders",
        "assets",
        "locations",
        "parts",
        "purchase_orders",
        "vendors",
    }
    # People paste whichever SAP URL they have: the instance root is what counts.
    root = "https://my1.s4hana.cloud.sap"
    assert instance_root(f"{root}/sap/opu/odata/sap/API_MAINTENANCEORDER/") == root
    assert instance_root(f"{root}/") == root
    assert instance_root("http://127.0.0.1:8090/sap_s4hana") == "http://127.0.0.1:8090/sap_s4hana"
    url = cls.authorization_url(root, "c1", REDIRECT, "st", "ch", scope="API_MAINTENANCEORDER")
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{root}/sap/bc/sec/oauth2/authorize"
    assert query == {
        "response_type": "code",
        "client_id": "c1",
        "redirect_uri": REDIRECT,
        "state": "st",
        "code_challenge": "ch",
        "code_challenge_method": "S256",
        "scope": "API_MAINTENANCEORDER",
    }
    with pytest.raises(ConnectorError) as caught:
        cls.authorization_url("ftp://nope", "c1", REDIRECT, "st", "ch")
    assert caught.value.kind is FailureKind.INVALID_CONFIGURATION


async def test_validate_refreshes_and_reports_the_system(sim: Sim) -> None:
    """The API path: a refresh token only. Validation refreshes (the token rotates)."""
    grant = await sim.grant()
    conn = await sim.connector(grant, access=False)
    info = await conn.validate()
    host = sim.url.removeprefix("http://")
    assert info.remote_account_id == host and "SAP S/4HANA Cloud" in (
        info.remote_account_name or ""
    )
    assert sim.token_calls() == 1
    # The rotated tokens are in the connector's credentials (what the domain must keep).
    assert conn.credentials["refresh_token"] != grant["refresh_token"]
    assert conn.credentials["access_token"] and conn.credentials["expires_at"]
    check_credential_fields(SapS4HanaConnector, conn.credentials)
    await conn.check_health()
    assert sim.token_calls() == 1  # the token is fresh: no second refresh


async def test_bad_and_revoked_credentials_are_auth_failures(sim: Sim) -> None:
    grant = await sim.grant()
    wrong_secret = {**sim.credentials(grant, access=False), "client_secret": "nope"}
    error = await expect(
        FailureKind.AUTH, (await sim.connector(credentials=wrong_secret)).validate()
    )
    assert "client credentials" in error.message
    unknown = {**sim.credentials(grant, access=False), "refresh_token": "rt_unknown"}
    error = await expect(FailureKind.AUTH, (await sim.connector(credentials=unknown)).validate())
    assert "invalid_grant" in error.message

    # Revoked (by any of its tokens): the access token is refused (an HTML page), the
    # refresh answers invalid_grant, so the connection needs reauthorization.
    conn = await sim.connector(grant)
    await conn.check_health()
    await sim.control(f"/_sandbox/credentials/{grant['refresh_token']}/revoke")
    error = await expect(FailureKind.AUTH, conn.check_health())
    assert "<" not in error.message and "invalid_grant" in error.message
    await expect(FailureKind.AUTH, collect(conn, "work_orders"))
    await sim.control(f"/_sandbox/credentials/{grant['api_key']}/restore")
    await conn.check_health()  # the refusal did not consume the refresh token


async def test_missing_and_malformed_settings(sim: Sim) -> None:
    grant = await sim.grant()
    for base_url in ("not a url", "ftp://example.com", "http://host/?q=1"):
        bad = {**sim.credentials(grant), "base_url": base_url}
        await expect(
            FailureKind.INVALID_CONFIGURATION, (await sim.connector(credentials=bad)).validate()
        )
    # A URL without the SAP system behind it: the token endpoint answers 404.
    elsewhere = {**sim.credentials(grant, access=False), "base_url": f"{sim.url}/elsewhere"}
    error = await expect(
        FailureKind.INVALID_CONFIGURATION, (await sim.connector(credentials=elsewhere)).validate()
    )
    assert error.status_code == 404
    for bad_types in ("PM01=REPAIR", "PM01", "PM0001=CORRECTIVE"):
        creds = {**sim.credentials(grant), "order_types": bad_types}
        await expect(
            FailureKind.INVALID_CONFIGURATION, (await sim.connector(credentials=creds)).validate()
        )
    no_refresh = {
        **sim.credentials(grant),
        "refresh_token": "",
        "expires_at": "2001-01-01T00:00:00Z",
    }
    error = await expect(FailureKind.AUTH, (await sim.connector(credentials=no_refresh)).validate())
    assert "reconnect" in error.message


# -- the hosted flow (authorization code + PKCE) ---------------------------------------------


async def test_authorization_code_flow(sim: Sim) -> None:
    verifier, challenge = pkce_pair()
    state = new_state()
    url = SapS4HanaConnector.authorization_url(sim.url, DEMO_CLIENT_ID, REDIRECT, state, challenge)
    answer = await sim.client.get(f"{url}&auto_approve=1")
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["state"] == state
    credentials = await SapS4HanaConnector.exchange_code(
        sim.client, sim.url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, query["code"], REDIRECT, verifier
    )
    assert set(credentials) == {
        "client_id",
        "client_secret",
        "access_token",
        "refresh_token",
        "expires_at",
    }
    stored = {"base_url": sim.url, **credentials}
    check_credential_fields(SapS4HanaConnector, stored)
    conn = await sim.connector(credentials=stored)
    await conn.validate()
    assert sim.token_calls() == 1  # the exchange; the fresh access token needed no refresh

    # Codes are single-use: a second exchange fails and revokes what the code granted.
    error = await expect(
        FailureKind.AUTH,
        SapS4HanaConnector.exchange_code(
            sim.client,
            sim.url,
            DEMO_CLIENT_ID,
            DEMO_CLIENT_SECRET,
            query["code"],
            REDIRECT,
            verifier,
        ),
    )
    assert "invalid_grant" in error.message
    await expect(FailureKind.AUTH, conn.check_health())


async def _code(sim: Sim, challenge: str, redirect: str = REDIRECT) -> str:
    url = SapS4HanaConnector.authorization_url(sim.url, DEMO_CLIENT_ID, redirect, "s", challenge)
    answer = await sim.client.get(f"{url}&auto_approve=1")
    return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]


async def test_authorization_code_checks(sim: Sim) -> None:
    verifier, challenge = pkce_pair()
    code = await _code(sim, challenge)
    exchange = SapS4HanaConnector.exchange_code
    for wrong in (
        exchange(sim.client, sim.url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, code, REDIRECT, "x" * 50),
        exchange(
            sim.client,
            sim.url,
            DEMO_CLIENT_ID,
            DEMO_CLIENT_SECRET,
            await _code(sim, challenge),
            "https://other.example/cb",
            verifier,
        ),
        exchange(
            sim.client,
            sim.url,
            DEMO_CLIENT_ID,
            "wrong-secret",
            await _code(sim, challenge),
            REDIRECT,
            verifier,
        ),
    ):
        await expect(FailureKind.AUTH, wrong)
    # A code expires after 10 minutes.
    late = await _code(sim, challenge)
    sim.system.clock = lambda: time.time() + 601
    await expect(
        FailureKind.AUTH,
        exchange(sim.client, sim.url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, late, REDIRECT, verifier),
    )


async def test_authorization_page(sim: Sim) -> None:
    _, challenge = pkce_pair()
    url = SapS4HanaConnector.authorization_url(sim.url, DEMO_CLIENT_ID, REDIRECT, "s1", challenge)
    page = await sim.client.get(url)
    assert page.status_code == 200 and "<form" in page.text and ">Allow<" in page.text
    form = {
        "response_type": "code",
        "client_id": DEMO_CLIENT_ID,
        "redirect_uri": REDIRECT,
        "state": "s1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "user": "PLANNER",
        "password": "x",
    }
    authorize = f"{sim.url}/sap/bc/sec/oauth2/authorize"
    denied = await sim.client.post(authorize, data={**form, "decision": "deny"})
    assert denied.status_code == 303
    assert parse_qs(urlsplit(denied.headers["location"]).query) == {
        "error": ["access_denied"],
        "state": ["s1"],
    }
    allowed = await sim.client.post(authorize, data={**form, "decision": "allow"})
    assert "code" in parse_qs(urlsplit(allowed.headers["location"]).query)
    # Unknown clients and foreign redirect URIs never redirect.
    unknown = await sim.client.get(url.replace(DEMO_CLIENT_ID, "nobody"))
    assert unknown.status_code == 400 and "location" not in unknown.headers
    client = await sim.control("/_sandbox/oauth-clients", {"redirect_uris": [REDIRECT]})
    other = SapS4HanaConnector.authorization_url(
        sim.url, client["client_id"], "https://evil.example/", "s", challenge
    )
    assert (await sim.client.get(other)).status_code == 400


# -- listing ---------------------------------------------------------------------------------


async def test_pages_to_the_end_every_record_once(sim: Sim) -> None:
    conn = await sim.connector(page_size=7)
    pages = [page async for page in conn.list_records("work_orders")]
    keys = [r["MaintenanceOrder"] for p in pages for r in p.records]
    assert len(keys) == len(set(keys)) and set(keys) == sim.keys("work_orders")
    stamps = [conn.map_record("work_orders", r)["updated_at"] for p in pages for r in p.records]
    assert stamps == sorted(stamps)
    assert all(p.next_cursor for p in pages[:-1]) and pages[-1].next_cursor is None
    listing = sim.api("/MaintenanceOrder")
    first, later = listing[0].url.params, [r.url.params for r in listing[1:]]
    assert first["$top"] == "7" and first["$inlinecount"] == "allpages"
    assert first["$orderby"] == "LastChangeDateTime asc,MaintenanceOrder asc"
    # Later pages continue after the last record, not by offset.
    assert all(
        "$skip" not in p and "LastChangeDateTime gt datetimeoffset'" in p["$filter"] for p in later
    )
    rest = await collect(conn, "work_orders", cursor=pages[2].next_cursor)
    assert [r["MaintenanceOrder"] for r in rest] == keys[21:]


async def test_server_driven_paging_via_next(sim: Sim) -> None:
    await sim.control("/_sandbox/odata", {"max_page_size": 6})
    conn = await sim.connector(page_size=100)
    pages = [page async for page in conn.list_records("assets")]
    keys = [r["Equipment"] for p in pages for r in p.records]
    assert len(pages) == 4 and len(keys) == len(set(keys)) and set(keys) == sim.keys("assets")
    tokens = [r.url.params.get("$skiptoken") for r in sim.api("/Equipment")]
    assert tokens == [None, "6", "12", "18"]
    # The __next query keeps the original options; resuming from a cursor follows it.
    assert all(
        "ValidityEndDate eq datetime" in r.url.params["$filter"] for r in sim.api("/Equipment")
    )
    rest = await collect(conn, "assets", cursor=pages[1].next_cursor)
    assert [r["Equipment"] for r in rest] == keys[12:]


async def test_incremental_filter(sim: Sim) -> None:
    conn = await sim.connector(page_size=5)
    initial = await collect(conn, "assets")
    checkpoint = max(conn.map_record("assets", r)["updated_at"] for r in initial)
    # SAP keeps change timestamps to the second: the filter is `ge` on the whole second, so
    # the records of the checkpoint's second come again (harmless) and none is lost.
    again = await collect(conn, "assets", modified_since=checkpoint + timedelta(milliseconds=400))
    assert again and all(conn.map_record("assets", r)["updated_at"] == checkpoint for r in again)
    after = checkpoint + timedelta(seconds=1)
    sim.requests.clear()
    assert await collect(conn, "assets", modified_since=after) == []
    assert len(sim.requests) == 1
    since = after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert sim.requests[0].url.params["$filter"] == (
        f"ValidityEndDate eq datetime'9999-12-31T00:00:00' and "
        f"LastChangeDateTime ge datetimeoffset'{since}'"
    )
    summary = await sim.control(
        "/_sandbox/changes", {"entity": "assets", "update": 2, "create": 1, "delete": 1}
    )
    changed = await collect(conn, "assets", modified_since=after)
    keys = sap_keys(sim.state, "assets")
    expected = {keys[i] for i in summary["updated"]["assets"] + summary["created"]["assets"]}
    assert {r["Equipment"] for r in changed} == expected


async def test_deleted_records_stop_being_listed(sim: Sim) -> None:
    conn = await sim.connector(page_size=6)
    before = {r["Product"] for r in await collect(conn, "parts")}
    gone_ids = await sim.control("/_sandbox/changes", {"entity": "parts", "delete": 2})
    gone = {f"PN-{int(i) - 400_000:05d}" for i in gone_ids["deleted"]["parts"]}
    after = {r["Product"] for r in await collect(conn, "parts")}
    assert gone <= before and after == before - gone
    since = datetime.now(UTC) - timedelta(minutes=5)
    assert not gone & {r["Product"] for r in await collect(conn, "parts", modified_since=since)}


async def test_record_changed_mid_listing_is_not_lost(sim: Sim) -> None:
    """With $skip, a record moving to the end would shift an unseen one behind the offset."""
    conn = await sim.connector(page_size=5)
    pages = conn.list_records("work_orders")
    seen = [r["MaintenanceOrder"] for r in (await anext(pages)).records]
    keys = sap_keys(sim.state, "work_orders")
    moved = next(i for i, k in keys.items() if k == seen[0])
    sim.state.update_work_order(moved, {"priority": "LOW"})
    seen += [r["MaintenanceOrder"] async for page in pages for r in page.records]
    assert set(seen) == sim.keys("work_orders")
    assert seen.count(keys[moved]) == 2 and seen[-1] == keys[moved]


async def test_cursors_belong_to_their_listing(sim: Sim) -> None:
    conn = await sim.connector(page_size=5)
    await expect(FailureKind.PROVIDER_ERROR, collect(conn, "assets", cursor="garbage"))
    pages = conn.list_records("work_orders")
    cursor = (await anext(pages)).next_cursor
    await pages.aclose()
    await expect(FailureKind.PROVIDER_ERROR, collect(conn, "assets", cursor=cursor))
    with pytest.raises(ValueError):
        await collect(conn, "users")


# -- tokens: expiry, refresh, concurrency ----------------------------------------------------


async def test_refresh_ahead_of_expiry(sim: Sim) -> None:
    await sim.control("/_sandbox/oauth", {"access_token_seconds": 30})
    grant = await sim.grant()  # its access token expires in 30 s: inside the 60 s margin
    await sim.control("/_sandbox/oauth", {"access_token_seconds": 3600})
    conn = await sim.connector(grant)
    await conn.check_health()
    await conn.check_health()
    assert sim.token_calls() == 1
    assert [path for path, status in sim.statuses if status == 401] == []
    calls = [r.url.path for r in sim.requests if not r.url.path.startswith("/_sandbox")]
    assert calls[0].endswith("/oauth2/token")  # before any API request
    assert conn.credentials["access_token"] != grant["access_token"]


async def test_token_expiring_mid_sync(sim: Sim) -> None:
    conn = await sim.connector(page_size=5)
    pages = conn.list_records("work_orders")
    seen = [r["MaintenanceOrder"] for r in (await anext(pages)).records]
    expired = await sim.control("/_sandbox/oauth", {"expire_access_tokens": True})
    assert expired["active_access_tokens"] >= 1
    seen += [r["MaintenanceOrder"] async for page in pages for r in page.records]
    assert len(seen) == len(set(seen)) and set(seen) == sim.keys("work_orders")
    refused = [path for path, status in sim.statuses if status == 401]
    assert len(refused) == 1 and sim.token_calls() == 1  # one 401, one refresh, one retry


async def test_two_concurrent_refreshers_do_one_refresh(sim: Sim) -> None:
    grant = await sim.grant()
    stale = {**sim.credentials(grant), "expires_at": "2001-01-01T00:00:00Z"}
    store = LockedStore(stale)
    first = await sim.connector(credentials=stale, store=store)
    second = await sim.connector(credentials=stale, store=store)
    await asyncio.gather(first.check_health(), second.check_health())
    assert store.renewals == 1 and sim.token_calls() == 1
    assert first.credentials == second.credentials == store.current
    # One connector used from several tasks refreshes once too.
    sim.requests.clear()
    expired = {**store.current, "expires_at": "2001-01-01T00:00:00Z"}
    shared = await sim.connector(credentials=expired, store=LockedStore(expired))
    await asyncio.gather(*(shared.check_health() for _ in range(3)))
    assert sim.token_calls() == 1


async def test_without_serialized_refreshes_the_rotated_token_is_reused(sim: Sim) -> None:
    """Why the credential store matters: two refreshes with one rotating refresh token look
    like a stolen token, and the system revokes the whole grant."""
    grant = await sim.grant()
    stale = {**sim.credentials(grant), "expires_at": "2001-01-01T00:00:00Z"}
    first, second = await sim.connector(credentials=stale), await sim.connector(credentials=stale)
    results = await asyncio.gather(
        first.check_health(), second.check_health(), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, ConnectorError)]
    assert len(failures) == 1 and failures[0].kind is FailureKind.AUTH
    assert sim.state.credentials[grant["api_key"]].revoked
    await expect(FailureKind.AUTH, (first if results[0] is None else second).check_health())


async def test_invalid_grant_is_auth(sim: Sim) -> None:
    await sim.control("/_sandbox/oauth", {"refresh_token_seconds": 60})
    grant = await sim.grant()
    await sim.control("/_sandbox/oauth", {"refresh_token_seconds": None})
    sim.system.clock = lambda: time.time() + 120  # the refresh token has expired
    conn = await sim.connector(grant, access=False)
    error = await expect(FailureKind.AUTH, collect(conn, "vendors"))
    assert "invalid_grant" in error.message and error.status_code == 400


# -- the gateway: HTML 401, CSRF, OData errors, throttling, outages --------------------------


async def test_html_401_is_handled(sim: Sim) -> None:
    raw = await sim.client.get(
        f"{sim.url}/sap/opu/odata/sap/API_EQUIPMENT/Equipment",
        headers={"Authorization": "Bearer nope"},
    )
    assert raw.status_code == 401 and raw.headers["content-type"].startswith("text/html")
    grant = await sim.grant()
    # A token the system no longer knows (its expiry looks fine): refresh once, retry.
    conn = await sim.connector(credentials={**sim.credentials(grant), "access_token": "at_gone"})
    assert await collect(conn, "locations")
    assert sim.token_calls() == 1
    # The second 401 (after the refresh) is an auth failure with a readable message.
    await sim.control(f"/_sandbox/credentials/{grant['api_key']}/revoke")
    error = await expect(FailureKind.AUTH, conn.check_health())
    assert "<" not in error.message


async def test_csrf_round_trip_on_writes(sim: Sim) -> None:
    conn = await sim.connector()
    equipment = sorted(sim.keys("assets"))[0]
    raw = await conn.create("work_orders", {"title": "Check seal", "asset_ids": [equipment]})
    fetch = next(r for r in sim.requests if r.headers.get("x-csrf-token") == "Fetch")
    post = next(r for r in sim.requests if r.method == "POST" and "/MaintenanceOrder" in r.url.path)
    assert post.headers["x-csrf-token"] not in ("", "Fetch")
    assert "SAP_SESSIONID_S4H_100=" in post.headers["cookie"] and "cookie" not in fetch.headers
    assert not list(sim.client.cookies.jar)  # the SAP session stays out of the shared jar
    # SAP drops sessions: the write is refused once, the token fetched again, the write done.
    await sim.control("/_sandbox/odata", {"expire_csrf_tokens": True})
    key = raw["MaintenanceOrder"]
    await conn.update("work_orders", key, {"title": "Check seal again"})
    assert sum(1 for r in sim.requests if r.headers.get("x-csrf-token") == "Fetch") == 2
    order_path = f"/sap/opu/odata/sap/API_MAINTENANCEORDER/MaintenanceOrder('{key}')"
    assert (order_path, 403) in sim.statuses
    # Without the token SAP refuses a write outright.
    bare = await sim.client.post(
        f"{sim.url}/sap/opu/odata/sap/API_MAINTENANCEORDER/MaintenanceOrder",
        json={"MaintenanceOrderDesc": "x"},
        headers={"Authorization": f"Bearer {conn.credentials['access_token']}"},
    )
    assert bare.status_code == 403 and bare.text == "CSRF token validation failed"
    assert bare.headers["x-csrf-token"] == "Required"


async def test_odata_errors(sim: Sim) -> None:
    conn = await sim.connector()
    error = await expect(
        FailureKind.PROVIDER_ERROR, conn.update("work_orders", "4999999", {"title": "x"})
    )
    assert error.status_code == 404 and "Resource not found" in error.message
    error = await expect(
        FailureKind.PROVIDER_ERROR, conn.create("work_orders", {"title": "x", "asset_ids": ["1"]})
    )
    assert error.status_code == 400
    assert error.message == "Equipment 1 does not exist (/IWBEP/CX_MGW_BUSI_EXCEPTION)"
    # Without a technical object SAP needs a planning plant: its own message comes through.
    error = await expect(FailureKind.PROVIDER_ERROR, conn.create("work_orders", {"title": "x"}))
    assert "planning plant" in error.message
    raw = await sim.client.get(
        f"{sim.url}/sap/opu/odata/sap/API_EQUIPMENT/Equipment",
        params={"$filter": "Nope eq 1"},
        headers={
            "Authorization": f"Bearer {conn.credentials['access_token']}",
            "Accept": "application/json",
        },
    )
    body = raw.json()["error"]
    assert raw.status_code == 400 and body["message"] == {
        "lang": "en",
        "value": "Property 'Nope' not found",
    }


async def test_permission_denied(sim: Sim) -> None:
    grant = await sim.grant(entities=["work_orders", "assets"], read_only=True)
    conn = await sim.connector(grant)
    assert await collect(conn, "assets")
    error = await expect(FailureKind.PERMISSION_DENIED, collect(conn, "purchase_orders"))
    assert error.status_code == 403 and "API_PURCHASEORDER_PROCESS_SRV" in error.message
    equipment = sorted(sim.keys("assets"))[0]
    await expect(
        FailureKind.PERMISSION_DENIED,
        conn.create("work_orders", {"title": "x", "asset_ids": [equipment]}),
    )


async def test_rate_limited(sim: Sim) -> None:
    grant = await sim.grant()
    await sim.control(
        f"/_sandbox/credentials/{grant['access_token']}/faults", {"rate_limit_per_minute": 1}
    )
    conn = await sim.connector(grant)
    await conn.check_health()
    error = await expect(FailureKind.RATE_LIMITED, collect(conn, "work_orders"))
    assert (
        error.status_code == 429 and error.retry_after is not None and 0 < error.retry_after <= 60
    )


@pytest.mark.parametrize("mode", ["503", "refuse"])
async def test_offline_is_unavailable(sim: Sim, mode: str) -> None:
    conn = await sim.connector()
    refreshing = await sim.connector(access=False)
    await sim.control("/_sandbox/faults", {"offline": True, "offline_mode": mode})
    error = await expect(FailureKind.UNAVAILABLE, conn.validate())
    assert error.status_code == (503 if mode == "503" else None)
    await expect(FailureKind.UNAVAILABLE, collect(conn, "assets"))
    await expect(FailureKind.UNAVAILABLE, refreshing.check_health())  # the token endpoint too


async def test_refused_connection_and_timeout(sim: Sim) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    grant = await sim.grant()
    conn = await sim.connector(
        credentials={**sim.credentials(grant), "base_url": f"http://127.0.0.1:{closed}"}
    )
    await expect(FailureKind.UNAVAILABLE, conn.check_health())
    await sim.control("/_sandbox/faults", {"latency_ms": 400})
    slow = await sim.connector(grant, timeout=0.1)
    error = await expect(FailureKind.UNAVAILABLE, slow.check_health())
    assert "in time" in error.message


# -- mapping ---------------------------------------------------------------------------------


async def test_map_every_entity(sim: Sim) -> None:
    grant = await sim.grant()
    credentials = {**sim.credentials(grant), "order_types": CONFIGURED_TYPES}
    conn = await sim.connector(credentials=credentials, page_size=500)
    mapped: dict[str, list[dict[str, Any]]] = {}
    for entity in SapS4HanaConnector.entities:
        raws = await collect(conn, entity)
        assert raws, entity
        mapped[entity] = [conn.map_record(entity, raw) for raw in raws]
        assert {r["remote_id"] for r in mapped[entity]} == sim.keys(entity)
        for record in mapped[entity]:
            assert record["created_at"].tzinfo is not None and record["remote_deleted_at"] is None
            assert isinstance(record["custom_fields"], dict)
        for (enum_entity, name), allowed in UNIFIED_ENUMS.items():
            if enum_entity == entity:
                assert {r[name] for r in mapped[entity]} <= allowed, (entity, name)
    data = sim.state.data.records
    by_key = {
        entity: {v: k for k, v in sap_keys(sim.state, entity).items()}
        for entity in (*SapS4HanaConnector.entities, "users")
    }

    statuses = {
        "OPEN": "OPEN",
        "IN_PROGRESS": "IN_PROGRESS",
        "ON_HOLD": "ON_HOLD",
        "DONE": "COMPLETED",
        "CANCELED": "CANCELLED",
    }
    kinds = {
        "CORRECTIVE": "CORRECTIVE",
        "PREVENTIVE": "PREVENTIVE",
        "INSPECTION": "INSPECTION",
        "SAFETY": "OTHER",
    }
    for order in mapped["work_orders"]:
        source = data["work_orders"][by_key["work_orders"][order["remote_id"]]]
        assert order["status"] == statuses[source["status"]]
        assert order["priority"] == source["priority"] and order["title"] == source["title"]
        assert order["type"] == kinds[source["categories"][0]]
        assert order["description"] == source["description"]
        assert order["created_at"] == _seconds(source["createdAt"])
        assert order["updated_at"] == _seconds(source["updatedAt"])
        assert order["due_at"] == _seconds(source["dueDate"])
        if source["status"] == "DONE":
            assert order["completed_at"] == _seconds(source["completedAt"])
        if source.get("assetId"):
            assert order["asset_ids"] == [sap_keys(sim.state, "assets")[source["assetId"]]]
        if source["assigneeIds"]:
            assert by_key["users"][order["assignee_user_ids"][0]] == source["assigneeIds"][0]
    # The default order types know corrective and preventive only.
    plain = await sim.connector(grant, page_size=500)
    types = {
        plain.map_record("work_orders", r)["type"] for r in await collect(plain, "work_orders")
    }
    assert types <= {"CORRECTIVE", "PREVENTIVE", "OTHER"}

    for asset in mapped["assets"]:
        source = data["assets"][by_key["assets"][asset["remote_id"]]]
        expected = {"ONLINE": "ACTIVE", "OFFLINE": "INACTIVE", "DECOMMISSIONED": "DECOMMISSIONED"}
        assert asset["status"] == expected[source["status"]]
        assert (
            asset["criticality"] == {"HIGH": "A", "MEDIUM": "B", "LOW": "C"}[source["criticality"]]
        )
        assert asset["serial_number"] == source["serialNumber"]
        assert asset["location_id"] in sim.keys("locations")

    labels = sap_keys(sim.state, "locations")
    for location in mapped["locations"]:
        source = data["locations"][by_key["locations"][location["remote_id"]]]
        assert location["name"] == source["name"]
        assert location["parent_location_id"] == (
            labels[source["parentId"]] if source.get("parentId") else None
        )

    for part in mapped["parts"]:
        source = data["parts"][by_key["parts"][part["remote_id"]]]
        assert part["name"] == source["name"] and part["part_number"] == source["partNumber"]
        assert part["qty_on_hand"] == source["availableQuantity"]  # quality stock not counted
        assert part["qty_min"] == source["minimumQuantity"]
        assert part["unit_cost"] == Decimal(str(source["unitCost"])).quantize(Decimal("0.01"))
        assert part["currency"] == "USD" and part["uom"] in ("EA", "BOX", "L")

    po_status = {
        "PENDING": "DRAFT",
        "REQUESTED": "PENDING_APPROVAL",
        "APPROVED": "APPROVED",
        "DECLINED": "REJECTED",
        "COMPLETED": "RECEIVED",
        "CANCELED": "CANCELLED",
    }
    vendors = sap_keys(sim.state, "vendors")
    for po in mapped["purchase_orders"]:
        source = data["purchase_orders"][by_key["purchase_orders"][po["remote_id"]]]
        if source["status"] == "PARTIALLY_FULFILLED":
            received = any(i["quantityReceived"] for i in source["items"])
            assert po["status"] == ("PARTIALLY_RECEIVED" if received else "APPROVED")
        else:
            assert po["status"] == po_status[source["status"]]
        assert po["vendor_id"] == vendors[source["vendorId"]]
        assert po["total_amount"] == Decimal(str(source["totalCost"])).quantize(Decimal("0.01"))
        assert [line["qty_ordered"] for line in po["lines"]] == [
            i["quantity"] for i in source["items"]
        ]
        assert po["due_at"] == _seconds(source["dueDate"]).replace(hour=0, minute=0, second=0)

    for vendor in mapped["vendors"]:
        source = data["vendors"][by_key["vendors"][vendor["remote_id"]]]
        assert vendor["name"] == source["name"] and vendor["email"] == source["email"]
        assert vendor["phone"] and source["address"].split(", ")[-1] in vendor["address"]
        assert vendor["updated_at"] is None  # A_Supplier has no change timestamp


async def test_product_types_limit_the_parts(sim: Sim) -> None:
    grant = await sim.grant()
    conn = await sim.connector(credentials={**sim.credentials(grant), "product_types": "hibe"})
    parts = await collect(conn, "parts")
    assert parts and {p["ProductType"] for p in parts} == {"HIBE"}
    assert len(parts) < len(sim.keys("parts"))


# -- writes ----------------------------------------------------------------------------------


async def test_work_order_writes(sim: Sim) -> None:
    grant = await sim.grant()
    conn = await sim.connector(
        credentials={**sim.credentials(grant), "order_types": CONFIGURED_TYPES}
    )
    equipment = sorted(sim.keys("assets"))[0]
    person = sorted(sim.keys("users"))[0]
    due = datetime(2031, 5, 6, 7, 8, tzinfo=UTC)
    raw = await conn.create(
        "work_orders",
        {
            "title": "Check guard",
            "status": "IN_PROGRESS",
            "priority": "CRITICAL",
            "type": "INSPECTION",
            "asset_ids": [equipment],
            "assignee_user_ids": [person],
            "due_at": due,
        },
    )
    created = conn.map_record("work_orders", raw)
    assert created["title"] == "Check guard" and created["status"] == "IN_PROGRESS"
    assert created["remote_status"].startswith("REL") and created["priority"] == "CRITICAL"
    assert created["type"] == "INSPECTION" and raw["MaintenanceOrderType"] == "PM05"
    assert created["asset_ids"] == [equipment] and created["assignee_user_ids"] == [person]
    assert created["due_at"] == due and created["location_id"] in sim.keys("locations")
    key = created["remote_id"]
    calls = [r.url.path.rsplit("/", 1)[-1] for r in sim.requests if r.method == "POST"]
    assert "ReleaseMaintenanceOrder" in calls

    raw = await conn.update(
        "work_orders",
        key,
        {"title": "Guard checked", "priority": "LOW", "due_at": None, "status": "COMPLETED"},
    )
    updated = conn.map_record("work_orders", raw)
    assert updated["title"] == "Guard checked" and updated["priority"] == "LOW"
    assert updated["due_at"] is None and updated["status"] == "COMPLETED"
    assert updated["completed_at"] is not None and "TECO" in updated["remote_status"]
    patch = next(r for r in sim.requests if r.method == "PATCH")
    assert patch.headers["if-match"].startswith('W/"datetimeoffset')

    # COMPLETED -> ON_HOLD: reset technical completion, then lock.
    raw = await conn.update("work_orders", key, {"status": "ON_HOLD"})
    assert conn.map_record("work_orders", raw)["status"] == "ON_HOLD"
    # A locked order cannot be edited in SAP: unlock first, then change, then the status.
    raw = await conn.update("work_orders", key, {"title": "Resumed", "status": "IN_PROGRESS"})
    resumed = conn.map_record("work_orders", raw)
    assert resumed["status"] == "IN_PROGRESS" and resumed["title"] == "Resumed"
    raw = await conn.update("work_orders", key, {"status": "CANCELLED", "assignee_user_ids": []})
    cancelled = conn.map_record("work_orders", raw)
    assert cancelled["status"] == "CANCELLED" and "DLFL" in cancelled["remote_status"]
    assert cancelled["assignee_user_ids"] == []
    listed = await collect(conn, "work_orders", modified_since=cancelled["updated_at"])
    assert key in {r["MaintenanceOrder"] for r in listed}

    # What SAP cannot take is refused before anything is sent.
    sim.requests.clear()
    for fields in (
        {"title": "x" * 41},
        {"title": "x", "description": "long text"},
        {"title": "x", "notes": "a note"},
        {"title": "x", "colour": "red"},
        {"title": "x", "asset_ids": [equipment, equipment]},
        {"title": "x", "priority": "URGENT"},
    ):
        with pytest.raises(ValueError):
            await conn.create("work_orders", fields)
    default = await sim.connector(grant)
    with pytest.raises(ValueError, match="INSPECTION"):
        await default.create("work_orders", {"title": "x", "type": "INSPECTION"})
    with pytest.raises(ValueError):
        await conn.create("purchase_orders", {"vendor_id": "1"})
    with pytest.raises(ValueError):
        await conn.update("assets", equipment, {"name": "x"})
    assert sim.requests == []
    started = conn.map_record(
        "work_orders",
        await conn.create(
            "work_orders", {"title": "Started", "asset_ids": [equipment], "status": "IN_PROGRESS"}
        ),
    )
    with pytest.raises(ValueError, match="OPEN"):
        await conn.update("work_orders", started["remote_id"], {"status": "OPEN"})


async def test_stale_etag_is_refused(sim: Sim) -> None:
    conn = await sim.connector()
    equipment = sorted(sim.keys("assets"))[0]
    key = (await conn.create("work_orders", {"title": "x", "asset_ids": [equipment]}))[
        "MaintenanceOrder"
    ]
    token = await conn._fetch_csrf_token()
    answer = await conn.send_authorized(
        "PATCH",
        f"{conn.odata_url}/API_MAINTENANCEORDER/MaintenanceOrder('{key}')",
        json={"MaintenanceOrderDesc": "y"},
        headers={
            "x-csrf-token": token,
            "If-Match": "W/\"datetimeoffset'2001-01-01T00%3A00%3A00Z'\"",
            "Accept": "application/json",
        },
    )
    assert answer.status_code == 412 and "changed meanwhile" in answer.text


# -- where it runs ---------------------------------------------------------------------------


async def test_mounted_under_a_path(sim: Sim) -> None:
    """Mounted at `/sap_s4hana` (as the sandbox server does), that URL is the instance URL."""
    state = SandboxState(seed=3, size=10)
    host = Starlette(routes=[Mount("/sap_s4hana", app=create_sap_s4hana_app(state))])
    async with serve_app(host) as url:
        base = f"{url}/sap_s4hana"
        created = await sim.client.post(f"{base}/_sandbox/credentials")
        assert created.status_code == 201
        grant = created.json()
        conn = SapS4HanaConnector(
            {"base_url": base, **CLIENT, "refresh_token": grant["refresh_token"]}, sim.client
        )
        await conn.validate()
        assert len(await collect(conn, "work_orders")) == 10
        equipment = sorted(set(sap_keys(state, "assets").values()))[0]
        await conn.create("work_orders", {"title": "Mounted", "asset_ids": [equipment]})
        verifier, challenge = pkce_pair()
        auth = SapS4HanaConnector.authorization_url(base, DEMO_CLIENT_ID, REDIRECT, "s", challenge)
        answer = await sim.client.get(f"{auth}&auto_approve=1")
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        await SapS4HanaConnector.exchange_code(
            sim.client, base, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, code, REDIRECT, verifier
        )
        revoked = await sim.client.post(f"{base}/_sandbox/credentials/nope/revoke")
        assert revoked.status_code == 404 and revoked.json()["error"]["code"] == "not_found"


def _liar(seen: list[str]) -> Starlette:
    """A system that lies: HTML where JSON belongs, __next links elsewhere, 502 pages."""

    async def token(request: Request) -> Response:
        return JSONResponse({"access_token": "t", "token_type": "Bearer", "expires_in": 3600})

    async def odata(request: Request) -> Response:
        path = request.url.path
        seen.append(str(request.url))
        if path.endswith("/API_MAINTENANCEORDER/"):
            return HTMLResponse("<html>Welcome to the portal</html>")
        if path.endswith("/Equipment"):
            if "$skiptoken" not in request.query_params:
                rec = {"Equipment": "1", "LastChangeDateTime": "/Date(1000+0000)/"}
                nxt = "https://evil.example/sap/opu/odata/sap/API_EQUIPMENT/Equipment?$skiptoken=1"
                return JSONResponse({"d": {"results": [rec], "__next": nxt}})
            return JSONResponse({"d": {"results": [{"Equipment": "2"}]}})
        if path.endswith("/A_FunctionalLocation"):
            return JSONResponse(
                {"d": {"results": [], "__next": "https://x.example/other?$skiptoken=1"}}
            )
        if path.endswith("/A_Product"):
            return JSONResponse({"d": {"results": [{"Product": "P1", "BaseUnit": "EA"}]}})
        if path.endswith("/A_MatlStkInAcctMod"):
            error = {"code": "403", "message": {"lang": "en", "value": "No authorization"}}
            return JSONResponse({"error": error}, 403)
        if path.endswith("/A_PurchaseOrder"):
            return JSONResponse({"d": {"value": []}})
        return HTMLResponse("<html>Bad gateway</html>", 502)

    return Starlette(
        routes=[
            Route("/sap/bc/sec/oauth2/token", token, methods=["POST"]),
            Route("/sap/opu/odata/sap/{path:path}", odata),
        ]
    )


async def test_lying_provider(sim: Sim) -> None:
    seen: list[str] = []
    async with serve_app(_liar(seen)) as url:
        conn = SapS4HanaConnector({"base_url": url, **CLIENT, "refresh_token": "r"}, sim.client)
        error = await expect(FailureKind.INVALID_CONFIGURATION, conn.validate())
        assert "HTML" in error.message
        # A __next link naming another host: only its query is used, on the instance URL.
        assert [r["Equipment"] for r in await collect(conn, "assets")] == ["1", "2"]
        assert all(u.startswith(url) for u in seen)
        # Without access to the stock API parts still sync, without quantities.
        (part,) = await collect(conn, "parts")
        assert conn.map_record("parts", part)["qty_on_hand"] is None
        await expect(FailureKind.PROVIDER_ERROR, collect(conn, "locations"))
        await expect(FailureKind.PROVIDER_ERROR, collect(conn, "purchase_orders"))
        error = await expect(FailureKind.UNAVAILABLE, collect(conn, "vendors"))
        assert error.status_code == 502 and "<" not in error.message
