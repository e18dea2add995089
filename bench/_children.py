"""Child processes of the benchmark scripts, and the PostgreSQL admin connection they share.

Each benchmark re-runs its own script as children (a receiver, a sandbox, an emitter, a
worker), each in its own session so that Ctrl-C reaches only the parent, which stops them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field


def exit_when_parent_goes() -> None:
    """Called first in a child: it gets SIGTERM from the kernel when the parent dies (Linux
    prctl), so no child outlives a killed benchmark."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before prctl
        sys.exit(1)


@dataclass
class Children:
    """Child processes running `script` with their own arguments."""

    script: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, self.script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)


async def pg_admin(url: str, *statements: str) -> None:
    """Run `statements` one by one on the admin database (CREATE/DROP DATABASE)."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()
