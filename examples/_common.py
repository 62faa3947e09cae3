"""Shared bits of the examples: where outputs go and which model to use by default.

Each example runs offline on tiny random-weight models (built once into the mediagen cache) unless
you pass a real model string with --model. Expect noise from the tiny models: they prove the path,
not the art.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("-o", "--output", type=Path, default=Path("example-out"), help="output directory")
    return p


def tiny(name: str, provider: str = "diffusers") -> str:
    """The model string of a tiny model, building it on first use."""
    from mediagen_testkit.tiny import ensure_tiny_model

    return f"{provider}:{ensure_tiny_model(name)}"
