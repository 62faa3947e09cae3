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
"""

from __future__ import annotations

import logging
import re
import threading
import warnings

__all__ = ["THIRD_PARTY_NOISE", "quiet_third_party"]

THIRD_PARTY_NOISE: dict[str, re.Pattern[str]] = {
    "transformers.utils.import_utils": re.compile(
        r"^`\w+ImageProcessor` requires torchvision \(not installed\); falling back to `\w+ImageProcessorPil`"
    ),
    "transformers.configuration_utils": re.compile(
        r"^Model config: (pad|bos|decoder_start)_token_id must be `None` or an integer within the vocabulary "
        r"\(between 0 and (?P<last>\d+)\), got (?P<got>\d+)\."
    ),
}
"""Logger name → the one message filtered on it."""

_installed = False
_lock = threading.Lock()


class _NoiseFilter(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger("mediagen").isEnabledFor(logging.DEBUG):
            return True
        try:
            message = record.getMessage()
        except Exception:  # not ours to judge: let the library's own handler deal with it
            return True
        match = self.pattern.match(message)
        if match is None:
            return True
        if "got" in match.groupdict():
            # Only the MusicGen convention (the id one past the last token) is noise; any other is a real problem.
            return int(match["got"]) != int(match["last"]) + 1
        return False


def quiet_third_party() -> None:
    """Install the filters (once per process); call before the libraries are first imported."""
    global _installed
    with _lock:
        if _installed:
            return
        for name, pattern in THIRD_PARTY_NOISE.items():
            logging.getLogger(name).addFilter(_NoiseFilter(pattern))
        # tqdm warns at import time, through `warnings`; a message filter leaves its other warnings alone.
        warnings.filterwarnings("ignore", message=r"IProgress not found\. Please update jupyter and ipywidgets")
        _installed = True
