"""The receiving side: every way a webhook can be refused, and the ways it must be accepted."""

from __future__ import annotations

import base64
import hmac
import subprocess
import sys

import pytest

import maintlink.receiver as receiver
from maintlink.receiver import (
    InvalidPayloadError,
    InvalidSecretError,
    InvalidSignatureError,
    InvalidTimestampError,
    MissingHeaderError,
    TimestampTooNewError,
    TimestampTooOldError,
    WebhookVerificationError,
    verify,
)
from maintlink.webhooks.signing import build_headers, decode_secret, generate_secret, sign

NOW = 1_700_000_000
BODY = (
    b'{"id":"evt_1","type":"connection.reauth_required","sequence":12,'
    b'"big":123456789012345678901234567890}'
)
SECRET = generate_secret()
OTHER = generate_secret()


def headers_for(body: bytes = BODY, *secrets: str, timestamp: int = NOW) -> dict[str, str]:
    keys = [decode_secret(s) for s in (secrets or (SECRET,))]
    return build_headers(keys, "evt_1", timestamp, body)


def test_returns_the_parsed_payload_exactly() -> None:
    event = verify(BODY, headers_for(), SECRET, now=NOW)
    assert event["type"] == "connection.reauth_required"
    assert event["big"] == 123456789012345678901234567890  # no float rounding


def test_accepts_text_bodies_and_case_insensitive_headers() -> None:
    headers = {k.title(): v for k, v in headers_for().items()}  # Webhook-Id ...
    assert "Webhook-Id" in headers
    assert verify(BODY.decode(), headers, SECRET, now=NOW)["sequence"] == 12


def test_accepts_svix_header_names() -> None:
    headers = {k.replace("webhook-", "Svix-"): v for k, v in headers_for().items()}
    assert verify(BODY, headers, SECRET, now=NOW)["id"] == "evt_1"


def test_rotation_either_secret_and_a_list_of_secrets() -> None:
    headers = headers_for(BODY, OTHER, SECRET)
    assert verify(BODY, headers, SECRET, now=NOW)
    assert verify(BODY, headers, OTHER, now=NOW)
    # The receiver side of a rotation: old and new secrets configured at once.
    single = headers_for(BODY, OTHER)
    assert verify(BODY, single, [SECRET, OTHER], now=NOW)
    assert verify(BODY, single, (OTHER,), now=NOW)


def test_unknown_versions_and_garbage_tokens_are_ignored() -> None:
    good = headers_for()["webhook-signature"]
    digest = good.split(",", 1)[1]
    header = f"v1a,{digest} v2,{digest} v1 v1, v1,!!notbase64!! junk   {good}"
    assert verify(BODY, {**headers_for(), "webhook-signature": header}, SECRET, now=NOW)


def test_signature_without_any_v1_is_refused() -> None:
    digest = headers_for()["webhook-signature"].split(",", 1)[1]
    with pytest.raises(InvalidSignatureError, match="no v1"):
        verify(BODY, {**headers_for(), "webhook-signature": f"v1a,{digest}"}, SECRET, now=NOW)


def test_every_candidate_is_compared_in_constant_time_with_every_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    three = " ".join([headers_for(BODY, OTHER)["webhook-signature"]] * 2)
    headers = {
        **headers_for(),
        "webhook-signature": three + " " + headers_for()["webhook-signature"],
    }
    verify(BODY, headers, [SECRET, OTHER], now=NOW)
    assert len(calls) == 3 * 2  # no early exit once a match is found


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_or_empty_header(missing: str) -> None:
    headers = headers_for()
    del headers[missing]
    with pytest.raises(MissingHeaderError) as info:
        verify(BODY, headers, SECRET, now=NOW)
    assert info.value.header == missing
    with pytest.raises(MissingHeaderError):
        verify(BODY, {**headers_for(), missing: "  "}, SECRET, now=NOW)


FULL_WIDTH_1700 = "\uff11\uff17\uff10\uff10"  # str.isdigit() says yes; it is not a timestamp


@pytest.mark.parametrize(
    "timestamp",
    ["abc", "1.7e9", "1700000000.5", "-1700000000", FULL_WIDTH_1700, "0x6553f100", "9" * 40],
)
def test_unparseable_timestamp(timestamp: str) -> None:
    with pytest.raises(InvalidTimestampError):
        verify(BODY, {**headers_for(), "webhook-timestamp": timestamp}, SECRET, now=NOW)


