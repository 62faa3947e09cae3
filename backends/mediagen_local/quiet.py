"""Targeted filters for third-party lines that tell a mediagen user nothing they can act on.

Each filter names one message from one library logger (or one Python warning), so anything else
those libraries say still reaches the user. They stand down when the `mediagen` logger is at
DEBUG (`mediagen -vv`, or `logging.getLogger("mediagen").setLevel(logging.DEBUG)`).

Filtered, and why:

- transformers' "`CLIPImageProcessor` requires torchvision (not installed); falling back to
  `CLIPImageProcessorPil`": printed on every diffusers pipeline load without torchvision; the
  fallback is the processor mediagen wants, and installing torchvision changes nothing we do.
- transformers' "Model config: pad_token_id must be `None` or an integer within the vocabulary":
  MusicGen's decoder puts its pad/bos tokens at `vocab_size` by design (its embedding has
  `vocab_size + 1` rows); transformers' generic check does not know that. Only for MusicGen-style
  decoder configs, where the id is exactly `vocab_size`.
- tqdm's "IProgress not found. Please update jupyter and ipywidgets": printed in Jupyter when the
  libraries import `tqdm.auto`; mediagen turns their bars off and reports progress as events.
- Deprecations that diffusers' own model code trips inside transformers and torch, which only a
  diffusers release can act on: "`use_return_dict` is deprecated" and "`past_key_values`/
  `cache_params` are deprecated" (Kolors' ChatGLM encoder), the `past_key_values` FutureWarning
  (AudioLDM2's GPT-2), `torch.nn.utils.weight_norm`'s FutureWarning (Stable Audio's VAE).
- transformers' "`sdpa` attention does not support `output_attentions=True`": HiDream's pipeline
  asks its Llama encoder for attentions it never reads.
- torch's "In CPU autocast, but the target dtype is not supported. Disabling autocast." raised from
  diffusers' code (Mochi asks for a float32 autocast region, which is what it gets).
"""

from __future__ import annotations

import logging
import re
import threading
import warnings

__all__ = ["THIRD_PARTY_NOISE", "quiet_third_party"]

THIRD_PARTY_NOISE: dict[str, tuple[re.Pattern[str], ...]] = {
    "transformers.utils.import_utils": (
        re.compile(
            r"^`\w+ImageProcessor` requires torchvision \(not installed\); falling back to `\w+ImageProcessorPil`"
        ),
    ),
    "transformers.configuration_utils": (
        re.compile(
            r"^Model config: (pad|bos|decoder_start)_token_id must be `None` or an integer within the vocabulary "
            r"\(between 0 and (?P<last>\d+)\), got (?P<got>\d+)\."
        ),
        re.compile(r"^`use_return_dict` is deprecated! Use `return_dict` instead!$"),
    ),
    "transformers.utils.generic": (
        re.compile(r"^`past_key_values`/`cache_params` are deprecated\. Use `cache` instead\.$"),
    ),
    "transformers.integrations.sdpa_attention": (
        re.compile(r"^`sdpa` attention does not support `output_attentions=True`\."),
    ),
}
"""Logger name → the messages filtered on it."""

# (message pattern, category, module pattern) for `warnings.filterwarnings`.
_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"IProgress not found\. Please update jupyter and ipywidgets", Warning, ""),
    (r"`past_key_values` is deprecated and will be removed in version [\d.]+ for `\w+\.forward`", FutureWarning, ""),
    (r"`torch\.nn\.utils\.weight_norm` is deprecated in favor of", FutureWarning, ""),
    (r"In \w+ autocast, but the target dtype is not supported\. Disabling autocast\.", UserWarning, r"diffusers\."),
)

_installed = False
_lock = threading.Lock()


class _NoiseFilter(logging.Filter):
    def __init__(self, patterns: tuple[re.Pattern[str], ...]) -> None:
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger("mediagen").isEnabledFor(logging.DEBUG):
            return True
        try:
            message = record.getMessage()
        except Exception:  # not ours to judge: let the library's own handler deal with it
            return True
        for pattern in self.patterns:
            match = pattern.match(message)
            if match is None:
                continue
            if "got" in match.groupdict():
                # Only the MusicGen convention (the id one past the last token) is noise; any other is a real problem.
                return int(match["got"]) != int(match["last"]) + 1
            return False
        return True


def quiet_third_party() -> None:
    """Install the filters (once per process); call before the libraries are first imported."""
    global _installed
    with _lock:
        if _installed:
            return
        for name, patterns in THIRD_PARTY_NOISE.items():
            logging.getLogger(name).addFilter(_NoiseFilter(patterns))
        # These come through `warnings` (tqdm's at import time); a message filter leaves the
        # libraries' other warnings alone.
        for message, category, module in _WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        _installed = True
