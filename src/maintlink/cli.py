"""The `maintlink` command: serve, api, worker, migrate, admin, sandbox."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from maintlink.config import Settings, load_settings

app = typer.Typer(
    help="maintlink: one API for industrial maintenance systems.",
    no_args_is_help=True,
    add_completion=False,
)
admin_app = typer.Typer(help="Manage accounts, admin keys and the master secret key.",
                        no_args_is_help=True)
app.add_typer(admin_app, name="admin")
err = Console(stderr=True)

HostOpt = Annotated[str | None, typer.Option(help="Interface to listen on.")]
PortOpt = Annotated[int | None, typer.Option(help="Port to listen on.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="Data directory (SQLite store, generated secret key). "
                 "Default: $MAINTLINK_DATA_DIR or ./data."),
]


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except Exception as exc:  # pydantic's message names the bad setting
        err.print(f"[red]Invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def _run(coro: Any) -> Any:
    """Run on uvloop where it is installed (as uvicorn itself would), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard] on Linux/macOS
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    try:
        return runner(coro)
    except KeyboardInterrupt:
        return None


@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
    sandbox: Annotated[bool, typer.Option(help="Start the built-in sandbox system.")] = True,
    sandbox_port: Annotated[int | None, typer.Option(help="Port of the sandbox system.")] = None,
) -> None:
    """Run the API and the background work in one process (SQLite by default; an SQLite
    store is migrated automatically)."""
    from maintlink.server import run_embedded

    settings = _settings(host=host, port=port, data_dir=data_dir,
                         sandbox_enabled=sandbox, sandbox_port=sandbox_port)
    _run(run_embedded(settings, err))


@app.command()
def demo(
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
    sandbox_port: Annotated[int | None, typer.Option(help="Port of the sandbox system.")] = None,
    receiver_port: Annotated[int, typer.Option(help="Port of the local webhook receiver.")]
    = 9000,
    until: Annotated[str | None, typer.Option(
        help="Stop by itself: 'reauth' (after the reauthorization is shown) or 'reconnected' "
        "(after the customer reconnects through the link).")] = None,
) -> None:
    """A guided demo: two customers connected, webhooks arriving verified, a connection that
    loses its credentials turning `reauth_required`, and where to reconnect."""
    from maintlink.demo import run_demo

    if until not in (None, "reauth", "reconnected"):
        err.print("[red]--until must be 'reauth' or 'reconnected'[/red]")
        raise typer.Exit(2)
    settings = _settings(port=port, data_dir=data_dir or Path("./data-demo"),
                         sandbox_port=sandbox_port)
    _run(run_demo(settings, Console(), receiver_port=receiver_port, until=until))


@app.command()
def api(host: HostOpt = None, port: PortOpt = None, data_dir: DataDirOpt = None) -> None:
    """Run only the HTTP API (production: run as many as needed beside `maintlink worker`)."""
    from maintlink.server import run_api

    _run(run_api(_settings(host=host, port=port, data_dir=data_dir)))


@app.command()
def worker(data_dir: DataDirOpt = None) -> None:
    """Run only the background work (production: run as many as needed)."""
    from maintlink.server import run_worker

    _run(run_worker(_settings(data_dir=data_dir), err))


@app.command()
def migrate(data_dir: DataDirOpt = None) -> None:
    """Bring the store's schema up to date (safe to run from several processes)."""
    from maintlink.store.db import create_engine
    from maintlink.store.db import migrate as do_migrate

    settings = _settings(data_dir=data_dir)

    async def go() -> None:
        engine = create_engine(settings.effective_database_url)
        try:
            await do_migrate(engine)
        finally:
            await engine.dispose()

    _run(go())
    err.print("[green]Store is up to date.[/green]")


async def _with_store(settings: Settings, fn: Any) -> Any:
    from maintlink.store.change_watch import ChangeWatch
    from maintlink.store.db import create_engine
    from maintlink.store.db import migrate as do_migrate

    engine = create_engine(settings.effective_database_url)
    ChangeWatch(engine)  # a key revoked here reaches running API processes' caches at once
    try:
        if settings.is_sqlite:
            await do_migrate(engine)
        async with engine.begin() as conn:
            return await fn(conn)
    finally:
        await engine.dispose()


