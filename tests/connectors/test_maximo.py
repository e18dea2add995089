"""MaximoConnector against the Maximo simulator over real HTTP on loopback."""

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
from starlette.responses import Response
from starlette.routing import Mount, Route

from maintlink.connectors.base import ConnectorError, FailureKind
from maintlink.connectors.maximo import MaximoConnector
from maintlink.sandbox.data import format_ts
from maintlink.sandbox.maximo import create_maximo_app
from maintlink.sandbox.state import SandboxState
from tests.conftest import serve_app

KEY = "mx_test_key_0001"
UNIFIED_ENUMS = {
    ("work_orders", "status"): {"OPEN", "IN_PROGRESS", "ON_HOLD", "COMPLETED", "CANCELLED"},
    ("work_orders", "priority"): {"NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL"},
    ("work_orders", "type"): {"CORRECTIVE", "PREVENTIVE", "INSPECTION", "OTHER", None},
    ("assets", "status"): {"ACTIVE", "INACTIVE", "DECOMMISSIONED"},
    ("locations", "type"): {"SITE", "FUNCTIONAL_LOCATION", "STOREROOM"},
    ("purchase_orders", "status"): {
        "PENDING_APPROVAL", "APPROVED", "PARTIALLY_RECEIVED", "RECEIVED", "CANCELLED",
    },
}  # fmt: skip


@dataclass
class Sim:
    url: str
    state: SandboxState
    requests: list[httpx.Request]
    client: httpx.AsyncClient

    def connector(
        self, api_key: Any = KEY, *, base_url: str | None = None, **settings: Any
    ) -> MaximoConnector:
        credentials = {"base_url": base_url or self.url, "api_key": api_key}
        return MaximoConnector(credentials, self.client, settings)

    async def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.client.post(f"{self.url}{path}", json=body or {})
        response.raise_for_status()
        return response.json()

    def live(self, entity: str) -> dict[str, dict[str, Any]]:
        records = self.state.data.records[entity]
        return {rid: rec for rid, rec in records.items() if not rec.get("deleted")}

    def listings(self, object_structure: str) -> list[httpx.Request]:
        return [
            r for r in self.requests if r.method == "GET" and r.url.path.endswith(object_structure)
        ]


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    state = SandboxState(seed=7, size=40, default_api_keys=[KEY])
    requests: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        requests.append(request)

    async with (
        serve_app(create_maximo_app(state)) as url,
        httpx.AsyncClient(event_hooks={"request": [count]}) as client,
    ):
        yield Sim(url, state, requests, client)


async def collect(conn: MaximoConnector, entity: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [r async for page in conn.list_records(entity, **kwargs) for r in page.records]


def ids(conn: MaximoConnector, entity: str, raws: list[dict[str, Any]]) -> list[str]:
    return [conn.map_record(entity, r)["remote_id"] for r in raws]


async def expect(kind: FailureKind, call: Any) -> ConnectorError:
    with pytest.raises(ConnectorError) as caught:
        await call
    assert caught.value.kind == kind, caught.value.message
    return caught.value


def _fixed(answers: dict[str, tuple[int, bytes, dict[str, str]]]) -> Starlette:
    """A server answering fixed bodies by path: a misbehaving Maximo or a proxy before it."""

    async def answer(request: Request) -> Response:
        status, body, headers = answers.get(request.url.path, (404, b"{}", {}))
        return Response(body, status, headers=headers, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])


# -- contract and credentials --------------------------------------------------------------


def test_declares_its_contract() -> None:
    assert MaximoConnector.slug == "maximo" and MaximoConnector.auth_type == "api_key"
    fields = MaximoConnector.credential_fields
    assert [f.name for f in fields] == ["base_url", "api_key"]
    assert fields[0].label == "Instance URL" and fields[0].type == "url"
    assert fields[1].secret and fields[1].type == "password"
    assert MaximoConnector.reports_deletions is False
    assert set(MaximoConnector.writable_entities) == {"work_orders", "purchase_orders"}
    assert len(MaximoConnector.entities) == 7
    no_client: Any = None
    roots = {
        "https://m.example.com": "https://m.example.com/maximo/api",
        "https://m.example.com/maximo/": "https://m.example.com/maximo/api",
        "https://m.example.com/maximo/oslc": "https://m.example.com/maximo/oslc",
        "https://m.example.com/maximo/api/": "https://m.example.com/maximo/api",
        "http://host:8090/maximo": "http://host:8090/maximo/api",
    }
    for base, api in roots.items():
        assert MaximoConnector({"base_url": base, "api_key": "k"}, no_client).api_url == api


