"""The error catalog: every code clients may branch on, with its status and type.

Domain code raises `MaintlinkError(code, message)`; the HTTP layer renders it as
`{"error": {"code", "type", "message", "request_id", "details"?}}`. `docs/errors.md`
is generated from `CATALOG` and a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    type: str
    description: str
    action: str


CATALOG: dict[str, ErrorSpec] = {
    "INVALID_JSON": ErrorSpec(
        400, "invalid_request_error", "The request body is not valid JSON.",
        "Send a JSON object with `Content-Type: application/json`.",
    ),
    "VALIDATION_ERROR": ErrorSpec(
        422, "invalid_request_error",
        "A field is missing, has the wrong type or an unknown field was sent.",
        "Read `details.errors` (location, message) and fix the request.",
    ),
    "INVALID_CURSOR": ErrorSpec(
        400, "invalid_request_error", "The `cursor` is malformed or belongs to another list.",
        "Pass back the `next_cursor` value exactly as received, or omit it.",
    ),
    "PAYLOAD_TOO_LARGE": ErrorSpec(
        413, "invalid_request_error", "The request body exceeds the configured maximum.",
        "Send a smaller body (see `MAINTLINK_MAX_REQUEST_BODY_BYTES`).",
    ),
    "UNSUPPORTED_API_VERSION": ErrorSpec(
        400, "invalid_request_error", "The requested API version does not exist.",
        "Use one of `details.supported_versions`.",
    ),
    "API_VERSION_MISMATCH": ErrorSpec(
        400, "invalid_request_error",
        "The `Maintlink-Version` header names another version than the path.",
        "Send the header that matches the path, or leave it out.",
    ),
    "NOT_FOUND": ErrorSpec(
        404, "not_found_error", "No such route, or no such object in this account.",
        "Check the path and the id; ids of other accounts are never visible.",
    ),
    "METHOD_NOT_ALLOWED": ErrorSpec(
        405, "invalid_request_error", "The route exists but not with this method.",
        "Use one of the methods in the `Allow` header.",
    ),
    "UNSUPPORTED_MEDIA_TYPE": ErrorSpec(
        415, "invalid_request_error", "The request body is not `application/json`.",
        "Send `Content-Type: application/json`.",
    ),
    "AUTHENTICATION_FAILED": ErrorSpec(
        401, "authentication_error",
        "No bearer token, or the token is unknown, revoked or rotated.",
        "Send `Authorization: Bearer <token>` with a current admin key or connection token.",
    ),
    "FORBIDDEN": ErrorSpec(
        403, "permission_error", "The token is valid but cannot do this.",
        "Admin routes need an admin key (`mlk_`); data routes need a connection token (`mlc_`).",
    ),
    "CONNECTION_REAUTH_REQUIRED": ErrorSpec(
        401, "authentication_error",
        "The connection's credentials were rejected by the maintenance system.",
        "Send the customer through the connection flow again (`details.reconnect`); "
        "the connection id and its data are kept.",
    ),
    "CONNECTION_DISCONNECTED": ErrorSpec(
        401, "authentication_error", "The connection was disconnected; its token is void.",
        "Create a new connection if the customer wants to connect again.",
    ),
    "CONNECTION_NOT_ACTIVE": ErrorSpec(
        409, "conflict_error", "The operation needs a connection that is not disconnected.",
        "Check the connection's status first.",
    ),
    "WEBHOOK_ENDPOINT_DISABLED": ErrorSpec(
        409, "conflict_error", "The webhook endpoint is disabled.",
        "Enable it with `POST /api/v1/webhook-endpoints/{id}/enable` first.",
    ),
    "INTEGRATION_NOT_FOUND": ErrorSpec(
        400, "invalid_request_error", "No integration has this slug.",
        "List integrations with `GET /api/v1/integrations`.",
    ),
    "INVALID_CREDENTIALS": ErrorSpec(
        400, "invalid_request_error",
        "The maintenance system refused the credentials, or a credential field is missing.",
        "Show `message` (the system's reason) to the customer and ask for other credentials.",
    ),
    "PROVIDER_PERMISSION_DENIED": ErrorSpec(
        400, "invalid_request_error",
        "The credentials work but lack a permission the integration needs.",
        "Ask the customer's administrator to grant the permission named in `message`.",
    ),
    "PROVIDER_REJECTED": ErrorSpec(
        422, "invalid_request_error",
        "The maintenance system refused the write (a value it does not accept).",
        "Show `message` (the system's reason) and correct the request.",
    ),
    "PROVIDER_UNAVAILABLE": ErrorSpec(
        502, "provider_error", "The maintenance system could not be reached or failed.",
        "Retry later; check the instance URL if it persists.",
    ),
    "PROVIDER_RATE_LIMITED": ErrorSpec(
        503, "provider_error", "The maintenance system is rate limiting maintlink.",
        "Retry after `Retry-After` seconds.",
    ),
    "PROVIDER_ERROR": ErrorSpec(
        502, "provider_error", "The maintenance system answered with an unexpected error.",
        "Retry later; `message` carries the system's answer.",
    ),
    "INVALID_WEBHOOK_URL": ErrorSpec(
        400, "invalid_request_error",
        "The webhook URL is not allowed: not https, credentials in it, or a private, loopback, "
        "link-local or otherwise non-public address.",
        "Use a public `https://` URL; `message` says what was wrong.",
    ),
    "RATE_LIMIT_EXCEEDED": ErrorSpec(
        429, "rate_limit_error", "Too many requests with this token in the current minute.",
        "Wait `Retry-After` seconds; `RateLimit-*` headers show the budget.",
    ),
    "OPERATION_NOT_SUPPORTED": ErrorSpec(
        501, "invalid_request_error",
        "The connection's system does not support this write through its API.",
        "Check `writable_entities` in `GET /api/v1/integrations/{slug}`.",
    ),
    "IDEMPOTENCY_KEY_REUSED": ErrorSpec(
        422, "invalid_request_error",
        "This `Idempotency-Key` was used before with a different request.",
        "Use a new key for a new request; reuse a key only to retry the same request.",
    ),
    "IDEMPOTENCY_KEY_IN_USE": ErrorSpec(
        409, "conflict_error", "A request with this `Idempotency-Key` is still in progress.",
        "Retry after it finishes; the answer will be the first request's.",
    ),
    # --- connection flow (link tokens and their exchange codes) ---------------------------
    "INVALID_REDIRECT_URI": ErrorSpec(
        400, "invalid_request_error",
        "The `redirect_uri` or `allowed_origin` is not allowed: not absolute, not https "
        "(plain http only on loopback), or carrying credentials or a fragment.",
        "Send the exact https:// URL of your callback page (and a bare origin for embedding).",
    ),
    "INTEGRATION_NOT_CONFIGURED": ErrorSpec(
        400, "invalid_request_error",
        "The integration signs in with OAuth2 and this server has no OAuth client for it.",
        "Add its client id and secret to `MAINTLINK_OAUTH_CLIENTS` (see docs/connect-flow.md).",
    ),
    "LINK_TOKEN_INVALID": ErrorSpec(
        404, "not_found_error",
        "The link token is unknown, was revoked, or belongs to another account.",
        "Create a new link token with `POST /api/v1/link-tokens`.",
    ),
    "LINK_TOKEN_EXPIRED": ErrorSpec(
        410, "invalid_request_error", "The link token is past its expiry.",
        "Create a new link token and send the customer its URL.",
    ),
    "LINK_TOKEN_USED": ErrorSpec(
        410, "invalid_request_error",
        "The link token already completed a connection; link tokens are single use.",
        "Exchange the code you received, or create a new link token.",
    ),
    "LINK_TOKEN_LOCKED": ErrorSpec(
        410, "invalid_request_error",
        "The link token was closed after too many failed credential checks.",
        "Create a new link token; check with the customer which credentials to use.",
    ),
    "LINK_CODE_INVALID": ErrorSpec(
        400, "invalid_request_error",
        "The code is unknown, was already exchanged, or belongs to another account.",
        "Exchange each code once, with the admin key of the account that created the link "
        "token.",
    ),
    "LINK_CODE_EXPIRED": ErrorSpec(
        400, "invalid_request_error",
        "The code is older than 10 minutes; codes must be exchanged at once.",
        "The connection exists: find it with `GET /api/v1/connections?customer_id=...` and "
        "issue a token with `POST /api/v1/connections/{id}/token`.",
    ),
    "SERVICE_UNAVAILABLE": ErrorSpec(
        503, "api_error", "maintlink cannot serve the request right now (store unreachable).",
        "Retry with backoff.",
    ),
    "INTERNAL_ERROR": ErrorSpec(
        500, "api_error", "An unexpected error on maintlink's side; nothing internal is shown.",
        "Retry; report the `request_id` if it persists.",
    ),
}


class MaintlinkError(Exception):
    """An error with a catalogued code; safe to show to API clients."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        spec = CATALOG[code]
        self.code = code
        self.status = spec.status
        self.type = spec.type
        self.message = message or spec.description
        self.details = details
        self.headers = headers or {}
        super().__init__(f"{code}: {self.message}")


def render_errors_markdown() -> str:
    lines = [
        "# Errors",
        "",
        "Every error answer has this body, whatever the route:",
        "",
        "```json",
        '{"error": {"code": "AUTHENTICATION_FAILED", "type": "authentication_error",',
        '           "message": "No bearer token was sent.", "request_id": "req_...",',
        '           "details": {}}}',
        "```",
        "",
        "Branch on `code`, never on `message` (messages may be reworded). `request_id` is the",
        "same as the `X-Request-Id` header; quote it when asking for support. `details` is present",
        "when there is more to say (validation errors, supported versions, reconnect steps).",
        "The list below is stable: codes are only added, never renamed, within a major version.",
        "",
        "| code | status | type | meaning | what to do |",
        "|---|---|---|---|---|",
    ]
    for code, spec in CATALOG.items():
        lines.append(
            f"| `{code}` | {spec.status} | `{spec.type}` | {spec.description} | {spec.action} |"
        )
    lines.append("")
    return "\n".join(lines)
