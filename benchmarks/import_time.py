"""How long `import mediagen` takes, and that it pulls in nothing heavy (target: <= 150 ms);
how long `mediagen --help` and `mediagen <command> --help` take to print (target: <= 200 ms median,
the whole process, as a person waits for it).

Runs a fresh interpreter several times and prints the median, next to `python -c pass` measured
the same way, so the number is the package's own cost.
"""

from __future__ import annotations

import json
import resource
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


def timed(argv: list[str], runs: int = 9) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of a whole process, over `runs` runs.

    On an idle machine the two agree (start-up is one thread); on a shared, loaded one the wall
    time mostly measures the queue for a core, and the CPU time is the number to read.
    """
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def cli_help(args: list[str], runs: int = 9) -> tuple[float, float]:
    """Wall and CPU time of the installed `mediagen` script printing a help page (the whole process)."""
    script = Path(sys.executable).with_name("mediagen")
    if not script.exists():
        raise SystemExit(f"no mediagen script next to {sys.executable}: pip install -e . first")
    return timed([str(script), *args], runs)


def process_baseline(stmt: str = "pass", runs: int = 9) -> tuple[float, float]:
    """Wall and CPU time of `python -c <stmt>` as a whole process (`pass`: what any Python command costs)."""
    return timed([sys.executable, "-c", stmt], runs)


def main() -> None:
    base, _ = measure("pass")
    pydantic, _ = measure("import pydantic")
    total, heavy = measure("import mediagen")
    print(f"import mediagen: {total * 1000:.1f} ms (median of 7; target <= 150 ms)")
    print(f"  of which pydantic alone: {pydantic * 1000:.1f} ms; empty statement: {base * 1000:.2f} ms")
    print(f"  heavy modules imported: {heavy or 'none'}")
    print("whole processes, median of 9 (wall / CPU):")
    for label, (wall, cpu) in (
        ("python -c pass", process_baseline()),
        ("python -c 'import mediagen'", process_baseline("import mediagen")),
    ):
        print(f"  {label}: {wall * 1000:.0f} ms / {cpu * 1000:.0f} ms")
    slow = []
    for args in (["--help"], ["image", "--help"], ["audio", "--help"], ["batch", "--help"]):
        wall, cpu = cli_help(args)
        print(f"  mediagen {' '.join(args)}: {wall * 1000:.0f} ms / {cpu * 1000:.0f} ms (target <= 200 ms)")
        if min(wall, cpu) > 0.2:
            slow.append(" ".join(args))
    if heavy:
        raise SystemExit(f"import mediagen pulled in {heavy}")
    if slow:
        print(f"  over target: {slow} (on a loaded machine, compare with `python -c pass` above)")


if __name__ == "__main__":
    main()
