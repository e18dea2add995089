"""Pure ASGI middleware run on every request: request ids, API versions, body limits,
access logs. Pure ASGI (not BaseHTTPMiddleware) keeps streaming and speed intact."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maintlink.api.errors import error_body
from maintlink.errors import CATALOG
from maintlink.ids import new_id
from maintlink.versioning import BASE, HEADER, APIVersion, VersionRegistry

log = logging.getLogger("maintlink.access")
error_log = logging.getLogger("maintlink.api")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_API_PATH = re.compile(r"/api/([^/]+)(/.*)?")
_VERSION_LIKE = re.compile(r"v\d+")
_HEADER_LOWER = HEADER.lower().encode()


_SECRET_IN_PATH = re.compile(r"/(lt_)[A-Za-z0-9_\-]+")


def _redact(path: str) -> str:
    """Link tokens travel in the connection flow's URLs; logs keep only their prefix."""
    return _SECRET_IN_PATH.sub(r"/\1[redacted]", path)


class PlatformMiddleware:
    def __init__(self, app: ASGIApp, registry: VersionRegistry, max_body: int) -> None:
        self.app = app
        self.registry = registry
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id

        version_name = self.registry.current
        version: APIVersion | None = None
        path: str = scope["path"]
        match = _API_PATH.fullmatch(path)
        requested = headers.get(_HEADER_LOWER, b"").decode("latin-1").strip()
        status_box = [0]

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                extra = [
                    (b"x-request-id", request_id.encode()),
                    (_HEADER_LOWER, version_name.encode()),
                ]
                if version is not None:
                    extra.extend(version.deprecation_headers())
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        async def fail(code: str, message: str, details: dict[str, Any] | None = None) -> None:
            body = error_body(code, message, request_id, details)
            await send_wrapped({
                "type": "http.response.start", "status": CATALOG[code].status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())],
            })
            await send_wrapped({"type": "http.response.body", "body": body})

        try:
            if match:
                segment = match.group(1)
                version = self.registry.get(segment)
                if version is None and _VERSION_LIKE.fullmatch(segment):
                    await fail("UNSUPPORTED_API_VERSION",
                               f"API version '{segment}' is not supported.",
                               {"supported_versions": self.registry.names})
                    return
                if version is not None:
                    version_name = version.name
                    if requested and self.registry.get(requested) is None:
                        await fail("UNSUPPORTED_API_VERSION",
                                   f"API version '{requested}' is not supported.",
                                   {"supported_versions": self.registry.names})
                        return
                    if requested and requested != version.name:
                        await fail("API_VERSION_MISMATCH",
                                   f"The path asks for {version.name} but the "
                                   f"{HEADER} header asks for {requested}.",
                                   {"path_version": version.name, "header_version": requested,
                                    "supported_versions": self.registry.names})
                        return
                    scope["state"]["api_version"] = version.name
            elif requested and self.registry.get(requested) is None:
                await fail("UNSUPPORTED_API_VERSION",
                           f"API version '{requested}' is not supported.",
                           {"supported_versions": self.registry.names})
                return

            if b"%00" in scope.get("query_string", b"").lower() or "\x00" in path \
                    or b"%00" in scope.get("raw_path", b""):
                await fail("VALIDATION_ERROR", "NUL characters are not allowed in URLs.",
                           {"errors": [{"location": "url", "message": "NUL character"}]})
                return

            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                await fail("PAYLOAD_TOO_LARGE",
                           f"The body exceeds the limit of {self.max_body} bytes.")
                return

            receive = self._limit(receive)
            if version is not None and version.name != BASE:
                await self._translated(scope, receive, send_wrapped, version, match)
            else:
                await self.app(scope, receive, send_wrapped)
        except _BodyTooLarge:
            if status_box[0] == 0:
                await fail("PAYLOAD_TOO_LARGE",
                           f"The body exceeds the limit of {self.max_body} bytes.")
        except Exception:
            # Answer here, inside the request id and version headers, and leak nothing.
            error_log.exception("unhandled error", extra={"request_id": request_id})
            if status_box[0] == 0:
                await fail("INTERNAL_ERROR", "An unexpected error occurred.")
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            logged = _redact(path)
            log.info(
                "%s %s %s", scope["method"], logged, status_box[0],
                extra={"request_id": request_id, "method": scope["method"], "path": logged,
                       "status": status_box[0], "duration_ms": round(duration_ms, 2)},
            )
            # The dashboard's request log: an append to an in-memory buffer, written in the
            # background (domain/request_log.py); auth put the caller on scope["state"].
            writer = getattr(getattr(scope.get("app"), "state", None), "request_log", None)
            if writer is not None and match is not None:
                writer.capture(scope["state"], scope["method"], path, status_box[0],
                               request_id, duration_ms)

    def _limit(self, receive: Receive) -> Receive:
        seen = [0]
        limit = self.max_body

        async def limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise _BodyTooLarge
            return message

        return limited

    async def _translated(
        self, scope: Scope, receive: Receive, send: Send, version: APIVersion,
        match: re.Match[str] | None,
    ) -> None:
        """Route a non-base version to the base handlers, transforming both bodies."""
        rest = (match.group(2) if match else None) or ""
        base_path = f"/api/{BASE}{rest}"
        scope = dict(scope)
        scope["path"] = base_path
        scope["raw_path"] = base_path.encode()

        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if body:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                pass  # the handler reports invalid JSON in the usual way
            else:
                body = orjson.dumps(version.transform_request(scope["method"], base_path, parsed))
        sent = [False]

        async def replay() -> Message:
            if sent[0]:
                return {"type": "http.disconnect"}
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}

        start: dict[str, Any] = {}
        out: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            out.append(message.get("body", b""))
            if message.get("more_body"):
                return
            payload = b"".join(out)
            hdrs = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            ctype = dict(hdrs).get(b"content-type", b"")
            if payload and ctype.startswith(b"application/json"):
                data = orjson.loads(payload)
                if rest == "/openapi.json":
                    data = version.transform_openapi(data)
                else:
                    data = version.transform_response(data)
                payload = orjson.dumps(data)
            hdrs.append((b"content-length", str(len(payload)).encode()))
            await send({**start, "headers": hdrs})
            await send({"type": "http.response.body", "body": payload})

        await self.app(scope, replay, capture)


class _BodyTooLarge(StarletteHTTPException):
    """Raised while reading the body; the app's handlers render it as 413."""

    def __init__(self) -> None:
        super().__init__(status_code=413)
