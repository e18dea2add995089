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