async def test_validate_and_health(sim: Sim) -> None:
    info = await sim.connector().validate()
    host = httpx.URL(sim.url).netloc.decode()
    assert info.remote_account_id == host and info.remote_account_name == f"SANDBOX ({host})"
    assert info.extra["personid"] == "MXINTADM" and info.extra["organization"] == "SANDBOX"
    assert info.extra["default_site"] == "MONTERRE" and info.extra["base_currency"] == "USD"
    await sim.connector().check_health()
    assert all(r.headers["apikey"] == KEY for r in sim.requests)
    assert all(r.url.path == "/maximo/api/whoami" for r in sim.requests)


async def test_bad_and_revoked_keys_are_auth_failures(sim: Sim) -> None:
    # Maximo answers an unknown, expired or revoked key with HTTP 400 BMXAA9549E.
    error = await expect(FailureKind.AUTH, sim.connector("wrong-key").validate())
    assert error.status_code == 400 and error.message.startswith("BMXAA9549E")
    key = (await sim.control("/_sandbox/credentials"))["api_key"]
    conn = sim.connector(key)
    await conn.validate()
    await sim.control(f"/_sandbox/credentials/{key}/revoke")
    await expect(FailureKind.AUTH, conn.validate())
    await expect(FailureKind.AUTH, conn.check_health())
    await expect(FailureKind.AUTH, collect(conn, "work_orders"))
    await expect(FailureKind.AUTH, conn.create("work_orders", {"title": "x"}))
    await sim.control(f"/_sandbox/credentials/{key}/restore")
    await conn.check_health()
    sent = len(sim.requests)
    await expect(FailureKind.INVALID_CONFIGURATION, sim.connector("  ").validate())
    assert len(sim.requests) == sent  # no request without a key


async def test_no_key_at_all_is_an_auth_failure(sim: Sim) -> None:
    response = await sim.client.get(f"{sim.url}/maximo/api/whoami")
    assert response.status_code == 401
    assert response.json()["Error"]["reasonCode"] == "BMXAA0021E"


@pytest.mark.parametrize("base_url", ["not a url", "ftp://example.com", "http://host/?q=1"])
async def test_malformed_instance_url(sim: Sim, base_url: str) -> None:
    await expect(FailureKind.INVALID_CONFIGURATION, sim.connector(base_url=base_url).validate())


async def test_not_a_maximo_api_is_a_configuration_error(sim: Sim) -> None:
    login_page = (200, b"<html>Sign in</html>", {"content-type": "text/html"})
    redirect = (302, b"", {"location": "https://idp.example.com/login"})
    answers = {"/html/maximo/api/whoami": login_page, "/sso/maximo/api/whoami": redirect}
    async with serve_app(_fixed(answers)) as url:
        for path in ("/html", "/sso", "/elsewhere"):
            conn = sim.connector(base_url=f"{url}{path}")
            await expect(FailureKind.INVALID_CONFIGURATION, conn.validate())


# -- failures ------------------------------------------------------------------------------


async def test_rate_limited(sim: Sim) -> None:
    key = (await sim.control("/_sandbox/credentials"))["api_key"]
    await sim.control(f"/_sandbox/credentials/{key}/faults", {"rate_limit_per_minute": 1})
    conn = sim.connector(key)
    await conn.check_health()
    error = await expect(FailureKind.RATE_LIMITED, collect(conn, "work_orders"))
    assert error.status_code == 429
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
    refused = sim.connector(base_url=f"http://127.0.0.1:{closed_port}")
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
    assert error.status_code == 403 and "BMXAA0024E" in error.message
    await expect(FailureKind.PERMISSION_DENIED, conn.create("work_orders", {"title": "x"}))


