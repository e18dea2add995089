"""The operator dashboard at /dashboard.

Server-rendered pages (Jinja2) that read without JavaScript; a small script refreshes each
page's live region every few seconds. Signed in with an admin key; every query is scoped to
that key's account. The pages live in `dashboard_*.py`, sessions in `session.py`.

This router also runs the API request log's background writer for the app (its lifespan is
merged into the app's), since the request log exists for the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI

from maintlink.domain.request_log import RequestLogWriter
from maintlink.web import (
    dashboard_auth,
    dashboard_connections,
    dashboard_events,
    dashboard_requests,
    dashboard_webhooks,
)


@contextlib.asynccontextmanager
async def request_log_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's own lifespan, after it has set `app.state.runtime`."""
    rt = app.state.runtime
    writer = RequestLogWriter(rt.engine, rt.settings)
    app.state.request_log = writer
    task = asyncio.create_task(writer.run(), name="request-log-writer")
    try:
        yield
    finally:
        writer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)
        app.state.request_log = None


router = APIRouter(include_in_schema=False, lifespan=request_log_lifespan)
for _module in (dashboard_auth, dashboard_connections, dashboard_webhooks, dashboard_events,
                dashboard_requests):
    router.include_router(_module.router)
