"""The sandbox's in-memory state: data, credentials, fault switches and rate-limit windows.

All methods are synchronous and short, so on one event loop every call is atomic; a lock makes
calls from another thread (tests, the CLI) safe as well. Only credentials are persisted (to an
optional JSON file); data is regenerated from the seed at every start.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import json
import math
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from maintlink.sandbox.data import (
    ENTITIES,
    PRIORITIES,
    Dataset,
    Record,
    RecordFactory,
    format_ts,
    generate,
    parse_ts,
    total_cost,
)

DEMO_API_KEY = "sbx_demo_key"
# URL path segment -> entity name.
ENTITY_PATHS: dict[str, str] = {entity.replace("_", "-"): entity for entity in ENTITIES}
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
STATE_FILE_VERSION = 1


class SandboxError(Exception):
    """A refusal with an HTTP status and a stable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class SandboxConfigError(ValueError):
    """The sandbox cannot start as configured (e.g. an unreadable state file)."""


@dataclass
class Faults:
    """Fault switches; the global set and each credential's set have these fields."""

    offline: bool = False
    offline_mode: str = "503"  # "503": answer 503; "refuse": drop the connection unanswered
    latency_ms: int = 0
    rate_limit_per_minute: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GlobalFaults(Faults):
    change_rate_per_minute: float = 0.0


@dataclass
class Credential:
    api_key: str
    id: str
    name: str
    created_at: str
    revoked: bool = False
    read_only: bool = False
    entities: list[str] | None = None  # None: every entity; else only these are readable
    faults: Faults = field(default_factory=Faults)
    window_start: float = 0.0
    window_count: int = 0

    def public(self) -> dict[str, Any]:
        return {
            "api_key": self.api_key,
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "revoked": self.revoked,
            "read_only": self.read_only,
            "entities": self.entities,
        }


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int | None = None
    remaining: int = 0
    reset_seconds: int = 0

    def headers(self) -> dict[str, str]:
        if self.limit is None:
            return {}
        return {
            "X-Rate-Limit-Limit": str(self.limit),
            "X-Rate-Limit-Remaining": str(self.remaining),
            "X-Rate-Limit-Reset": str(self.reset_seconds),
        }


def encode_cursor(entity: str, updated_at: str, record_id: str, include_deleted: bool) -> str:
    raw = json.dumps({"e": entity, "u": updated_at, "i": record_id, "d": include_deleted})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(entity: str, cursor: str) -> tuple[str, str, bool]:
    """(updatedAt, id, include_deleted) of the last record a page held; 400 when not ours."""
    invalid = SandboxError(400, "invalid_cursor", "The cursor is malformed or expired")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise invalid from exc
    if not isinstance(body, dict) or body.get("e") != entity:
        raise invalid
    updated_at, record_id, deleted = body.get("u"), body.get("i"), body.get("d")
    if not (
        isinstance(updated_at, str) and isinstance(record_id, str) and isinstance(deleted, bool)
    ):
        raise invalid
    return updated_at, record_id, deleted


def parse_since(value: str) -> str:
    """A client's `updated_since` as our canonical timestamp string (sorts like the data)."""
    try:
        # A `+` in an unencoded query string arrives as a space.
        return format_ts(parse_ts(value.replace(" ", "+")))
    except ValueError as exc:
        raise SandboxError(
            400, "invalid_parameter", "updated_since must be an ISO 8601 timestamp"
        ) from exc