async def test_error_bodies_are_classified(sim: Sim) -> None:
    def error(reason: str, status: str) -> bytes:
        return (
            f'{{"Error": {{"reasonCode": "{reason}", "message": "{reason} - no", '
            f'"statusCode": "{status}"}}}}'
        ).encode()

    html = {"content-type": "text/html"}
    answers = {
        "/a/maximo/api/whoami": (200, error("BMXAA9549E", "400"), {}),  # inside a 200
        "/b/maximo/api/whoami": (401, b"<html>Unauthorized</html>", html),
        "/c/maximo/api/whoami": (400, error("BMXAA0024E", "400"), {}),
        "/d/maximo/api/whoami": (400, error("BMXAA4129E", "400"), {}),
        "/e/maximo/api/whoami": (500, error("BMXAA9999E", "500"), {}),
        "/f/maximo/api/whoami": (503, b"busy", {"Retry-After": "7"}),
        "/g/maximo/api/whoami": (502, b"<html>Bad gateway</html>", html),
    }
    kinds = {
        "a": FailureKind.AUTH,
        "b": FailureKind.AUTH,
        "c": FailureKind.PERMISSION_DENIED,
        "d": FailureKind.PROVIDER_ERROR,
        "e": FailureKind.UNAVAILABLE,
        "f": FailureKind.RATE_LIMITED,
        "g": FailureKind.UNAVAILABLE,
    }
    async with serve_app(_fixed(answers)) as url:
        for path, kind in kinds.items():
            caught = await expect(kind, sim.connector(base_url=f"{url}/{path}").check_health())
            if path == "d":
                assert caught.message == "BMXAA4129E - no" and caught.status_code == 400
            if path == "f":
                assert caught.retry_after == 7


async def test_misbehaving_listings_fail_loudly(sim: Sim) -> None:
    def page(rows: list[tuple[int, str]], more: bool) -> bytes:
        members = ",".join(
            f'{{"assetid": {i}, "assetnum": "A{i}", "siteid": "S", "changedate": "{c}"}}'
            for i, c in rows
        )
        next_page = ', "nextPage": {"href": "x"}' if more else ""
        return f'{{"member": [{members}], "responseInfo": {{"pagenum": 1{next_page}}}}}'.encode()

    answers = {
        "/a/maximo/api/os/mxapiasset": (200, b'{"items": []}', {}),
        "/b/maximo/api/os/mxapiasset": (
            200, page([(2, "2025-02-01T00:00:00+00:00"), (1, "2025-01-01T00:00:00+00:00")],
                      False), {},
        ),  # out of the requested order
        "/c/maximo/api/os/mxapiasset": (
            200, page([(1, "2025-01-01T00:00:00+00:00")], True), {},
        ),  # a next page that never moves on
    }  # fmt: skip
    async with serve_app(_fixed(answers)) as url:
        for path in ("a", "b", "c"):
            conn = sim.connector(base_url=f"{url}/{path}")
            await expect(FailureKind.PROVIDER_ERROR, collect(conn, "assets"))
    conn = sim.connector()
    await expect(FailureKind.PROVIDER_ERROR, collect(conn, "assets", cursor="garbage"))
    pages = sim.connector(page_size=5).list_records("work_orders")
    cursor = (await anext(pages)).next_cursor
    await pages.aclose()
    # A work order listing's cursor cannot continue an asset listing.
    await expect(FailureKind.PROVIDER_ERROR, collect(conn, "assets", cursor=cursor))


# -- listing ---------------------------------------------------------------------------------


async def test_pages_every_record_once(sim: Sim) -> None:
    conn = sim.connector(page_size=7)
    for entity in MaximoConnector.entities:
        pages = [page async for page in conn.list_records(entity)]
        listed = [r for p in pages for r in p.records]
        seen = ids(conn, entity, listed)
        assert len(seen) == len(set(seen)) == len(sim.live(entity)), entity
        assert all(p.next_cursor for p in pages[:-1]) and pages[-1].next_cursor is None
    requests = sim.listings("/os/mxapiwodetail")
    # Each page after the first repeats the last record of the one before (changedate>=).
    assert len(requests) == 7
    for request in requests:
        params = request.url.params
        assert params["lean"] == "1" and params["oslc.pageSize"] == "7"
        assert params["oslc.orderBy"] == "+changedate,+workorderid"
        assert "status_maxvalue" in params["oslc.select"].split(",")
    # Work orders come oldest change first; resuming from a cursor gives exactly the rest.
    pages = [page async for page in conn.list_records("work_orders")]
    listed = [r for p in pages for r in p.records]
    stamps = [conn.map_record("work_orders", r)["updated_at"] for r in listed]
    assert stamps == sorted(stamps)
    rest = await collect(conn, "work_orders", cursor=pages[2].next_cursor)
    after_third = [r for p in pages[3:] for r in p.records]
    assert ids(conn, "work_orders", rest) == ids(conn, "work_orders", after_third)


