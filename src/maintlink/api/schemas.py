"""Request and response bodies of the management API, as published in OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from maintlink.api.textcheck import NoNulModel


class Strict(NoNulModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable error code; see docs/errors.md")
    type: str
    message: str
    request_id: str
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


_ERRORS = {
    400: "Bad request (`INVALID_JSON`, `INVALID_CURSOR`, `UNSUPPORTED_API_VERSION`, ...)",
    401: "`AUTHENTICATION_FAILED`, `CONNECTION_REAUTH_REQUIRED`, `CONNECTION_DISCONNECTED`",
    403: "`FORBIDDEN`",
    404: "`NOT_FOUND`",
    405: "`METHOD_NOT_ALLOWED`",
    409: "Conflict",
    413: "`PAYLOAD_TOO_LARGE`",
    415: "`UNSUPPORTED_MEDIA_TYPE`",
    422: "`VALIDATION_ERROR`",
    429: "`RATE_LIMIT_EXCEEDED`",
    500: "`INTERNAL_ERROR`",
    502: "`PROVIDER_UNAVAILABLE`, `PROVIDER_ERROR`",
    503: "`SERVICE_UNAVAILABLE`, `PROVIDER_RATE_LIMITED`",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _ERRORS.items()
}


class CredentialFieldOut(BaseModel):
    name: str
    label: str
    type: Literal["string", "url", "password"]
    secret: bool
    required: bool
    help: str | None = None
    placeholder: str | None = None


class SettingFieldOut(BaseModel):
    name: str
    label: str
    type: Literal["integer", "number", "object"]
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    keys: list[str] | None = Field(default=None, description="For objects: the keys allowed")
    values: Literal["string", "strings"] | None = Field(
        default=None, description="For objects: a string, or a list of strings, per key")
    help: str | None = None


class Integration(BaseModel):
    object: Literal["integration"] = "integration"
    slug: str
    name: str
    auth_type: Literal["api_key", "oauth2", "basic"]
    credential_fields: list[CredentialFieldOut]
    entities: list[str]
    writable_entities: list[str]
    supports_writes: bool
    setting_fields: list[SettingFieldOut] = Field(
        description="Connector settings a connection may set in `settings`")
    docs_url: str | None = None


class IntegrationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Integration]
    next_cursor: str | None = None


class WebhookConfig(Strict):
    url: str = Field(max_length=2048, description="Public https:// URL")
    events: list[str] | None = Field(
        default=None, description="Event types to send; absent or null: every type")


class ConnectionSettings(NoNulModel):
    """The sync settings, plus any of the integration's connector settings
    (`setting_fields` in `GET /api/v1/integrations/{slug}`)."""

    model_config = ConfigDict(extra="allow")

    sync_interval_minutes: int = Field(
        default=15, ge=5, le=1440, description="Minutes between scheduled syncs (5 to 1440)"
    )
    history_days: int = Field(
        default=90, ge=1, le=3650, description="How far back the initial sync reaches"
    )


class ConnectionSettingsChange(NoNulModel):
    """Only what changes; a connector setting set to null goes back to its default."""

    model_config = ConfigDict(extra="allow")

    sync_interval_minutes: int | None = Field(default=None, ge=5, le=1440)
    history_days: int | None = Field(default=None, ge=1, le=3650)


class ConnectionUpdate(Strict):
    settings: ConnectionSettingsChange = Field(description="Settings to change")


class ConnectionCreate(Strict):
    customer_id: str = Field(
        min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$",
        description="Your own id for the customer; created implicitly",
    )
    integration: str = Field(min_length=1, max_length=64, description="Integration slug")
    credentials: dict[str, str] = Field(
        description="Values for the integration's credential fields"
    )
    settings: ConnectionSettings | None = None
    webhook: WebhookConfig | None = Field(
        default=None, description="This connection's own webhook endpoint")


class RemoteAccount(BaseModel):
    id: str | None = None
    name: str | None = None


class Connection(BaseModel):
    object: Literal["connection"] = "connection"
    id: str
    customer_id: str
    integration: str
    status: Literal["active", "offline", "reauth_required", "disconnected"]
    status_reason: str | None = None
    settings: dict[str, Any]
    remote_account: RemoteAccount | None = None
    token_hint: str | None = Field(default=None, description="Prefix and last 4 characters")
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime
    last_checked_at: datetime | None = None
    disconnected_at: datetime | None = None


class ConnectionWithToken(Connection):
    token: str = Field(description="Bearer token for this connection's data; shown once")


class ConnectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Connection]
    next_cursor: str | None


class TokenRotated(BaseModel):
    object: Literal["connection_token"] = "connection_token"
    connection_id: str
    token: str
    token_hint: str


class LastError(BaseModel):
    code: str
    message: str | None = None
    at: datetime | None = None


class Reconnect(BaseModel):
    reason: str | None = None
    instructions: str
    reauthorize_url: str
    link_token_url: str


class ConnectionStatus(BaseModel):
    object: Literal["connection_status"] = "connection_status"
    connection_id: str
    status: Literal["active", "offline", "reauth_required", "disconnected"]
    online: bool
    reauth_required: bool
    status_reason: str | None = None
    status_changed_at: datetime
    last_checked_at: datetime | None = None
    last_error: LastError | None = None
    reconnect: Reconnect | None = None


class DataDeleted(BaseModel):
    object: Literal["data_deletion"] = "data_deletion"
    connection_id: str
    deleted_records: int


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    store: str | None = None


# --- webhooks ----------------------------------------------------------------------------

EventType = str


class EndpointCreate(Strict):
    url: str = Field(max_length=2048, description="Public https:// URL")
    events: list[EventType] | None = Field(
        default=None, description="Event types to send; absent or null: every type")
    connection_id: str | None = Field(
        default=None, description="Only this connection's events; absent: every connection")
    description: str | None = Field(default=None, max_length=500)
    api_version: str = Field(default="v1", description="Version the bodies are rendered in")
    headers: dict[str, str] | None = Field(default=None, description="Static extra headers")
    rate_limit_per_second: int | None = Field(default=None, ge=1, le=10_000)


class EndpointUpdate(Strict):
    url: str | None = Field(default=None, max_length=2048)
    events: list[EventType] | None = None
    connection_id: str | None = None
    description: str | None = Field(default=None, max_length=500)
    api_version: str | None = None
    headers: dict[str, str] | None = None
    rate_limit_per_second: int | None = Field(default=None, ge=1, le=10_000)


class WebhookEndpoint(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    url: str
    description: str | None = None
    events: list[str] | None = None
    connection_id: str | None = None
    managed_by_connection: bool
    api_version: str
    headers: dict[str, str]
    rate_limit_per_second: int | None = None
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None = None
    disabled_at: datetime | None = None
    failing_since: datetime | None = None
    secret_rotation_ends_at: datetime | None = Field(
        default=None, description="Until then the previous secret also signs")
    created_at: datetime
    updated_at: datetime


class WebhookEndpointWithSecret(WebhookEndpoint):
    secret: str = Field(description="`whsec_...`: verify signatures with it")


class WebhookEndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookEndpoint]
    next_cursor: str | None


class EndpointSecret(BaseModel):
    object: Literal["webhook_secret"] = "webhook_secret"
    endpoint_id: str
    secret: str
    previous_secret_expires_at: datetime | None = None


class RotateSecret(Strict):
    overlap_hours: float | None = Field(
        default=None, ge=0, le=168,
        description="How long the previous secret keeps signing (default 24)")


class Recover(Strict):
    since: datetime
    until: datetime | None = None


class RecoverResult(BaseModel):
    object: Literal["recovery"] = "recovery"
    endpoint_id: str
    recovered: int


class Resend(Strict):
    endpoint_id: str | None = Field(
        default=None, description="Only to this endpoint; absent: every endpoint that got it")


class DeliverySummary(BaseModel):
    object: Literal["webhook_delivery"] = "webhook_delivery"
    id: str
    event_id: str
    endpoint_id: str
    status: Literal["pending", "delivering", "succeeded", "failed"]
    trigger: str
    attempt_count: int
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_failure_kind: str | None = None
    created_at: datetime
    succeeded_at: datetime | None = None


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeliverySummary]
    next_cursor: str | None = None


class Event(BaseModel):
    object: Literal["event"] = "event"
    id: str
    type: str
    timestamp: datetime
    connection_id: str | None = None
    customer_id: str | None = None
    sequence: int | None = None
    data: dict[str, Any]
    deliveries: list[DeliverySummary] | None = None


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Event]
    next_cursor: str | None


class Attempt(BaseModel):
    object: Literal["webhook_attempt"] = "webhook_attempt"
    id: str
    delivery_id: str
    event_id: str
    endpoint_id: str
    attempt_number: int
    trigger: str
    attempted_at: datetime
    duration_ms: int
    status_code: int | None = None
    success: bool
    failure_kind: str | None = None
    error: str | None = None
    response_body: str | None = None
    next_attempt_at: datetime | None = None


class AttemptList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Attempt]
    next_cursor: str | None


class ConnectionWebhook(BaseModel):
    object: Literal["connection_webhook"] = "connection_webhook"
    connection_id: str
    endpoint: WebhookEndpoint


class ConnectionWebhookWithSecret(ConnectionWebhook):
    secret: str | None = Field(default=None, description="Present when the endpoint was created")


# --- syncs, reauthorization, field mappings -----------------------------------------------

class Reauthorize(Strict):
    credentials: dict[str, str] = Field(description="New values for the credential fields")


class SyncRequested(BaseModel):
    object: Literal["sync_request"] = "sync_request"
    connection_id: str
    requested_at: datetime
    status_url: str


class SyncError(BaseModel):
    code: str
    message: str | None = None


class Sync(BaseModel):
    object: Literal["sync"] = "sync"
    id: str
    connection_id: str
    kind: Literal["initial", "incremental", "full"]
    status: Literal["running", "completed", "failed"]
    trigger: str
    started_at: datetime
    finished_at: datetime | None = None
    entities: dict[str, dict[str, int]]
    error: SyncError | None = None


class SyncList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Sync]
    next_cursor: str | None


class EntitySyncStatus(BaseModel):
    status: Literal["idle", "in_progress", "completed", "failed"]
    last_successful_sync_at: datetime | None = None
    records: int
    data_fresh_as_of: datetime | None = Field(
        default=None, description="Newest change at the source that the store holds")
    last_error: str | None = None


class SyncStatus(BaseModel):
    object: Literal["sync_status"] = "sync_status"
    connection_id: str
    status: Literal["idle", "in_progress", "completed", "failed"]
    last_sync_started_at: datetime | None = None
    last_successful_sync_at: datetime | None = None
    next_scheduled_sync_at: datetime | None = None
    last_error: LastError | None = None
    entities: dict[str, EntitySyncStatus]


class EntityFieldMapping(Strict):
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Unified field -> dotted path in the raw record, e.g. `meta.plantCode`")
    custom_fields: dict[str, str] = Field(
        default_factory=dict, description="Custom field name -> dotted path in the raw record")


class FieldMappings(BaseModel):
    object: Literal["field_mappings"] = "field_mappings"
    connection_id: str
    mappings: dict[str, EntityFieldMapping]


class FieldMappingsUpdate(Strict):
    mappings: dict[str, EntityFieldMapping]
