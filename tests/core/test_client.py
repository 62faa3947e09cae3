"""The async client: every modality, backends by entry point / instance / registration, n-splitting,
capability checks, strictness, model strings, configuration, fallback chains and closing."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import mediagen as mg
from mediagen.testing import FakeBackend, FunctionBackend


def write_config(text: str) -> Path:
    path = Path(os.environ["MEDIAGEN_CONFIG"])  # conftest points this at an empty file per test
    path.write_text(text)
    return path


class RecordingBackend(mg.Backend):
    """Grey squares whose level is the seed; records each model and request, and its settings."""

    provider = "recording"
    tasks = frozenset({"text-to-image", "image-to-image"})
    instances: ClassVar[list[RecordingBackend]] = []

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.models: list[str] = []
        self.requests: list[mg.Request] = []
        self.closed = False
        RecordingBackend.instances.append(self)

    async def capabilities(self, model: str) -> mg.Capabilities:
        return mg.Capabilities(tasks=self.tasks, max_outputs_per_call=self.settings.get("max_outputs_per_call"))

    async def run(self, request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Result:
        self.models.append(model)
        self.requests.append(request)
        ctx.progress(1, 1)
        images = [mg.Image.from_array(np.full((8, 8, 3), (s or 0) % 256, np.uint8)) for s in request.seeds()]
        return mg.Result(artifacts=images, provider=self.provider, model=model, seeds=request.seeds())

    async def aclose(self) -> None:
        self.closed = True


class MusicOnlyBackend(mg.Backend):
    provider = "musiconly"
    tasks = frozenset({"text-to-music"})

    async def run(self, request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Result:
        raise AssertionError("never called in these tests")


# -- every modality through the entry-point provider `test` ----------------------------------------


async def test_generate_every_modality_with_the_test_provider() -> None:
    async with mg.Client() as client:
        res = await client.generate(
            mg.ImageRequest(prompt="a fox", width=48, height=32, seed=7, n=2), model="test:fake"
        )
        assert (res.provider, res.model, res.model_string) == ("test", "fake", "test:fake")
        assert res.seeds == [7, 8]
        assert [a.size for a in res.images] == [(48, 32), (48, 32)]
        assert res.usage.images == 2 and res.usage.megapixels == pytest.approx(2 * 48 * 32 / 1e6)
        assert res.timings.total_s is not None and res.timings.total_s > 0
        assert res.raw == {"fake": True, "steps": 3}

        img = await client.image("a fox", model="test:fake", seed=1, output_format="jpeg")
        assert img.artifacts[0].media_type == "image/jpeg"

        vid = await client.video("waves", model="test:fake", frames=5, fps=10, width=16, height=24)
        video = vid.videos[0]
        assert video.frames.shape == (5, 24, 16, 3) and video.fps == 10
        assert vid.usage.video_s == pytest.approx(0.5)

        i2v = await client.video(model="test:fake", image=img.artifacts[0], frames=2)
        assert i2v.videos[0].num_frames == 2

        snd = await client.audio("calm piano", model="test:fake", kind="music", duration_s=0.25, sample_rate=8000)
        audio = snd.audios[0]
        assert audio.sample_rate == 8000 and audio.duration_s == pytest.approx(0.25)
        assert snd.usage.audio_s == pytest.approx(0.25)

        obj = await client.mesh("a chair", model="test:fake", format="obj")
        mesh = obj.meshes[0]
        assert mesh.media_type == "model/obj" and len(mesh.to_trimesh().faces) == 4
        assert obj.usage.meshes == 1


async def test_same_seed_same_output_different_seed_different() -> None:
    async with mg.Client() as client:
        a = await client.image("a fox", model="test:fake", seed=5)
        b = await client.image("a fox", model="test:fake", seed=5)
        c = await client.image("a fox", model="test:fake", seed=6)
    assert a.artifacts[0].read() == b.artifacts[0].read()
    assert a.artifacts[0].read() != c.artifacts[0].read()


async def test_img2img_input_reaches_the_backend() -> None:
    src = mg.Image.from_array(np.full((16, 16, 3), 255, np.uint8))
    async with mg.Client() as client:
        plain = await client.image("a fox", model="test:fake", seed=1, width=16, height=16)
        edited = await client.image("a fox", model="test:fake", seed=1, width=16, height=16, image=src, strength=0.5)
        backend = await client.backend("test")
    assert backend.last_request is not None and backend.last_request.task == "image-to-image"
    assert edited.images[0].to_numpy().mean() > plain.images[0].to_numpy().mean()  # blended with white


# -- backends given as instances, or registered ----------------------------------------------------


async def test_explicit_backend_instances_are_used_and_closed() -> None:
    fake = FakeBackend()
    async with mg.Client(backends={"x": fake}) as client:
        res = await client.image("a fox", model="x:anything", n=2)
        assert await client.backend("x") is fake
    assert fake.calls == 1 and fake.last_request is not None and fake.last_request.n == 2
    assert res.provider == "x" and res.model == "anything"  # the provider it was routed to
    assert res.model_string == "x:anything"
    assert fake.closed


async def test_register_backend_class_with_settings() -> None:
    RecordingBackend.instances.clear()
    mg.register_backend("rec", RecordingBackend)
    async with mg.Client(providers={"rec": {"colour": "blue"}}) as client:
        res = await client.image("a fox", model="rec:owner/name:v1", seed=40)
        await client.image("a fox", model="rec:other")
        assert await client.backend("rec") is RecordingBackend.instances[0]
    assert len(RecordingBackend.instances) == 1  # created once, reused
    backend = RecordingBackend.instances[0]
    assert backend.settings == {"colour": "blue"}
    assert backend.models == ["owner/name:v1", "other"]  # split at the first colon only
    assert res.images[0].to_numpy()[0, 0, 0] == 40
    assert backend.closed


async def test_function_backend() -> None:
    def fn(request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Image:
        return mg.Image.from_array(np.zeros((4, 4, 3), np.uint8))

    backend = FunctionBackend(fn)
    async with mg.Client(backends={"fn": backend}) as client:
        res = await client.image("x", model="fn:m", seed=3)
    assert backend.calls == 1 and res.seeds == [3] and res.images[0].size == (4, 4)


# -- splitting n -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "limit", "sizes"), [(7, 3, [3, 3, 1]), (6, 3, [3, 3]), (2, 5, [2]), (5, 1, [1] * 5)])
async def test_n_is_split_by_max_outputs_per_call(n: int, limit: int, sizes: list[int]) -> None:
    fake = FakeBackend(max_outputs_per_call=limit)
    async with mg.Client(backends={"x": fake}) as client:
        res = await client.image("a fox", model="x:m", n=n, seed=10)
        single = [await client.image("a fox", model="x:m", seed=10 + i) for i in range(n)]
    assert fake.calls == len(sizes) + n
    calls = fake.requests[: len(sizes)]
    assert sorted(r.n for r in calls) == sorted(sizes)
    assert sorted(r.seed for r in calls) == [10 + sum(sizes[:i]) for i in range(len(sizes))]  # type: ignore[type-var]
    assert res.seeds == list(range(10, 10 + n))
    assert len(res.artifacts) == n
    # Merged in order: output i is what a single call with seed 10 + i makes.
    for i, one in enumerate(single):
        assert np.array_equal(res.images[i].to_numpy(), one.images[0].to_numpy()), i
    assert res.provider == "x" and res.model == "m"
    if len(sizes) > 1:
        assert res.raw == [{"fake": True, "steps": 3}] * len(sizes)


async def test_split_without_seed_keeps_seeds_unset() -> None:
    fake = FakeBackend(max_outputs_per_call=2)
    async with mg.Client(backends={"x": fake}) as client:
        res = await client.image("a fox", model="x:m", n=3)
    assert [r.seed for r in fake.requests] == [None, None]
    assert len(res.seeds) == 3 and all(isinstance(s, int) for s in res.seeds)


class CountingBackend(mg.Backend):
    provider = "counting"

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.active = 0
        self.peak = 0

    async def capabilities(self, model: str) -> mg.Capabilities:
        return mg.Capabilities(max_outputs_per_call=2)

    async def run(self, request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Result:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(0.02)
        finally:
            self.active -= 1
        arts = [mg.Image.from_array(np.zeros((4, 4, 3), np.uint8)) for _ in range(request.n)]
        return mg.Result(artifacts=arts, provider="counting", model=model, seeds=request.seeds())


async def test_split_calls_run_concurrently_under_a_cap() -> None:
    backend = CountingBackend()
    async with mg.Client(backends={"c": backend}, max_concurrent_calls=2) as client:
        res = await client.image("x", model="c:m", n=10)
    assert len(res.artifacts) == 10
    assert backend.peak == 2


async def test_one_failing_part_cancels_the_others() -> None:
    class FailsOnOnePart(FakeBackend):
        async def run(self, request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Result:
            if request.seed == 12:
                raise mg.GenerationFailedError("this part failed")
            return await super().run(request, model, ctx)

    backend = FailsOnOnePart(max_outputs_per_call=2, steps=100, step_delay_s=0.01)
    async with mg.Client(backends={"x": backend}) as client:
        with pytest.raises(mg.GenerationFailedError, match="this part failed"):
            await client.image("x", model="x:m", n=6, seed=10)
    # `calls` counts the parts that reached FakeBackend.run: the two others, both stopped part-way.
    assert backend.calls == 2
    assert backend.cancelled == 2


# -- capabilities ----------------------------------------------------------------------------------


async def test_unsupported_task_names_providers_that_could() -> None:
    mg.register_backend("musiconly", MusicOnlyBackend)
    fake = FakeBackend(tasks=frozenset({"text-to-image"}))
    async with mg.Client(backends={"x": fake}) as client:
        with pytest.raises(mg.UnsupportedRequestError) as info:
            await client.audio("calm piano", model="x:m", kind="music")
    err = info.value
    assert err.feature == "text-to-music"
    assert "musiconly" in err.supported_by and "x" not in err.supported_by
    assert "x:m cannot do text-to-music" in str(err) and "musiconly" in str(err)
    assert (err.provider, err.model) == ("x", "m")
    assert fake.calls == 0


async def test_size_and_length_limits_are_checked_before_running() -> None:
    class Small(mg.Backend):
        provider = "small"

        async def capabilities(self, model: str) -> mg.Capabilities:
            return mg.Capabilities(max_width=256, max_height=256, max_frames=16, max_duration_s=5)

        async def run(self, request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Result:
            raise AssertionError("must not run")

    async with mg.Client(backends={"s": Small()}) as client:
        for call, feature in [
            (client.image("x", model="s:m", width=512), "width"),
            (client.image("x", model="s:m", height=512), "height"),
            (client.video("x", model="s:m", frames=17), "frames"),
            (client.audio("x", model="s:m", duration_s=6), "duration_s"),
        ]:
            with pytest.raises(mg.UnsupportedRequestError) as info:
                await call
            assert info.value.feature == feature


# -- strictness and warnings -----------------------------------------------------------------------


async def test_backend_warning_lands_on_the_result() -> None:
    async with mg.Client() as client:
        res = await client.image("x", model="test:fake", options={"sampler": "euler"})
    assert len(res.warnings) == 1
    warning = res.warnings[0]
    assert (warning.type, warning.feature, warning.provider) == ("unsupported", "options", "test")
    assert "sampler" in warning.message


async def test_strict_turns_the_warning_into_an_error() -> None:
    async with mg.Client() as client:
        with pytest.raises(mg.UnsupportedRequestError, match="strict=True") as info:
            await client.image("x", model="test:fake", options={"sampler": "euler"}, strict=True)
        assert info.value.feature == "options"
    async with mg.Client(strict=True) as client:
        with pytest.raises(mg.UnsupportedRequestError):
            await client.image("x", model="test:fake", options={"sampler": "euler"})
        res = await client.image("x", model="test:fake", options={"sampler": "euler"}, strict=False)
        assert res.warnings


async def test_strict_from_config() -> None:
    write_config("strict = true\n")
    async with mg.Client() as client:
        with pytest.raises(mg.UnsupportedRequestError):
            await client.image("x", model="test:fake", options={"a": 1})


async def test_warnings_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeBackend(max_outputs_per_call=1)
    async with mg.Client(backends={"x": fake}) as client:
        with caplog.at_level(logging.INFO, logger="mediagen"):
            res = await client.image("x", model="x:m", n=4, options={"a": 1})
    assert fake.calls == 4  # each call warned
    assert len(res.warnings) == 1
    logged = [r for r in caplog.records if r.levelno == logging.WARNING and "options" in r.getMessage()]
    assert len(logged) == 1
    info = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1 and "x:m" in info[0].getMessage()  # one INFO line per generation


# -- model strings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("replicate:owner/name:5c7d5dc6", ("replicate", "owner/name:5c7d5dc6")),
        ("diffusers:/models/sdxl", ("diffusers", "/models/sdxl")),
        ("diffusers:C:/models/sdxl", ("diffusers", "C:/models/sdxl")),
        ("test:fake", ("test", "fake")),
    ],
)
def test_parse_model(model: str, expected: tuple[str, str]) -> None:
    assert mg.parse_model(model) == expected


@pytest.mark.parametrize("model", ["nocolon", ":model", "provider:", "", ":"])
async def test_malformed_model_strings(model: str) -> None:
    fake = FakeBackend()
    async with mg.Client(backends={"x": fake}) as client:
        with pytest.raises(mg.ModelNotFoundError, match="provider:model"):
            await client.image("x", model=model)
    assert fake.calls == 0


async def test_unknown_provider_suggests_a_close_one() -> None:
    async with mg.Client() as client:
        with pytest.raises(mg.ModelNotFoundError) as info:
            await client.image("x", model="tset:fake")
    assert "unknown provider 'tset'" in str(info.value)
    assert "Did you mean 'test'?" in str(info.value)


async def test_no_model_and_no_default() -> None:
    async with mg.Client() as client:
        with pytest.raises(mg.ModelNotFoundError, match=r"\[defaults\] image") as info:
            await client.image("x")
    assert "test:fake" in str(info.value)


# -- configuration ---------------------------------------------------------------------------------

CONFIG = """
[defaults]
image = "test:default-image"
audio = "quick"
video = ["down:m", "test:video-backup"]

