"""How long `import mediagen` takes, and that it pulls in nothing heavy (target: <= 150 ms);
how long `mediagen --help` and `mediagen <command> --help` take to print (target: <= 200 ms median,
the whole process, as a person waits for it).

Runs a fresh interpreter several times and prints the median, next to `python -c pass` measured
the same way, so the number is the package's own cost.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


def cli_help(args: list[str], runs: int = 9) -> float:
    """Median wall time of the installed `mediagen` script printing a help page (the whole process)."""
    script = Path(sys.executable).with_name("mediagen")
    if not script.exists():
        raise SystemExit(f"no mediagen script next to {sys.executable}: pip install -e . first")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(script), *args], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def process_baseline(stmt: str = "pass", runs: int = 9) -> float:
    """Median wall time of `python -c <stmt>` as a whole process (`pass`: what any Python command costs)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    base, _ = measure("pass")
    pydantic, _ = measure("import pydantic")
    total, heavy = measure("import mediagen")
    print(f"import mediagen: {total * 1000:.1f} ms (median of 7; target <= 150 ms)")
    print(f"  of which pydantic alone: {pydantic * 1000:.1f} ms; empty statement: {base * 1000:.2f} ms")
    print(f"  heavy modules imported: {heavy or 'none'}")
    bare = process_baseline()
    with_package = process_baseline("import mediagen")
    print(f"python -c pass (whole process): {bare * 1000:.0f} ms (median of 9)")
    print(f"python -c 'import mediagen' (whole process): {with_package * 1000:.0f} ms (median of 9)")
    slow = []
    for args in (["--help"], ["image", "--help"], ["audio", "--help"], ["batch", "--help"]):
        took = cli_help(args)
        print(
            f"mediagen {' '.join(args)}: {took * 1000:.0f} ms (median of 9, whole process; target <= 200 ms; "
            f"{(took - with_package) * 1000:+.0f} ms over importing the package)"
        )
        if took > 0.2:
            slow.append(" ".join(args))
    if heavy:
        raise SystemExit(f"import mediagen pulled in {heavy}")
    if slow:
        print(f"  over target: {slow} (on a loaded machine, compare with `python -c pass` above)")


if __name__ == "__main__":
    main()
