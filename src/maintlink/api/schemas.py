"""Request and response bodies of the management API, as published in OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
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


class Integration(BaseModel):
    object: Literal["integration"] = "integration"
    slug: str
    name: str
    auth_type: Literal["api_key", "oauth2", "basic"]
    credential_fields: list[CredentialFieldOut]
    entities: list[str]
    writable_entities: list[str]
    supports_writes: bool
    docs_url: str | None = None


class IntegrationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Integration]
    next_cursor: str | None = None


class ConnectionSettings(Strict):
    sync_interval_minutes: int = Field(
        default=15, ge=5, le=1440, description="Minutes between scheduled syncs (5 to 1440)"
    )
    history_days: int = Field(
        default=90, ge=1, le=3650, description="How far back the initial sync reaches"
    )


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
