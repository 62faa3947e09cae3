"""Issue 12, item 8: any malformed model argument or timeout raises a MediagenError, never a bare
TypeError / AttributeError / OSError / OverflowError. One test per finding, named for it."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

import mediagen as mg


async def _image(model: Any = "test:fake", **kwargs: Any) -> mg.Result:
    async with mg.Client() as client:
        return await client.image("a fox", model=model, **kwargs)


async def test_finding_model_123_int_is_an_invalid_request() -> None:
    with pytest.raises(mg.InvalidRequestError, match="got int"):
        await _image(123)


async def test_finding_model_list_holding_none_is_an_invalid_request() -> None:
    with pytest.raises(mg.InvalidRequestError, match="item 0 must be a model string, got NoneType"):
        await _image([None])


async def test_finding_model_bytes_is_an_invalid_request() -> None:
    with pytest.raises(mg.InvalidRequestError, match="not bytes"):
        await _image(b"test:fake")


async def test_finding_model_other_types_are_invalid_requests() -> None:
    for bad in ({"test": "fake"}, 1.5, object(), ["test:fake", 7]):
        with pytest.raises(mg.InvalidRequestError):
            await _image(bad)


async def test_finding_over_long_model_string_is_model_not_found() -> None:
    with pytest.raises(mg.ModelNotFoundError, match="too long"):
        await _image("test:" + "a" * 10_000)


async def test_finding_model_string_with_nul_is_model_not_found() -> None:
    with pytest.raises(mg.ModelNotFoundError, match="control characters"):
        await _image("test:fa\x00ke")


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -math.inf, 0, 0.0, -1, -0.5])
async def test_finding_timeout_nan_inf_and_non_positive_are_invalid_requests(timeout: float) -> None:
    with pytest.raises(mg.InvalidRequestError, match="timeout"):
        await _image(timeout=timeout)


@pytest.mark.parametrize("timeout", ["5", True, [1]])
async def test_finding_timeout_of_another_type_is_an_invalid_request(timeout: Any) -> None:
    with pytest.raises(mg.InvalidRequestError, match="timeout"):
        await _image(timeout=timeout)


@pytest.mark.parametrize("timeout", [math.nan, math.inf, 0, -3])
def test_finding_client_default_timeout_is_checked_too(timeout: float) -> None:
    with pytest.raises(mg.InvalidRequestError, match="timeout"):
        mg.Client(timeout=timeout)
    # A Config built by hand may refuse it itself (pydantic's ValidationError, as for a request).
    with pytest.raises((mg.InvalidRequestError, ValidationError), match="timeout"):
        mg.Client(config=mg.Config(timeout=timeout))


def test_finding_sync_client_timeout_inf_is_an_invalid_request() -> None:
    with mg.SyncClient() as client, pytest.raises(mg.InvalidRequestError, match="timeout"):
        client.image("a fox", model="test:fake", timeout=math.inf)


async def test_valid_timeouts_and_models_still_work() -> None:
    res = await _image(("test:fake",), timeout=30)
    assert res.provider == "test"
    res = await _image(["test:fake"], timeout=0.5e3)
    assert res.provider == "test"