class SandboxState:
    """Everything one sandbox server knows; see the module docstring."""

    def __init__(
        self,
        *,
        seed: int = 42,
        size: int = 200,
        default_api_keys: Iterable[str] = (),
        state_file: Path | str | None = None,
        now: datetime | None = None,
        organization_name: str = "Sandbox Manufacturing Co.",
        clock: Callable[[], float] = time.monotonic,
        window_seconds: float = 60.0,
    ) -> None:
        self.seed = seed
        self.size = size
        self.organization = {"id": f"org_{seed}", "name": organization_name}
        self.started_at = (now or datetime.now(UTC)).astimezone(UTC)
        self.state_file = Path(state_file) if state_file is not None else None
        self.clock = clock
        self.window_seconds = window_seconds
        self.faults = GlobalFaults()
        self.credentials: dict[str, Credential] = {}
        self._lock = threading.RLock()
        self._last_ms = 0
        self._index: dict[str, list[tuple[str, str]] | None] = {}
        self._load_credentials()
        for key in default_api_keys:
            if key not in self.credentials:
                self._add_credential(key, name="default")
        self._save_credentials()
        self._regenerate()

    # -- data ------------------------------------------------------------------------------

    def _regenerate(self) -> None:
        self.data: Dataset = generate(self.seed, self.size, self.started_at)
        # Simulated changes draw from their own stream, so they never shift the base data.
        self.factory = RecordFactory(random.Random(f"{self.seed}:changes"), self.data)
        self._index = dict.fromkeys(ENTITIES)

    def reset(self, *, seed: int | None = None, size: int | None = None) -> None:
        """Regenerate the data (optionally from a new seed/size) and clear every fault."""
        with self._lock:
            if seed is not None:
                self.seed = seed
                self.organization["id"] = f"org_{seed}"
            if size is not None:
                self.size = size
            self.faults = GlobalFaults()
            for credential in self.credentials.values():
                credential.faults = Faults()
                credential.window_start, credential.window_count = 0.0, 0
            self._regenerate()

    def stamp(self) -> str:
        """Now, never earlier than a stamp already handed out (clocks can step back)."""
        with self._lock:
            now_ms = max(int(time.time() * 1000), self._last_ms)
            self._last_ms = now_ms
            return format_ts(datetime.fromtimestamp(now_ms / 1000, UTC))

    def _touch(self, entity: str, record: Record) -> None:
        record["updatedAt"] = self.stamp()
        self._index[entity] = None

    def _sorted_keys(self, entity: str) -> list[tuple[str, str]]:
        keys = self._index.get(entity)
        if keys is None:
            keys = sorted((r["updatedAt"], r["id"]) for r in self.data.records[entity].values())
            self._index[entity] = keys
        return keys

    def list_page(
        self,
        entity: str,
        *,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        updated_since: str | None = None,
    ) -> tuple[list[Record], str | None]:
        """One page ordered by (updatedAt, id); deleted records only with `updated_since`."""
        with self._lock:
            keys = self._sorted_keys(entity)
            if cursor:
                after_ts, after_id, include_deleted = decode_cursor(entity, cursor)
                start = bisect.bisect_right(keys, (after_ts, after_id))
            elif updated_since is not None:
                include_deleted = True
                start = bisect.bisect_left(keys, (parse_since(updated_since), ""))
            else:
                include_deleted, start = False, 0
            records = self.data.records[entity]
            page: list[Record] = []
            more = False
            for _, record_id in keys[start:]:
                record = records[record_id]
                if record.get("deleted") and not include_deleted:
                    continue
                if len(page) == limit:
                    more = True
                    break
                page.append(copy.deepcopy(record))
            next_cursor = None
            if more:
                last = page[-1]
                next_cursor = encode_cursor(entity, last["updatedAt"], last["id"], include_deleted)
            return page, next_cursor

    def get_record(self, entity: str, record_id: str) -> Record:
        with self._lock:
            record = self.data.records[entity].get(record_id)
            if record is None or record.get("deleted"):
                raise SandboxError(404, "not_found", f"No {entity} record with id {record_id}")
            return copy.deepcopy(record)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            live: dict[str, Any] = {}
            deleted: dict[str, int] = {}
            for entity in ENTITIES:
                values = self.data.records[entity].values()
                gone = sum(1 for r in values if r.get("deleted"))
                live[entity] = len(values) - gone
                deleted[entity] = gone
            live["deleted"] = deleted
            return live

    # -- writes through the API ------------------------------------------------------------

    def _require(self, entity: str, record_id: str | None, field_name: str) -> None:
        if record_id is None:
            return
        record = self.data.records[entity].get(record_id)
        if record is None or record.get("deleted"):
            raise SandboxError(
                400, "invalid_request", f"{field_name}: no {entity} record with id {record_id}"
            )

    def create_work_order(self, fields: dict[str, Any]) -> Record:
        with self._lock:
            self._require("assets", fields.get("assetId"), "assetId")
            self._require("locations", fields.get("locationId"), "locationId")
            for user_id in fields.get("assigneeIds") or []:
                self._require("users", user_id, "assigneeIds")
            now = self.stamp()
            record_id, seq = self.data.new_id("work_orders")
            status = fields.get("status", "OPEN")
            record: Record = {
                "id": record_id,
                "sequentialId": seq,
                "title": fields["title"],
                "description": fields.get("description"),
                "status": status,
                "priority": fields.get("priority", "NONE"),
                "categories": fields.get("categories") or [],
                "assetId": fields.get("assetId"),
                "locationId": fields.get("locationId"),
                "assigneeIds": fields.get("assigneeIds") or [],
                "dueDate": fields.get("dueDate"),
                "startedAt": now if status in ("IN_PROGRESS", "ON_HOLD", "DONE") else None,
                "completedAt": now if status == "DONE" else None,
                "notes": fields.get("notes"),
                "customFields": {},
                "createdAt": now,
                "updatedAt": now,
            }
            self.data.add("work_orders", record)
            self._index["work_orders"] = None
            return copy.deepcopy(record)

    def update_work_order(self, record_id: str, fields: dict[str, Any]) -> Record:
        with self._lock:
            record = self.data.records["work_orders"].get(record_id)
            if record is None or record.get("deleted"):
                raise SandboxError(404, "not_found", f"No work_orders record with id {record_id}")
            for user_id in fields.get("assigneeIds") or []:
                self._require("users", user_id, "assigneeIds")
            record.update(fields)
            self._touch("work_orders", record)
            status = record["status"]
            if status in ("IN_PROGRESS", "ON_HOLD", "DONE") and not record.get("startedAt"):
                record["startedAt"] = record["updatedAt"]
            if status == "DONE" and not record.get("completedAt"):
                record["completedAt"] = record["updatedAt"]
            if status != "DONE":
                record["completedAt"] = None
            return copy.deepcopy(record)

    def create_purchase_order(self, fields: dict[str, Any]) -> Record:
        with self._lock:
            self._require("vendors", fields["vendorId"], "vendorId")
            record_id, seq = self.data.new_id("purchase_orders")
            items = []
            for line, item in enumerate(fields["items"], start=1):
                self._require("parts", item.get("partId"), f"items.{line - 1}.partId")
                part = self.data.records["parts"].get(item.get("partId") or "")
                items.append(
                    {
                        "id": f"{record_id}-{line}",
                        "partId": item.get("partId"),
                        "description": item.get("description") or (part or {}).get("name"),
                        "quantity": item["quantity"],
                        "quantityReceived": 0,
                        "unitCost": item["unitCost"],
                    }
                )
            now = self.stamp()
            status = fields.get("status", "REQUESTED")
            record: Record = {
                "id": record_id,
                "number": f"PO-{seq:05d}",
                "status": status,
                "vendorId": fields["vendorId"],
                "currency": fields.get("currency", "USD"),
                "items": items,
                "totalCost": total_cost(items),
                "orderedAt": now if status in ("APPROVED", "PARTIALLY_FULFILLED") else None,
                "dueDate": fields.get("dueDate"),
                "shippingAddress": fields.get("shippingAddress"),
                "createdAt": now,
                "updatedAt": now,
            }
            self.data.add("purchase_orders", record)
            self._index["purchase_orders"] = None
            return copy.deepcopy(record)

    # -- simulated changes -----------------------------------------------------------------

    def apply_changes(
        self, *, entity: str | None = None, create: int = 0, update: int = 0, delete: int = 0
    ) -> dict[str, dict[str, list[str]]]:
        """Create, update and delete records (of `entity`, or random ones); returns the ids."""
        summary: dict[str, dict[str, list[str]]] = {"created": {}, "updated": {}, "deleted": {}}
        rng = self.factory.rng
        touched: set[str] = set()  # each record changes at most once per call
        with self._lock:
            for kind, count in (("created", create), ("updated", update), ("deleted", delete)):
                for _ in range(count):
                    target = entity or rng.choice(ENTITIES)
                    record_id = self._change_one(kind, target, exclude=touched)
                    if record_id is not None:
                        touched.add(record_id)
                        summary[kind].setdefault(target, []).append(record_id)
        return summary

    def apply_random_changes(self, count: int) -> None:
        """What the background simulator does each tick: mostly updates, some creates/deletes."""
        rng = self.factory.rng
        with self._lock:
            for _ in range(count):
                kind = rng.choices(("created", "updated", "deleted"), weights=(3, 6, 1))[0]
                self._change_one(kind, rng.choice(ENTITIES))

    def _change_one(self, kind: str, entity: str, exclude: set[str] | None = None) -> str | None:
        if kind == "created":
            now = parse_ts(self.stamp())
            record = self.factory.build(entity, now, now)
            if entity == "work_orders":
                record["status"], record["startedAt"], record["completedAt"] = "OPEN", None, None
                record["priority"] = self.factory.rng.choice(PRIORITIES)
            self.data.add(entity, record)
            self._index[entity] = None
            return record["id"]
        live = [rid for rid in self.data.live_ids(entity) if not exclude or rid not in exclude]
        if not live:
            return None
        record = self.data.records[entity][self.factory.rng.choice(live)]
        if kind == "updated":
            self.factory.mutate(entity, record)
            self._touch(entity, record)
        else:
            self._touch(entity, record)
            record["deleted"] = True
            record["deletedAt"] = record["updatedAt"]
        return record["id"]

    # -- credentials -----------------------------------------------------------------------

    def _add_credential(
        self,
        api_key: str,
        *,
        name: str,
        read_only: bool = False,
        entities: list[str] | None = None,
    ) -> Credential:
        credential = Credential(
            api_key=api_key,
            id=f"key_{secrets.token_hex(6)}",
            name=name,
            created_at=self.stamp(),
            read_only=read_only,
            entities=entities,
        )
        self.credentials[api_key] = credential
        return credential

    def create_credential(
        self,
        api_key: str | None = None,
        *,
        name: str | None = None,
        read_only: bool = False,
        entities: list[str] | None = None,
    ) -> Credential:
        with self._lock:
            if api_key is not None and api_key in self.credentials:
                raise SandboxError(409, "already_exists", "This API key already exists")
            key = api_key or f"sbx_{secrets.token_urlsafe(24)}"
            credential = self._add_credential(
                key, name=name or "api key", read_only=read_only, entities=entities
            )
            self._save_credentials()
            return credential

    def credential(self, api_key: str) -> Credential:
        credential = self.credentials.get(api_key)
        if credential is None:
            raise SandboxError(404, "not_found", "Unknown API key")
        return credential

    def set_revoked(self, api_key: str, revoked: bool) -> Credential:
        with self._lock:
            credential = self.credential(api_key)
            credential.revoked = revoked
            self._save_credentials()
            return credential

    def check_rate_limit(self, credential: Credential) -> RateDecision:
        """Fixed window per credential; the credential's own limit wins over the global one."""
        limit = credential.faults.rate_limit_per_minute or self.faults.rate_limit_per_minute
        if limit is None:
            return RateDecision(allowed=True)
        with self._lock:
            now = self.clock()
            if now - credential.window_start >= self.window_seconds:
                credential.window_start, credential.window_count = now, 0
            reset = max(1, math.ceil(credential.window_start + self.window_seconds - now))
            if credential.window_count >= limit:
                return RateDecision(False, limit, 0, reset)
            credential.window_count += 1
            return RateDecision(True, limit, limit - credential.window_count, reset)

    # -- persistence -----------------------------------------------------------------------

    def _load_credentials(self) -> None:
        path = self.state_file
        if path is None or not path.exists():
            return
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            for item in body["credentials"]:
                credential = Credential(
                    api_key=str(item["api_key"]),
                    id=str(item["id"]),
                    name=str(item.get("name") or "api key"),
                    created_at=str(item["created_at"]),
                    revoked=bool(item.get("revoked", False)),
                    read_only=bool(item.get("read_only", False)),
                    entities=item.get("entities"),
                )
                self.credentials[credential.api_key] = credential
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SandboxConfigError(f"Cannot read sandbox state file {path}: {exc}") from exc

    def _save_credentials(self) -> None:
        path = self.state_file
        if path is None:
            return
        body = {
            "version": STATE_FILE_VERSION,
            "credentials": [c.public() for c in self.credentials.values()],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a crash never leaves half a file behind.
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(body, indent=2), encoding="utf-8")
        os.replace(tmp, path)
