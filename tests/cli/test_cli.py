"""The CLI contract other tools script against, run as real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

MAINTLINK = [sys.executable, "-m", "maintlink"]


def run(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MAINTLINK, *args], env=env, capture_output=True, text=True,
                          timeout=60, check=check)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("MAINTLINK_")}
    out["MAINTLINK_DATA_DIR"] = str(tmp_path / "data")
    return out


@pytest.mark.parametrize("command", [
    [], ["serve"], ["api"], ["worker"], ["migrate"], ["admin"], ["admin", "create-key"],
    ["admin", "list-keys"], ["admin", "revoke-key"], ["admin", "rotate-secret-key"],
    ["sandbox"], ["sandbox", "revoke"],
])
def test_help(command: list[str], env: dict[str, str]) -> None:
    r = run(*command, "--help", env=env)
    assert "Usage" in r.stdout


def test_admin_key_lifecycle(env: dict[str, str]) -> None:
    r = run("admin", "create-key", "--account", "acme", env=env)
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("mlk_") and len(key) > 40
    listed = run("admin", "list-keys", env=env).stdout
    assert "acme" in listed and key not in listed and key[-4:] in listed
    key_id = next(w for w in listed.split() if w.startswith("key_"))
    import json

    rows = [json.loads(line) for line in run("admin", "list-keys", "--json", env=env)
            .stdout.splitlines()]
    assert [r["id"] for r in rows] == [key_id] and rows[0]["revoked_at"] is None
    run("admin", "revoke-key", key_id, env=env)
    assert run("admin", "revoke-key", key_id, env=env, check=False).returncode == 1


def test_generate_secret_key_and_rotate(env: dict[str, str], tmp_path: Path) -> None:
    import asyncio

    from maintlink.crypto import Cipher
    from maintlink.store.db import create_engine, migrate
    from maintlink.store.tables import accounts, connections, customers
    from maintlink.store.types import utcnow

    old = run("admin", "generate-secret-key", env=env).stdout.strip()
    new = run("admin", "generate-secret-key", env=env).stdout.strip()
    assert old != new and len(old) == 44
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'maintlink.db'}"

    async def seed() -> None:
        engine = create_engine(url)
        await migrate(engine)
        now = utcnow()
        async with engine.begin() as c:
            await c.execute(accounts.insert().values(id="acct_1", name="a", created_at=now))
            await c.execute(customers.insert().values(
                id="cus_1", account_id="acct_1", external_id="x", created_at=now))
            await c.execute(connections.insert().values(
                id="conn_1", account_id="acct_1", customer_id="cus_1", integration="sandbox",
                status="active", credentials_encrypted=Cipher([old]).encrypt_json({"k": "v"}),
                settings={}, status_changed_at=now, created_at=now, updated_at=now,
                consecutive_failures=0, event_sequence=0))
        await engine.dispose()

    async def read() -> str:
        engine = create_engine(url)
        async with engine.connect() as c:
            value = (await c.execute(connections.select())).one().credentials_encrypted
        await engine.dispose()
        return str(value)

    asyncio.run(seed())
    r = run("admin", "rotate-secret-key", env={**env, "MAINTLINK_SECRET_KEY": f"{new},{old}"})
    assert "Re-encrypted 1" in r.stderr
    assert Cipher([new]).decrypt_json(asyncio.run(read())) == {"k": "v"}


def test_production_needs_a_secret_key(env: dict[str, str], tmp_path: Path) -> None:
    r = run("admin", "rotate-secret-key", env={**env, "MAINTLINK_DATA_DIR": str(tmp_path / "x")},
            check=False)
    assert r.returncode == 2
    assert "MAINTLINK_SECRET_KEY is required" in r.stderr
    assert "Traceback" not in r.stderr


def test_serve_starts_api_and_sandbox_and_stops_gracefully(env: dict[str, str]) -> None:
    port, sandbox_port = free_port(), free_port()
    proc = subprocess.Popen(
        [*MAINTLINK, "serve", "--port", str(port), "--sandbox-port", str(sandbox_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not start")
        # A key the server has in its read cache, revoked from another process (this CLI),
        # is refused by the very next request. (Before any connection exists, so that no
        # background work empties the cache meanwhile.)
        other = run("admin", "create-key", env=env).stdout.strip().splitlines()[-1]
        oh = {"Authorization": f"Bearer {other}"}
        assert [httpx.get(f"{base}/api/v1/integrations", headers=oh).status_code
                for _ in range(2)] == [200, 200]
        listed = [json.loads(line) for line in
                  run("admin", "list-keys", "--json", env=env).stdout.splitlines()]
        run("admin", "revoke-key", next(k["id"] for k in listed
                                        if k["hint"].endswith(other[-4:])), env=env)
        refused = httpx.get(f"{base}/api/v1/integrations", headers=oh)
        assert refused.status_code == 401, refused.text

        key = run("admin", "create-key", env=env).stdout.strip().splitlines()[-1]
        h = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"{base}/api/v1/connections", headers=h, json={
            "customer_id": "c1", "integration": "sandbox",
            "credentials": {"base_url": f"http://127.0.0.1:{sandbox_port}",
                            "api_key": "sbx_demo_key"}})
        assert r.status_code == 201, r.text
        stats = httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/stats").json()
        assert stats["work_orders"] > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, errs = proc.communicate(timeout=30)
    assert proc.returncode == 0, errs
    assert "Traceback" not in errs and " ERROR " not in errs, errs  # a clean shutdown
    assert "mlk_" in out + errs  # the first start prints the first admin key
