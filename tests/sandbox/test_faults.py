"""Fault switches: offline (503 and refused connections), latency, rate limits."""

from __future__ import annotations

import time

import httpx
import pytest

from .helpers import bearer, new_key


def test_faults_defaults_and_partial_update(http: httpx.Client) -> None:
    assert http.get("/_sandbox/faults").json() == {
        "offline": False,
        "offline_mode": "503",
        "latency_ms": 0,
        "rate_limit_per_minute": None,
        "change_rate_per_minute": 0.0,
    }
    assert http.post("/_sandbox/faults", json={"latency_ms": 5}).json()["latency_ms"] == 5
    both = http.post("/_sandbox/faults", json={"rate_limit_per_minute": 50}).json()
    assert both["latency_ms"] == 5 and both["rate_limit_per_minute"] == 50
    lifted = http.post("/_sandbox/faults", json={"rate_limit_per_minute": None}).json()
    assert lifted["rate_limit_per_minute"] is None


@pytest.mark.parametrize(
    "body",
    [
        b"{oops",
        b'{"offline": "yes"}',
        b'{"offline": null}',
        b'{"latency_ms": -1}',
        b'{"latency_ms": true}',
        b'{"rate_limit_per_minute": 0}',
        b'{"offline_mode": "explode"}',
        b'{"flood": true}',
        b"[1, 2]",
    ],
)
def test_bad_fault_bodies(http: httpx.Client, body: bytes) -> None:
    response = http.post("/_sandbox/faults", content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("invalid_json", "invalid_request")
    assert response.json()["error"]["message"]


def test_global_offline_503(http: httpx.Client, auth: dict[str, str]) -> None:
    http.post("/_sandbox/faults", json={"offline": True})
    response = http.get("/api/v1/work-orders", headers=auth)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    # Even a bad key sees the outage: the gateway is down before auth.
    assert http.get("/api/v1/me").status_code == 503
    # Control routes are never subject to faults.
    assert http.get("/_sandbox/stats").status_code == 200
    http.post("/_sandbox/faults", json={"offline": False})
    assert http.get("/api/v1/me", headers=auth).status_code == 200


def test_offline_refuse_drops_the_connection(http: httpx.Client, auth: dict[str, str]) -> None:
    http.post("/_sandbox/faults", json={"offline": True, "offline_mode": "refuse"})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.get("/api/v1/me", headers=auth)
    assert http.get("/_sandbox/faults").json()["offline_mode"] == "refuse"
    http.post("/_sandbox/faults", json={"offline": False})
    assert http.get("/api/v1/me", headers=auth).status_code == 200


def test_credential_offline_affects_only_that_key(http: httpx.Client, auth: dict[str, str]) -> None:
    key = new_key(http)
    faults = http.post(
        f"/_sandbox/credentials/{key}/faults", json={"offline": True, "offline_mode": "refuse"}
    )
    assert faults.status_code == 200
    assert faults.json()["api_key"] == key and faults.json()["offline"] is True
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.get("/api/v1/me", headers=bearer(key))
    assert http.get("/api/v1/me", headers=auth).status_code == 200

    http.post(f"/_sandbox/credentials/{key}/faults", json={"offline_mode": "503"})
    assert http.get("/api/v1/me", headers=bearer(key)).status_code == 503
    assert http.get(f"/_sandbox/credentials/{key}/faults").json()["offline_mode"] == "503"
    global_only = http.post(
        f"/_sandbox/credentials/{key}/faults", json={"change_rate_per_minute": 1}
    )
    assert global_only.status_code == 400


def test_latency(http: httpx.Client, auth: dict[str, str]) -> None:
    http.post("/_sandbox/faults", json={"latency_ms": 250})
    started = time.monotonic()
    assert http.get("/api/v1/me", headers=auth).status_code == 200
    assert time.monotonic() - started >= 0.25
    # A client with a shorter timeout gives up.
    with pytest.raises(httpx.ReadTimeout):
        http.get("/api/v1/me", headers=auth, timeout=0.05)


def test_rate_limit(http: httpx.Client) -> None:
    key = new_key(http)
    http.post(f"/_sandbox/credentials/{key}/faults", json={"rate_limit_per_minute": 3})
    answers = [http.get("/api/v1/me", headers=bearer(key)) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["X-Rate-Limit-Remaining"] for r in answers] == ["2", "1", "0", "0"]
    assert all(r.headers["X-Rate-Limit-Limit"] == "3" for r in answers)
    limited = answers[-1]
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert 1 <= int(limited.headers["X-Rate-Limit-Reset"]) <= 60
    # Limits are per credential: another key is unaffected.
    other = new_key(http)
    assert http.get("/api/v1/me", headers=bearer(other)).status_code == 200


def test_global_rate_limit_counts_each_key_separately(http: httpx.Client) -> None:
    http.post("/_sandbox/faults", json={"rate_limit_per_minute": 1})
    first, second = new_key(http), new_key(http)
    assert http.get("/api/v1/me", headers=bearer(first)).status_code == 200
    assert http.get("/api/v1/me", headers=bearer(first)).status_code == 429
    assert http.get("/api/v1/me", headers=bearer(second)).status_code == 200
    # Reset clears faults and windows.
    http.post("/_sandbox/reset")
    assert http.get("/api/v1/me", headers=bearer(first)).status_code == 200
    assert "X-Rate-Limit-Limit" not in http.get("/api/v1/me", headers=bearer(first)).headers


def test_rate_limit_window_resets() -> None:
    """The window is fixed: once it has passed, the budget is whole again (fake clock)."""
    from maintlink.sandbox.state import SandboxState

    now = [1000.0]
    state = SandboxState(size=1, default_api_keys=["sbx_window_key"], clock=lambda: now[0])
    credential = state.credentials["sbx_window_key"]
    credential.faults.rate_limit_per_minute = 2
    assert [state.check_rate_limit(credential).allowed for _ in range(3)] == [True, True, False]
    now[0] += 30
    assert state.check_rate_limit(credential).reset_seconds == 30
    now[0] += 30
    assert state.check_rate_limit(credential).allowed
