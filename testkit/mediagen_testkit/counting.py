"""Counting what a pipeline computes, where a tiny random-weight model's pixels cannot tell runs apart.

A tiny model barely changes its picture for another prompt, a skipped step or a guidance pass, so
tests count the work instead: every attention call in diffusers and transformers goes through
`torch.nn.functional.scaled_dot_product_attention`, looked up at each call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["AttentionCount", "count_attention"]


class AttentionCount:
    """How many attention calls were made since counting began (from any thread); set `calls` to restart."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0

    def add(self) -> None:
        with self._lock:
            self.calls += 1


@contextmanager
def count_attention() -> Iterator[AttentionCount]:
    """Count `scaled_dot_product_attention` calls in this process while the block runs.

    Examples:
        >>> with count_attention() as count:  # doctest: +SKIP
        ...     pipe(prompt="a fox", num_inference_steps=2)
        >>> count.calls  # doctest: +SKIP
        12
    """
    import torch

    count = AttentionCount()
    original = torch.nn.functional.scaled_dot_product_attention

    def counting(*args: Any, **kwargs: Any) -> Any:
        count.add()
        return original(*args, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = counting
    try:
        yield count
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
