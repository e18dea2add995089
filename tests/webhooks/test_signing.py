"""Signing: the Standard Webhooks wire format, checked against the official libraries."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks.webhooks
import svix.webhooks
from hypothesis import given, settings
from hypothesis import strategies as st

from maintlink.receiver import InvalidPayloadError, InvalidSignatureError, verify
from maintlink.webhooks.signing import (
    build_headers,
    decode_secret,
    generate_secret,
    sign,
    signature_header,
    signed_content,
)

# The example from the Standard Webhooks specification and the svix test-suite.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

BODY = (
    b'{"id":"evt_1","type":"sync.completed","timestamp":"2024-05-01T12:00:00Z",'
    b'"api_version":"v1","connection_id":"con_1","customer_id":"cus_1","sequence":7,'
    b'"data":{"model":"work_orders","added":3,"caf\xc3\xa9":"\xe2\x9c\x93"}}'
)


def test_generated_secret_is_whsec_and_32_random_bytes() -> None:
    secrets = {generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
        assert len(decode_secret(secret)) == 32


def test_decode_secret_with_and_without_prefix_and_padding() -> None:
    key = bytes(range(32))
    encoded = base64.b64encode(key).decode()
    assert decode_secret("whsec_" + encoded) == key
    assert decode_secret(encoded) == key
    assert decode_secret(" whsec_" + encoded + "\n") == key  # pasted from an env file
    unpadded = base64.b64encode(bytes(range(25))).decode().rstrip("=")
    assert decode_secret("whsec_" + unpadded) == bytes(range(25))


@pytest.mark.parametrize(
    "secret",
    ["", "whsec_", "whsec_not*base64!", "whsec-" + "A" * 43, "whsec_" + "A" * 8, "wh sec_AAAA"],
)
def test_decode_secret_refuses_malformed_secrets_without_echoing_them(secret: str) -> None:
    with pytest.raises(ValueError, match="secret") as info:
        decode_secret(secret)
    if len(secret) > 8:
        assert secret not in str(info.value)


def test_decode_secret_refuses_non_text() -> None:
    with pytest.raises(ValueError, match="string"):
        decode_secret(b"whsec_AAAA")  # type: ignore[arg-type]


def test_sign_matches_the_specification_example() -> None:
    assert sign(decode_secret(SPEC_SECRET), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    assert signed_content(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY).startswith(
        f"{SPEC_ID}.{SPEC_TIMESTAMP}.".encode()
    )


def test_signature_header_has_one_signature_per_secret_in_order() -> None:
    a, b = decode_secret(generate_secret()), decode_secret(generate_secret())
    header = signature_header([a, b], "msg_1", 1700000000, BODY)
    assert header.split(" ") == [
        sign(a, "msg_1", 1700000000, BODY),
        sign(b, "msg_1", 1700000000, BODY),
    ]
    with pytest.raises(ValueError, match="non-empty"):
        signature_header([], "msg_1", 1700000000, BODY)
    with pytest.raises(ValueError, match="non-empty"):
        signature_header(a, "msg_1", 1700000000, BODY)  # type: ignore[arg-type]


def test_build_headers_defaults_timestamp_to_now_and_checks_its_inputs() -> None:
    key = decode_secret(generate_secret())
    before = int(time.time())
    headers = build_headers([key], "evt_abc", None, BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "evt_abc"
    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())
    for bad_id in ["", "evt 1", "evt\r\nx-injected: 1", "évt"]:
        with pytest.raises(ValueError, match="webhook id"):
            build_headers([key], bad_id, 1, BODY)
    for bad_ts in [-1, 1.5, "1", True]:
        with pytest.raises(ValueError, match="timestamp"):
            build_headers([key], "evt_1", bad_ts, BODY)  # type: ignore[arg-type]


# --- interoperability with the official libraries ----------------------------------------------


def test_standardwebhooks_and_svix_verify_our_requests_unchanged() -> None:
    secret = generate_secret()
    headers = build_headers([decode_secret(secret)], "evt_2Yx", int(time.time()), BODY)
    assert standardwebhooks.webhooks.Webhook(secret).verify(BODY, headers)["sequence"] == 7
    svix.webhooks.Webhook(secret).verify(BODY, headers)  # raises on failure
    # Svix's own header names, as an svix-based receiver would see them.
    svix_headers = {k.replace("webhook-", "svix-"): v for k, v in headers.items()}
    svix.webhooks.Webhook(secret).verify(BODY, svix_headers)


def test_rotation_header_verifies_with_either_secret_in_both_libraries() -> None:
    old, new = generate_secret(), generate_secret()
    headers = build_headers(
        [decode_secret(new), decode_secret(old)], "evt_rot", int(time.time()), BODY
    )
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        standardwebhooks.webhooks.Webhook(secret).verify(BODY, headers)
        svix.webhooks.Webhook(secret).verify(BODY, headers)
        assert verify(BODY, headers, secret)["id"] == "evt_1"
    stranger = generate_secret()
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.webhooks.Webhook(stranger).verify(BODY, headers)
    with pytest.raises(InvalidSignatureError):
        verify(BODY, headers, stranger)


def test_our_verify_accepts_what_standardwebhooks_signs() -> None:
    secret = generate_secret()
    now = datetime.now(tz=UTC)
    signature = standardwebhooks.webhooks.Webhook(secret).sign("msg_x", now, BODY.decode())
    headers = {
        "webhook-id": "msg_x",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    assert verify(BODY, headers, secret)["type"] == "sync.completed"


# --- properties ---------------------------------------------------------------------------------

ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)
timestamps = st.integers(min_value=0, max_value=4_102_444_800)
keys = st.binary(min_size=16, max_size=64)


@settings(max_examples=150, deadline=None)
@given(key=keys, msg_id=ids, timestamp=timestamps, body=st.binary(max_size=2048))
def test_any_body_id_timestamp_roundtrips(
    key: bytes, msg_id: str, timestamp: int, body: bytes
) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = build_headers([key], msg_id, timestamp, body)
    # The signature check passes for any bytes; only a JSON object comes back as a payload.
    try:
        verify(body, headers, secret, now=timestamp)
    except InvalidSignatureError:
        pytest.fail("a genuine signature was refused")
    except InvalidPayloadError:
        pass


@settings(max_examples=150, deadline=None)
@given(
    key=keys,
    msg_id=ids,
    timestamp=timestamps,
    data=st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=20), max_size=5),
)
def test_any_json_object_roundtrips_through_both_verifiers(
    key: bytes, msg_id: str, timestamp: int, data: dict[str, object]
) -> None:
    body = json.dumps(data, ensure_ascii=False).encode()
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = build_headers([key], msg_id, timestamp, body)
    assert verify(body, headers, secret, now=timestamp) == data
    # The official library checks the clock itself: sign this one for now.
    fresh = build_headers([key], msg_id, None, body)
    assert standardwebhooks.webhooks.Webhook(secret).verify(body, fresh) == data


@settings(max_examples=200, deadline=None)
@given(
    key=keys,
    msg_id=ids,
    timestamp=timestamps,
    body=st.binary(min_size=1, max_size=512),
    data=st.data(),
)
def test_any_single_byte_change_fails(
    key: bytes, msg_id: str, timestamp: int, body: bytes, data: st.DataObject
) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = build_headers([key], msg_id, timestamp, body)
    index = data.draw(st.integers(0, len(body) - 1), label="index")
    delta = data.draw(st.integers(1, 255), label="delta")
    tampered = bytearray(body)
    tampered[index] = (tampered[index] + delta) % 256
    with pytest.raises(InvalidSignatureError):
        verify(bytes(tampered), headers, secret, now=timestamp)
    with pytest.raises(InvalidSignatureError):
        verify(body, {**headers, "webhook-id": msg_id + "x"}, secret, now=timestamp)
    with pytest.raises(InvalidSignatureError):
        later = str(timestamp + 1)
        verify(body, {**headers, "webhook-timestamp": later}, secret, now=timestamp)
