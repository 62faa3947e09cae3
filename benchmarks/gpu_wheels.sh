#!/usr/bin/env bash
# Fill .wheels/ (git-ignored) with what benchmarks/gpu_check.sh installs on a GPU machine that has
# torch, transformers, numpy, pillow, httpx, safetensors, huggingface-hub ... but not diffusers or
# pydantic (the H200 image of docs/performance.md: Python 3.12, x86-64). Run here, where PyPI is
# reachable; about 13 MB. mediagen itself is installed there from the tree, not from a wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-.venv/bin/pip}"
PYVER="${PYVER:-3.12}"
mkdir -p .wheels
"$PIP" download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .wheels \
    diffusers==0.42.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing-extensions==4.16.0 importlib-metadata==10.2.0 torchao==0.18.0 ftfy==6.3.1 wcwidth==0.9.4
ls -1 .wheels
du -sh .wheels
