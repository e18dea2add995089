"""Webhook delivery, one worker: signing, outcomes, retries, disabling, the attempt log.

Real HTTPS receivers on loopback with a throwaway CA; time moves only when a test says so."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import standardwebhooks
import svix.webhooks
import trustme
from sqlalchemy import select

from maintlink.config import Settings
from maintlink.domain.accounts import create_admin_key
from maintlink.domain.deliveries import resend
from maintlink.domain.endpoints import delete_endpoint, enable_endpoint, rotate_secret
from maintlink.store.tables import deliveries, events, webhook_endpoints
from maintlink.web.dashboard_queries import delivery_summary
from maintlink.webhooks import signing
from maintlink.webhooks.delivery import USER_AGENT, make_job, purge_expired
from maintlink.webhooks.schedule import next_delay, parse_retry_after, retry_delay
from tests.conftest import free_port
from tests.webhooks.receivers import (
    Reply,
    StoreFactory,
    attempt_rows,
    body_of,
    delivery_rows,
    emit_test,
    endpoint_row,
    new_endpoint,
    receiving,
    rows,
    store_factory,
)

SCHEDULE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def make_store(settings: Settings, ca_file: str) -> AsyncIterator[StoreFactory]:
    async with store_factory(settings, ca_file) as make:
        yield make


# --- schedule (no store) ----------------------------------------------------------------------


def test_next_delay_follows_the_schedule_with_jitter() -> None:
    rng = random.Random(1)
    for attempt, base in enumerate(SCHEDULE, start=1):
        for _ in range(50):
            delay = next_delay(attempt, SCHEDULE, 0.2, rng)
            assert delay is not None and base * 0.8 <= delay <= base * 1.2
    assert next_delay(len(SCHEDULE) + 1, SCHEDULE, 0.2, rng) is None
    assert next_delay(0, SCHEDULE, 0.2, rng) is None
    assert next_delay(2, SCHEDULE, 0.0) == 300.0


def test_parse_retry_after() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(hours=1), usegmt=True), now) == 3600
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now) == 0.0  # in the past
    for bad in (None, "", "soon", "-5", "1.5", "Wed, 99 Foo 2024"):
        assert parse_retry_after(bad, now) is None


def test_retry_after_only_lengthens_and_is_capped() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    common: dict[str, Any] = {"schedule": SCHEDULE, "jitter": 0.0, "max_retry_after": 600,
                              "now": now}
    assert retry_delay(1, status_code=429, retry_after="60", **common) == 60.0
    assert retry_delay(1, status_code=503, retry_after="1", **common) == 5.0  # schedule wins
    assert retry_delay(1, status_code=429, retry_after="99999", **common) == 600.0  # capped
    assert retry_delay(1, status_code=500, retry_after="60", **common) == 5.0  # not honoured
    assert retry_delay(8, status_code=429, retry_after="60", **common) is None  # exhausted


# --- success and signatures -------------------------------------------------------------------


async def test_success_is_signed_for_standardwebhooks_and_svix(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    s = await make_store()
    async with receiving(ca, Reply(200, b"\xffthanks")) as rx:
        ep, secret = await new_endpoint(s.rt, s.account_id, rx.url, headers={"X-Tenant": "t-1"})
        event_id = await emit_test(s.rt, s.account_id, ep, "ping")
        async with s.worker() as worker:
            assert await worker.run_once() == 1
            assert await worker.run_once() == 0
        [request] = rx.received

    h = {k.lower(): v for k, v in request.headers.items()}
    assert h["webhook-id"] == event_id
    assert h["webhook-timestamp"] == str(int(s.clock().timestamp()))
    assert h["webhook-signature"].startswith("v1,")
    assert h["maintlink-version"] == "v1"
    assert h["content-type"] == "application/json"
    assert h["user-agent"] == USER_AGENT
    assert h["x-tenant"] == "t-1"
    [delivery] = await delivery_rows(s.rt)
    assert request.body == delivery.body.encode()  # the stored bytes, exactly
    payload = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    assert payload["id"] == event_id and payload["type"] == "webhook.test"
    assert payload["data"] == {"endpoint_id": ep, "message": "ping"}
    svix.webhooks.Webhook(secret).verify(request.body, request.headers)

    assert delivery.status == "succeeded" and delivery.attempt_count == 1
    assert delivery.succeeded_at == s.clock() and delivery.next_attempt_at is None
    assert delivery.lease_owner is None and delivery.last_status_code == 200
    [attempt] = await attempt_rows(s.rt)
    assert (attempt.success, attempt.status_code, attempt.failure_kind) == (1, 200, None)
    assert attempt.response_body == "\ufffdthanks"  # undecodable bytes replaced, not dropped
    assert attempt.attempt_number == 1 and attempt.trigger == "scheduled"


async def test_secret_rotation_signs_with_both_secrets_during_the_overlap(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    s = await make_store()
    async with receiving(ca) as rx:
        ep, old = await new_endpoint(s.rt, s.account_id, rx.url)
        async with s.rt.engine.begin() as conn:
            _, new = await rotate_secret(conn, s.rt, s.account_id, ep,
                                         overlap=timedelta(seconds=60))
        async with s.worker() as worker:
            await emit_test(s.rt, s.account_id, ep)
            assert await worker.run_once() == 1
            s.clock.advance(61)  # the overlap is over (still within the receivers' 5 minutes)
            await emit_test(s.rt, s.account_id, ep)
            assert await worker.run_once() == 1
        during, after = rx.received

    signatures = during.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    for secret, signature in zip((new, old), signatures, strict=True):
        alone = {**during.headers, "webhook-signature": signature}
        standardwebhooks.Webhook(secret).verify(during.body, alone)
        other = old if secret == new else new
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(other).verify(during.body, alone)
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    standardwebhooks.Webhook(new).verify(after.body, after.headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(old).verify(after.body, after.headers)


async def test_claims_sign_for_their_second_and_later_requests_are_signed_again(
    make_store: StoreFactory, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim signs its deliveries for the claim's second; a request that leaves within it
    uses that signature, one that leaves later carries its own second, signed anew."""
    s = await make_store()
    signed_for: list[int] = []
    sign = signing.signature_header

    def counting(keys: Any, msg_id: str, timestamp: int, body: bytes) -> str:
        signed_for.append(timestamp)
        return sign(keys, msg_id, timestamp, body)

    monkeypatch.setattr(signing, "signature_header", counting)
    claimed_at = int(s.clock().timestamp())
    async with receiving(ca) as rx:
        ep, secret = await new_endpoint(s.rt, s.account_id, rx.url)
        async with s.worker() as worker:
            await emit_test(s.rt, s.account_id, ep, "within the second")
            assert await worker.run_once() == 1
            assert signed_for == [claimed_at]  # once, with the claim

            presign = worker._presign

            def claim_then_wait(jobs: Any, now: datetime) -> None:
                presign(jobs, now)
                s.clock.advance(2)  # the request leaves two seconds after the claim

            monkeypatch.setattr(worker, "_presign", claim_then_wait)
            await emit_test(s.rt, s.account_id, ep, "later")
            assert await worker.run_once() == 1
        first, later = rx.received

    assert signed_for == [claimed_at, claimed_at, claimed_at + 2]
    for request, timestamp in ((first, claimed_at), (later, claimed_at + 2)):
        h = {k.lower(): v for k, v in request.headers.items()}
        assert h["webhook-timestamp"] == str(timestamp)
        standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    _, attempt = await attempt_rows(s.rt)
    assert attempt.attempted_at == s.clock()  # the request's time, as its header says