def test_timestamp_tolerance_both_ways() -> None:
    assert verify(BODY, headers_for(timestamp=NOW - 300), SECRET, now=NOW)
    assert verify(BODY, headers_for(timestamp=NOW + 300), SECRET, now=NOW)
    with pytest.raises(TimestampTooOldError, match="301 s old"):
        verify(BODY, headers_for(timestamp=NOW - 301), SECRET, now=NOW)
    with pytest.raises(TimestampTooNewError, match="in the future"):
        verify(BODY, headers_for(timestamp=NOW + 301), SECRET, now=NOW)
    assert verify(BODY, headers_for(timestamp=NOW - 3000), SECRET, 3600, now=NOW)
    with pytest.raises(TimestampTooOldError):
        verify(BODY, headers_for(timestamp=NOW - 11), SECRET, tolerance=10, now=NOW)
    with pytest.raises(ValueError, match="tolerance"):
        verify(BODY, headers_for(), SECRET, tolerance=-1, now=NOW)


def test_uses_the_clock_when_now_is_not_given() -> None:
    with pytest.raises(TimestampTooOldError):
        verify(BODY, headers_for(timestamp=NOW), SECRET)  # NOW is in 2023
    assert verify(BODY, build_headers([decode_secret(SECRET)], "e", None, BODY), SECRET)


def test_the_timestamp_is_signed_as_sent() -> None:
    # "0170..." and "170..." are the same number but different signed text.
    headers = headers_for()
    with pytest.raises(InvalidSignatureError):
        verify(BODY, {**headers, "webhook-timestamp": "0" + str(NOW)}, SECRET, now=NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b + b" "),
        lambda h, b: (h, b.replace(b"12", b"13")),
        lambda h, b: ({**h, "webhook-id": "evt_2"}, b),
        lambda h, b: (h | {"webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}, b),
        lambda h, b: (h | {"webhook-signature": h["webhook-signature"][:-4] + "AAA="}, b),
    ],
)
def test_tampered_requests_are_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    headers, body = tamper(headers_for(), BODY)
    with pytest.raises(InvalidSignatureError):
        verify(body, headers, SECRET, now=NOW)


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(InvalidSignatureError, match="no signature matched"):
        verify(BODY, headers_for(), OTHER, now=NOW)


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_!!!!", "whsec_AAAA", [], ["whsec_%%%"]])
def test_malformed_secret(secret: str | list[str]) -> None:
    with pytest.raises(InvalidSecretError) as info:
        verify(BODY, headers_for(), secret, now=NOW)
    assert isinstance(info.value, ValueError)  # a set-up error, also catchable as such


def test_secret_is_checked_before_the_request() -> None:
    # A misconfigured receiver must learn so even from a request without headers.
    with pytest.raises(InvalidSecretError):
        verify(BODY, {}, "whsec_!!", now=NOW)


def test_secret_without_prefix_is_accepted() -> None:
    assert verify(BODY, headers_for(), SECRET.removeprefix("whsec_"), now=NOW)


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b'"text"', b"null", b"{not json", b"\xff\xfe{}", b'{"a": NaN}', b""]
)
def test_signed_body_that_is_not_a_json_object(body: bytes) -> None:
    key = decode_secret(SECRET)
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(NOW),
        "webhook-signature": sign(key, "evt_1", NOW, body),
    }
    with pytest.raises(InvalidPayloadError):
        verify(body, headers, SECRET, now=NOW)


def test_text_body_that_cannot_be_utf8() -> None:
    with pytest.raises(InvalidPayloadError):
        verify("\ud800", headers_for(), SECRET, now=NOW)


def test_all_errors_share_one_base_and_are_exported() -> None:
    for error in (
        MissingHeaderError,
        InvalidTimestampError,
        TimestampTooOldError,
        TimestampTooNewError,
        InvalidSignatureError,
        InvalidSecretError,
        InvalidPayloadError,
    ):
        assert issubclass(error, WebhookVerificationError)
        assert error.__name__ in receiver.__all__


def test_importing_the_receiver_stays_light() -> None:
    code = (
        "import sys, maintlink.receiver; "
        "heavy = {'aiohttp', 'sqlalchemy', 'fastapi', 'httpx', 'orjson'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
