"""Scale out on Ray: the same requests, spread over a cluster's workers.

- `RayEngine`: a pool of Ray actors, each holding one `mediagen.Client` (so requests on a worker
  are micro-batched as in-process); `mediagen batch --engine ray` feeds it from the driver.
- `Generate`: a callable class for Ray Data, e.g.
  `ds.map_batches(Generate, fn_constructor_kwargs={"model": ...}, concurrency=2)`.

Ray is imported only when one of these is used (`pip install 'mediagen[ray]'`).
"""

from __future__ import annotations

from .data import Generate
from .engine import RayEngine, RaySettings

__all__ = ["Generate", "RayEngine", "RaySettings"]
