"""How long `import mediagen` takes, and that it pulls in nothing heavy (target: <= 150 ms).

Runs a fresh interpreter several times and prints the median, next to `python -c pass` measured
the same way, so the number is the package's own cost.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers", "replicate", "numpy", "PIL", "httpx", "trimesh", "imageio")
PROBE = (
    "import sys, time; t = time.perf_counter(); {stmt}; dt = time.perf_counter() - t; "
    "import json; print(json.dumps([dt, sorted(m for m in {heavy!r} if m in sys.modules)]))"
)


def measure(stmt: str, runs: int = 7) -> tuple[float, list[str]]:
    times, loaded = [], []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", PROBE.format(stmt=stmt, heavy=HEAVY)], capture_output=True, text=True, check=True
        ).stdout
        dt, loaded = json.loads(out)
        times.append(dt)
    return statistics.median(times), loaded


def main() -> None:
    base, _ = measure("pass")
    pydantic, _ = measure("import pydantic")
    total, heavy = measure("import mediagen")
    print(f"import mediagen: {total * 1000:.1f} ms (median of 7; target <= 150 ms)")
    print(f"  of which pydantic alone: {pydantic * 1000:.1f} ms; empty statement: {base * 1000:.2f} ms")
    print(f"  heavy modules imported: {heavy or 'none'}")
    if heavy:
        raise SystemExit(f"import mediagen pulled in {heavy}")


if __name__ == "__main__":
    main()
