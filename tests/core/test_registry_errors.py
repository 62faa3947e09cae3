"""The registry (entry points, registration, contract versions, install hints), the error tree, redaction,
and how light `import mediagen` is."""

from __future__ import annotations

import copy
import importlib
import json
import pickle
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

import mediagen as mg
from mediagen import errors as errors_module
from mediagen.testing import FakeBackend

reg = importlib.import_module("mediagen._registry")


class EchoBackend(mg.Backend):
    provider = "echo"

    async def run(self, request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Result:
        return mg.Result(artifacts=[], provider=self.provider, model=model)


# -- registry --------------------------------------------------------------------------------------


def test_registry_is_read_only() -> None:
    assert isinstance(mg.registry, types.MappingProxyType)
    mg.available_providers()
    for name in ("diffusers", "transformers", "replicate", "fal", "test"):
        assert name in mg.registry
    assert mg.registry["test"] == "mediagen.testing:FakeBackend"  # still a string: nothing imported
    with pytest.raises(TypeError):
        mg.registry["mine"] = EchoBackend  # type: ignore[index]
    with pytest.raises(TypeError):
        del mg.registry["test"]  # type: ignore[attr-defined]
    assert mg.available_providers() == sorted(mg.registry)


def test_entry_point_provider_test_is_the_fake_backend() -> None:
    assert mg.get_backend_class("test") is FakeBackend
    assert reg.ENTRY_POINT_GROUP == "mediagen.backends"


def test_register_backend_and_clobbering() -> None:
    mg.register_backend("echo", EchoBackend)
    assert mg.get_backend_class("echo") is EchoBackend
    mg.register_backend("echo", EchoBackend)  # the same class again is fine

    class Other(EchoBackend):
        pass

    with pytest.raises(ValueError, match="already registered; pass clobber=True"):
        mg.register_backend("echo", Other)
    assert mg.get_backend_class("echo") is EchoBackend
    with pytest.raises(ValueError, match="already registered"):
        mg.register_backend("test", Other)
    mg.register_backend("echo", Other, clobber=True)
    assert mg.get_backend_class("echo") is Other  # the cached class was dropped


@pytest.mark.parametrize("name", ["", "a:b", ":"])
def test_register_backend_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be empty or contain ':'"):
        mg.register_backend(name, EchoBackend)


def test_registered_path_is_imported_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mediagen_lazy_plugin.py").write_text(
        textwrap.dedent(
            """
            import mediagen as mg

            class LazyBackend(mg.Backend):
                provider = "lazy"

                async def run(self, request, model, ctx):
                    return mg.Result(artifacts=[], provider="lazy", model=model)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mediagen_lazy_plugin", raising=False)
    mg.register_backend("lazy", "mediagen_lazy_plugin:LazyBackend")
    assert "mediagen_lazy_plugin" not in sys.modules
    assert mg.registry["lazy"] == "mediagen_lazy_plugin:LazyBackend"
    cls = mg.get_backend_class("lazy")
    assert cls.__name__ == "LazyBackend" and "mediagen_lazy_plugin" in sys.modules


def test_wrong_contract_version_fails_clearly() -> None:
    class Outdated(EchoBackend):
        contract_version = 99

    mg.register_backend("outdated", Outdated)
    with pytest.raises(RuntimeError) as info:
        mg.get_backend_class("outdated")
    message = str(info.value)
    assert "contract version 99" in message
    assert f"speaks version {mg.CONTRACT_VERSION}" in message
    assert "Outdated" in message and "upgrade the plugin" in message


async def test_wrong_contract_version_through_the_client() -> None:
    class Outdated(EchoBackend):
        contract_version = 0

    mg.register_backend("outdated", Outdated)
    async with mg.Client() as client:
        with pytest.raises(RuntimeError, match="contract version 0"):
            await client.image("x", model="outdated:m")


def test_not_a_backend_subclass() -> None:
    mg.register_backend("notone", dict)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"not a mediagen\.Backend subclass"):
        mg.get_backend_class("notone")


@pytest.mark.parametrize(
    ("name", "extra"), [("replicate", "replicate"), ("diffusers", "local"), ("transformers", "local")]
)
def test_provider_that_fails_to_import_gives_the_install_hint(name: str, extra: str) -> None:
    mg.register_backend(name, "mediagen_no_such_module_anywhere:Backend", clobber=True)
    with pytest.raises(ImportError) as info:
        mg.get_backend_class(name)
    assert f"pip install 'mediagen[{extra}]' to use '{name}:' models" in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


def test_third_party_plugin_that_fails_to_import_names_its_module() -> None:
    # There is no mediagen[acme] extra: the hint must not invent one.
    mg.register_backend("acme", "mediagen_no_such_module_anywhere:Backend", clobber=True)
    with pytest.raises(ImportError) as info:
        mg.get_backend_class("acme")
    assert "mediagen[acme]" not in str(info.value)
    assert "mediagen_no_such_module_anywhere" in str(info.value)


def test_unknown_provider_suggests() -> None:
    with pytest.raises(mg.ModelNotFoundError) as info:
        mg.get_backend_class("replicat")
    assert "Did you mean 'replicate'?" in str(info.value)
    assert "Known providers:" in str(info.value)
    with pytest.raises(mg.ModelNotFoundError) as info:
        mg.get_backend_class("zzzzzzzz")
    assert "Did you mean" not in str(info.value)


# -- errors ----------------------------------------------------------------------------------------

COMMON = {
    "provider": "replicate",
    "model": "owner/name",
    "status": 503,
    "detail": "upstream busy",
    "retry_after": 2.5,
    "retryable": True,
}


def _instances() -> list[tuple[mg.MediagenError, dict[str, Any]]]:
    nested = mg.RateLimitedError("slow down", retry_after=1.0, provider="a")
    return [
        (mg.MediagenError("base", **COMMON), {}),
        (
            mg.InvalidRequestError("bad width", errors=[{"loc": ("width",), "msg": "m", "type": "t"}], **COMMON),
            {"errors": [{"loc": ("width",), "msg": "m", "type": "t"}]},
        ),
        (
            mg.UnsupportedRequestError("no audio", feature="text-to-music", supported_by=["a", "b"], **COMMON),
            {"feature": "text-to-music", "supported_by": ["a", "b"]},
        ),
        (mg.AuthenticationError("no token", **COMMON), {}),
        (mg.RateLimitedError("slow down", **COMMON), {}),
        (mg.ProviderError("bad gateway", **COMMON), {}),
        (mg.EndpointUnreachableError("connection refused", **COMMON), {}),
        (mg.GenerationFailedError("refused", refused=True, **COMMON), {"refused": True}),
        (mg.DeadlineExceededError("too slow", **COMMON), {}),
        (mg.ModelNotFoundError("no such model", **COMMON), {}),
        (mg.DownloadError("too big", **COMMON), {}),
        (mg.BudgetExceededError("over budget", **COMMON), {}),
        (mg.ConfigError("untrusted config", **COMMON), {}),
        (mg.AllBackendsFailedError("all failed", errors=[("a:m", nested)], **COMMON), {"errors": [("a:m", nested)]}),
        (mg.MediaTooLargeError("too big", limit=1000, **COMMON), {"limit": 1000}),
        (mg.OutputExistsError("fox.png exists", path="/tmp/fox.png", **COMMON), {"path": "/tmp/fox.png"}),
    ]


def test_every_error_is_covered() -> None:
    names = {type(e).__name__ for e, _ in _instances()}
    exported = {n for n in errors_module.__all__ if n != "redact"}
    assert names == exported
    assert all(issubclass(getattr(mg, n), mg.MediagenError) for n in exported)


@pytest.mark.parametrize(("error", "extra"), _instances(), ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
def test_errors_pickle_with_their_attributes(error: mg.MediagenError, extra: dict[str, Any], how: str) -> None:
    if how == "pickle":
        back = pickle.loads(pickle.dumps(error))
    elif how == "deepcopy":
        back = copy.deepcopy(error)
    else:
        back = copy.copy(error)
    assert type(back) is type(error)
    assert str(back) == str(error) and back.args == error.args and back.message == error.message
    for attr, value in COMMON.items():
        assert getattr(back, attr) == value, attr
    for attr, value in extra.items():
        got = getattr(back, attr)
        if attr == "errors" and isinstance(error, mg.AllBackendsFailedError):
            assert [(n, type(e), str(e), e.retry_after) for n, e in got] == [
                (n, type(e), str(e), e.retry_after) for n, e in value
            ]
        else:
            assert got == value, attr


def test_errors_pickle_with_defaults() -> None:
    for cls in (mg.RateLimitedError, mg.DownloadError, mg.ModelNotFoundError):
        back = pickle.loads(pickle.dumps(cls("x")))
        assert back.retryable == cls("x").retryable and back.provider is None


def test_error_tree_and_defaults() -> None:
    assert isinstance(mg.InvalidRequestError("x"), ValueError)
    assert isinstance(mg.DeadlineExceededError("x"), TimeoutError)
    assert mg.RateLimitedError("x").retryable and mg.DownloadError("x").retryable
    assert not mg.AuthenticationError("x").retryable and not mg.InvalidRequestError("x").retryable
    assert mg.ProviderError("x", status=500).retryable
    assert mg.ProviderError("x", status=408).retryable
    assert not mg.ProviderError("x", status=400).retryable
    assert not mg.ProviderError("x", status=503, retryable=False).retryable
    assert mg.ProviderError("x").retryable  # no status: a network-level failure
    assert not mg.GenerationFailedError("x").refused


def test_error_str_names_where_it_happened() -> None:
    assert str(mg.ProviderError("server error", provider="replicate", model="a/b")) == "server error [replicate:a/b]"
    assert str(mg.ProviderError("replicate:a/b said no", provider="replicate", model="a/b")) == "replicate:a/b said no"
    assert str(mg.ProviderError("plain")) == "plain"


# -- redaction -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "r8_AbCdEf0123456789xyz",
        "hf_abcdefghijklmnopqrstuv",
        "sk_live0123456789",
        "whsec_c2VjcmV0LXNpZ25pbmcta2V5",
    ],
)
def test_redact_hides_tokens(secret: str) -> None:
    text = errors_module.redact(f"request failed with token {secret} attached")
    assert secret not in text and secret[6:] not in text
    assert "request failed" in text and "***" in text


def test_redact_bearer_and_given_secrets() -> None:
    text = errors_module.redact("Authorization: Bearer abcdef0123456789ghij", None)
    assert "abcdef0123456789ghij" not in text
    assert errors_module.redact("key=swordfish here", "swordfish") == "key=*** here"
    assert errors_module.redact("nothing secret in here") == "nothing secret in here"
    assert errors_module.redact("short abc", "abc") == "short abc"  # too short to be a secret worth hiding


def test_errors_redact_their_message_and_detail() -> None:
    err = mg.AuthenticationError(
        "token r8_AbCdEf0123456789xyz was rejected", detail='{"detail": "bad token r8_AbCdEf0123456789xyz"}'
    )
    assert "r8_AbCdEf0123456789xyz" not in str(err)
    assert err.detail is not None and "r8_AbCdEf0123456789xyz" not in err.detail
    assert "r8_AbCdEf0123456789xyz" not in repr(pickle.loads(pickle.dumps(err)))


# -- import weight ---------------------------------------------------------------------------------

HEAVY = ["torch", "diffusers", "transformers", "replicate", "numpy", "PIL", "httpx", "imageio", "soundfile", "trimesh"]


@pytest.mark.slow
def test_import_mediagen_is_light() -> None:
    code = textwrap.dedent(
        f"""
        import json, sys
        import mediagen
        light = sorted(m for m in {HEAVY!r} if m in sys.modules)
        mediagen.Client, mediagen.SyncClient, mediagen.ImageRequest(prompt="x")
        client_too = sorted(m for m in {HEAVY!r} if m in sys.modules)
        print(json.dumps([light, client_too]))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    light, client_too = json.loads(out.stdout.strip().splitlines()[-1])
    assert light == [], f"import mediagen pulled in {light}"
    assert client_too == [], f"the client pulled in {client_too}"


def test_public_names() -> None:
    for name in mg.__all__:
        obj = getattr(mg, name)
        if isinstance(obj, type):
            assert obj.__module__ == "mediagen", name
    with pytest.raises(AttributeError):
        mg.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
