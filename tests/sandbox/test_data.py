"""Generated data: reproducible from the seed, sized as asked, internally consistent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from maintlink.sandbox.data import ENTITIES, entity_counts, format_ts, generate, parse_ts
from maintlink.sandbox.server import RunningSandbox
from maintlink.sandbox.state import SandboxState

from .helpers import list_all

NOW = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)


def test_same_seed_same_data() -> None:
    assert generate(42, 80, NOW).records == generate(42, 80, NOW).records
    # The same day gives the same data, whatever the hour of the start.
    later = NOW.replace(hour=23, minute=59)
    assert generate(42, 80, later).records == generate(42, 80, NOW).records


def test_other_seed_other_data() -> None:
    first = generate(1, 40, NOW).records["work_orders"]
    second = generate(2, 40, NOW).records["work_orders"]
    assert [r["title"] for r in first.values()] != [r["title"] for r in second.values()]


def test_sizes_scale() -> None:
    data = generate(3, 200, NOW)
    counts = {entity: len(data.records[entity]) for entity in ENTITIES}
    assert counts == entity_counts(200)
    assert counts == {
        "work_orders": 200,
        "assets": 100,
        "locations": 20,
        "parts": 100,
        "purchase_orders": 50,
        "vendors": 10,
        "users": 10,
    }
    small = entity_counts(5)
    assert small["locations"] == 3 and small["vendors"] == 3 and small["users"] == 3


def test_records_are_consistent() -> None:
    data = generate(5, 120, NOW).records
    end = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
    for entity in ENTITIES:
        for record_id, record in data[entity].items():
            assert record["id"] == record_id and isinstance(record_id, str)
            created, updated = parse_ts(record["createdAt"]), parse_ts(record["updatedAt"])
            assert end - timedelta(days=121) <= created <= updated <= end
            assert record["updatedAt"] == format_ts(updated)  # one fixed format, Z suffix
            assert record["updatedAt"].endswith("Z")
    for wo in data["work_orders"].values():
        assert wo["status"] in ("OPEN", "IN_PROGRESS", "ON_HOLD", "DONE", "CANCELED")
        assert wo["priority"] in ("NONE", "LOW", "MEDIUM", "HIGH")
        assert wo["assetId"] is None or wo["assetId"] in data["assets"]
        assert wo["locationId"] is None or wo["locationId"] in data["locations"]
        assert all(user in data["users"] for user in wo["assigneeIds"])
        if wo["status"] == "DONE":
            assert wo["startedAt"] <= wo["completedAt"] <= wo["updatedAt"]
    for po in data["purchase_orders"].values():
        assert po["vendorId"] in data["vendors"]
        assert po["items"] and all(item["partId"] in data["parts"] for item in po["items"])
        total = sum(i["quantity"] * i["unitCost"] for i in po["items"])
        assert abs(po["totalCost"] - total) < 0.01
    for part in data["parts"].values():
        assert data["locations"][part["locationId"]]["type"] == "STOREROOM"


def test_served_data_is_the_generated_data(
    sandbox: RunningSandbox, http: httpx.Client, auth: dict[str, str]
) -> None:
    """Over HTTP, a fresh state with the same seed serves exactly the generated records."""
    state = sandbox.state
    fresh = SandboxState(seed=state.seed, size=state.size, now=state.started_at)
    for entity in ("work_orders", "purchase_orders"):
        served = list_all(http, f"/api/v1/{entity.replace('_', '-')}", auth, limit=500)
        assert {r["id"]: r for r in served} == fresh.data.records[entity]