# --- failures -----------------------------------------------------------------------------------


async def test_each_failure_kind_is_recorded(make_store: StoreFactory, ca: trustme.CA) -> None:
    # Short enough for the hanging receiver; long enough that, on a loaded machine, the
    # other requests' TLS handshakes finish inside it (0.5 s once failed that way in CI).
    s = await make_store(webhook_timeout_seconds=2)
    stranger = trustme.CA()  # a certificate our CA bundle does not vouch for
    async with (
        receiving(ca) as target,
        receiving(ca, Reply(500, b"boom")) as failing,
        receiving(ca, Reply(302, headers={"Location": "https://example.com/"})) as redirecting,
        receiving(ca, Reply(hang=True)) as hanging,
        receiving(stranger) as untrusted,
    ):
        redirecting.reply.headers["Location"] = target.url
        urls = {
            "HTTP_STATUS": failing.url,
            "REDIRECT": redirecting.url,
            "TIMEOUT": hanging.url,
            "CONNECTION_ERROR": f"https://127.0.0.1:{free_port()}/hook",
            "TLS_ERROR": untrusted.url,
        }
        endpoints = {}
        for kind, url in urls.items():
            endpoints[kind], _ = await new_endpoint(s.rt, s.account_id, url)
            await emit_test(s.rt, s.account_id, endpoints[kind])
        async with s.worker() as worker:
            assert await worker.run_once() == len(urls)
        assert target.received == []  # the redirect was not followed
        assert len(failing.received) == len(redirecting.received) == len(hanging.received) == 1

    for kind, ep in endpoints.items():
        [attempt] = await attempt_rows(s.rt, ep)
        assert attempt.success == 0
        assert attempt.failure_kind == kind, (kind, attempt.error)
        assert attempt.error
        [delivery] = await delivery_rows(s.rt, ep)
        assert delivery.status == "pending" and delivery.last_failure_kind == kind
        wait = (delivery.next_attempt_at - s.clock()).total_seconds()
        assert 4.0 <= wait <= 6.0
        assert (await endpoint_row(s.rt, ep)).failing_since == s.clock()
    by_kind = {a.failure_kind: a for a in await attempt_rows(s.rt)}
    assert by_kind["HTTP_STATUS"].status_code == 500
    assert by_kind["HTTP_STATUS"].response_body == "boom"
    assert by_kind["REDIRECT"].status_code == 302
    assert target.url in by_kind["REDIRECT"].error
    assert by_kind["TIMEOUT"].status_code is None


