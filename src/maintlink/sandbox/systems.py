"""All simulated systems behind one port: the sandbox at `/`, and each vendor simulator
under its slug (`/maintainx`, ...), each with its own data, credentials and fault switches.
A customer's instance URL for a simulator is `http://host:port/<slug>`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from maintlink.sandbox.app import create_sandbox_app, simulate_changes
from maintlink.sandbox.maintainx import create_maintainx_app
from maintlink.sandbox.maximo import create_maximo_app
from maintlink.sandbox.sap_s4hana import create_sap_s4hana_app
from maintlink.sandbox.state import SandboxState

SIMULATORS: dict[str, Callable[[SandboxState], ASGIApp]] = {
    "maintainx": create_maintainx_app,
    "maximo": create_maximo_app,
    "sap_s4hana": create_sap_s4hana_app,
}


def create_systems_app(
    root: SandboxState,
    *,
    state_dir: Path | None = None,
    default_api_keys: Iterable[str] = (),
) -> Starlette:
    keys = tuple(default_api_keys)
    states = {
        slug: SandboxState(
            seed=root.seed, size=root.size, default_api_keys=keys,
            state_file=state_dir / f"sandbox-{slug}.json" if state_dir else None,
        )
        for slug in SIMULATORS
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Mounted apps' own lifespans do not run: data changes over time start here.
        tasks = [asyncio.create_task(simulate_changes(s)) for s in (root, *states.values())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    routes = [Mount(f"/{slug}", app=SIMULATORS[slug](state)) for slug, state in states.items()]
    routes.append(Mount("/", app=create_sandbox_app(root)))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sandbox = root
    app.state.simulators = states
    return app
