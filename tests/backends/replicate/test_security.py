"""The API token never shows: not in log lines, reprs, warnings or error messages."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator

import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_testkit.replicate_server import FaultPlan, ReplicateServer, image_model

replicate = pytest.importorskip("replicate")
from mediagen_replicate import ReplicateBackend  # noqa: E402
from mediagen_replicate.client import ReplicateConnection  # noqa: E402

TOKEN = "r8_S3cr3tT0kenValue0123456789abcdef"
# Pieces that must not show either: a log line may cut or reshape a token.
FRAGMENTS = (TOKEN, TOKEN[3:], "S3cr3tT0ken")


@pytest.fixture
def server() -> Iterator[ReplicateServer]:
    with ReplicateServer(token=TOKEN, time_scale=0.01, models=[image_model()]) as srv:
        yield srv


def assert_clean(text: str) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text, f"the token leaked into: {text[:300]!r}"


def everything_about(error: BaseException) -> str:
    parts = [str(error), repr(error), str(getattr(error, "detail", ""))]
    cause = error.__cause__
    while cause is not None:  # the vendor exception kept as the cause, too
        parts += [str(cause), repr(cause)]
        cause = cause.__cause__
    return "\n".join(parts)


async def test_token_stays_out_of_logs_reprs_and_errors(
    server: ReplicateServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx, httpcore and ours, all of it
    backend = ReplicateBackend(api_token=TOKEN, base_url=server.url, reconcile_delay_s=0, retry_base_delay=0.01)
    try:
        # A normal run, a run under faults (retries are logged), and failures.
        res = await backend.run(mg.ImageRequest(prompt="x", seed=1), "black-forest-labs/flux-schnell", RunContext())
        server.faults = FaultPlan(create_429_every=2, get_503_every=2, drop_every=3)
        await backend.run(
            mg.ImageRequest(prompt="y", seed=2, options={"wait": False}), "black-forest-labs/flux-schnell", RunContext()
        )
        server.faults = FaultPlan()
        errors: list[BaseException] = []
        for model in ("nobody/nothing", "black-forest-labs/flux-schnell"):
            try:
                await backend.run(mg.ImageRequest(prompt="z", steps=99), model, RunContext())
            except mg.MediagenError as exc:
                errors.append(exc)
        assert len(errors) == 2
        shown = [repr(backend), str(backend.describe()), repr(backend._connect()), repr(res), str(res.raw)]
    finally:
        await backend.aclose()

    assert_clean(caplog.text)
    assert "Bearer" not in caplog.text
    for text in shown:
        assert_clean(text)
    for error in errors:
        assert_clean(everything_about(error))
        assert_clean(everything_about(pickle.loads(pickle.dumps(error))))


async def test_rejected_token_error_does_not_echo_it() -> None:
    wrong = "r8_WrongTokenValue0123456789abcdef"
    with ReplicateServer(token=TOKEN, echo_token_in_errors=True, models=[image_model()]) as server:
        backend = ReplicateBackend(api_token=wrong, base_url=server.url)
        try:
            with pytest.raises(mg.AuthenticationError) as info:
                await backend.run(mg.ImageRequest(prompt="x"), "black-forest-labs/flux-schnell", RunContext())
        finally:
            await backend.aclose()
    assert "(got '***')" in (info.value.detail or "")  # the server did quote the token; it was hidden
    text = everything_about(info.value)  # the vendor exception kept as the cause included
    assert wrong not in text and "WrongTokenValue" not in text


async def test_missing_token_teaches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    assert "REPLICATE_API_TOKEN" in (ReplicateBackend.availability() or "")
    backend = ReplicateBackend(base_url="http://127.0.0.1:9")
    with pytest.raises(mg.AuthenticationError) as info:
        await backend.run(mg.ImageRequest(prompt="x"), "black-forest-labs/flux-schnell", RunContext())
    message = str(info.value)
    assert "REPLICATE_API_TOKEN" in message and "api_token=" in message and "test:" in message


async def test_token_and_endpoint_from_the_environment(
    server: ReplicateServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("REPLICATE_BASE_URL", server.url)
    assert ReplicateBackend.availability() is None
    backend = ReplicateBackend()
    try:
        res = await backend.run(mg.ImageRequest(prompt="x", seed=1), "black-forest-labs/flux-schnell", RunContext())
    finally:
        await backend.aclose()
    assert res.artifacts and TOKEN not in repr(backend)


async def test_a_ready_client_is_used_and_left_open(server: ReplicateServer) -> None:
    official = replicate.Client(api_token=TOKEN, base_url=server.url)
    backend = ReplicateBackend(client=official)
    await backend.run(mg.ImageRequest(prompt="x", seed=1), "black-forest-labs/flux-schnell", RunContext())
    await backend.aclose()
    assert not official._async_client.is_closed  # the caller's to close
    # Still usable by its owner afterwards.
    assert (await official.models.async_get("black-forest-labs/flux-schnell")).name == "flux-schnell"
    await official._async_client.aclose()


def test_connection_repr_and_pickling() -> None:
    connection = ReplicateConnection(api_token=TOKEN, base_url="http://127.0.0.1:9")
    assert_clean(repr(connection))
    assert "token=set" in repr(connection)
    with pytest.raises(TypeError):
        pickle.dumps(connection)
