"""Process entry points: the embedded all-in-one server, the API, the worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn
from rich.console import Console
from sqlalchemy import func, select

from maintlink import logs
from maintlink.app import create_app
from maintlink.config import Settings
from maintlink.runtime import build_runtime
from maintlink.store.db import migrate, needs_migration
from maintlink.store.tables import accounts
from maintlink.worker import Worker

log = logging.getLogger("maintlink")

SANDBOX_DEMO_KEY = "sbx_demo_key"
# On stopping, the worker may finish requests in flight (up to the webhook timeout) and
# record them; past this much more, what still runs is cancelled.
SHUTDOWN_MARGIN_SECONDS = 5


def _uvicorn_config(app: object, host: str, port: int, level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, log_level=level, access_log=False,
        timeout_graceful_shutdown=30, log_config=None, proxy_headers=True,
    )


async def _first_admin_key(settings: Settings) -> str | None:
    """On the very first embedded start, create the default account's first key."""
    from maintlink.domain.accounts import create_admin_key

    rt = build_runtime(settings)
    try:
        await migrate(rt.engine)
        async with rt.engine.begin() as conn:
            if (await conn.execute(select(func.count()).select_from(accounts))).scalar_one():
                return None
            _, _, key = await create_admin_key(conn, "default", "first key")
            return key
    finally:
        await rt.aclose()


async def run_embedded(settings: Settings, console: Console) -> None:
    logs.configure(settings.log_level, settings.log_format)
    first_key = await _first_admin_key(settings) if settings.is_sqlite else None
    rt = build_runtime(settings)
    if not settings.is_sqlite:
        await migrate(rt.engine)
    app = create_app(settings, runtime=rt, auto_migrate=False)
    api_server = uvicorn.Server(_uvicorn_config(app, settings.host, settings.port,
                                                settings.log_level))
    # This process, not one of its servers, owns Ctrl-C and SIGTERM: a uvicorn server would
    # stop alone and raise the signal again once done, killing the process mid-shutdown.
    api_server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    worker = Worker(rt)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(api_server.serve(), name="api"),
             asyncio.create_task(stop.wait(), name="stop")]
    sandbox: asyncio.Task[None] | None = None

    def on_signal() -> None:
        if stop.is_set():  # asked twice: stop at once
            for task in tasks:
                task.cancel()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    base = f"http://{settings.host}:{settings.port}"
    console.rule("[bold]maintlink")
    console.print(f"API        {base}/api/v1   (docs: {base}/api/v1/docs)")
    console.print(f"Store      {settings.effective_database_url}")
    if settings.sandbox_enabled:
        from maintlink.sandbox.server import serve_sandbox

        # The sandbox stops (gracefully) when its task is cancelled.
        sandbox = asyncio.create_task(serve_sandbox(
            settings.host, settings.sandbox_port, seed=settings.sandbox_seed,
            size=settings.sandbox_size, state_file=settings.data_dir / "sandbox.json",
            default_api_keys=(SANDBOX_DEMO_KEY,), handle_signals=False,
        ), name="sandbox")
        tasks.append(sandbox)
        console.print(
            f"Sandbox    http://{settings.host}:{settings.sandbox_port}  "
            f"(integration 'sandbox', api_key '{SANDBOX_DEMO_KEY}')"
        )
    if first_key:
        console.print(f"Admin key  [bold]{first_key}[/bold]  (shown once; "
                      "more with `maintlink admin create-key`)")
    console.rule()
    tasks.append(asyncio.create_task(worker.run(), name="worker"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception():
                raise task.exception()  # type: ignore[misc]
    finally:
        # Everything stops by itself (requests in flight end, the worker records what it
        # sent); only what is still running after the grace period is cancelled.
        stop.set()
        worker.stop()
        api_server.should_exit = True
        if sandbox is not None:
            sandbox.cancel()
        _, pending = await asyncio.wait(
            tasks, timeout=settings.webhook_timeout_seconds + SHUTDOWN_MARGIN_SECONDS
        )
        for task in pending:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await rt.aclose()


async def run_api(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)
    app = create_app(settings)
    await uvicorn.Server(
        _uvicorn_config(app, settings.host, settings.port, settings.log_level)
    ).serve()


async def run_worker(settings: Settings, console: Console) -> None:
    logs.configure(settings.log_level, settings.log_format)
    rt = build_runtime(settings)
    if settings.is_sqlite:
        await migrate(rt.engine)
    elif await needs_migration(rt.engine):
        console.print("[red]The store needs migrating: run `maintlink migrate` first.[/red]")
        await rt.aclose()
        raise SystemExit(2)
    worker = Worker(rt)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        await rt.aclose()
