"""Sampling: MusicGen's `generate` with a seed per output, progress per step, and a way to stop.

transformers samples every row of a batch from the one global random generator, so an output would
depend on what it was batched with. `SeededSampler` does the sampling itself instead: each output
draws its codes from its own `torch.Generator`, after top-k / top-p / temperature, and the logits it
returns put all the mass on the drawn code, so that greedy decoding (`do_sample=False`) picks exactly
it. An output is then the same alone or in any batch, up to float rounding in the padded text
encoder.

Imported by the backend on the device worker only: it needs torch and transformers.
"""

# transformers is unannotated; subclassing its processors is expected here.
# mypy: disable-error-code="misc,no-any-unimported"

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria

__all__ = ["CancelCriterion", "SamplerLast", "SeededSampler"]


class SamplerLast(LogitsProcessorList):
    """A processor list that keeps its last processor (the sampler) last.

    MusicGen's `generate` appends its classifier-free guidance processor to the list it is given;
    the sampler must see the guided logits (one row per codebook), not the doubled batch before.
    """

    def append(self, processor: Any) -> None:
        self.insert(max(0, len(self) - 1), processor)


class SeededSampler(LogitsProcessor):
    """Draw each output's codes from its own generator, and report each decoder step.

    Args:
        seeds: One seed per output, in batch order.
        rows_per_output: Decoder rows per output (MusicGen: its number of codebooks).
        top_k: Keep the `top_k` likeliest codes (0 keeps all).
        top_p: Keep the likeliest codes whose probabilities add up to `top_p` (None keeps all).
        temperature: Divide the logits by this first.
        device: Where the logits live (the generators must live there too).
        total_steps: Decoder steps the call will take (for progress).
        on_step: Called with `(step, total_steps)` after each step.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        rows_per_output: int,
        *,
        top_k: int,
        top_p: float | None,
        temperature: float,
        device: str,
        total_steps: int,
        on_step: Callable[[int, int], None],
    ) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]
        self.rows = rows_per_output
        self.top_k = top_k
        self.top_p = top_p
        self.temperature = temperature
        self.total_steps = total_steps
        self.on_step = on_step
        self.step = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if scores.shape[0] != self.rows * len(self.generators):
            raise RuntimeError(
                f"expected {self.rows} x {len(self.generators)} rows of logits, got {scores.shape[0]}; "
                "the model's generate() batches differently from MusicGen's"
            )
        logits = scores.float() / self.temperature
        if 0 < self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1.0:
            logits = _top_p(logits, self.top_p)
        probs = torch.softmax(logits, dim=-1)
        picked = torch.cat(
            [
                torch.multinomial(probs[i * self.rows : (i + 1) * self.rows], 1, generator=generator)
                for i, generator in enumerate(self.generators)
            ]
        )
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, picked, 0.0)
        self.step += 1
        self.on_step(self.step, self.total_steps)
        return out


def _top_p(logits: Any, top_p: float) -> Any:
    ordered, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(ordered, dim=-1)
    # Drop a code once the likelier ones already reach top_p; the likeliest code always stays.
    drop = probs.cumsum(dim=-1) - probs >= top_p
    drop[..., 0] = False
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


class CancelCriterion(StoppingCriteria):
    """Stop generating once `should_stop()` says so (every output of the batch was cancelled).

    Args:
        should_stop: Polled after every decoder step.
    """

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop
        self.stopped = False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        self.stopped = self.stopped or bool(self.should_stop())
        return torch.full((input_ids.shape[0],), self.stopped, dtype=torch.bool, device=input_ids.device)