@admin_app.command("create-key")
def create_key(
    account: Annotated[str, typer.Option(help="Account name; created if new.")] = "default",
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create an admin key. The key is printed once, alone on the last line."""
    from maintlink.domain.accounts import create_admin_key

    settings = _settings(data_dir=data_dir)
    account_id, key_id, key = _run(_with_store(
        settings, lambda conn: create_admin_key(conn, account, name)))
    err.print(f"Created admin key {key_id} for account '{account}' ({account_id}). "
              "Store it now: it is not shown again.")
    print(key)


@admin_app.command("list-keys")
def list_keys(
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List admin keys (ids and hints, never the keys)."""
    from maintlink.domain.accounts import list_admin_keys

    rows = _run(_with_store(_settings(data_dir=data_dir), list_admin_keys))
    if as_json:
        import orjson

        for r in rows:
            print(orjson.dumps(r).decode())
        return
    table = Table("id", "account", "key", "name", "created", "last used", "revoked")
    table.columns[0].no_wrap = True
    for r in rows:
        table.add_row(r["id"], r["account"], r["hint"], r["name"] or "",
                      _ts(r["created_at"]), _ts(r["last_used_at"]), _ts(r["revoked_at"]))
    # Piped output is not cut to 80 columns: ids must stay whole for scripts.
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _ts(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else ""


@admin_app.command("revoke-key")
def revoke_key(key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")],
               data_dir: DataDirOpt = None) -> None:
    """Revoke an admin key at once."""
    from maintlink.domain.accounts import revoke_admin_key

    done = _run(_with_store(_settings(data_dir=data_dir),
                            lambda conn: revoke_admin_key(conn, key_id)))
    if not done:
        err.print(f"[red]No active key {key_id}.[/red]")
        raise typer.Exit(1)
    err.print(f"Revoked {key_id}.")


@admin_app.command("generate-secret-key")
def generate_secret_key() -> None:
    """Print a new master key for MAINTLINK_SECRET_KEY. To rotate, put it first:
    MAINTLINK_SECRET_KEY=new,old, then run `maintlink admin rotate-secret-key`."""
    from maintlink.crypto import generate_key

    print(generate_key())


@admin_app.command("rotate-secret-key")
def rotate_secret_key(data_dir: DataDirOpt = None) -> None:
    """Re-encrypt every stored secret with the newest master key."""
    from maintlink.crypto import SecretKeyError, load_cipher
    from maintlink.domain.secrets import reencrypt_all

    settings = _settings(data_dir=data_dir)
    try:
        cipher = load_cipher(settings.secret_key, settings.data_dir, may_generate=False)
    except SecretKeyError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    count = _run(_with_store(settings, lambda conn: reencrypt_all(conn, cipher)))
    err.print(f"Re-encrypted {count} secrets with the newest key.")


def _register_receiver() -> None:
    from maintlink.receiver.cli import consume as receiver_consume
    from maintlink.receiver.cli import receive

    app.command("receive", help="Receive webhooks: verify, queue durably, answer 200.")(receive)
    app.command("consume", help="Print queued webhook events in order, and acknowledge them.")(
        receiver_consume)


_register_receiver()

sandbox_app = typer.Typer(help="The built-in maintenance-system simulator.",
                          invoke_without_command=True)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.callback()
def sandbox(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8090,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 42,
    size: Annotated[int, typer.Option(help="Number of work orders; other entities scale.")] = 200,
    state_file: Annotated[Path | None, typer.Option(help="Keep credentials across restarts.")]
    = None,
) -> None:
    """Run the sandbox system (without a sub-command), or drive a running one."""
    if ctx.invoked_subcommand is not None:
        return
    from maintlink.sandbox.server import run_sandbox_cli

    run_sandbox_cli(host, port, seed, size, state_file)


UrlOpt = Annotated[str, typer.Option("--url", help="Base URL of the running sandbox.",
                                     envvar="MAINTLINK_SANDBOX_URL")]
_SANDBOX_URL = "http://127.0.0.1:8090"


def _control(fn_name: str, *args: Any, **kwargs: Any) -> None:
    import orjson

    from maintlink.sandbox import control

    try:
        result = getattr(control, fn_name)(*args, **kwargs)
    except control.SandboxControlError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


@sandbox_app.command("create-credential")
def sandbox_create(url: UrlOpt = _SANDBOX_URL) -> None:
    """Create an API key in the sandbox."""
    _control("create_credential", url)


@sandbox_app.command("revoke")
def sandbox_revoke(api_key: str, url: UrlOpt = _SANDBOX_URL) -> None:
    """Revoke an API key (requests with it get 401)."""
    _control("revoke", url, api_key)


@sandbox_app.command("restore")
def sandbox_restore(api_key: str, url: UrlOpt = _SANDBOX_URL) -> None:
    """Restore a revoked API key."""
    _control("restore", url, api_key)


@sandbox_app.command("faults")
def sandbox_faults(
    url: UrlOpt = _SANDBOX_URL,
    offline: Annotated[bool | None, typer.Option(help="Answer 503 / refuse.")] = None,
    latency_ms: Annotated[int | None, typer.Option(help="Delay every answer.")] = None,
    rate_limit_per_minute: Annotated[int | None, typer.Option(help="0 lifts the limit.")] = None,
) -> None:
    """Set the sandbox's fault switches."""
    body: dict[str, Any] = {}
    if offline is not None:
        body["offline"] = offline
    if latency_ms is not None:
        body["latency_ms"] = latency_ms
    if rate_limit_per_minute is not None:
        body["rate_limit_per_minute"] = rate_limit_per_minute or None
    _control("set_faults", url, **body)


@sandbox_app.command("stats")
def sandbox_stats(url: UrlOpt = _SANDBOX_URL) -> None:
    """Number of records per entity."""
    _control("stats", url)


def main() -> None:  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(app())