async def test_records_sharing_a_change_date_are_walked_by_id(sim: Sim) -> None:
    """A mass update stamps many records within one second, more than a page of them.

    Maximo shows whole seconds but sorts by the milliseconds it keeps, so within the second
    the order is not the id order: dropping "ids up to the last one" would lose records.
    """
    second = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    tied = sorted(sim.live("work_orders"))[:17]
    for n, record_id in enumerate(tied):
        stamp = second + timedelta(milliseconds=900 - n * 50)  # later ids, earlier stamps
        sim.state.data.records["work_orders"][record_id]["updatedAt"] = format_ts(stamp)
    conn = sim.connector(page_size=5)
    listed = ids(conn, "work_orders", await collect(conn, "work_orders"))
    assert set(listed) == set(ids(conn, "work_orders", await collect(conn, "work_orders")))
    assert len(set(listed)) == 40 and len(listed) - 40 <= 5  # a walked second may repeat some
    wheres = [r.url.params.get("oslc.where", "") for r in sim.listings("/os/mxapiwodetail")]
    after = _iso_second(second + timedelta(seconds=1))
    assert f'changedate>="{_iso_second(second)}" and changedate<"{after}"' in " ".join(wheres)
    assert any("workorderid>" in w for w in wheres)
    assert f'changedate>="{after}"' in wheres  # and on after that second


