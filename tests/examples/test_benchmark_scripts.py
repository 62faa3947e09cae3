"""The GPU benchmark scripts refuse bad arguments before doing anything expensive.

Their end-to-end check is `benchmarks/gpu_check.sh --dry-run` (minutes on a CPU: not in the suite).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"
THROUGHPUT = ROOT / "benchmarks" / "local_throughput.py"

pytestmark = pytest.mark.slow


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_gpu_check_rejects_bad_arguments_and_documents_itself() -> None:
    unknown = run("bash", str(GPU_CHECK), "--bogus")
    assert unknown.returncode == 2 and "unknown argument --bogus" in unknown.stderr
    budget = run("bash", str(GPU_CHECK), "--budget-s", "ten")
    assert budget.returncode == 2 and "whole seconds" in budget.stderr
    helped = run("bash", str(GPU_CHECK), "--help")
    assert helped.returncode == 0 and "--dry-run" in helped.stdout and "set -uo" not in helped.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--approx", "first-block,teacache"], "unknown approx mode"),
        (["--approx", "fp8:0.3"], "only first-block takes a threshold"),
        (["--approx", "first-block:2"], "only first-block takes a threshold"),
        (["--flux-layers", "0,4"], "at least one double block"),
        (["--flux-layers", "two"], "DOUBLE,SINGLE"),
        (["--restart-runs", "3"], "invalid choice"),
    ],
)
def test_local_throughput_rejects_bad_arguments(args: list[str], message: str) -> None:
    proc = run(sys.executable, str(THROUGHPUT), *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
