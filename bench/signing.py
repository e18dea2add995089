"""Sign + verify throughput: maintlink against the `standardwebhooks` package.

    python bench/signing.py [--seconds 0.2] [--repeat 10]

One operation = sign a 1 KiB JSON webhook (headers included) and verify it, JSON parse included,
with one secret. Both sides get the same secret, ids, timestamps and body. Best of ``--repeat``
runs per side is reported, the runs alternating between the sides, to shave off noise from
other processes and from the machine's own changes of speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import standardwebhooks.webhooks

from maintlink.receiver import verify
from maintlink.webhooks.signing import build_headers, decode_secret, generate_secret


def make_body(size: int = 1024) -> bytes:
    data: dict[str, object] = {
        "model": "work_orders",
        "added": 12,
        "updated": 3,
        "deleted": 0,
        "note": "",
    }
    event = {
        "id": "evt_01HZX3V8Q4",
        "type": "sync.completed",
        "timestamp": "2024-05-01T12:00:00Z",
        "api_version": "v1",
        "connection_id": "con_01HZX3V8Q4",
        "customer_id": "cus_42",
        "sequence": 1234,
        "data": data,
    }
    body = json.dumps(event, separators=(",", ":")).encode()
    data["note"] = "x" * (size - len(body))  # pad to exactly `size` bytes
    body = json.dumps(event, separators=(",", ":")).encode()
    assert len(body) == size
    return body


def ours(secret: str, body: bytes, timestamp: int) -> Callable[[str], object]:
    keys = [decode_secret(secret)]

    def op(msg_id: str) -> object:
        headers = build_headers(keys, msg_id, timestamp, body)
        return verify(body, headers, secret, now=timestamp)

    return op


def theirs(secret: str, body: bytes, timestamp: int) -> Callable[[str], object]:
    webhook = standardwebhooks.webhooks.Webhook(secret)
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    text = body.decode()

    def op(msg_id: str) -> object:
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": webhook.sign(msg_id, when, text),
        }
        return webhook.verify(body, headers)  # checks against the real clock

    return op


def _one_run(op: Callable[[str], object], ids: list[str], seconds: float) -> float:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for msg_id in ids:
            op(msg_id)
        count += len(ids)
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def best_alternating(
    ops: dict[str, Callable[[str], object]], seconds: float, repeat: int
) -> dict[str, float]:
    """Ops per second of each, best of ``repeat`` runs of ``seconds``. The runs alternate
    between the sides, so that a slow patch of the machine falls on both rather than on
    whichever happened to run then."""
    ids = [f"msg_{i:08d}" for i in range(1000)]
    for op in ops.values():
        for msg_id in ids[:200]:  # warm caches
            op(msg_id)
    best = dict.fromkeys(ops, 0.0)
    for _ in range(repeat):
        for name, op in ops.items():
            best[name] = max(best[name], _one_run(op, ids, seconds))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="length of one run")
    parser.add_argument("--repeat", type=int, default=10, help="runs per side; the best counts")
    args = parser.parse_args()

    secret = generate_secret()
    body = make_body(1024)
    timestamp = int(time.time())
    # Both produce and accept the same wire format: check before timing anything.
    assert ours(secret, body, timestamp)("msg_check") == theirs(secret, body, timestamp)(
        "msg_check"
    )

    results = best_alternating(
        {
            "maintlink": ours(secret, body, timestamp),
            "standardwebhooks": theirs(secret, body, timestamp),
        },
        args.seconds,
        args.repeat,
    )
    print(f"sign + verify, 1 KiB JSON body, one secret (Python {sys.version.split()[0]})")
    for name, rate in results.items():
        print(f"  {name:<17} {rate:>10,.0f} ops/s   {1e6 / rate:6.2f} us/op")
    ratio = results["maintlink"] / results["standardwebhooks"]
    print(f"  ratio maintlink / standardwebhooks: {ratio:.2f}x")


if __name__ == "__main__":
    main()