[aliases]
quick = "test:quick-model"
robust = ["nowhere:m", "quick"]
loop = "loop"

[providers.test]
steps = 5
flavour = "vanilla"
"""


async def test_config_defaults_aliases_and_provider_settings() -> None:
    write_config(CONFIG)
    async with mg.Client() as client:
        events: list[mg.Event] = []
        res = await client.image("x", on_event=events.append)
        assert res.model_string == "test:default-image"
        assert len([e for e in events if isinstance(e, mg.Progress)]) == 5  # steps = 5 reached FakeBackend
        backend = await client.backend("test")
        assert isinstance(backend, FakeBackend)
        assert backend.steps == 5 and backend.settings == {"flavour": "vanilla"}

        assert (await client.audio("x")).model == "quick-model"  # default naming an alias
        assert (await client.image("x", model="quick")).model == "quick-model"

        robust = await client.image("x", model="robust")  # an alias list is a fallback chain
        assert robust.model_string == "test:quick-model"
        assert any("nowhere:m failed" in w.message for w in robust.warnings)

        vid = await client.video("x", frames=2)  # a default may be a chain too
        assert vid.model_string == "test:video-backup"

        with pytest.raises(mg.ModelNotFoundError, match="refers to itself"):
            await client.image("x", model="loop")


async def test_constructor_settings_override_config() -> None:
    write_config(CONFIG)
    async with mg.Client(providers={"test": {"steps": 2}}, timeout=30) as client:
        backend = await client.backend("test")
        assert backend.steps == 2 and backend.settings == {"flavour": "vanilla"}
        assert client.timeout == 30


def test_config_errors_are_clear() -> None:
    path = write_config("[defaults\nimage = 1")
    with pytest.raises(ValueError, match="not valid TOML"):
        mg.Client()
    write_config("colour = 'blue'\n")
    with pytest.raises(ValueError, match=str(path)):
        mg.Client()
    write_config("[defaults]\nsound = 'test:x'\n")
    with pytest.raises(ValueError):
        mg.Client()


def test_explicit_config_object_and_path(tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[aliases]\nfox = "test:fox"\n')
    assert mg.Client(config=other).resolve_models("fox", "image") == [("test", "fox")]
    config = mg.Config(aliases={"a": ["test:1", "test:2", "test:1"]})
    assert mg.Client(config=config).resolve_models("a", "image") == [("test", "1"), ("test", "2")]


# -- fallback chains -------------------------------------------------------------------------------


async def test_fallback_moves_on_after_rate_limiting() -> None:
    first = FakeBackend(error=mg.RateLimitedError("slow down", retry_after=2))
    second = FakeBackend()
    async with mg.Client(backends={"a": first, "b": second}) as client:
        res = await client.image("x", model=["a:m", "b:m"], seed=1)
    assert res.model_string == "b:m"
    assert (first.calls, second.calls) == (1, 1)
    assert len(res.warnings) == 1
    assert "a:m failed (RateLimitedError: slow down" in res.warnings[0].message


@pytest.mark.parametrize(
    "error",
    [
        mg.InvalidRequestError("the prompt is too long for this model"),
        mg.GenerationFailedError("refused: content policy", refused=True),
    ],
    ids=["invalid", "refused"],
)
async def test_invalid_requests_and_refusals_do_not_fall_through(error: mg.MediagenError) -> None:
    first, second = FakeBackend(error=error), FakeBackend()
    async with mg.Client(backends={"a": first, "b": second}) as client:
        with pytest.raises(type(error)) as info:
            await client.image("x", model=["a:m", "b:m"])
    assert info.value is error
    assert second.calls == 0


async def test_a_plain_generation_failure_does_fall_through() -> None:
    first, second = FakeBackend(error=mg.GenerationFailedError("CUDA out of memory")), FakeBackend()
    async with mg.Client(backends={"a": first, "b": second}) as client:
        assert (await client.image("x", model=["a:m", "b:m"])).provider == "b"


async def test_cooldown_skips_a_failed_backend() -> None:
    first = FakeBackend(error=mg.ProviderError("bad gateway", status=502))
    second = FakeBackend()
    async with mg.Client(backends={"a": first, "b": second}) as client:
        await client.image("x", model=["a:m", "b:m"])
        res = await client.image("x", model=["a:m", "b:m"])
    assert first.calls == 1  # skipped the second time
    assert second.calls == 2
    assert any("skipped a:m: cooling down" in w.message for w in res.warnings)


async def test_all_backends_failing() -> None:
    e1 = mg.RateLimitedError("slow down", retry_after=1)
    e2 = mg.ProviderError("unavailable", status=503)
    async with mg.Client(backends={"a": FakeBackend(error=e1), "b": FakeBackend(error=e2)}) as client:
        with pytest.raises(mg.AllBackendsFailedError) as info:
            await client.image("x", model=["a:m", "b:m"])
    err = info.value
    assert err.errors == [("a:m", e1), ("b:m", e2)]
    assert err.retryable
    assert "a:m" in str(err) and "b:m" in str(err)


async def test_missing_provider_extra_falls_through_and_alone_gives_the_hint() -> None:
    mg.register_backend("broken", "mediagen_no_such_module:Backend")
    async with mg.Client() as client:
        res = await client.image("x", model=["broken:m", "test:fake"])
        assert res.provider == "test"
        with pytest.raises(ImportError, match=r"the plugin providing 'broken:'"):
            await client.image("x", model="broken:m")


async def test_backend_deadline_error_without_a_timeout() -> None:
    def fn(request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Result:
        raise mg.DeadlineExceededError("the prediction timed out on the provider's side")

    async with mg.Client(backends={"f": FunctionBackend(fn)}) as client:
        with pytest.raises(mg.DeadlineExceededError, match="provider's side"):
            await client.image("x", model="f:m")


# -- closing ---------------------------------------------------------------------------------------


async def test_aclose_cancels_pending_jobs_and_closes_backends() -> None:
    slow = FakeBackend(steps=100, step_delay_s=0.01)
    client = mg.Client(backends={"x": slow})
    job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
    async for event in job.events():
        if isinstance(event, mg.Progress):
            break
    await client.aclose()
    assert job.status == mg.JobStatus.CANCELLED
    assert isinstance([e async for e in job.events()][-1], mg.Cancelled)
    assert slow.cancelled == 1
    assert slow.closed


async def test_aclose_right_after_submit() -> None:
    fake = FakeBackend()
    client = mg.Client(backends={"x": fake})
    job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
    await client.aclose()
    assert job.status == mg.JobStatus.CANCELLED
    events = [e async for e in job.events()]
    assert [type(e) for e in events] == [mg.Queued, mg.Cancelled]
    assert events[-1].reason == "client closed"
    with pytest.raises(asyncio.CancelledError):
        await job.result()
    assert fake.calls == 0 and fake.closed
    await client.aclose()  # twice is fine


async def test_closed_client_refuses_work() -> None:
    client = mg.Client()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        client.submit(mg.ImageRequest(prompt="x"), model="test:fake")
    with pytest.raises(RuntimeError, match="closed"):
        await client.image("x", model="test:fake")
    with pytest.raises(RuntimeError, match="closed"):
        await client.backend("test")
    with pytest.raises(RuntimeError, match="closed"):
        async with client:
            pass


async def test_one_backend_failing_to_close_does_not_keep_others_open(caplog: pytest.LogCaptureFixture) -> None:
    class BadClose(FakeBackend):
        async def aclose(self) -> None:
            raise OSError("socket already gone")

    good = FakeBackend()
    async with mg.Client(backends={"bad": BadClose(), "good": good}):
        pass
    assert good.closed
    assert any("closing the" in r.getMessage() for r in caplog.records)


async def test_per_call_timeout_must_be_positive() -> None:
    async with mg.Client() as client:
        for bad in (0, -1):
            with pytest.raises(mg.InvalidRequestError, match="timeout must be finite seconds above zero"):
                await client.image("x", model="test:fake", timeout=bad)


async def test_on_event_may_be_async() -> None:
    seen: list[str] = []

    async def on_event(event: mg.Event) -> None:
        await asyncio.sleep(0)
        seen.append(type(event).__name__)

    async with mg.Client() as client:
        await client.image("x", model="test:fake", on_event=on_event)
    assert seen == ["Queued", "Started", "Progress", "Progress", "Progress", "Completed"]
