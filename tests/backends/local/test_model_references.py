"""Issue 12, item 8 for the local backends: a malformed model reference is a MediagenError.

`diffusers:~nobody/m` raised RuntimeError (expanduser of an unknown user) and an over-long path
OSError (ENAMETOOLONG); both now come out as `ModelNotFoundError`, through the client too.
"""

from __future__ import annotations

import pytest

import mediagen as mg
from mediagen_local.hub import hub_errors, resolve_reference

pytest.importorskip("diffusers")


def test_finding_unknown_home_directory_is_model_not_found() -> None:
    with pytest.raises(mg.ModelNotFoundError, match="not a usable path"):
        resolve_reference("~nobody-such-user-here/m", what="model")


def test_finding_over_long_path_is_model_not_found() -> None:
    with pytest.raises(mg.ModelNotFoundError, match="not a usable path"):
        resolve_reference("/" + "a" * 300 + "/model", what="model")


def test_finding_invalid_hub_id_is_model_not_found() -> None:
    from huggingface_hub.utils import validate_repo_id

    with pytest.raises(mg.ModelNotFoundError, match="valid Hugging Face Hub id"), hub_errors("a b", "model"):
        validate_repo_id("a b")


@pytest.mark.parametrize(
    "model",
    [
        "diffusers:~nobody-such-user-here/m",
        "diffusers:/" + "a" * 300,
        "diffusers:" + "x" * 300,
        "transformers:~nobody-such-user-here/m",
    ],
    ids=["unknown-user", "long-path", "long-hub-id", "transformers-unknown-user"],
)
async def test_finding_malformed_local_models_through_the_client(model: str) -> None:
    async with mg.Client() as client:
        with pytest.raises(mg.MediagenError) as info:
            await client.image("a fox", model=model) if model.startswith("diffusers") else await client.audio(
                "a tune", model=model
            )
    assert isinstance(info.value, (mg.ModelNotFoundError, mg.UnsupportedRequestError, mg.DownloadError))
