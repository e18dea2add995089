"""Builds the web application: API versions, error handling, health, docs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from maintlink.api import errors as api_errors
from maintlink.api.middleware import PlatformMiddleware
from maintlink.api.ratelimit import limiter_for
from maintlink.api.read_cache import ReadCache
from maintlink.api.routes import (
    connections,
    data,
    events,
    integrations,
    link_tokens,
    syncs,
    webhooks,
)
from maintlink.api.schemas import ErrorBody, Health
from maintlink.config import Settings
from maintlink.runtime import Runtime, build_runtime
from maintlink.store.db import migrate, needs_migration
from maintlink.versioning import BASE, VersionRegistry, default_registry
from maintlink.web import connect as web_connect
from maintlink.web import dashboard as web_dashboard

log = logging.getLogger("maintlink")
STATIC_DIR = Path(__file__).parent / "web" / "static"

API_DESCRIPTION = """\
One API for industrial maintenance systems. Admin keys (`mlk_...`) manage the account;
connection tokens (`mlc_...`) read and write one connection's data. Errors always have the
body `{"error": {"code", "type", "message", "request_id", "details"?}}`.
"""


def build_api_router() -> APIRouter:
    router = APIRouter(prefix=f"/api/{BASE}")
    router.include_router(integrations.router)
    router.include_router(connections.router)
    router.include_router(webhooks.router)
    router.include_router(events.router)
    router.include_router(syncs.router)
    router.include_router(data.router)
    router.include_router(link_tokens.router)
    return router


def create_app(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    registry: VersionRegistry | None = None,
    auto_migrate: bool | None = None,
) -> FastAPI:
    """`auto_migrate` defaults to on for SQLite (embedded) and off for PostgreSQL, where
    `maintlink migrate` runs once per release."""
    registry = registry or default_registry()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or build_runtime(settings)
        rt.use_versions(registry)
        do_migrate = settings.is_sqlite if auto_migrate is None else auto_migrate
        if do_migrate:
            await migrate(rt.engine)
        elif await needs_migration(rt.engine):
            raise RuntimeError("the store needs migrating: run `maintlink migrate` first")
        app.state.runtime = rt
        app.state.rate_limiter = limiter_for(rt.engine)
        app.state.read_cache = ReadCache(rt.changes, settings.cache_seconds)
        stop_listening = asyncio.Event()
        listener = asyncio.create_task(rt.changes.listen(stop_listening), name="change-listener")
        try:
            yield
        finally:
            stop_listening.set()
            await listener
            if runtime is None:
                await rt.aclose()

    app = FastAPI(
        title="maintlink",
        version=BASE,
        description=API_DESCRIPTION,
        openapi_url=f"/api/{BASE}/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.registry = registry
    api_errors.install(app)
    app.include_router(build_api_router())
    app.include_router(web_dashboard.router)
    app.include_router(web_connect.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get(f"/api/{BASE}/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        version = request.scope.get("state", {}).get("api_version", BASE)
        return get_swagger_ui_html(
            openapi_url=f"/api/{version}/openapi.json", title=f"maintlink API {version}"
        )

    health_responses: dict[int | str, dict[str, Any]] = {503: {"model": ErrorBody}}

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, tags=["operations"], responses=health_responses)
    async def readyz(request: Request) -> Any:
        """The store is reachable."""
        rt: Runtime = request.app.state.runtime
        try:
            async with rt.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            log.warning("readiness check failed", exc_info=True)
            return api_errors.error_response(request, "SERVICE_UNAVAILABLE",
                                             "The store is unreachable.")
        return {"status": "ok", "store": rt.dialect}

    @app.get("/", include_in_schema=False)
    async def root() -> dict[str, Any]:
        return {"name": "maintlink", "api": f"/api/{BASE}", "docs": f"/api/{BASE}/docs",
                "versions": registry.names}

    app.add_middleware(
        PlatformMiddleware, registry=registry, max_body=settings.max_request_body_bytes
    )
    return app
