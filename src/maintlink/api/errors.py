"""Every error answer, whatever raised it, has the catalog's body and codes."""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from maintlink.errors import CATALOG, MaintlinkError

_BY_STATUS = {
    400: "INVALID_JSON",
    401: "AUTHENTICATION_FAILED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMIT_EXCEEDED",
    503: "SERVICE_UNAVAILABLE",
}


def error_body(
    code: str, message: str | None, request_id: str, details: dict[str, Any] | None = None
) -> bytes:
    spec = CATALOG[code]
    error: dict[str, Any] = {
        "code": code,
        "type": spec.type,
        "message": message or spec.description,
        "request_id": request_id,
    }
    if details:
        error["details"] = details
    return orjson.dumps({"error": error})


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def error_response(
    request: Request,
    code: str,
    message: str | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        error_body(code, message, request_id_of(request), details),
        status_code=CATALOG[code].status,
        media_type="application/json",
        headers=headers,
    )


def _validation_details(exc: RequestValidationError) -> tuple[str, dict[str, Any]]:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        errors.append({"location": ".".join(loc), "message": err.get("msg", "invalid")})
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return "INVALID_JSON", {"errors": errors}
    return "VALIDATION_ERROR", {"errors": errors}


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API takes on this path (Starlette names only the first route's).
    Read from the OpenAPI document, which lists every route with its full path."""
    table = getattr(request.app.state, "allowed_methods", None)
    if table is None:
        table = []
        for template, ops in request.app.openapi().get("paths", {}).items():
            pattern = re.compile(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$")
            table.append((pattern, sorted(m.upper() for m in ops)))
        request.app.state.allowed_methods = table
    path = request.scope.get("path", "")
    return sorted({m for pattern, methods in table if pattern.match(path) for m in methods})


def install(app: FastAPI) -> None:
    @app.exception_handler(MaintlinkError)
    async def _maintlink(request: Request, exc: MaintlinkError) -> Response:
        return error_response(request, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        code, details = _validation_details(exc)
        message = (
            "The request body is not valid JSON."
            if code == "INVALID_JSON"
            else "; ".join(f"{e['location']}: {e['message']}" for e in details["errors"][:5])
        )
        return error_response(request, code, message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _BY_STATUS.get(exc.status_code, "INTERNAL_ERROR")
        headers = dict(exc.headers or {})
        message = None
        if exc.status_code == 404:
            message = f"No route {request.method} {request.url.path}."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(request, code, message, None, headers)
