"""MaintainXConnector against the MaintainX simulator over real HTTP on loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from maintlink.connectors.base import ConnectorError, FailureKind
from maintlink.connectors.maintainx import DEFAULT_BASE_URL, MaintainXConnector
from maintlink.sandbox.maintainx import create_maintainx_app, organization_id, visible
from maintlink.sandbox.state import SandboxState
from tests.conftest import serve_app

KEY = "mx_test_key_0001"
UNIFIED_ENUMS = {
    ("work_orders", "status"): {"OPEN", "IN_PROGRESS", "ON_HOLD", "COMPLETED", "CANCELLED"},
    ("work_orders", "priority"): {"NONE", "LOW", "MEDIUM", "HIGH"},
    ("work_orders", "type"): {"CORRECTIVE", "PREVENTIVE", "INSPECTION", "OTHER", None},
    ("assets", "status"): {"ACTIVE", "INACTIVE", "DECOMMISSIONED"},
    ("locations", "type"): {"SITE", "OTHER"},
    ("purchase_orders", "status"): {
        "DRAFT", "PENDING_APPROVAL", "APPROVED", "REJECTED", "PARTIALLY_RECEIVED", "RECEIVED",
        "CANCELLED",
    },
}  # fmt: skip


@dataclass
class Sim:
    url: str
    state: SandboxState
    requests: list[httpx.Request]
    client: httpx.AsyncClient

    def connector(self, api_key: Any = KEY, **settings: Any) -> MaintainXConnector:
        credentials = {"base_url": self.url, "api_key": api_key}
        credentials.update(settings.pop("credentials", {}))
        return MaintainXConnector(credentials, self.client, settings)

    async def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.client.post(f"{self.url}{path}", json=body or {})
        response.raise_for_status()
        return response.json()

    def live_ids(self, entity: str) -> set[str]:
        records = self.state.data.records[entity]
        return {rid for rid, rec in records.items() if visible(entity, rec)}


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    state = SandboxState(seed=7, size=40, default_api_keys=[KEY])
    requests: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        requests.append(request)

    async with (
        serve_app(create_maintainx_app(state)) as url,
        httpx.AsyncClient(verify=False, event_hooks={"request": [count]}) as client,
    ):
        yield Sim(url, state, requests, client)


async def collect(conn: MaintainXConnector, entity: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [r async for page in conn.list_records(entity, **kwargs) for r in page.records]


async def expect(kind: FailureKind, call: Any) -> ConnectorError:
    with pytest.raises(ConnectorError) as caught:
        await call
    assert caught.value.kind == kind, caught.value.message
    return caught.value


# -- contract and credentials --------------------------------------------------------------


def test_declares_its_contract() -> None:
    assert MaintainXConnector.slug == "maintainx"
    assert MaintainXConnector.auth_type == "api_key"
    names = [f.name for f in MaintainXConnector.credential_fields]
    assert names == ["base_url", "api_key", "organization_id"]
    base_url = MaintainXConnector.credential_fields[0]
    assert base_url.label == "Instance URL" and base_url.type == "url"
    api_key = MaintainXConnector.credential_fields[1]
    assert api_key.secret and api_key.type == "password"
    assert not MaintainXConnector.reports_deletions
    assert set(MaintainXConnector.writable_entities) == {"work_orders", "purchase_orders"}
    assert len(MaintainXConnector.entities) == 7
    # The cloud API is the default instance; a pasted API root works too.
    no_client: Any = None
    assert MaintainXConnector({"api_key": "k"}, no_client).api_url == f"{DEFAULT_BASE_URL}/v1"
    pasted = {"base_url": "https://x.example/v1/", "api_key": "k"}
    assert MaintainXConnector(pasted, no_client).api_url == "https://x.example/v1"


async def test_validate_and_health(sim: Sim) -> None:
    info = await sim.connector().validate()
    assert info.remote_account_id == str(organization_id(sim.state))
    assert info.remote_account_name == "Sandbox Manufacturing Co."
    assert info.extra["currency"] == "USD" and info.extra["multi_organization_key"] is False
    await sim.connector().check_health()
    # Naming the key's own organization is fine for a single-organization key too.
    org = {"organization_id": str(organization_id(sim.state))}
    await sim.connector(credentials=org).validate()


async def test_bad_and_revoked_keys_are_auth_failures(sim: Sim) -> None:
    error = await expect(FailureKind.AUTH, sim.connector("wrong").validate())
    assert error.status_code == 401 and error.message == "Invalid token"
    key = (await sim.control("/_sandbox/credentials"))["api_key"]
    conn = sim.connector(key)
    await conn.validate()
    await sim.control(f"/_sandbox/credentials/{key}/revoke")
    await expect(FailureKind.AUTH, conn.validate())
    await expect(FailureKind.AUTH, conn.check_health())
    await expect(FailureKind.AUTH, collect(conn, "work_orders"))
    await expect(FailureKind.INVALID_CONFIGURATION, sim.connector("").validate())


async def test_multi_organization_keys(sim: Sim) -> None:
    key = (await sim.control("/_sandbox/credentials", {"name": "multi-org key"}))["api_key"]
    org = organization_id(sim.state)
    error = await expect(FailureKind.INVALID_CONFIGURATION, sim.connector(key).validate())
    assert str(org) in error.message and str(org + 1) in error.message
    # Used without the Organization ID anyway, MaintainX answers 400: a configuration issue.
    await expect(FailureKind.INVALID_CONFIGURATION, collect(sim.connector(key), "assets"))
    conn = sim.connector(key, credentials={"organization_id": str(org)})
    assert (await conn.validate()).remote_account_id == str(org)
    assert {r["id"] for r in await collect(conn, "assets")} == {
        int(i) for i in sim.live_ids("assets")
    }
    wrong = sim.connector(key, credentials={"organization_id": "999"})
    await expect(FailureKind.INVALID_CONFIGURATION, wrong.validate())
    bad = sim.connector(key, credentials={"organization_id": "acme"})
    await expect(FailureKind.INVALID_CONFIGURATION, bad.validate())


@pytest.mark.parametrize("base_url", ["not a url", "ftp://example.com", "http://host/?q=1"])
async def test_malformed_instance_url(sim: Sim, base_url: str) -> None:
    conn = MaintainXConnector({"base_url": base_url, "api_key": KEY}, sim.client)
    await expect(FailureKind.INVALID_CONFIGURATION, conn.validate())


async def test_wrong_url_is_a_configuration_error(sim: Sim) -> None:
    conn = MaintainXConnector({"base_url": f"{sim.url}/elsewhere", "api_key": KEY}, sim.client)
    error = await expect(FailureKind.INVALID_CONFIGURATION, conn.validate())
    assert error.status_code == 404


# -- failures ------------------------------------------------------------------------------


async def test_rate_limited(sim: Sim) -> None:
    key = (await sim.control("/_sandbox/credentials"))["api_key"]
    await sim.control(f"/_sandbox/credentials/{key}/faults", {"rate_limit_per_minute": 1})
    conn = sim.connector(key)
    await conn.check_health()
    error = await expect(FailureKind.RATE_LIMITED, collect(conn, "work_orders"))
    assert error.status_code == 429
    # MaintainX says when the window resets in X-Rate-Limit-Reset (seconds).
    assert error.retry_after is not None and 0 < error.retry_after <= 60


@pytest.mark.parametrize("mode", ["503", "refuse"])
async def test_offline_is_unavailable(sim: Sim, mode: str) -> None:
    await sim.control("/_sandbox/faults", {"offline": True, "offline_mode": mode})
    conn = sim.connector()
    error = await expect(FailureKind.UNAVAILABLE, conn.validate())
    assert error.status_code == (503 if mode == "503" else None)
    await expect(FailureKind.UNAVAILABLE, collect(conn, "assets"))


async def test_refused_connection_and_timeout(sim: Sim) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    refused = MaintainXConnector(
        {"base_url": f"http://127.0.0.1:{closed_port}", "api_key": KEY}, sim.client
    )
    await expect(FailureKind.UNAVAILABLE, refused.check_health())
    await sim.control("/_sandbox/faults", {"latency_ms": 400})
    error = await expect(FailureKind.UNAVAILABLE, sim.connector(timeout=0.1).check_health())
    assert "in time" in error.message


async def test_permission_denied(sim: Sim) -> None:
    body = {"entities": ["work_orders"], "read_only": True}
    key = (await sim.control("/_sandbox/credentials", body))["api_key"]
    conn = sim.connector(key)
    assert await collect(conn, "work_orders")
    error = await expect(FailureKind.PERMISSION_DENIED, collect(conn, "purchase_orders"))
    assert error.status_code == 403 and "purchase order" in error.message
    await expect(FailureKind.PERMISSION_DENIED, conn.create("work_orders", {"title": "x"}))


async def test_provider_errors(sim: Sim) -> None:
    conn = sim.connector()
    error = await expect(
        FailureKind.PROVIDER_ERROR, conn.update("work_orders", "99", {"title": "x"})
    )
    assert error.status_code == 404 and "Not Found" in error.message
    error = await expect(
        FailureKind.PROVIDER_ERROR, conn.create("work_orders", {"title": "x", "asset_ids": ["7"]})
    )
    assert error.status_code == 400 and error.message == "assetId: Asset not found"
    await expect(FailureKind.PROVIDER_ERROR, collect(conn, "assets", cursor="garbage"))
    pages = sim.connector(page_size=5).list_records("work_orders")
    cursor = (await anext(pages)).next_cursor
    await pages.aclose()
    # A work order listing's cursor cannot continue an asset listing.
    await expect(FailureKind.PROVIDER_ERROR, collect(conn, "assets", cursor=cursor))


def _liar(answers: dict[str, tuple[int, bytes]]) -> Starlette:
    """A server answering fixed bodies by path: a provider that lies."""

    async def answer(request: Request) -> Response:
        status, body = answers.get(request.url.path, (404, b"{}"))
        return Response(body, status, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST", "PATCH"])])


async def test_lying_provider(sim: Sim) -> None:
    stuck = b'{"parts": [{"id": 1, "updatedAt": "2025-01-01T00:00:00Z"}], "nextCursor": "s"}'
    answers = {
        "/v1/organizations": (200, b"<html>hello</html>"),
        "/v1/assets": (200, b'{"items": []}'),
        "/v1/parts": (200, stuck),
        "/v1/users": (502, b"<html>Bad gateway</html>"),
    }
    async with serve_app(_liar(answers)) as url:
        conn = MaintainXConnector({"base_url": url, "api_key": KEY}, sim.client)
        await expect(FailureKind.INVALID_CONFIGURATION, conn.validate())
        await expect(FailureKind.PROVIDER_ERROR, conn.check_health())
        await expect(FailureKind.PROVIDER_ERROR, collect(conn, "assets"))
        pages = conn.list_records("parts")
        first = await anext(pages)
        assert first.next_cursor
        await expect(FailureKind.PROVIDER_ERROR, anext(pages))
        error = await expect(FailureKind.UNAVAILABLE, collect(conn, "users"))
        assert error.status_code == 502


# -- listing ---------------------------------------------------------------------------------


async def test_pages_newest_first_every_record_once(sim: Sim) -> None:
    conn = sim.connector(page_size=7)
    pages = [page async for page in conn.list_records("work_orders")]
    ids = [str(r["id"]) for p in pages for r in p.records]
    assert len(ids) == len(set(ids)) and set(ids) == sim.live_ids("work_orders")
    stamps = [r["updatedAt"] for p in pages for r in p.records]
    assert stamps == sorted(stamps, reverse=True)
    assert all(p.next_cursor for p in pages[:-1]) and pages[-1].next_cursor is None
    # Resuming from any cursor yields exactly the rest (the catch-up pass finds nothing).
    rest = await collect(conn, "work_orders", cursor=pages[2].next_cursor)
    assert [str(r["id"]) for r in rest] == ids[21:]
    for request in sim.requests:
        if request.url.path.endswith("/workorders"):
            assert request.url.params["sort"] == "-updatedAt"
            assert request.url.params["limit"] == "7"
            assert set(request.url.params.get_list("expand")) >= {"assignees", "categories"}


async def test_incremental_windows(sim: Sim) -> None:
    conn = sim.connector(page_size=3)
    initial = await collect(conn, "assets")
    checkpoint = max(conn.map_record("assets", r)["updated_at"] for r in initial)
    after = checkpoint + timedelta(milliseconds=1)

    sim.requests.clear()
    assert await collect(conn, "assets", modified_since=after) == []
    assert len(sim.requests) == 1  # no changes: one request, stopped at the mark

    summary = await sim.control(
        "/_sandbox/changes", {"entity": "assets", "update": 2, "delete": 1, "create": 1}
    )
    changed = await collect(conn, "assets", modified_since=after)
    ids = {str(r["id"]) for r in changed}
    assert ids == set(summary["updated"]["assets"]) | set(summary["created"]["assets"])
    assert all(conn.map_record("assets", r)["updated_at"] > checkpoint for r in changed)


async def test_deleted_records_stop_being_listed(sim: Sim) -> None:
    conn = sim.connector(page_size=4)
    before = {str(r["id"]) for r in await collect(conn, "parts")}
    summary = await sim.control("/_sandbox/changes", {"entity": "parts", "delete": 2})
    deleted = set(summary["deleted"]["parts"])
    after = {str(r["id"]) for r in await collect(conn, "parts")}
    assert deleted <= before and not deleted & after and after == before - deleted
    # No deletion flag: a changed-since listing does not report them either.
    since = datetime.now(UTC) - timedelta(minutes=5)
    assert not deleted & {str(r["id"]) for r in await collect(conn, "parts", modified_since=since)}


async def test_catch_up_pass_finds_records_changed_mid_listing(sim: Sim) -> None:
    conn = sim.connector(page_size=5)
    pages = conn.list_records("work_orders")
    seen = [str(r["id"]) for r in (await anext(pages)).records]
    # The oldest work order changes: it jumps to the front, behind the listing's cursor.
    records = sim.state.data.records["work_orders"]
    oldest = min(sim.live_ids("work_orders"), key=lambda rid: records[rid]["updatedAt"])
    sim.state.update_work_order(oldest, {"priority": "HIGH"})
    seen += [str(r["id"]) async for page in pages for r in page.records]
    assert len(seen) == len(set(seen)) and set(seen) == sim.live_ids("work_orders")
    assert seen[-1] == oldest  # found by the catch-up pass


async def test_server_ignoring_sort_is_read_to_the_end(sim: Sim) -> None:
    """If the answers are not newest-first, stopping early would lose changes."""
    stamps = ["2025-01-01T00:00:00.000Z", "2025-02-01T00:00:00.000Z",
              "2025-03-01T00:00:00.000Z", "2025-04-01T00:00:00.000Z"]  # fmt: skip
    rows = [{"id": i + 1, "name": f"V{i}", "updatedAt": s} for i, s in enumerate(stamps)]

    async def vendors(request: Request) -> Response:
        start = int(request.query_params.get("cursor") or 0)
        body = {"vendors": rows[start : start + 2], "nextCursor": str(start + 2)}
        if start + 2 >= len(rows):
            body["nextCursor"] = None
        return JSONResponse(body)

    app = Starlette(routes=[Route("/v1/vendors", vendors)])
    async with serve_app(app) as url:
        conn = MaintainXConnector({"base_url": url, "api_key": KEY}, sim.client)
        since = datetime(2025, 1, 15, tzinfo=UTC)
        found = await collect(conn, "vendors", modified_since=since)
        assert [r["id"] for r in found] == [2, 3, 4]


# -- mapping -------------------------------------------------------------------------------


async def test_map_every_entity(sim: Sim) -> None:
    conn = sim.connector(page_size=200)
    mapped: dict[str, list[dict[str, Any]]] = {}
    for entity in MaintainXConnector.entities:
        raws = await collect(conn, entity)
        assert raws, entity
        mapped[entity] = [conn.map_record(entity, raw) for raw in raws]
        for raw, record in zip(raws, mapped[entity], strict=True):
            assert record["remote_id"] == str(raw["id"])
            assert record["created_at"].tzinfo is not None
            assert record["updated_at"] >= record["created_at"]
            assert record["remote_deleted_at"] is None
            assert isinstance(record["custom_fields"], dict)
        for (enum_entity, name), allowed in UNIFIED_ENUMS.items():
            if enum_entity == entity:
                assert {r[name] for r in mapped[entity]} <= allowed, (entity, name)

    state = sim.state.data.records
    statuses = {r["remote_status"]: r["status"] for r in mapped["work_orders"]}
    assert statuses["DONE"] == "COMPLETED" and statuses.get("CANCELED", "CANCELLED") == "CANCELLED"
    wo = next(r for r in mapped["work_orders"] if r["asset_ids"] and r["assignee_user_ids"])
    source = state["work_orders"][wo["remote_id"]]
    assert wo["asset_ids"] == [source["assetId"]]
    assert wo["assignee_user_ids"] == source["assigneeIds"]
    assert wo["remote_number"] == str(source["sequentialId"])
    assert wo["custom_fields"] == {k: str(v) for k, v in source["customFields"].items()}
    kinds = {state["work_orders"][r["remote_id"]]["categories"][0]: r["type"]
             for r in mapped["work_orders"]}  # fmt: skip
    assert kinds.get("CORRECTIVE", "CORRECTIVE") == "CORRECTIVE"
    assert kinds.get("INSPECTION", "INSPECTION") == "INSPECTION"
    assert kinds.get("SAFETY", "OTHER") == "OTHER"

    for asset in mapped["assets"]:
        source = state["assets"][asset["remote_id"]]
        expected = {"ONLINE": "ACTIVE", "OFFLINE": "INACTIVE"}.get(source["status"])
        assert asset["status"] == (expected or "DECOMMISSIONED")
        assert asset["criticality"] == source["criticality"].title()  # label, not the id
        assert asset["manufacturer"] == source["manufacturer"] and asset["barcode"]

    part = mapped["parts"][0]
    source = state["parts"][part["remote_id"]]
    assert part["unit_cost"] == Decimal(str(source["unitCost"]))  # from cents
    assert part["qty_on_hand"] == source["availableQuantity"]
    assert part["part_number"] == source["partNumber"] and part["stock_location_id"]
    assert part["vendor_ids"] == source["vendorIds"]

    pos = {r["remote_id"]: r for r in mapped["purchase_orders"]}
    vocabulary = {"PENDING": "DRAFT", "REQUESTED": "PENDING_APPROVAL", "COMPLETED": "RECEIVED"}
    for rid, po in pos.items():
        source = state["purchase_orders"][rid]
        assert po["status"] == vocabulary.get(source["status"], po["status"])
        assert po["total_amount"] == Decimal(str(source["totalCost"]))
        assert len(po["lines"]) == len(source["items"])

    sites = [r for r in mapped["locations"] if r["type"] == "SITE"]
    assert sites and all(r["parent_location_id"] is None for r in sites)
    vendor = mapped["vendors"][0]
    assert vendor["email"] and vendor["contacts"][0]["name"]
    assert vendor["custom_fields"]["Vendor Code"].startswith("V-")
    for user in mapped["users"]:
        assert user["display_name"] == f"{user['first_name']} {user['last_name']}"
        assert user["is_active"] is True and user["role"]


# -- writes --------------------------------------------------------------------------------


async def test_work_order_writes(sim: Sim) -> None:
    conn = sim.connector()
    asset = (await collect(conn, "assets"))[0]
    user_ids = sorted(sim.live_ids("users"))
    due = datetime(2031, 5, 6, 7, 8, tzinfo=UTC)
    raw = await conn.create(
        "work_orders",
        {
            "title": "Check guard",
            "status": "IN_PROGRESS",
            "priority": "CRITICAL",
            "type": "INSPECTION",
            "asset_ids": [str(asset["id"])],
            "assignee_user_ids": user_ids[:1],
            "due_at": due,
            "notes": "Bring the torque wrench",
        },
    )
    created = conn.map_record("work_orders", raw)
    assert created["title"] == "Check guard" and created["status"] == "IN_PROGRESS"
    assert created["priority"] == "HIGH" and created["type"] == "INSPECTION"
    assert created["due_at"] == due and created["asset_ids"] == [str(asset["id"])]
    assert created["assignee_user_ids"] == user_ids[:1] and created["started_at"]

    raw = await conn.update(
        "work_orders",
        created["remote_id"],
        {"status": "COMPLETED", "due_at": None, "assignee_user_ids": user_ids[1:2]},
    )
    updated = conn.map_record("work_orders", raw)
    assert updated["status"] == "COMPLETED" and updated["remote_status"] == "DONE"
    assert updated["completed_at"] is not None and updated["due_at"] is None
    assert updated["assignee_user_ids"] == user_ids[1:2]

    # A note is a comment: MaintainX does not move updatedAt for comments.
    raw = await conn.update("work_orders", created["remote_id"], {"notes": "Done, all good"})
    assert conn.map_record("work_orders", raw)["updated_at"] == updated["updated_at"]
    assert any(r.method == "POST" and r.url.path.endswith("/comments") for r in sim.requests)

    listed = await collect(conn, "work_orders", modified_since=updated["updated_at"])
    assert [str(r["id"]) for r in listed] == [created["remote_id"]]

    with pytest.raises(ValueError, match="colour"):
        await conn.create("work_orders", {"title": "x", "colour": "red"})
    with pytest.raises(ValueError, match="integer"):
        await conn.create("work_orders", {"title": "x", "location_id": "BEDFORD"})
    with pytest.raises(ValueError):
        await conn.create("work_orders", {"title": "x", "asset_ids": ["1", "2"]})
    with pytest.raises(ValueError):
        await conn.update("work_orders", created["remote_id"], {"status": "SOMEWHERE"})
    with pytest.raises(ValueError):
        await conn.create("assets", {"name": "x"})
    with pytest.raises(ValueError):
        await conn.update("purchase_orders", "1", {"status": "APPROVED"})
    error = await expect(
        FailureKind.PROVIDER_ERROR,
        conn.update("work_orders", created["remote_id"], {"team_ids": ["5"]}),
    )
    assert "assignees" in error.message and error.status_code == 400


async def test_purchase_order_create(sim: Sim) -> None:
    conn = sim.connector()
    vendor = sorted(sim.live_ids("vendors"))[0]
    part = sorted(sim.live_ids("parts"))[0]
    due = datetime(2031, 1, 2, tzinfo=UTC)
    raw = await conn.create(
        "purchase_orders",
        {
            "vendor_id": vendor,
            "status": "DRAFT",
            "due_at": due,
            "lines": [
                {"description": "Gloves", "qty_ordered": Decimal(4), "unit_price": Decimal("2.5")},
                {"part_id": part, "qty_ordered": 2, "unit_price": Decimal("10.125")},
            ],
        },
    )
    po = conn.map_record("purchase_orders", raw)
    assert po["status"] == "DRAFT" and po["remote_status"] == "REQUESTED"
    assert po["vendor_id"] == vendor and po["due_at"] == due
    assert po["total_amount"] == Decimal("30.26")  # 4 x 2.50 + 2 x 10.13 (cents)
    assert po["lines"][1]["part_id"] == part and po["lines"][0]["description"] == "Gloves"

    with pytest.raises(ValueError, match="DRAFT"):
        await conn.create(
            "purchase_orders",
            {
                "vendor_id": vendor,
                "status": "APPROVED",
                "lines": [{"description": "x", "qty_ordered": 1}],
            },
        )
    with pytest.raises(ValueError, match="currency"):
        await conn.create("purchase_orders", {"vendor_id": vendor, "currency": "EUR", "lines": []})
    error = await expect(
        FailureKind.PROVIDER_ERROR,
        conn.create(
            "purchase_orders", {"vendor_id": "9", "lines": [{"description": "x", "qty_ordered": 1}]}
        ),
    )
    assert error.message == "vendorId: Vendor not found"


async def test_mounted_under_a_path(sim: Sim) -> None:
    """Mounted at `/maintainx` (as the sandbox server does), that URL is the instance URL."""
    from starlette.routing import Mount

    state = SandboxState(seed=3, size=10, default_api_keys=[KEY])
    host = Starlette(routes=[Mount("/maintainx", app=create_maintainx_app(state))])
    async with serve_app(host) as url:
        created = await sim.client.post(f"{url}/maintainx/_sandbox/credentials")
        assert created.status_code == 201
        base = f"{url}/maintainx"
        credentials = {"base_url": base, "api_key": created.json()["api_key"]}
        conn = MaintainXConnector(credentials, sim.client)
        assert (await conn.validate()).remote_account_id == str(organization_id(state))
        assert len(await collect(conn, "work_orders")) == 10
        revoked = await sim.client.post(f"{base}/_sandbox/credentials/nope/revoke")
        assert revoked.status_code == 404 and revoked.json()["error"]["code"] == "not_found"
