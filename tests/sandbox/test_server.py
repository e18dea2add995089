"""Running the sandbox: persistence of credentials, the control client, the async runner."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from maintlink.sandbox import control
from maintlink.sandbox.server import running_sandbox, serve_sandbox, start_sandbox_in_thread
from maintlink.sandbox.state import DEMO_API_KEY, SandboxConfigError, SandboxState


def test_credentials_survive_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "nested" / "sandbox.json"
    first = start_sandbox_in_thread(size=10, state_file=state_file)
    try:
        created = control.create_credential(first.base_url, name="kept")
        kept, revoked = created["api_key"], control.create_credential(first.base_url)["api_key"]
        assert control.revoke(first.base_url, revoked) == {"api_key": revoked, "revoked": True}
        control.revoke(first.base_url, DEMO_API_KEY)
    finally:
        first.stop()
    assert json.loads(state_file.read_text())["version"] == 1

    second = start_sandbox_in_thread(size=10, state_file=state_file)
    try:
        url = f"{second.base_url}/api/v1/me"
        me = httpx.get(url, headers={"Authorization": f"Bearer {kept}"})
        assert me.status_code == 200 and me.json()["api_key"]["name"] == "kept"
        gone = httpx.get(url, headers={"Authorization": f"Bearer {revoked}"})
        assert gone.json()["error"]["code"] == "api_key_revoked"
        # A default key revoked before the restart stays revoked.
        demo = httpx.get(url, headers={"Authorization": f"Bearer {DEMO_API_KEY}"})
        assert demo.json()["error"]["code"] == "api_key_revoked"
        control.restore(second.base_url, DEMO_API_KEY)
    finally:
        second.stop()
    assert SandboxState(size=1, state_file=state_file).credentials[DEMO_API_KEY].revoked is False


def test_unreadable_state_file(tmp_path: Path) -> None:
    broken = tmp_path / "sandbox.json"
    broken.write_text("{not json")
    with pytest.raises(SandboxConfigError, match=r"sandbox\.json"):
        SandboxState(size=1, state_file=broken)


def test_control_client(tmp_path: Path) -> None:
    running = start_sandbox_in_thread(size=8, default_api_keys=())
    url = running.base_url
    try:
        assert running.api_key is None and running.state.credentials == {}
        key = control.create_credential(url, api_key="sbx_control_key")["api_key"]
        assert key == "sbx_control_key"
        assert control.set_faults(url, {"latency_ms": 1})["latency_ms"] == 1
        # Keyword form, as the CLI calls it; None lifts a rate limit.
        faults = control.set_faults(url, offline=False, rate_limit_per_minute=None)
        assert faults["rate_limit_per_minute"] is None and faults["latency_ms"] == 1
        assert control.set_faults(url, {"offline": True}, api_key=key)["offline"] is True
        assert control.get_faults(url, api_key=key)["offline"] is True
        assert control.get_faults(url)["offline"] is False
        assert control.stats(url)["work_orders"] == 8
        changed = control.make_changes(url, entity="work_orders", create=2)
        assert len(changed["created"]["work_orders"]) == 2
        assert control.stats(url)["work_orders"] == 10
        assert control.reset(url, size=4)["work_orders"] == 4
        with pytest.raises(control.SandboxControlError) as caught:
            control.revoke(url, "sbx_nobody")
        assert caught.value.status_code == 404 and caught.value.code == "not_found"
        with pytest.raises(control.SandboxControlError, match="invalid_request"):
            control.set_faults(url, {"latency_ms": -5})
    finally:
        running.stop()
    with pytest.raises(control.SandboxControlError, match="Cannot reach"):
        control.stats(url)


async def test_running_sandbox_in_the_current_loop() -> None:
    async with running_sandbox(size=6, seed=3) as sandbox:
        async with httpx.AsyncClient(base_url=sandbox.api_url) as client:
            headers = {"Authorization": f"Bearer {sandbox.api_key}"}
            response = await client.get("/work-orders", headers=headers)
        assert response.status_code == 200 and len(response.json()["data"]) == 6


async def test_serve_sandbox_reports_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            await serve_sandbox("127.0.0.1", port, size=1)
