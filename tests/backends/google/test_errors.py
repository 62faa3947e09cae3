"""Gemini API errors become MediagenErrors that teach; billable calls are never repeated after they may have run."""

from __future__ import annotations

import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_google import GoogleBackend
from mediagen_testkit.fake_http import Faults
from mediagen_testkit.google_server import GoogleServer

IMAGEN = "imagen-4.0-fast-generate-001"
GEMINI = "gemini-2.5-flash-image"


@pytest.mark.parametrize("model", [IMAGEN, GEMINI, "veo-2.0-generate-001"])
async def test_a_wrong_key_is_an_authentication_error_naming_the_variable(model: str) -> None:
    with GoogleServer(echo_key_in_errors=True) as server:
        backend = GoogleBackend(api_key="AIza-wrong-key-0123456789", base_url=server.url)
        request = mg.VideoRequest(prompt="x") if model.startswith("veo") else mg.ImageRequest(prompt="x")
        try:
            with pytest.raises(mg.AuthenticationError, match="GEMINI_API_KEY") as caught:
                await backend.run(request, model, RunContext())
        finally:
            await backend.aclose()
    # The Gemini API answers a wrong key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID), not 401.
    assert caught.value.status == 400 and caught.value.provider == "google"
    assert server.stats["keys_echoed"] == 1  # the server did quote the key in its answer...
    for text in (str(caught.value), repr(caught.value), caught.value.detail or "", caught.value.message):
        assert "AIza-wrong-key-0123456789" not in text  # ...and it shows nowhere
    assert server.stats["requests"] == 1


async def test_the_key_comes_from_the_environment_google_api_key_first(
    server: GoogleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-wrong-but-second")
    monkeypatch.setenv("GOOGLE_API_KEY", server.api_key)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
    backend = GoogleBackend()
    try:
        await backend.run(mg.ImageRequest(prompt="fox"), IMAGEN, RunContext())
    finally:
        await backend.aclose()
    assert server.stats["billed"] == 1


async def test_no_key_names_both_variables_before_sending(server: GoogleServer) -> None:
    backend = GoogleBackend(base_url=server.url)
    with pytest.raises(mg.AuthenticationError, match=r"GEMINI_API_KEY.*GOOGLE_API_KEY"):
        await backend.run(mg.ImageRequest(prompt="fox"), IMAGEN, RunContext())
    assert server.stats["requests"] == 0 and GoogleBackend.availability() is not None


async def test_unknown_models_and_bad_requests_are_not_retried(backend: GoogleBackend, server: GoogleServer) -> None:
    with pytest.raises(mg.ModelNotFoundError):
        await backend.run(mg.ImageRequest(prompt="x"), "imagen-9.0-generate-001", RunContext())
    with pytest.raises(mg.UnsupportedRequestError, match="not a media model"):
        await backend.run(mg.ImageRequest(prompt="x"), "gemini-2.5-pro", RunContext())
    with pytest.raises(mg.UnsupportedRequestError, match="makes videos"):
        await backend.run(mg.ImageRequest(prompt="x"), "veo-3.0-generate-001", RunContext())
    assert server.stats["requests"] == 1


@pytest.mark.parametrize(
    ("status", "error"), [(500, mg.ProviderError), (503, mg.ProviderError), (429, mg.RateLimitedError)]
)
async def test_a_fault_that_never_clears_ends_in_its_error(
    server: GoogleServer, status: int, error: type[mg.MediagenError]
) -> None:
    server.faults = (
        Faults(error_every=1, error_status=status) if status != 429 else Faults(rate_limit_every=1, retry_after_s=0.01)
    )
    backend = GoogleBackend(api_key=server.api_key, base_url=server.url, max_retries=3, retry_base_delay=0.01)
    try:
        with pytest.raises(error) as caught:
            await backend.run(mg.ImageRequest(prompt="x"), GEMINI, RunContext())
    finally:
        await backend.aclose()
    assert caught.value.status == status
    assert server.stats["requests"] == 3 and server.stats["billed"] == 0
    if status == 429:
        assert caught.value.retry_after == pytest.approx(0.01)  # from the error's RetryInfo


@pytest.mark.parametrize("model", [IMAGEN, GEMINI])
async def test_a_connection_dropped_after_the_work_is_not_sent_again(
    backend: GoogleBackend, server: GoogleServer, model: str
) -> None:
    server.faults = Faults(drop_after_work_every=1)
    with pytest.raises(mg.ProviderError, match="after the request was sent") as caught:
        await backend.run(mg.ImageRequest(prompt="x"), model, RunContext())
    assert caught.value.retryable is False
    assert server.stats["requests"] == 1 and server.stats["billed"] == 1


async def test_dropped_polls_are_ridden_out(backend: GoogleBackend, server: GoogleServer) -> None:
    server.video_s = 0.2
    server.faults = Faults(drop_every=2)  # the create is the 1st faultable request; every other poll drops
    result = await backend.run(mg.VideoRequest(prompt="x"), "veo-2.0-generate-001", RunContext())
    assert len(result.videos) == 1
    assert server.stats["dropped"] >= 1 and server.stats["operations"] == 1


@pytest.mark.parametrize("model", [IMAGEN, GEMINI, "veo-2.0-generate-001"])
async def test_the_test_suite_switch_keeps_every_family_off_the_network(model: str) -> None:
    # conftest turned remote requests off: the real endpoint is refused before anything is sent.
    backend = GoogleBackend(api_key="AIza-not-used", max_retries=1)
    request = mg.VideoRequest(prompt="x") if model.startswith("veo") else mg.ImageRequest(prompt="x")
    try:
        with pytest.raises(RuntimeError, match="remote requests are switched off"):
            await backend.run(request, model, RunContext())
    finally:
        await backend.aclose()


def test_retry_info_first_then_the_core_reading_of_retry_after() -> None:
    from mediagen_google.errors import _retry_delay

    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "4s"}
    assert _retry_delay([info], {"Retry-After": "9"}) == 4.0
    assert _retry_delay([], {"Retry-After": "3"}) == 3.0
    assert _retry_delay([], {"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"}) > 0
    assert _retry_delay([], {"retry-after": "soon"}) is None and _retry_delay([], None) is None
