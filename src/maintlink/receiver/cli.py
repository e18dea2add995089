"""Command-line receiver: ``maintlink receive`` runs the endpoint, ``maintlink consume`` drains it.

    maintlink receive --secret whsec_... --queue events.sqlite3 --port 9000
    maintlink consume --queue events.sqlite3            # JSON lines, acknowledged once printed
    maintlink consume --queue events.sqlite3 --no-ack   # look without taking

Both are plain functions carrying typer annotations, so the main ``maintlink`` command registers
them with ``app.command("receive")(receive)``; ``app`` below runs them on their own.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from maintlink.receiver.verify import DEFAULT_TOLERANCE

__all__ = ["app", "consume", "receive"]

SECRET_ENV = "MAINTLINK_RECEIVER_SECRET"
QUEUE_ENV = "MAINTLINK_RECEIVER_QUEUE"
DEFAULT_QUEUE = Path("maintlink-events.sqlite3")

err = Console(stderr=True)

QueueOpt = Annotated[
    Path,
    typer.Option("--queue", envvar=QUEUE_ENV, help="The queue file (SQLite; created if needed)."),
]
ReadQueueOpt = Annotated[
    Path,
    typer.Option("--queue", envvar=QUEUE_ENV, help="The queue file `maintlink receive` writes."),
]
GapOpt = Annotated[
    float,
    typer.Option(help="Seconds an event waits for a missing earlier sequence of its connection."),
]


def receive(
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            help=f"Webhook signing secret (whsec_...). Repeat it during a rotation. "
            f"Default: ${SECRET_ENV}, comma-separated.",
            show_default=False,
        ),
    ] = None,
    queue: QueueOpt = DEFAULT_QUEUE,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9000,
    path: Annotated[str, typer.Option(help="URL path of the webhook endpoint.")] = "/webhooks",
    tolerance: Annotated[
        int, typer.Option(help="Seconds a webhook timestamp may be off.")
    ] = DEFAULT_TOLERANCE,
    ssl_certfile: Annotated[Path | None, typer.Option(help="Serve HTTPS with this cert.")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="The certificate's key.")] = None,
) -> None:
    """Receive maintlink webhooks: verify each, store it in a durable local queue, answer 200.

    Read the events with `maintlink consume` or `maintlink.receiver.iterate`.
    """
    import uvicorn

    from maintlink.receiver.app import create_receiver_app
    from maintlink.receiver.queue import EventQueue
    from maintlink.webhooks.signing import decode_secret

    secrets = parse_secrets(secret, os.environ.get(SECRET_ENV))
    if not secrets:
        err.print(f"[red]No webhook secret:[/red] pass --secret whsec_... or set {SECRET_ENV}.")
        raise typer.Exit(2)
    if (ssl_certfile is None) != (ssl_keyfile is None):
        err.print("[red]--ssl-certfile and --ssl-keyfile go together.[/red]")
        raise typer.Exit(2)
    try:
        for item in secrets:
            decode_secret(item)  # before creating a queue file for nothing
        if not path.startswith("/"):
            raise ValueError("--path must start with '/'")
    except ValueError as exc:
        err.print(f"[red]Invalid setting:[/red] {exc}")
        raise typer.Exit(2) from exc
    with EventQueue(queue) as events:
        app = create_receiver_app(secrets, events, path=path, tolerance=tolerance)
        scheme = "https" if ssl_certfile else "http"
        shown = f"[{host}]" if ":" in host else host  # IPv6 literal
        url = escape(f"{scheme}://{shown}:{port}{path}")
        err.print(
            f"Receiving maintlink webhooks at [bold]{url}[/bold] "
            f"({len(secrets)} secret{'s' if len(secrets) > 1 else ''}), "
            f"queue [bold]{escape(str(queue))}[/bold] ({events.stats()['pending']} pending).",
            soft_wrap=True,  # one line, so the URL can be copied
        )
        uvicorn.run(
            app, host=host, port=port, log_level="info", server_header=False,
            ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
            ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        )


def consume(
    queue: ReadQueueOpt = DEFAULT_QUEUE,
    ack: Annotated[
        bool, typer.Option("--ack/--no-ack", help="Acknowledge events once printed.")
    ] = True,
    limit: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    follow: Annotated[bool, typer.Option(help="Keep waiting for new events (with --ack).")] = False,
    gap_timeout: GapOpt = 60.0,
) -> None:
    """Print received events as JSON lines, in order (per connection by sequence).

    With --ack (the default) each event is acknowledged right after its line is written, so
    piping into a program that fails re-delivers at most the one event in flight. With --no-ack
    every pending event is listed and nothing changes.
    """
    from maintlink.receiver.queue import EventQueue

    if not queue.exists():
        err.print(f"[red]No queue at {queue}.[/red] Start `maintlink receive --queue {queue}`.")
        raise typer.Exit(1)
    printed = 0
    with EventQueue(queue, gap_timeout=gap_timeout) as events:
        if not ack:
            for event in events.pending(limit):
                _write_line(event.payload)
                printed += 1
        else:
            try:
                while limit is None or printed < limit:
                    event = events.next()
                    if event is None:
                        if not follow:
                            break
                        time.sleep(0.5)
                        continue
                    try:
                        _write_line(event.payload)
                    except BaseException:
                        events.nack(event.id)  # not shown, so not taken
                        raise
                    events.ack(event.id)
                    printed += 1
            except (KeyboardInterrupt, BrokenPipeError):
                pass  # the reader went away: what it did not get stays queued
        stats = events.stats()
    waiting = stats["pending"] - (0 if ack else printed)
    note = f"; {waiting} still pending (in flight, or waiting for a gap)" if waiting > 0 else ""
    err.print(f"{printed} event{'' if printed == 1 else 's'}{note}.")


def parse_secrets(given: list[str] | None, env_value: str | None) -> list[str]:
    """Secrets from repeated --secret options (each may hold several, comma-separated), else
    from the environment variable."""
    raw = list(given or []) or ([env_value] if env_value else [])
    return [part for item in raw for part in re.split(r"[,\s]+", item) if part]


def _write_line(payload: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(payload, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()  # written before acknowledged


app = typer.Typer(help="Receive maintlink webhooks into a local queue.", no_args_is_help=True,
                  add_completion=False)
app.command("receive")(receive)
app.command("consume")(consume)

if __name__ == "__main__":  # pragma: no cover
    app()
