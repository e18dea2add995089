"""Running the sandbox: in the current event loop, in a background thread, or from the CLI.

uvicorn is driven through `Config`/`Server`, so the sandbox can share an event loop with
maintlink's own server. Tests bind a socket to port 0 first and hand it to uvicorn, which
gives them a free port without a race.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from maintlink.sandbox.app import create_sandbox_app
from maintlink.sandbox.state import DEMO_API_KEY, SandboxState

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handlers alone (for threads and test loops)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def build_sandbox_server(
    state: SandboxState,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    handle_signals: bool = True,
    log_level: str | None = None,
    simulators: bool = False,
    state_dir: Path | None = None,
    default_api_keys: Iterable[str] = (),
) -> uvicorn.Server:
    """A uvicorn server for `state`; `await server.serve()`, set `server.should_exit` to stop.

    With `simulators`, the vendor simulators are served beside it under their slugs
    (`maintlink.sandbox.systems`). With `log_level=None` uvicorn's logging setup is left
    untouched, which matters when another uvicorn server runs in the same process (uvicorn
    configures its loggers globally).
    """
    if simulators:
        from maintlink.sandbox.systems import create_systems_app

        app = create_systems_app(state, state_dir=state_dir, default_api_keys=default_api_keys)
    else:
        app = create_sandbox_app(state)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_config=uvicorn.config.LOGGING_CONFIG if log_level else None,
        log_level=log_level,
        timeout_graceful_shutdown=2,
    )
    server_class = uvicorn.Server if handle_signals else _QuietServer
    return server_class(config)


async def serve_sandbox(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    seed: int = 42,
    size: int = 200,
    state_file: Path | str | None = None,
    default_api_keys: Iterable[str] = (),
    handle_signals: bool = True,
    log_level: str | None = None,
) -> None:
    """Serve a sandbox until stopped (Ctrl-C, or the task is cancelled)."""
    state = SandboxState(
        seed=seed, size=size, state_file=state_file, default_api_keys=default_api_keys
    )
    server = build_sandbox_server(
        state, host, port, handle_signals=handle_signals, log_level=log_level,
        simulators=True, state_dir=Path(state_file).parent if state_file else None,
        default_api_keys=default_api_keys,
    )
    sock = _bind(host, port)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        # Cancelled: shut down as on Ctrl-C (lifespan and open requests end cleanly).
        server.should_exit = True
        await serving
        raise
    finally:
        sock.close()


@dataclass
class RunningSandbox:
    """A started sandbox: where it listens, its state, a ready API key, and how to stop it."""

    base_url: str
    state: SandboxState
    api_key: str | None
    stop: Callable[[], None]

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v1"


def _bind(host: str, port: int) -> socket.socket:
    """Listen before uvicorn starts: a taken port raises OSError here, not SystemExit there."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets that do, and
    # without it every answer waits ~40 ms on Nagle's algorithm and delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _make_state(
    state: SandboxState | None,
    seed: int,
    size: int,
    state_file: Path | str | None,
    default_api_keys: Iterable[str],
) -> SandboxState:
    if state is not None:
        return state
    return SandboxState(
        seed=seed, size=size, state_file=state_file, default_api_keys=default_api_keys
    )


def start_sandbox_in_thread(
    *,
    seed: int = 42,
    size: int = 200,
    state_file: Path | str | None = None,
    default_api_keys: Iterable[str] = (DEMO_API_KEY,),
    host: str = DEFAULT_HOST,
    port: int = 0,
    state: SandboxState | None = None,
    startup_timeout: float = 10.0,
) -> RunningSandbox:
    """Start a sandbox on its own event loop in a daemon thread (port 0: a free port)."""
    keys = tuple(default_api_keys)
    state = _make_state(state, seed, size, state_file, keys)
    sock = _bind(host, port)
    server = build_sandbox_server(state, host, port, handle_signals=False)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])),
        name="maintlink-sandbox",
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the sandbox server did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    bound_port = sock.getsockname()[1]
    return RunningSandbox(f"http://{host}:{bound_port}", state, _first(state, keys), stop)


@contextlib.asynccontextmanager
async def running_sandbox(
    *,
    seed: int = 42,
    size: int = 200,
    state_file: Path | str | None = None,
    default_api_keys: Iterable[str] = (DEMO_API_KEY,),
    host: str = DEFAULT_HOST,
    port: int = 0,
    state: SandboxState | None = None,
) -> AsyncIterator[RunningSandbox]:
    """Serve a sandbox in the current event loop for the duration of the `async with`."""
    keys = tuple(default_api_keys)
    state = _make_state(state, seed, size, state_file, keys)
    sock = _bind(host, port)
    server = build_sandbox_server(state, host, port, handle_signals=False)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # re-raises the startup failure
                raise RuntimeError("the sandbox server did not start")
            await asyncio.sleep(0.01)
        bound_port = sock.getsockname()[1]

        def stop() -> None:
            server.should_exit = True

        yield RunningSandbox(f"http://{host}:{bound_port}", state, _first(state, keys), stop)
    finally:
        server.should_exit = True
        await task
        sock.close()


def _first(state: SandboxState, keys: tuple[str, ...]) -> str | None:
    """The key to hand to callers: the first default key, else any key the state knows."""
    return keys[0] if keys else next(iter(state.credentials), None)


def run_sandbox_cli(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    seed: int = 42,
    size: int = 200,
    state_file: Path | str | None = None,
) -> None:
    """`maintlink sandbox`: serve in the foreground with the demo key, until Ctrl-C."""
    # Imported here: rich is only needed for this banner.
    from rich.console import Console

    console = Console()
    base_url = f"http://{host}:{port}"
    console.print(f"[bold]maintlink sandbox CMMS[/bold] on {base_url} (seed {seed}, size {size})")
    console.print(f"  API:      {base_url}/api/v1  (Authorization: Bearer {DEMO_API_KEY})")
    console.print(f"  Controls: {base_url}/_sandbox  (see docs/sandbox.md)")
    asyncio.run(
        serve_sandbox(
            host,
            port,
            seed=seed,
            size=size,
            state_file=state_file,
            default_api_keys=(DEMO_API_KEY,),
            log_level="info",
        )
    )
