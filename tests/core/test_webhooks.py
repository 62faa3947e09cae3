"""Issue 12, finding 2: `verify_webhook` fails closed, and a seen-id store refuses replays."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import threading
from pathlib import Path

import pytest

import mediagen as mg
from mediagen.webhooks import MemorySeenIds, SeenIdStore, SQLiteSeenIds, verify_webhook

# The official client's test vector (replicate-python tests/test_webhooks.py).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HEADERS = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
BODY = '{"test": 2432232314}'
SENT_AT = 1614265330.0


def signed(secret: str, webhook_id: str, timestamp: str, body: bytes) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.removeprefix("whsec_") else b""
    digest = hmac.new(key, webhook_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256).digest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_AAAA", "   ", "whsec_%%%", "MfKQ9r8G"])
def test_finding_2_empty_or_short_secret_is_an_error_not_a_pass(secret: str) -> None:
    # A delivery "signed" with the key the empty secret decodes to: it verified before.
    forged = signed(secret if secret.startswith("whsec_") and "%" not in secret else "", "msg_1", "1700000000", b"{}")
    with pytest.raises(mg.ConfigError, match="secret"):
        verify_webhook(forged, b"{}", secret, now=1700000000)


def test_finding_2_a_secret_that_is_not_a_string_is_an_error() -> None:
    with pytest.raises(mg.ConfigError):
        verify_webhook(HEADERS, BODY, None, now=SENT_AT)  # type: ignore[arg-type]


@pytest.mark.parametrize("tolerance", [math.nan, math.inf, -math.inf, -1, -0.5, True])
def test_finding_2_non_finite_or_negative_tolerance_is_rejected(tolerance: float) -> None:
    # nan made every comparison false: the timestamp check was off.
    with pytest.raises(mg.ConfigError, match="tolerance_s"):
        verify_webhook(HEADERS, BODY, SECRET, tolerance_s=tolerance, now=SENT_AT + 10**9)


def test_finding_2_the_reference_vector_still_verifies() -> None:
    assert verify_webhook(HEADERS, BODY, SECRET, now=SENT_AT)
    assert verify_webhook(HEADERS, BODY.encode(), SECRET, tolerance_s=0, now=SENT_AT)
    assert verify_webhook(HEADERS, bytearray(BODY.encode()), SECRET, tolerance_s=None)
    assert not verify_webhook(HEADERS, BODY, SECRET, now=SENT_AT + 301)


@pytest.mark.parametrize(
    "body",
    [
        "caf\udce9",  # a str with a lone surrogate (it raised UnicodeEncodeError)
        b"\xff\xfe\x00garbage\x80",
        b"",
        "",
        None,
        12345,
        ["a"],
    ],
    ids=["lone-surrogate", "bytes-garbage", "empty-bytes", "empty-str", "none", "int", "list"],
)
def test_finding_2_any_odd_body_returns_false(body: object) -> None:
    assert verify_webhook(HEADERS, body, SECRET, now=SENT_AT) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {**HEADERS, "webhook-timestamp": "١٦١٤٢٦٥٣٣٠"},  # digits int() reads, but not ASCII
        {**HEADERS, "webhook-timestamp": " 1614265330"},
        {**HEADERS, "webhook-timestamp": "1e9"},
        {**HEADERS, "webhook-id": "msg_\udce9"},
        {**HEADERS, "webhook-id": "x" * 1000},
        {**HEADERS, "webhook-signature": 5},
        {**HEADERS, "webhook-signature": "v1,"},
        {1: "x", **HEADERS, "webhook-signature": "v1,AAAA"},
    ],
)
def test_finding_2_odd_headers_return_false(headers: dict[object, object]) -> None:
    assert verify_webhook(headers, BODY, SECRET, now=SENT_AT) is False  # type: ignore[arg-type]


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_finding_2_replays_within_the_window_are_refused_with_a_seen_id_store(
    store_kind: str, tmp_path: Path
) -> None:
    store: SeenIdStore = MemorySeenIds() if store_kind == "memory" else SQLiteSeenIds(tmp_path / "seen.sqlite")
    assert isinstance(store, SeenIdStore)
    assert verify_webhook(HEADERS, BODY, SECRET, now=SENT_AT, seen=store)
    # The same delivery again, a second later: signed, recent, and refused.
    assert not verify_webhook(HEADERS, BODY, SECRET, now=SENT_AT + 1, seen=store)
    # A forged delivery is never recorded (it cannot fill the store or block the real one).
    forged_id = {**HEADERS, "webhook-id": "msg_forged", "webhook-signature": "v1,AAAA"}
    assert not verify_webhook(forged_id, BODY, SECRET, now=SENT_AT, seen=store)
    # The app failed to handle it: release the id, and the sender's retry is accepted once.
    store.release(HEADERS["webhook-id"])
    assert verify_webhook(HEADERS, BODY, SECRET, now=SENT_AT + 2, seen=store)
    assert not verify_webhook(HEADERS, BODY, SECRET, now=SENT_AT + 3, seen=store)


def test_finding_2_sqlite_store_is_shared_and_claims_once_under_races(tmp_path: Path) -> None:
    path = tmp_path / "seen.sqlite"
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    headers = signed(secret, "msg_race", "1700000000", b"{}")
    stores = [SQLiteSeenIds(path) for _ in range(8)]  # as if eight worker processes opened it
    results: list[bool] = []

    def deliver(store: SQLiteSeenIds) -> None:
        results.append(verify_webhook(headers, b"{}", secret, now=1700000000, seen=store))

    threads = [threading.Thread(target=deliver, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert path.stat().st_mode & 0o077 == 0  # created private


def test_finding_2_expired_ids_are_forgotten() -> None:
    store = MemorySeenIds()
    assert store.claim("a", expires_at=10.0, now=5.0)
    assert store.claim("b", expires_at=math.inf, now=5.0)
    assert not store.claim("a", expires_at=20.0, now=9.0)
    assert store.claim("a", expires_at=20.0, now=10.0)  # the first record expired
    assert not store.claim("b", expires_at=math.inf, now=1e12)
    assert len(store) == 1  # only "b" is left: "a" expired


def test_finding_2_one_verifier() -> None:
    pytest.importorskip("replicate")
    import mediagen_replicate

    assert mediagen_replicate.verify_webhook is verify_webhook
