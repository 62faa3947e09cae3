"""Errors, faults and cancellation: nothing billed twice, every error a MediagenError that teaches."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen.policies import Policy, RetryPolicy
from mediagen_openai import OpenAIBackend
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.fake_http import Faults
from mediagen_testkit.openai_server import OpenAIServer


async def test_twelve_concurrent_requests_under_faults_each_complete_once(
    backend: OpenAIBackend, server: OpenAIServer
) -> None:
    server.faults = Faults(rate_limit_every=3, error_every=5, retry_after_s=0.05)

    async with mg.Client(backends={"openai": backend}) as client:
        results = await asyncio.gather(
            *(
                client.generate(mg.ImageRequest(prompt=f"fox {i}", width=64, height=64), model="openai:gpt-image-2")
                for i in range(12)
            )
        )
        sent = backend.describe()["requests"]

    for i, result in enumerate(results):
        expected = media.image_bytes(64, 64, seed=OpenAIServer.seed_for(f"fox {i}"), fmt="png")
        assert np.array_equal(result.images[0].to_numpy(), mg.Image(expected).to_numpy())
    assert server.stats["faults"] > 0
    assert server.stats["billed"] == 12  # one billable job per request: none lost, none run twice
    assert sent["retries"] == server.stats["faults"] and sent["requests"] == 12 + server.stats["faults"]


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, mg.ProviderError), (503, mg.ProviderError), (429, mg.RateLimitedError)],
)
async def test_a_fault_that_never_clears_ends_in_its_error_after_the_policys_tries(
    server: OpenAIServer, status: int, error: type[mg.MediagenError]
) -> None:
    server.faults = (
        Faults(error_every=1, error_status=status) if status != 429 else Faults(rate_limit_every=1, retry_after_s=0.01)
    )
    backend = OpenAIBackend(api_key=server.api_key, base_url=server.url, max_retries=3, retry_base_delay=0.01)
    try:
        with pytest.raises(error) as caught:
            await backend.run(mg.ImageRequest(prompt="fox"), "gpt-image-2", RunContext())
    finally:
        await backend.aclose()
    assert caught.value.status == status and caught.value.provider == "openai"
    assert server.stats["requests"] == 3 and server.stats["billed"] == 0


async def test_retry_after_is_waited_out(server: OpenAIServer) -> None:
    server.faults = Faults(rate_limit_every=2, retry_after_s=0.3)
    backend = OpenAIBackend(api_key=server.api_key, base_url=server.url, retry_base_delay=0.0)
    ctx = RunContext(policy=Policy(retry=RetryPolicy(attempts=3, backoff_base_s=0.0, jitter=0.0)))
    loop = asyncio.get_running_loop()
    try:
        await backend.run(mg.ImageRequest(prompt="a", width=64, height=64), "gpt-image-2", ctx)
        began = loop.time()
        await backend.run(mg.ImageRequest(prompt="b", width=64, height=64), "gpt-image-2", ctx)
        waited = loop.time() - began
    finally:
        await backend.aclose()
    assert waited >= 0.3  # a lower bound only: the server asked for 0.3 s
    assert server.stats["requests"] == 3 and server.stats["billed"] == 2


async def test_a_connection_dropped_after_the_work_is_not_sent_again(
    server: OpenAIServer, backend: OpenAIBackend
) -> None:
    server.faults = Faults(drop_after_work_every=1)
    with pytest.raises(mg.ProviderError, match="may have run") as caught:
        await backend.run(mg.ImageRequest(prompt="fox", width=64, height=64), "gpt-image-2", RunContext())
    assert caught.value.retryable is False
    assert server.stats["requests"] == 1 and server.stats["billed"] == 1


async def test_a_refused_connection_is_retried_then_reported(unused_port: int) -> None:
    backend = OpenAIBackend(
        api_key="sk-test", base_url=f"http://127.0.0.1:{unused_port}/v1", max_retries=2, retry_base_delay=0.01
    )
    try:
        with pytest.raises(mg.ProviderError, match="could not connect") as caught:
            await backend.run(mg.ImageRequest(prompt="fox"), "gpt-image-2", RunContext())
        assert backend.describe()["requests"]["requests"] == 2
    finally:
        await backend.aclose()
    assert caught.value.retryable is True


async def test_a_wrong_key_names_the_variable_to_set() -> None:
    with OpenAIServer(echo_key_in_errors=True) as server:
        backend = OpenAIBackend(api_key="sk-wrong-key-123456789", base_url=server.url)
        try:
            with pytest.raises(mg.AuthenticationError, match="OPENAI_API_KEY") as caught:
                await backend.run(mg.ImageRequest(prompt="fox"), "gpt-image-2", RunContext())
        finally:
            await backend.aclose()
    assert caught.value.status == 401 and caught.value.provider == "openai"
    assert server.stats["keys_echoed"] == 1  # the server did quote the key in its answer...
    for text in (str(caught.value), repr(caught.value), caught.value.detail or "", caught.value.message):
        assert "sk-wrong-key-123456789" not in text  # ...and it shows nowhere
    assert server.stats["requests"] == 1  # a 401 is not retried


async def test_a_missing_key_names_the_variable_before_anything_is_sent(server: OpenAIServer) -> None:
    backend = OpenAIBackend(base_url=server.url)
    with pytest.raises(mg.AuthenticationError, match="OPENAI_API_KEY"):
        await backend.run(mg.ImageRequest(prompt="fox"), "gpt-image-2", RunContext())
    assert server.stats["requests"] == 0
    assert OpenAIBackend.availability() is not None


async def test_the_key_and_endpoint_come_from_the_official_variables(
    server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    backend = OpenAIBackend()
    try:
        await backend.run(mg.ImageRequest(prompt="fox", width=64, height=64), "gpt-image-2", RunContext())
    finally:
        await backend.aclose()
    assert server.stats["billed"] == 1 and OpenAIBackend.availability() is None


async def test_400_and_404_are_not_retried(backend: OpenAIBackend, server: OpenAIServer) -> None:
    with pytest.raises(mg.InvalidRequestError) as caught:  # the fake checks sizes like the API: 8000 is over
        await backend.run(mg.ImageRequest(prompt="x", options={"size": "8000x16"}), "gpt-image-2", RunContext())
    assert caught.value.status == 400 and caught.value.errors[0]["loc"] == ("size",)
    with pytest.raises(mg.ModelNotFoundError):
        await backend.run(mg.ImageRequest(prompt="x"), "gpt-image-9", RunContext())
    assert server.stats["requests"] == 2 and server.stats["billed"] == 0


async def test_cancelling_closes_the_request_and_sends_nothing_more(
    server: OpenAIServer, backend: OpenAIBackend
) -> None:
    server.job_s = 2.0
    task = asyncio.create_task(
        backend.run(mg.ImageRequest(prompt="slow", width=64, height=64), "gpt-image-2", RunContext())
    )
    await asyncio.to_thread(server.jobs_started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert server.stats["requests"] == 1
    assert backend.describe()["in_flight"] == 0


async def test_the_deadline_cuts_a_slow_request(server: OpenAIServer, backend: OpenAIBackend) -> None:
    server.job_s = 2.0
    async with mg.Client(backends={"openai": backend}) as client:
        with pytest.raises(mg.DeadlineExceededError):
            await client.generate(
                mg.ImageRequest(prompt="slow", width=64, height=64), model="openai:gpt-image-2", timeout=0.3
            )
    assert server.stats["requests"] == 1


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_test_suite_switch_keeps_the_backend_off_the_network() -> None:
    backend = OpenAIBackend(api_key="sk-not-used", max_retries=1)  # the real endpoint
    try:
        with pytest.raises(RuntimeError, match="remote requests are switched off"):
            await backend.run(mg.ImageRequest(prompt="x"), "gpt-image-2", RunContext())
    finally:
        await backend.aclose()


def test_retry_after_ms_first_then_the_core_reading_of_retry_after() -> None:
    from mediagen_openai.errors import parse_retry_after

    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after({"Retry-After": date}, now=1445412470.0) == 10.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "x", "retry-after": "9"}) == 9.0
    assert parse_retry_after({"retry-after": "-1"}) is None and parse_retry_after(None) is None


async def test_an_answer_past_the_body_cap_is_refused(server: OpenAIServer, backend: OpenAIBackend) -> None:
    request = mg.ImageRequest(prompt="x", width=1024, height=1024)
    transport = await backend._connect()
    capped = transport.connection.capped
    assert capped is not None
    capped.max_bytes = 1_000  # the answer's JSON holds a base64 PNG: far more than this
    with pytest.raises(mg.MediaTooLargeError, match="the API answered with") as info:
        await backend.run(request, "gpt-image-2", RunContext())
    assert info.value.provider == "openai" and info.value.limit == 1_000
    capped.max_bytes = 256 << 20
    res = await backend.run(request, "gpt-image-2", RunContext())
    assert (await res.artifacts[0].aread())[:4] == b"\x89PNG"
    assert server.stats["requests"] == 2  # a refused answer is not asked for again
