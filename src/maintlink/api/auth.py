"""Bearer authentication and per-token rate limits, as FastAPI dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from maintlink.api.ratelimit import RateLimiter
from maintlink.api.read_cache import ReadCache
from maintlink.domain import connections as conns
from maintlink.domain.accounts import (
    ADMIN_KEY_PREFIX,
    AdminPrincipal,
    find_admin_key,
    touch_admin_key,
)
from maintlink.errors import MaintlinkError
from maintlink.ids import hash_token
from maintlink.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="An admin key `mlk_...` or a connection "
                     "token `mlc_...`")


@dataclass(frozen=True)
class ConnectionPrincipal:
    account_id: str
    connection_id: str
    status: str


@dataclass(frozen=True)
class _TokenOwner:
    """What a connection token resolves to (cached, refusals included)."""

    account_id: str
    connection_id: str
    status: str
    status_reason: str | None


Principal = AdminPrincipal | ConnectionPrincipal


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


async def runtime_dep(request: Request) -> Runtime:
    """As a dependency: async, so FastAPI does not hop to its thread pool for it."""
    return request.app.state.runtime  # type: ignore[no-any-return]


def _limiter(request: Request) -> RateLimiter:
    return request.app.state.rate_limiter  # type: ignore[no-any-return]


def read_cache(request: Request) -> ReadCache:
    return request.app.state.read_cache  # type: ignore[no-any-return]


def _token(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None or not creds.credentials:
        raise MaintlinkError(
            "AUTHENTICATION_FAILED", "No bearer token: send `Authorization: Bearer <token>`."
        )
    return creds.credentials.strip()


async def _admin(request: Request, token: str) -> AdminPrincipal:
    cache, key = read_cache(request), hash_token(token)
    principal = cache.get("admin_key", key)
    if not isinstance(principal, AdminPrincipal):
        generation, rt = cache.generation, runtime(request)
        async with rt.reader.connect() as conn:
            found = await find_admin_key(conn, token)
        if found is None:
            raise MaintlinkError("AUTHENTICATION_FAILED", "The admin key is unknown or revoked.")
        principal, due = found
        if due:
            async with rt.engine.begin() as conn:
                await touch_admin_key(conn, principal.key_id)
        cache.put("admin_key", key, principal, generation)
    return principal


async def _connection(request: Request, token: str, *, allow_reauth: bool) -> ConnectionPrincipal:
    cache, key = read_cache(request), hash_token(token)
    owner = cache.get("token", key)
    if not isinstance(owner, _TokenOwner):
        generation = cache.generation
        async with runtime(request).reader.connect() as conn:
            row = await conns.authenticate_token(conn, token)
        if row is None:
            raise MaintlinkError(
                "AUTHENTICATION_FAILED", "The connection token is unknown or was rotated."
            )
        owner = _TokenOwner(row.account_id, row.id, row.status, row.status_reason)
        cache.put("token", key, owner, generation)
    _attribute(request, owner.account_id, owner.connection_id, None)  # refusals are logged too
    if owner.status == conns.Status.DISCONNECTED:
        raise MaintlinkError(
            "CONNECTION_DISCONNECTED", "This connection was disconnected; its token is void.",
            details={"connection_id": owner.connection_id},
        )
    if owner.status == conns.Status.REAUTH_REQUIRED and not allow_reauth:
        raise MaintlinkError(
            "CONNECTION_REAUTH_REQUIRED",
            "The maintenance system rejected this connection's credentials; "
            "the customer must reconnect.",
            details={"connection_id": owner.connection_id,
                     "reconnect": conns.reconnect_details(owner.connection_id,
                                                          owner.status_reason)},
        )
    return ConnectionPrincipal(owner.account_id, owner.connection_id, owner.status)


def _attribute(
    request: Request, account_id: str, connection_id: str | None, key_id: str | None
) -> None:
    """Who made the request, for the request log (read by the middleware afterwards)."""
    state = request.state
    state.account_id, state.connection_id, state.key_id = account_id, connection_id, key_id


async def _limit(request: Request, response: Response, principal: Principal) -> None:
    rt = runtime(request)
    if isinstance(principal, AdminPrincipal):
        about = request.path_params.get("connection_id") \
            or request.query_params.get("connection_id")
        _attribute(request, principal.account_id, about, principal.key_id)
        bucket, limit = f"k:{principal.key_id}", rt.settings.rate_limit_admin_per_minute
    else:
        bucket, limit = f"c:{principal.connection_id}", rt.settings.rate_limit_connection_per_minute
    budget = await _limiter(request).check(bucket, limit)
    response.headers.update(budget.headers())


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def require_admin(request: Request, response: Response, creds: Bearer) -> AdminPrincipal:
    token = _token(creds)
    if not token.startswith(ADMIN_KEY_PREFIX + "_"):
        if token.startswith(conns.CONNECTION_TOKEN_PREFIX + "_"):
            raise MaintlinkError(
                "FORBIDDEN", "This route needs an admin key (`mlk_...`), not a connection token."
            )
        raise MaintlinkError("AUTHENTICATION_FAILED", "The admin key is unknown or revoked.")
    principal = await _admin(request, token)
    await _limit(request, response, principal)
    return principal


async def _require_connection(
    request: Request, response: Response, creds: Bearer, *, allow_reauth: bool
) -> ConnectionPrincipal:
    token = _token(creds)
    if not token.startswith(conns.CONNECTION_TOKEN_PREFIX + "_"):
        if token.startswith(ADMIN_KEY_PREFIX + "_"):
            raise MaintlinkError(
                "FORBIDDEN", "This route needs a connection token (`mlc_...`), not an admin key."
            )
        raise MaintlinkError("AUTHENTICATION_FAILED", "The connection token is unknown.")
    principal = await _connection(request, token, allow_reauth=allow_reauth)
    await _limit(request, response, principal)
    return principal


async def require_connection(
    request: Request, response: Response, creds: Bearer
) -> ConnectionPrincipal:
    return await _require_connection(request, response, creds, allow_reauth=False)


async def require_any(request: Request, response: Response, creds: Bearer) -> Principal:
    """Admin key, or a connection token (even one needing reauthorization)."""
    token = _token(creds)
    if token.startswith(conns.CONNECTION_TOKEN_PREFIX + "_"):
        return await _require_connection(request, response, creds, allow_reauth=True)
    return await require_admin(request, response, creds)


Admin = Annotated[AdminPrincipal, Depends(require_admin)]
ConnectionAuth = Annotated[ConnectionPrincipal, Depends(require_connection)]
AnyAuth = Annotated[Principal, Depends(require_any)]
RuntimeDep = Annotated[Runtime, Depends(runtime_dep)]