def _iso_second(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


async def test_incremental_windows(sim: Sim) -> None:
    conn = sim.connector(page_size=3)
    initial = await collect(conn, "assets")
    checkpoint = max(conn.map_record("assets", r)["updated_at"] for r in initial)
    after = checkpoint + timedelta(seconds=1)
    sim.requests.clear()
    assert await collect(conn, "assets", modified_since=after) == []
    assert len(sim.requests) == 1  # no changes: one request
    where = sim.requests[0].url.params["oslc.where"]
    assert where == f'changedate>="{after.isoformat()}"'

    summary = await sim.control(
        "/_sandbox/changes", {"entity": "assets", "update": 2, "delete": 1, "create": 1}
    )
    changed = await collect(conn, "assets", modified_since=after)
    expected = set(summary["updated"]["assets"]) | set(summary["created"]["assets"])
    assert {str(r["assetid"]) for r in changed} == expected
    assert all(conn.map_record("assets", r)["updated_at"] > checkpoint for r in changed)


async def test_changes_during_a_listing_skip_nothing(sim: Sim) -> None:
    """With `pageno` paging a change shifts the pages and a record is skipped; not here."""
    conn = sim.connector(page_size=5)
    pages = conn.list_records("work_orders")
    first = (await anext(pages)).records
    sim.state.update_work_order(str(first[0]["workorderid"]), {"priority": "HIGH"})
    rest = [r async for page in pages for r in page.records]
    seen = [str(r["workorderid"]) for r in first + rest]
    assert set(seen) == set(sim.live("work_orders"))
    assert seen[-1] == seen[0]  # the changed one comes again, at the end


async def test_entities_without_a_change_date_are_listed_in_full(sim: Sim) -> None:
    conn = sim.connector(page_size=6)
    since = datetime.now(UTC) + timedelta(days=1)  # nothing changed after this
    parts = await collect(conn, "parts", modified_since=since)
    assert len(parts) == len(sim.live("parts"))
    for request in sim.listings("/os/mxapiinventory"):
        assert request.url.params["oslc.orderBy"] == "+inventoryid"
        assert "changedate" not in request.url.params.get("oslc.where", "")
    assert all(conn.map_record("parts", r)["updated_at"] is None for r in parts)


async def test_deleted_records_stop_being_listed(sim: Sim) -> None:
    conn = sim.connector(page_size=4)
    before = set(ids(conn, "parts", await collect(conn, "parts")))
    summary = await sim.control("/_sandbox/changes", {"entity": "parts", "delete": 2})
    after = set(ids(conn, "parts", await collect(conn, "parts")))
    assert len(after) == len(before) - 2 and after < before
    gone = {int(i) for i in summary["deleted"]["parts"]}
    assert not gone & {r["inventoryid"] for r in await collect(conn, "parts")}
    # No deletion flag: a changed-since listing does not report deleted work orders either.
    summary = await sim.control("/_sandbox/changes", {"entity": "work_orders", "delete": 1})
    since = datetime.now(UTC) - timedelta(minutes=5)
    recent = await collect(conn, "work_orders", modified_since=since)
    assert summary["deleted"]["work_orders"][0] not in {str(r["workorderid"]) for r in recent}


# -- mapping -------------------------------------------------------------------------------


async def test_map_every_entity(sim: Sim) -> None:
    settings = {"custom_attributes": {"work_orders": ["cxdowntimeh"], "assets": ["CXCOSTCENTER"]}}
    conn = sim.connector(page_size=200, **settings)
    raw: dict[str, list[dict[str, Any]]] = {}
    mapped: dict[str, list[dict[str, Any]]] = {}
    for entity in MaximoConnector.entities:
        raw[entity] = await collect(conn, entity)
        mapped[entity] = [conn.map_record(entity, r) for r in raw[entity]]
        for record in mapped[entity]:
            for name in ("created_at", "updated_at"):
                assert record[name] is None or record[name].utcoffset() == timedelta(0)
            assert record["remote_deleted_at"] is None
            assert isinstance(record["custom_fields"], dict)
        for (enum_entity, name), allowed in UNIFIED_ENUMS.items():
            if enum_entity == entity:
                assert {r[name] for r in mapped[entity]} <= allowed, (entity, name)
    remote = {entity: {r["remote_id"] for r in rows} for entity, rows in mapped.items()}
    site = "MONTERRE"
    assert all(rid.startswith(f"{site}:") for rid in remote["work_orders"] | remote["assets"])

    # Composite keys line up: every reference is another record's remote_id.
    for wo in mapped["work_orders"]:
        assert set(wo["asset_ids"]) <= remote["assets"]
        assert wo["location_id"] is None or wo["location_id"] in remote["locations"]
        assert set(wo["assignee_user_ids"]) <= remote["users"]
    for part in mapped["parts"]:
        assert part["stock_location_id"] in remote["locations"]
        assert set(part["vendor_ids"]) <= remote["vendors"]
    for po in mapped["purchase_orders"]:
        assert po["vendor_id"] in remote["vendors"]
        assert {line["part_id"] for line in po["lines"]} - {None} <= remote["parts"]

    source = sim.state.data.records
    expected_status = {"OPEN": "OPEN", "IN_PROGRESS": "IN_PROGRESS", "ON_HOLD": "ON_HOLD",
                       "DONE": "COMPLETED", "CANCELED": "CANCELLED"}  # fmt: skip
    expected_priority = {"NONE": "NONE", "LOW": "LOW", "MEDIUM": "MEDIUM", "HIGH": "HIGH"}
    for r, wo in zip(raw["work_orders"], mapped["work_orders"], strict=True):
        record = source["work_orders"][str(r["workorderid"])]
        assert wo["status"] == expected_status[record["status"]]
        assert wo["priority"] == expected_priority[record["priority"]]
        assert wo["remote_id"] == f"{site}:{r['wonum']}" and wo["title"] == record["title"]
        assert wo["created_at"] and wo["updated_at"] >= wo["created_at"]
        assert wo["custom_fields"] == {"cxdowntimeh": record["customFields"]["Downtime (h)"]}
    assert {wo["remote_status"] for wo in mapped["work_orders"]} >= {"WAPPR", "APPR", "COMP"}

    for r, asset in zip(raw["assets"], mapped["assets"], strict=True):
        record = source["assets"][str(r["assetid"])]
        status = {"ONLINE": "ACTIVE", "OFFLINE": "INACTIVE"}.get(record["status"])
        assert asset["status"] == (status or "DECOMMISSIONED")
        assert asset["name"] == record["name"] and asset["serial_number"]
        assert asset["custom_fields"] == {"cxcostcenter": record["customFields"]["Cost center"]}
    kinds = {loc["code"].split("-")[0]: loc["type"] for loc in mapped["locations"]}
    assert kinds["SITE"] == "SITE" and kinds["STR"] == "STOREROOM"
    assert next(loc for loc in mapped["locations"] if loc["type"] == "SITE")["address"]

    part = mapped["parts"][0]
    record = source["parts"][str(raw["parts"][0]["inventoryid"])]
    assert part["unit_cost"] == Decimal(str(record["unitCost"]))
    assert part["qty_on_hand"] == record["availableQuantity"]
    assert part["part_number"] == record["partNumber"] and part["uom"] == record["unit"].upper()

    for r, po in zip(raw["purchase_orders"], mapped["purchase_orders"], strict=True):
        record = source["purchase_orders"][str(r["poid"])]
        expected = {"PENDING": "PENDING_APPROVAL", "REQUESTED": "PENDING_APPROVAL",
                    "DECLINED": "CANCELLED", "PARTIALLY_FULFILLED": "PARTIALLY_RECEIVED",
                    "COMPLETED": "RECEIVED", "CANCELED": "CANCELLED"}  # fmt: skip
        assert po["status"] == expected.get(record["status"], record["status"])
        assert po["total_amount"] == Decimal(str(record["totalCost"]))
        assert len(po["lines"]) == len(record["items"])

    vendor = mapped["vendors"][0]
    assert vendor["email"] and vendor["contacts"][0]["name"] and vendor["address"]
    for r, user in zip(raw["users"], mapped["users"], strict=True):
        record = source["users"][str(r["personuid"])]
        assert user["display_name"] == f"{user['first_name']} {user['last_name']}"
        assert user["is_active"] is record["isActive"] and user["job_title"]


def test_status_synonyms_and_priorities_map_by_internal_value() -> None:
    no_client: Any = None
    conn = MaximoConnector({"base_url": "https://m.example.com", "api_key": "k"}, no_client)
    base = {"siteid": "BEDFORD", "wonum": "1001", "changedate": "2025-01-02T03:04:05-05:00"}
    cases = [
        ({"status": "WAITPARTS", "status_maxvalue": "WMATL", "wopriority": 1},
         ("ON_HOLD", "WAITPARTS", "CRITICAL")),
        ({"status": "CLOSE", "wopriority": 5}, ("COMPLETED", "CLOSE", "LOW")),
        ({"status": "ODD"}, ("UNKNOWN", "ODD", "NONE")),
    ]  # fmt: skip
    for extra, (status, remote_status, priority) in cases:
        record = conn.map_record("work_orders", {**base, **extra})
        assert (record["status"], record["remote_status"], record["priority"]) == (
            status, remote_status, priority,
        )  # fmt: skip
        assert record["remote_id"] == "BEDFORD:1001"
        assert record["updated_at"] == datetime(2025, 1, 2, 8, 4, 5, tzinfo=UTC)
    po = {"siteid": "BEDFORD", "ponum": "7", "status": "APPR", "receipts": "PARTIAL"}
    assert conn.map_record("purchase_orders", po)["status"] == "PARTIALLY_RECEIVED"
    with pytest.raises(ValueError, match="key"):
        conn.map_record("assets", {"assetnum": "11430"})  # no siteid


# -- writes --------------------------------------------------------------------------------


async def test_work_order_writes(sim: Sim) -> None:
    conn = sim.connector()
    asset = conn.map_record("assets", (await collect(conn, "assets"))[0])
    users = sorted(r["remote_id"] for r in map(
        lambda raw: conn.map_record("users", raw), await collect(conn, "users")))  # fmt: skip
    due = datetime(2031, 5, 6, 7, 8, tzinfo=UTC)
    raw = await conn.create(
        "work_orders",
        {
            "title": "Check guard",
            "description": "Guard on the infeed side",
            "status": "IN_PROGRESS",
            "priority": "CRITICAL",
            "type": "INSPECTION",
            "asset_ids": [asset["remote_id"]],
            "assignee_user_ids": users[:2],
            "due_at": due,
            "notes": "Bring the torque wrench",
        },
    )
    created = conn.map_record("work_orders", raw)
    assert created["title"] == "Check guard" and created["status"] == "IN_PROGRESS"
    assert created["priority"] == "CRITICAL" and created["type"] == "INSPECTION"
    assert created["remote_status"] == "INPRG" and created["started_at"]
    assert created["due_at"] == due and created["asset_ids"] == [asset["remote_id"]]
    assert created["location_id"] == asset["location_id"]  # copied from the asset
    assert created["assignee_user_ids"] == users[:2]
    post = next(r for r in sim.requests if r.method == "POST")
    assert post.url.params["lean"] == "1" and "wonum" in post.headers["properties"]
    record = sim.state.data.records["work_orders"][str(raw["workorderid"])]
    assert record["notes"] == "Bring the torque wrench"  # as a work log entry

    raw = await conn.update(
        "work_orders",
        created["remote_id"],
        {"status": "COMPLETED", "due_at": None, "assignee_user_ids": users[2:3]},
    )
    updated = conn.map_record("work_orders", raw)
    assert updated["status"] == "COMPLETED" and updated["remote_status"] == "COMP"
    assert updated["completed_at"] is not None and updated["due_at"] is None
    assert updated["assignee_user_ids"] == users[2:3] and updated["priority"] == "CRITICAL"
    patch = [r for r in sim.requests if r.headers.get("x-method-override") == "PATCH"]
    assert len(patch) == 1 and patch[0].method == "POST" and patch[0].headers["properties"]

    listed = await collect(conn, "work_orders", modified_since=updated["updated_at"])
    assert created["remote_id"] in ids(conn, "work_orders", listed)

    # A new work order without status waits for approval; without asset it goes to the
    # API user's default site.
    raw = await conn.create("work_orders", {"title": "Sweep", "status": "OPEN"})
    plain = conn.map_record("work_orders", raw)
    assert plain["remote_status"] == "WAPPR" and plain["remote_id"].startswith("MONTERRE:")

    with pytest.raises(ValueError, match="colour"):
        await conn.create("work_orders", {"title": "x", "colour": "red"})
    with pytest.raises(ValueError, match="siteid:number"):
        await conn.create("work_orders", {"title": "x", "location_id": "BR300"})
    with pytest.raises(ValueError, match="one asset"):
        await conn.create("work_orders", {"title": "x", "asset_ids": ["S:1", "S:2"]})
    with pytest.raises(ValueError, match="at most 2"):
        await conn.create("work_orders", {"title": "x", "assignee_user_ids": users[:3]})
    with pytest.raises(ValueError, match="100 characters"):
        await conn.create("work_orders", {"title": "x" * 101})
    with pytest.raises(ValueError, match="status"):
        await conn.update("work_orders", created["remote_id"], {"status": "SOMEWHERE"})
    with pytest.raises(ValueError, match="asset_ids"):
        await conn.update("work_orders", created["remote_id"], {"asset_ids": ["S:1"]})
    with pytest.raises(ValueError):
        await conn.create("assets", {"name": "x"})
    with pytest.raises(ValueError):
        await conn.update("purchase_orders", "MONTERRE:1001", {"status": "APPROVED"})

    error = await expect(
        FailureKind.PROVIDER_ERROR,
        conn.create("work_orders", {"title": "x", "asset_ids": ["MONTERRE:NOPE"]}),
    )
    assert error.status_code == 400 and "ASSETNUM NOPE" in error.message
    error = await expect(
        FailureKind.PROVIDER_ERROR, conn.update("work_orders", "MONTERRE:99999", {"title": "x"})
    )
    assert error.status_code == 404
    # A completed-and-closed work order is history in Maximo.
    await conn.update("work_orders", plain["remote_id"], {"status": "CANCELLED"})
    error = await expect(
        FailureKind.PROVIDER_ERROR, conn.update("work_orders", plain["remote_id"], {"title": "y"})
    )
    assert error.status_code == 400 and "CAN" in error.message


async def test_purchase_order_create(sim: Sim) -> None:
    conn = sim.connector()
    vendor = conn.map_record("vendors", (await collect(conn, "vendors"))[0])["remote_id"]
    part = conn.map_record("parts", (await collect(conn, "parts"))[0])["remote_id"]
    due = datetime(2031, 1, 2, tzinfo=UTC)
    raw = await conn.create(
        "purchase_orders",
        {
            "vendor_id": vendor,
            "due_at": due,
            "lines": [
                {"description": "Gloves", "qty_ordered": Decimal(4), "unit_price": Decimal("2.5")},
                {"part_id": part, "qty_ordered": 2, "unit_price": Decimal("10.125")},
            ],
        },
    )
    po = conn.map_record("purchase_orders", raw)
    assert po["status"] == "PENDING_APPROVAL" and po["remote_status"] == "WAPPR"
    assert po["vendor_id"] == vendor and po["due_at"] == due and po["currency"] == "USD"
    assert po["total_amount"] == Decimal("30.25")
    assert po["lines"][1]["part_id"] == part and po["lines"][0]["description"] == "Gloves"
    assert po["lines"][0]["part_id"] is None

    approved = await conn.create(
        "purchase_orders",
        {"vendor_id": vendor, "status": "APPROVED", "lines": [{"part_id": part, "qty_ordered": 1}]},
    )
    assert conn.map_record("purchase_orders", approved)["status"] == "APPROVED"
    with pytest.raises(ValueError, match="status"):
        await conn.create(
            "purchase_orders",
            {"vendor_id": vendor, "status": "REJECTED", "lines": [{"description": "x",
                                                                   "qty_ordered": 1}]},
        )  # fmt: skip
    with pytest.raises(ValueError, match="lines"):
        await conn.create("purchase_orders", {"vendor_id": vendor, "lines": []})
    error = await expect(
        FailureKind.PROVIDER_ERROR,
        conn.create(
            "purchase_orders",
            {"vendor_id": "SANDBOX:NOPE", "lines": [{"description": "x", "qty_ordered": 1}]},
        ),
    )
    assert error.status_code == 400 and "COMPANY NOPE" in error.message


# -- deployment shapes -----------------------------------------------------------------------


async def test_mounted_under_a_path(sim: Sim) -> None:
    """Mounted at `/maximo` (as the sandbox server does), that URL is the instance URL."""
    state = SandboxState(seed=3, size=10, default_api_keys=[KEY])
    host = Starlette(routes=[Mount("/maximo", app=create_maximo_app(state))])
    async with serve_app(host) as url:
        created = await sim.client.post(f"{url}/maximo/_sandbox/credentials")
        assert created.status_code == 201
        conn = sim.connector(created.json()["api_key"], base_url=f"{url}/maximo")
        assert (await conn.validate()).extra["default_site"] == "OSAKA"
        listed = await collect(conn, "work_orders")
        assert len(listed) == 10 and listed[0]["href"].startswith(f"{url}/maximo/api/os/")
        revoked = await sim.client.post(f"{url}/maximo/_sandbox/credentials/nope/revoke")
        assert revoked.status_code == 404 and revoked.json()["error"]["code"] == "not_found"


async def test_oslc_route_and_namespaced_json(sim: Sim) -> None:
    conn = sim.connector(base_url=f"{sim.url}/maximo/oslc")
    assert len(await collect(conn, "vendors")) == len(sim.live("vendors"))
    assert all(r.url.path.startswith("/maximo/oslc/") for r in sim.requests)
    # Without lean=1 the /oslc route answers namespaced JSON, which the connector never asks.
    response = await sim.client.get(
        f"{sim.url}/maximo/oslc/os/mxapivendor",
        params={"oslc.select": "company"},
        headers={"apikey": KEY},
    )
    assert "rdfs:member" in response.json()


async def test_composite_keys_across_sites(sim: Sim) -> None:
    now = datetime.now(UTC)
    site = sim.state.factory.location(now, now, kind="SITE")
    site["name"] = "Bedford Plant"
    sim.state.data.add("locations", site)
    moved = next(iter(sim.live("assets").values()))
    moved["locationId"], moved["parentId"] = site["id"], None
    moved["updatedAt"] = format_ts(now)
    conn = sim.connector()
    assets = {conn.map_record("assets", r)["remote_id"] for r in await collect(conn, "assets")}
    other = f"BEDFORD:{moved['name'].split()[-1]}"
    assert other in assets and any(a.startswith("MONTERRE:") for a in assets)
    created = conn.map_record(
        "work_orders", await conn.create("work_orders", {"title": "x", "asset_ids": [other]})
    )
    assert created["remote_id"].startswith("BEDFORD:")
    assert created["location_id"] == f"BEDFORD:{site['code']}"
    raw = await conn.update("work_orders", created["remote_id"], {"priority": "LOW"})
    assert conn.map_record("work_orders", raw)["priority"] == "LOW"
    error = await expect(
        FailureKind.PROVIDER_ERROR,
        conn.update("work_orders", created["remote_id"].replace("BEDFORD", "MONTERRE"), {}),
    )
    assert error.status_code == 404


async def test_writes_when_the_server_sends_no_record_back(sim: Sim) -> None:
    """Without `properties` Maximo answers 201 + Location, or 204: the record is read back."""

    async def drop_properties(request: httpx.Request) -> None:
        request.headers.pop("properties", None)

    async with httpx.AsyncClient(event_hooks={"request": [drop_properties]}) as client:
        conn = MaximoConnector({"base_url": sim.url, "api_key": KEY}, client)
        created = conn.map_record("work_orders", await conn.create("work_orders", {"title": "A"}))
        assert created["title"] == "A" and created["remote_status"] == "WAPPR"
        raw = await conn.update("work_orders", created["remote_id"], {"priority": "HIGH"})
        assert conn.map_record("work_orders", raw)["priority"] == "HIGH"
