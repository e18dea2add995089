"""One sandbox server per test module (real HTTP on loopback), reset before every test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from maintlink.sandbox.server import RunningSandbox, start_sandbox_in_thread

SEED = 7
SIZE = 60


@pytest.fixture(scope="module")
def _server() -> Iterator[RunningSandbox]:
    running = start_sandbox_in_thread(seed=SEED, size=SIZE)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def _client(_server: RunningSandbox) -> Iterator[httpx.Client]:
    # One client per module: building one loads the CA bundle, ~25 ms each time.
    with httpx.Client(base_url=_server.base_url, timeout=5) as client:
        yield client


@pytest.fixture
def sandbox(_server: RunningSandbox, _client: httpx.Client) -> RunningSandbox:
    """A running sandbox with fresh data and no faults."""
    _client.post("/_sandbox/reset").raise_for_status()
    return _server


@pytest.fixture
def http(sandbox: RunningSandbox, _client: httpx.Client) -> httpx.Client:
    return _client


@pytest.fixture
def auth(sandbox: RunningSandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {sandbox.api_key}"}