async def test_an_answer_whose_body_stalls_ends_at_the_time_limit(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    """The time limit covers reading the answer too: the status line decides the outcome."""
    s = await make_store(webhook_timeout_seconds=1)
    async with receiving(ca, Reply(stall_body=True)) as rx:
        ep, _ = await new_endpoint(s.rt, s.account_id, rx.url)
        await emit_test(s.rt, s.account_id, ep)
        async with s.worker() as worker, asyncio.timeout(15):
            assert await worker.run_once() == 1  # while the receiver still holds the body back
    [attempt] = await attempt_rows(s.rt, ep)
    assert attempt.success == 1 and attempt.status_code == 200
    assert attempt.error == "reading the answer failed: no complete answer within the timeout"
    assert 1000 <= attempt.duration_ms < 5000


async def test_private_addresses_are_refused_when_not_allowed(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    setup = await make_store()  # the endpoints were saved while loopback was allowed
    strict = await make_store(webhook_allowed_networks="")
    async with receiving(ca) as rx:
        port = rx.url.split(":")[2].split("/")[0]
        literal, _ = await new_endpoint(setup.rt, setup.account_id, rx.url)
        named, _ = await new_endpoint(setup.rt, setup.account_id,
                                      f"https://localhost:{port}/hook")
        for ep in (literal, named):
            await emit_test(setup.rt, setup.account_id, ep)
        async with strict.worker() as worker:
            assert await worker.run_once() == 2
        assert rx.received == []
    for ep in (literal, named):
        [attempt] = await attempt_rows(strict.rt, ep)
        assert attempt.failure_kind == "FORBIDDEN_ADDRESS", attempt.error
        assert "127.0.0.1" in attempt.error


async def test_plain_http_is_refused_unless_allowed(make_store: StoreFactory) -> None:
    lax = await make_store(webhook_allow_http=True)
    strict = await make_store()
    ep, _ = await new_endpoint(lax.rt, lax.account_id, f"http://127.0.0.1:{free_port()}/hook")
    await emit_test(lax.rt, lax.account_id, ep)
    async with strict.worker() as worker:
        assert await worker.run_once() == 1
    [attempt] = await attempt_rows(strict.rt, ep)
    assert attempt.failure_kind == "INVALID_URL" and "http://" in attempt.error


# --- retries ------------------------------------------------------------------------------------


async def test_retry_schedule_then_failed_after_eight_attempts(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    s = await make_store()
    first_try = s.clock()
    async with receiving(ca, Reply(500)) as rx:
        ep, _ = await new_endpoint(s.rt, s.account_id, rx.url)
        event_id = await emit_test(s.rt, s.account_id, ep)
        async with s.worker() as worker:
            for number, step in enumerate(SCHEDULE, start=1):
                assert await worker.run_once() == 1
                [d] = await delivery_rows(s.rt)
                assert (d.status, d.attempt_count) == ("pending", number)
                wait = (d.next_attempt_at - s.clock()).total_seconds()
                assert step * 0.8 <= wait <= step * 1.2, (number, wait)
                s.clock.advance(wait - 1)
                assert await worker.run_once() == 0  # not due yet
                s.clock.set(d.next_attempt_at)
            assert await worker.run_once() == 1  # the eighth and last
            s.clock.advance(10 * 86400)
            assert await worker.run_once() == 0
        assert len(rx.received) == 8
        assert {r.headers["webhook-id"] for r in rx.received} == {event_id}

    [d] = await delivery_rows(s.rt)
    assert (d.status, d.attempt_count, d.next_attempt_at) == ("failed", 8, None)
    tries = await attempt_rows(s.rt)
    assert [a.attempt_number for a in tries] == list(range(1, 9))
    assert all(a.failure_kind == "HTTP_STATUS" and a.status_code == 500 for a in tries)
    assert [a.next_attempt_at is None for a in tries] == [False] * 7 + [True]
    for earlier, later in itertools.pairwise(tries):
        assert earlier.next_attempt_at == later.attempted_at
    endpoint = await endpoint_row(s.rt, ep)
    assert endpoint.status == "enabled" and endpoint.failing_since == first_try  # 27.6 h < 5 d


async def test_retry_after_is_honoured_within_bounds(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    s = await make_store(webhook_max_retry_after_seconds=86400)
    soon_date = format_datetime(s.clock() + timedelta(hours=2), usegmt=True)
    cases = {  # reply -> expected wait (None: the schedule's 5 s +- 20 %)
        "seconds": (Reply(429, headers={"Retry-After": "3600"}), 3600.0),
        "date": (Reply(503, headers={"Retry-After": soon_date}), 7200.0),
        "shorter": (Reply(429, headers={"Retry-After": "1"}), None),
        "capped": (Reply(429, headers={"Retry-After": "999999"}), 86400.0),
        "ignored": (Reply(500, headers={"Retry-After": "3600"}), None),
    }
    endpoints = {}
    async with (
        receiving(ca, cases["seconds"][0]) as a, receiving(ca, cases["date"][0]) as b,
        receiving(ca, cases["shorter"][0]) as c, receiving(ca, cases["capped"][0]) as d,
        receiving(ca, cases["ignored"][0]) as e,
    ):
        for name, rx in zip(cases, (a, b, c, d, e), strict=True):
            endpoints[name], _ = await new_endpoint(s.rt, s.account_id, rx.url)
            await emit_test(s.rt, s.account_id, endpoints[name])
        async with s.worker() as worker:
            assert await worker.run_once() == 5
    for name, (_, expected) in cases.items():
        [delivery] = await delivery_rows(s.rt, endpoints[name])
        wait = (delivery.next_attempt_at - s.clock()).total_seconds()
        if expected is None:
            assert 4.0 <= wait <= 6.0, name
        else:
            assert wait == expected, name


# --- disabling ------------------------------------------------------------------------------------


async def test_410_gone_disables_the_endpoint_and_tells_the_others(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    s = await make_store()
    start = s.clock()
    async with receiving(ca, Reply(410)) as gone, receiving(ca) as watcher:
        ep, _ = await new_endpoint(s.rt, s.account_id, gone.url)
        ep_watch, _ = await new_endpoint(s.rt, s.account_id, watcher.url,
                                         event_types=["webhook_endpoint.disabled"])
        await emit_test(s.rt, s.account_id, ep)
        s.clock.advance(60)
        await emit_test(s.rt, s.account_id, ep)  # not due yet when the 410 comes
        s.clock.set(start)
        async with s.worker() as worker:
            assert await worker.run_once() == 1
            assert await worker.run_once() == 1  # the notice to the other endpoint
            assert await worker.run_once() == 0
        assert len(gone.received) == 1
        [notice] = watcher.received

    endpoint = await endpoint_row(s.rt, ep)
    assert (endpoint.status, endpoint.disabled_reason) == ("disabled", "410 Gone")
    assert [d.status for d in await delivery_rows(s.rt, ep)] == ["failed", "failed"]
    [attempt] = await attempt_rows(s.rt, ep)
    assert (attempt.status_code, attempt.failure_kind) == (410, "HTTP_STATUS")
    payload = body_of(notice)
    assert payload["type"] == "webhook_endpoint.disabled"
    assert payload["data"]["endpoint_id"] == ep and payload["data"]["reason"] == "410 Gone"
    assert [d.status for d in await delivery_rows(s.rt, ep_watch)] == ["succeeded"]


async def test_continuous_failure_disables_then_reenable_delivers(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    s = await make_store()
    async with receiving(ca, Reply(500)) as rx, receiving(ca) as watcher:
        ep, _ = await new_endpoint(s.rt, s.account_id, rx.url)
        await new_endpoint(s.rt, s.account_id, watcher.url,
                           event_types=["webhook_endpoint.disabled"])
        async with s.worker() as worker:
            await emit_test(s.rt, s.account_id, ep, "first")
            assert await worker.run_once() == 1
            since = s.clock()
            s.clock.advance(119 * 3600)  # failing, but not for long enough yet
            await emit_test(s.rt, s.account_id, ep, "second")
            assert await worker.run_once() == 2
            assert (await endpoint_row(s.rt, ep)).status == "enabled"
            s.clock.advance(2 * 3600)  # 121 h of nothing but failures
            await emit_test(s.rt, s.account_id, ep, "third")
            assert await worker.run_once() == 3  # both retries, and the third
            endpoint = await endpoint_row(s.rt, ep)
            assert endpoint.status == "disabled"
            assert endpoint.disabled_reason.startswith("failing continuously since ")
            assert since.isoformat()[:19] in endpoint.disabled_reason
            assert {d.status for d in await delivery_rows(s.rt, ep)} == {"failed"}
            assert await worker.run_once() == 1  # the notice
            [notice] = watcher.received
            assert body_of(notice)["data"]["endpoint_id"] == ep

            await emit_test(s.rt, s.account_id, ep, "while disabled")  # no delivery made
            async with s.rt.engine.begin() as conn:
                await enable_endpoint(conn, s.rt, s.account_id, ep)
            rx.reply = Reply(200)
            await emit_test(s.rt, s.account_id, ep, "back")
            assert await worker.run_once() == 1
        assert body_of(rx.received[-1])["data"]["message"] == "back"
    endpoint = await endpoint_row(s.rt, ep)
    assert endpoint.status == "enabled" and endpoint.failing_since is None


async def test_a_success_ends_a_failing_streak(make_store: StoreFactory, ca: trustme.CA) -> None:
    s = await make_store()
    async with receiving(ca, Reply(500)) as rx:
        ep, _ = await new_endpoint(s.rt, s.account_id, rx.url)
        async with s.worker() as worker:
            await emit_test(s.rt, s.account_id, ep)
            await worker.run_once()
            assert (await endpoint_row(s.rt, ep)).failing_since == s.clock()
            s.clock.advance(3600)
            rx.reply = Reply(204, b"")
            await worker.run_once()  # the retry succeeds
            assert (await endpoint_row(s.rt, ep)).failing_since is None
            s.clock.advance(200 * 3600)
            rx.reply = Reply(500)
            await emit_test(s.rt, s.account_id, ep)
            await worker.run_once()
    endpoint = await endpoint_row(s.rt, ep)
    assert endpoint.status == "enabled" and endpoint.failing_since == s.clock()


# --- the attempt log and leases ------------------------------------------------------------------


async def test_attempt_log_keeps_status_and_a_capped_body(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    s = await make_store()
    long_body = b"0123456789abcdef" * 1024  # 16 KiB
    async with receiving(ca, Reply(503, long_body, delay=0.05)) as rx:
        ep, _ = await new_endpoint(s.rt, s.account_id, rx.url)
        await emit_test(s.rt, s.account_id, ep)
        async with s.worker() as worker:
            assert await worker.run_once() == 1
    [attempt] = await attempt_rows(s.rt)
    [delivery] = await delivery_rows(s.rt)
    assert attempt.status_code == 503 and attempt.success == 0
    assert attempt.failure_kind == "HTTP_STATUS" and attempt.error == "HTTP 503"
    assert attempt.response_body == long_body[:4096].decode()
    assert attempt.attempted_at == s.clock() and attempt.duration_ms >= 50
    assert attempt.next_attempt_at == delivery.next_attempt_at
    assert (attempt.delivery_id, attempt.endpoint_id, attempt.event_id) == (
        delivery.id, ep, delivery.event_id)
    assert attempt.account_id == s.account_id


async def test_an_answer_with_nul_bytes_is_recorded(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    """PostgreSQL text cannot hold NUL: the logged answer shows U+FFFD in its place, and the
    attempt (and every other in its batch) is recorded instead of failing forever."""
    s = await make_store()
    async with (
        receiving(ca, Reply(200, b"ok\x00done")) as good,
        receiving(ca, Reply(500, b"\x00bad")) as bad,
    ):
        ok_ep, _ = await new_endpoint(s.rt, s.account_id, good.url)
        bad_ep, _ = await new_endpoint(s.rt, s.account_id, bad.url)
        for ep in (ok_ep, ok_ep, bad_ep):
            await emit_test(s.rt, s.account_id, ep)
        async with s.worker() as worker:
            assert await worker.run_once() == 3
        assert worker.attempted == 3
    assert [a.response_body for a in await attempt_rows(s.rt, ok_ep)] == ["ok\ufffddone"] * 2
    [failed] = await attempt_rows(s.rt, bad_ep)
    assert failed.response_body == "\ufffdbad" and failed.failure_kind == "HTTP_STATUS"
    assert {d.status for d in await delivery_rows(s.rt, ok_ep)} == {"succeeded"}


async def test_a_lost_lease_records_nothing(make_store: StoreFactory, ca: trustme.CA) -> None:
    """A worker whose lease was taken over must not write its outcome."""
    s = await make_store()
    async with receiving(ca) as rx:
        ep, _ = await new_endpoint(s.rt, s.account_id, rx.url)
        await emit_test(s.rt, s.account_id, ep)
        async with s.worker(worker_id="slow") as slow, s.worker(worker_id="fast") as fast:
            [job] = await slow._claim(10)
            s.clock.advance(s.rt.settings.webhook_lease_seconds + 1)
            assert await fast.run_once() == 1  # the lease ran out: taken over, delivered
            s.clock.advance(1)
            await slow._deliver(job)  # the first worker finally gets round to it ...
            assert len(rx.received) == 1  # ... and sees the lease is gone before sending
            job.lease_expires_at = s.clock() + timedelta(days=1)  # it believes its lease holds
            await slow._deliver(job)  # sends (at least once) but must not record it
        assert len(rx.received) == 2
        [delivery] = await delivery_rows(s.rt)
        assert delivery.status == "succeeded" and delivery.attempt_count == 1
        assert len(await attempt_rows(s.rt)) == 1
        assert (slow.attempted, fast.attempted) == (0, 1)


async def test_only_enabled_endpoints_are_claimed(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    s = await make_store()
    async with receiving(ca) as rx:
        ep, _ = await new_endpoint(s.rt, s.account_id, rx.url)
        await emit_test(s.rt, s.account_id, ep)
        async with s.rt.engine.begin() as conn:
            await conn.execute(webhook_endpoints.update().values(status="disabled"))
        async with s.worker() as worker:
            assert await worker.run_once() == 0
        assert rx.received == []


# --- retention ------------------------------------------------------------------------------------


async def test_purge_removes_expired_events_and_attempts(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    s = await make_store(event_retention_days=30)
    now = s.clock()
    async with receiving(ca) as rx:
        ep, _ = await new_endpoint(s.rt, s.account_id, rx.url)
        async with s.worker() as worker:
            s.clock.set(now - timedelta(days=40))
            old = await emit_test(s.rt, s.account_id, ep, "old")
            assert await worker.run_once() == 1
            s.clock.set(now - timedelta(days=2))
            async with s.rt.engine.begin() as conn:  # an old event sent again, recently
                await resend(conn, s.account_id, old, ep, now=s.clock())
            assert await worker.run_once() == 1
            s.clock.set(now - timedelta(days=1))
            recent = await emit_test(s.rt, s.account_id, ep, "recent")
            assert await worker.run_once() == 1
        s.clock.set(now - timedelta(days=35))
        rx.reply = Reply(500)
        stuck = await emit_test(s.rt, s.account_id, ep, "old but still pending")
        s.clock.set(now)

    # The old event, its old attempt, and its recent one: an event's attempts go with it.
    assert await purge_expired(s.rt) == 3
    left = {r.id for r in await rows(s.rt, select(events.c.id))}
    assert left == {recent, stuck}
    assert old not in {d.event_id for d in await delivery_rows(s.rt)}
    assert [a.event_id for a in await attempt_rows(s.rt)] == [recent]
    job = make_job(s.rt)  # the same purge, as a periodic job for `maintlink worker`
    assert job.name == "purge-webhook-events" and job.interval == 3600
    await job.run()
    assert await purge_expired(s.rt) == 0
    pending = await rows(s.rt, select(deliveries.c.status).where(deliveries.c.event_id == stuck))
    assert pending[0][0] == "pending"


async def test_deleting_an_endpoint_deletes_its_deliveries_and_attempts(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    s = await make_store()
    async with receiving(ca) as rx:
        gone, _ = await new_endpoint(s.rt, s.account_id, rx.url)
        kept, _ = await new_endpoint(s.rt, s.account_id, rx.url)
        await emit_test(s.rt, s.account_id, None)  # one delivery to each endpoint
        async with s.worker() as worker:
            assert await worker.run_once() == 2
        await emit_test(s.rt, s.account_id, gone, "not sent yet")
    async with s.rt.engine.begin() as conn:
        await delete_endpoint(conn, s.account_id, gone)
    assert {d.endpoint_id for d in await delivery_rows(s.rt)} == {kept}
    assert [a.endpoint_id for a in await attempt_rows(s.rt)] == [kept]


async def test_the_dashboards_queue_counts_pending_and_leased_deliveries(
    make_store: StoreFactory,
) -> None:
    """Pending and leased deliveries of the account count; no other status or account."""
    s = await make_store()
    async with s.rt.engine.begin() as conn:
        other, _, _ = await create_admin_key(conn, "other")
    ep, _ = await new_endpoint(s.rt, s.account_id, "https://127.0.0.1:9/hook")
    theirs, _ = await new_endpoint(s.rt, other, "https://127.0.0.1:9/hook")
    start = s.clock()
    made = []
    for minutes, status in ((1, "succeeded"), (2, "delivering"), (3, "pending"), (4, "failed")):
        s.clock.set(start + timedelta(minutes=minutes))
        event = await emit_test(s.rt, s.account_id, ep, status)
        async with s.rt.engine.begin() as conn:
            await conn.execute(deliveries.update().where(deliveries.c.event_id == event)
                               .values(status=status))
        made.append(event)
    s.clock.set(start)
    await emit_test(s.rt, other, theirs)  # another account's, older, pending
    async with s.rt.engine.connect() as conn:
        summary = await delivery_summary(conn, s.account_id, start + timedelta(minutes=5))
    assert summary.in_flight == 2
    assert summary.oldest_pending == start + timedelta(minutes=2)


async def test_an_unsignable_delivery_is_an_internal_error(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    """A secret that cannot be decrypted (a lost key) is logged and retried, never sent."""
    s = await make_store()
    async with receiving(ca) as rx:
        ep, _ = await new_endpoint(s.rt, s.account_id, rx.url)
        await emit_test(s.rt, s.account_id, ep)
        async with s.rt.engine.begin() as conn:
            await conn.execute(webhook_endpoints.update().values(secret_encrypted="garbage"))
        async with s.worker() as worker:
            assert await worker.run_once() == 1
        assert rx.received == []
    [attempt] = await attempt_rows(s.rt)
    assert attempt.failure_kind == "INTERNAL_ERROR" and "garbage" not in attempt.error
    [delivery] = await delivery_rows(s.rt)
    assert delivery.status == "pending"
