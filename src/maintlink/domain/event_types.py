"""Every webhook event type and the shape of its `data`, for validation and docs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

ConnectionStatusName = Literal["active", "offline", "reauth_required", "disconnected"]


class ReconnectInfo(BaseModel):
    reason: str | None = None
    instructions: str
    reauthorize_url: str
    link_token_url: str


class ConnectionCreated(BaseModel):
    """A customer connected a system; the connection is `active`."""

    integration: str
    status: ConnectionStatusName
    remote_account: dict[str, Any] | None = None


class ConnectionStatusChanged(BaseModel):
    """The connection went offline (the system stopped answering) or came back online."""

    previous_status: ConnectionStatusName | None
    status: ConnectionStatusName
    online: bool
    reason: str | None = None
    error_code: str | None = None


class ConnectionReauthorizationRequired(BaseModel):
    """The system rejected the credentials; syncing stops until the customer reconnects."""

    previous_status: ConnectionStatusName | None
    status: Literal["reauth_required"] = "reauth_required"
    reason: str | None = None
    error_code: str | None = None
    reconnect: ReconnectInfo


class ConnectionReauthorized(BaseModel):
    """New credentials were accepted; same connection id, data kept, new token issued."""

    previous_status: ConnectionStatusName | None
    status: Literal["active"] = "active"
    reason: str | None = None


class ConnectionDisconnected(BaseModel):
    """The connection was disconnected: token void, syncs stopped, data kept."""

    previous_status: ConnectionStatusName | None
    status: Literal["disconnected"] = "disconnected"
    reason: str | None = None


class EntityCounts(BaseModel):
    created: int = 0
    updated: int = 0
    deleted: int = 0


class SyncCompleted(BaseModel):
    """A sync finished; per-entity counts of records created, updated and deleted."""

    sync_id: str
    kind: Literal["initial", "incremental", "full"]
    started_at: datetime
    finished_at: datetime
    entities: dict[str, EntityCounts]


class SyncFailed(BaseModel):
    """A sync failed; `will_retry` says whether maintlink tries again by itself."""

    sync_id: str
    kind: Literal["initial", "incremental", "full"]
    started_at: datetime
    finished_at: datetime
    error_code: str
    error_message: str
    will_retry: bool
    next_attempt_at: datetime | None = None


class ConnectionError_(BaseModel):
    """An error that needs the developer's attention (raised once, not every run)."""

    error_code: str
    message: str
    entity: str | None = Field(default=None, description="The affected entity, if any")


class WebhookTest(BaseModel):
    """Sent by `POST /api/v1/webhook-endpoints/{id}/test`."""

    endpoint_id: str
    message: str


class WebhookEndpointDisabled(BaseModel):
    """An endpoint was disabled (continuous failure or 410 Gone); sent to the others."""

    endpoint_id: str
    url: str
    reason: str
    failing_since: datetime | None = None


EVENT_TYPES: dict[str, type[BaseModel]] = {
    "connection.created": ConnectionCreated,
    "connection.status_changed": ConnectionStatusChanged,
    "connection.reauthorization_required": ConnectionReauthorizationRequired,
    "connection.reauthorized": ConnectionReauthorized,
    "connection.disconnected": ConnectionDisconnected,
    "sync.completed": SyncCompleted,
    "sync.failed": SyncFailed,
    "connection.error": ConnectionError_,
    "webhook.test": WebhookTest,
    "webhook_endpoint.disabled": WebhookEndpointDisabled,
}


_RECONNECT = {
    "reason": "API key revoked",
    "instructions": "The maintenance system no longer accepts this connection's credentials...",
    "reauthorize_url": "/api/v1/connections/conn_01JD7Q3X9T2M4V8K6B5N1R0ZYW/reauthorize",
    "link_token_url": "/api/v1/link-tokens",
}

# One realistic `data` per type, for the docs (and checked against the models by tests).
EXAMPLES: dict[str, dict[str, Any]] = {
    "connection.created": {"integration": "sandbox", "status": "active",
                           "remote_account": {"id": "org_1", "name": "Acme Plant 3"}},
    "connection.status_changed": {"previous_status": "active", "status": "offline",
                                  "online": False, "reason": "3 failed health checks in a row",
                                  "error_code": "PROVIDER_UNAVAILABLE"},
    "connection.reauthorization_required": {
        "previous_status": "active", "status": "reauth_required", "reason": "API key revoked",
        "error_code": "INVALID_CREDENTIALS", "reconnect": _RECONNECT},
    "connection.reauthorized": {"previous_status": "reauth_required", "status": "active",
                                "reason": "new credentials accepted"},
    "connection.disconnected": {"previous_status": "active", "status": "disconnected",
                                "reason": "disconnected"},
    "sync.completed": {"sync_id": "sync_01JD7Q4A2B3C4D5E6F7G8H9J0K", "kind": "incremental",
                       "started_at": "2026-11-26T10:00:00Z",
                       "finished_at": "2026-11-26T10:00:04Z",
                       "entities": {"work_orders": {"created": 3, "updated": 12, "deleted": 1},
                                    "assets": {"created": 0, "updated": 2, "deleted": 0}}},
    "sync.failed": {"sync_id": "sync_01JD7Q4A2B3C4D5E6F7G8H9J0K", "kind": "incremental",
                    "started_at": "2026-11-26T10:00:00Z", "finished_at": "2026-11-26T10:00:31Z",
                    "error_code": "PROVIDER_UNAVAILABLE",
                    "error_message": "The system answered 503 three times", "will_retry": True,
                    "next_attempt_at": "2026-11-26T10:05:00Z"},
    "connection.error": {"error_code": "PROVIDER_PERMISSION_DENIED",
                         "message": "The API key may not read purchase orders",
                         "entity": "purchase_orders"},
    "webhook.test": {"endpoint_id": "ep_01JD7Q5B6C7D8E9F0G1H2J3K4L",
                     "message": "This is a test event sent from maintlink."},
    "webhook_endpoint.disabled": {"endpoint_id": "ep_01JD7Q5B6C7D8E9F0G1H2J3K4L",
                                  "url": "https://hooks.example.com/maintlink",
                                  "reason": "failing continuously since 2026-11-21T09:12:00Z",
                                  "failing_since": "2026-11-21T09:12:00Z"},
}
