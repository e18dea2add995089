"""The sandbox's HTTP application: a MaintainX-style API under `/api/v1` plus `/_sandbox` controls.

Requests to `/api/v1` first pass `ApiGate`, which plays the fault switches (offline, latency),
checks the API key and counts the rate limit, in that order, the way a real gateway would.
Control routes under `/_sandbox` are never subject to faults or auth: they are for test tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maintlink.sandbox.bodies import (
    ChangesBody,
    CredentialBody,
    FaultsBody,
    PurchaseOrderCreate,
    ResetBody,
    WorkOrderCreate,
    WorkOrderPatch,
    parse_body,
)
from maintlink.sandbox.state import (
    DEFAULT_LIMIT,
    ENTITY_PATHS,
    MAX_LIMIT,
    Credential,
    Faults,
    SandboxError,
    SandboxState,
)

# SandboxState is re-exported: callers build the state and the app from one import.
__all__ = ["ApiGate", "SandboxState", "create_sandbox_app", "drop_connection"]

API_PREFIX = "/api/v1"
CREDENTIAL_SCOPE_KEY = "sandbox.credential"
# Which entity accepts which write, by HTTP method.
WRITABLE: dict[str, set[str]] = {"work_orders": {"POST", "PATCH"}, "purchase_orders": {"POST"}}
CHANGE_TICK_SECONDS = 0.1


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


async def drop_connection(receive: Receive, send: Send) -> None:
    """End the request with no HTTP answer at all, like a server that refuses or crashes.

    Under uvicorn the `receive` callable belongs to the request cycle, which holds the socket's
    transport: aborting it closes the TCP connection before any byte of an answer. Marking the
    cycle disconnected keeps uvicorn from trying to send its own 500 afterwards.
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()
        cycle.disconnected = True  # type: ignore[union-attr]
        return
    # Another server: start an answer and break it off; clients see that as a protocol error.
    await send(
        {"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"64")]}
    )


class ApiGate:
    """ASGI middleware in front of `/api/v1`: faults, auth, rate limit (see module docstring)."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        state = self.state
        if await self._faults(state.faults, receive, send, scope):
            return
        credential, refusal = self._authenticate(scope)
        if refusal is not None or credential is None:
            await (refusal or error_response(401, "invalid_api_key", "Invalid API key"))(
                scope, receive, send
            )
            return
        if await self._faults(credential.faults, receive, send, scope):
            return
        decision = state.check_rate_limit(credential)
        extra_headers = decision.headers()
        if not decision.allowed:
            headers = {**extra_headers, "Retry-After": str(decision.reset_seconds)}
            response = error_response(
                429, "rate_limited", "Too many requests; retry after the window resets", headers
            )
            await response(scope, receive, send)
            return
        scope[CREDENTIAL_SCOPE_KEY] = credential

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and extra_headers:
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.lower().encode(), v.encode()) for k, v in extra_headers.items()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _faults(self, faults: Faults, receive: Receive, send: Send, scope: Scope) -> bool:
        """Play offline/latency switches; True when the request was answered (or dropped)."""
        if faults.offline:
            if faults.offline_mode == "refuse":
                await drop_connection(receive, send)
            else:
                response = error_response(
                    503, "service_unavailable", "The service is temporarily unavailable"
                )
                await response(scope, receive, send)
            return True
        if faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000)
        return False

    def _authenticate(self, scope: Scope) -> tuple[Credential | None, Response | None]:
        header = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        scheme, _, token = header.partition(" ")
        credential = self.state.credentials.get(token.strip())
        if scheme.lower() != "bearer" or credential is None:
            return None, error_response(401, "invalid_api_key", "Invalid API key")
        if credential.revoked:
            return None, error_response(401, "api_key_revoked", "API key has been revoked")
        return credential, None


# -- API routes ---------------------------------------------------------------------------------


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def _credential(request: Request) -> Credential:
    credential: Credential = request.scope[CREDENTIAL_SCOPE_KEY]
    return credential


def _entity(request: Request) -> str:
    path = request.path_params["entity"]
    entity = ENTITY_PATHS.get(path)
    if entity is None:
        raise SandboxError(404, "not_found", f"Unknown resource {path!r}")
    return entity


def _authorize(request: Request, entity: str) -> None:
    credential = _credential(request)
    if credential.entities is not None and entity not in credential.entities:
        raise SandboxError(403, "insufficient_scope", f"This API key cannot access {entity}")
    if request.method != "GET":
        if request.method not in WRITABLE.get(entity, set()):
            raise SandboxError(405, "method_not_allowed", f"{request.method} is not allowed here")
        if credential.read_only:
            raise SandboxError(403, "insufficient_scope", "This API key is read-only")


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise SandboxError(
            400, "invalid_parameter", f"limit must be an integer from 1 to {MAX_LIMIT}"
        )
    return limit


async def me(request: Request) -> Response:
    credential = _credential(request)
    key = {k: v for k, v in credential.public().items() if k != "api_key"}
    return JSONResponse({"organization": _state(request).organization, "api_key": key})


async def collection(request: Request) -> Response:
    entity = _entity(request)
    _authorize(request, entity)
    state = _state(request)
    if request.method == "POST":
        raw = await request.body()
        if entity == "work_orders":
            _, fields = parse_body(WorkOrderCreate, raw)
            return JSONResponse(state.create_work_order(fields), 201)
        _, fields = parse_body(PurchaseOrderCreate, raw)
        return JSONResponse(state.create_purchase_order(fields), 201)
    cursor = request.query_params.get("cursor")
    if cursor == "":
        cursor = None
    data, next_cursor = state.list_page(
        entity,
        limit=_limit(request),
        cursor=cursor,
        updated_since=request.query_params.get("updated_since"),
    )
    return JSONResponse({"data": data, "next_cursor": next_cursor})


async def item(request: Request) -> Response:
    entity = _entity(request)
    _authorize(request, entity)
    state = _state(request)
    record_id = request.path_params["record_id"]
    if request.method == "PATCH":
        _, fields = parse_body(WorkOrderPatch, await request.body())
        return JSONResponse(state.update_work_order(record_id, fields))
    return JSONResponse(state.get_record(entity, record_id))


# -- control routes -----------------------------------------------------------------------------


async def create_credential(request: Request) -> Response:
    body, _ = parse_body(CredentialBody, await request.body())
    credential = _state(request).create_credential(
        body.api_key, name=body.name, read_only=body.read_only, entities=body.entities
    )
    return JSONResponse(credential.public(), 201)


async def list_credentials(request: Request) -> Response:
    credentials = [c.public() for c in _state(request).credentials.values()]
    return JSONResponse({"data": credentials})


async def revoke_credential(request: Request) -> Response:
    credential = _state(request).set_revoked(request.path_params["api_key"], True)
    return JSONResponse({"api_key": credential.api_key, "revoked": True})


async def restore_credential(request: Request) -> Response:
    credential = _state(request).set_revoked(request.path_params["api_key"], False)
    return JSONResponse({"api_key": credential.api_key, "revoked": False})


async def credential_faults(request: Request) -> Response:
    credential = _state(request).credential(request.path_params["api_key"])
    if request.method == "POST":
        _, fields = parse_body(FaultsBody, await request.body())
        if "change_rate_per_minute" in fields:
            raise SandboxError(
                400, "invalid_request", "change_rate_per_minute is a global setting only"
            )
        for name, value in fields.items():
            setattr(credential.faults, name, value)
    return JSONResponse({"api_key": credential.api_key, **credential.faults.as_dict()})


async def global_faults(request: Request) -> Response:
    state = _state(request)
    if request.method == "POST":
        _, fields = parse_body(FaultsBody, await request.body())
        for name, value in fields.items():
            setattr(state.faults, name, value)
    return JSONResponse(state.faults.as_dict())


async def stats(request: Request) -> Response:
    return JSONResponse(_state(request).stats())


async def reset(request: Request) -> Response:
    body, _ = parse_body(ResetBody, await request.body())
    state = _state(request)
    state.reset(seed=body.seed, size=body.size)
    return JSONResponse({"reset": True, "seed": state.seed, "size": state.size, **state.stats()})


async def changes(request: Request) -> Response:
    body, _ = parse_body(ChangesBody, await request.body())
    summary = _state(request).apply_changes(
        entity=body.entity, create=body.create, update=body.update, delete=body.delete
    )
    return JSONResponse(summary)


async def index(request: Request) -> Response:
    state = _state(request)
    return JSONResponse(
        {
            "name": "maintlink sandbox CMMS",
            "api": API_PREFIX,
            "control": "/_sandbox",
            "seed": state.seed,
            "size": state.size,
        }
    )


# -- errors and lifespan ------------------------------------------------------------------------


async def _sandbox_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SandboxError)
    return error_response(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "Internal server error")


async def simulate_changes(state: SandboxState) -> None:
    """Apply `change_rate_per_minute` random changes, spread evenly, until cancelled."""
    budget = 0.0
    last = time.monotonic()
    while True:
        await asyncio.sleep(CHANGE_TICK_SECONDS)
        now = time.monotonic()
        rate = state.faults.change_rate_per_minute
        budget = budget + rate / 60 * (now - last) if rate > 0 else 0.0
        last = now
        count = int(budget)
        if count:
            budget -= count
            state.apply_random_changes(min(count, 1000))


def create_sandbox_app(state: SandboxState) -> Starlette:
    """The sandbox as an ASGI app; serve it with uvicorn (see `maintlink.sandbox.server`)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(simulate_changes(state))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    routes = [
        Route("/", index),
        Route(f"{API_PREFIX}/me", me),
        Route(f"{API_PREFIX}/{{entity}}", collection, methods=["GET", "POST"]),
        Route(f"{API_PREFIX}/{{entity}}/{{record_id}}", item, methods=["GET", "PATCH"]),
        Route("/_sandbox/credentials", create_credential, methods=["POST"]),
        Route("/_sandbox/credentials", list_credentials, methods=["GET"]),
        Route("/_sandbox/credentials/{api_key}/revoke", revoke_credential, methods=["POST"]),
        Route("/_sandbox/credentials/{api_key}/restore", restore_credential, methods=["POST"]),
        Route("/_sandbox/credentials/{api_key}/faults", credential_faults, methods=["GET", "POST"]),
        Route("/_sandbox/faults", global_faults, methods=["GET", "POST"]),
        Route("/_sandbox/stats", stats),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        Route("/_sandbox/changes", changes, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ApiGate, state=state)],
        exception_handlers={
            SandboxError: _sandbox_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.sandbox = state
    return app
