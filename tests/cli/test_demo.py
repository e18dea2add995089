"""`maintlink demo` runs the whole story by itself and stops after the reauthorization."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port


def test_demo_shows_verified_events_and_reauthorization(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAINTLINK_")}
    env["COLUMNS"] = "200"
    r = subprocess.run(
        [sys.executable, "-m", "maintlink", "demo", "--port", str(free_port()),
         "--sandbox-port", str(free_port()), "--receiver-port", str(free_port()),
         "--data-dir", str(tmp_path / "demo"), "--until", "reauth"],
        env=env, capture_output=True, text=True, timeout=150,
    )
    out = r.stdout
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mlk_" in out
    assert out.count("connection.created") == 2
    assert out.count("sync.completed") >= 2
    assert "connection.reauthorization_required" in out
    assert "verified" in out
    assert "reauth_required" in out and "CONNECTION_REAUTH_REQUIRED" in out
    assert "/dashboard/connections/conn_" in out
