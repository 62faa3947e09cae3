"""Telling whether a listed prediction is the one a lost create made.

When a create's answer is lost (the connection dropped after sending, a 5xx, a read timeout), the
transport looks through `GET /v1/predictions` for the prediction it may have made. Replicate does
not promise that a prediction's `input` echoes the body as sent: it fills in the model's defaults,
may store numbers in the schema's type (`7` as `7.0`, or `"7"`), and replaces an inline file
(`data:` URL) with the URL of the file it stored. So a prediction matches a create when:

- it was made for the same model (and version, when one was named);
- it was created inside the search window (not before the create could have been sent);
- every key of the sent input is present in its `input`, with an equal value after a type-tolerant
  normalisation (`normalise`); keys only in the echo (defaults) are ignored.

Two matching predictions that no call of ours holds cannot be told apart; the transport then adopts
neither and fails without sending the create again (see `ReplicateTransport._recover`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["input_matches", "inputs_collide", "normalise"]

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def normalise(value: Any) -> Any:
    """A form of `value` in which the type changes a server may make compare equal.

    Numbers (and strings that are plain numbers) become floats; booleans stay booleans (`True` is
    not `1` here); lists and dicts are normalised item by item; strings are stripped.

    Examples:
        >>> normalise(7) == normalise(7.0) == normalise("7")
        True
        >>> normalise(True), normalise(1)  # compared with their types: True does not match 1
        (True, 1.0)
    """
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) else repr(number)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return float(text)
        return text
    if isinstance(value, (list, tuple)):
        return [normalise(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): normalise(v) for k, v in value.items()}
    return value


def _equal(sent: Any, echoed: Any) -> bool:
    if isinstance(sent, str) and sent.startswith("data:"):
        # Replicate stores an inline file and echoes where it put it: any URL in its place will do
        # (the other inputs, the model and the time window still have to match).
        return isinstance(echoed, str) and (echoed == sent or echoed.startswith(("https://", "http://")))
    if isinstance(sent, (list, tuple)):
        return (
            isinstance(echoed, (list, tuple))
            and len(sent) == len(echoed)
            and all(_equal(s, e) for s, e in zip(sent, echoed, strict=True))
        )
    if isinstance(sent, Mapping):
        return isinstance(echoed, Mapping) and input_matches(sent, echoed)
    a, b = normalise(sent), normalise(echoed)
    if isinstance(a, float) and isinstance(b, float):
        # A float that went through another language's formatter may come back a hair off.
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return type(a) is type(b) and bool(a == b)


def input_matches(sent: Mapping[str, Any], echoed: Any) -> bool:
    """Whether a prediction's echoed `input` could have come from the `sent` input.

    Args:
        sent: The input as the create sent it.
        echoed: The prediction's `input` as listed.

    Returns:
        True when every sent key is in the echo with an equal value (see `normalise`); a sent
        None (or empty string, list or object) also matches a key the echo leaves out.

    Examples:
        >>> input_matches({"prompt": "fox", "steps": 4}, {"prompt": "fox", "steps": 4.0, "width": 1024})
        True
        >>> input_matches({"prompt": "fox", "seed": 1}, {"prompt": "fox", "seed": 2})
        False
    """
    if not isinstance(echoed, Mapping):
        return False
    for key, value in sent.items():
        if key not in echoed:
            if value is None or (isinstance(value, str | list | dict) and not value):
                continue  # a store may drop an empty value; it cannot make one up
            return False
        if not _equal(value, echoed[key]):
            return False
    return True


def inputs_collide(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether one prediction could match two sent inputs (`input_matches` both).

    True when every key the two share has equal values: the keys only one of them sent may be
    defaults the server filled in for the other. Creates whose inputs collide are never searched
    for at the same time as one of them is being sent.

    Examples:
        >>> inputs_collide({"prompt": "fox", "seed": 1}, {"prompt": "fox", "width": 512})
        True
        >>> inputs_collide({"prompt": "fox", "seed": 1}, {"prompt": "fox", "seed": 2})
        False
    """
    for key in a.keys() & b.keys():
        if not (_equal(a[key], b[key]) or _equal(b[key], a[key])):
            return False
    return True
