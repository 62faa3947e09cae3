# `make test` and `make demo` work on a fresh clone: they build .venv/ first.
VENV ?= .venv
PY := $(VENV)/bin/python
# On the project's CI machines a CPU wheel of this torch lies on disk; elsewhere set TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= all,ray,dev,docs
STAMP := $(VENV)/.installed
# A second environment with torchvision, for the pipelines whose processors need it (Qwen-Image-Edit).
# PyPI's torchvision does not load beside the CPU torch above, so it gets a torch of its own; on the
# project's CI machines both lie on disk. Elsewhere set TV_TORCH_SPEC="torch torchvision".
TV_VENV ?= .venv-torchvision
TV_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TV_STAMP := $(TV_VENV)/.installed

.PHONY: install test lint typecheck pytest pytest-torchvision demo docs docs-serve bench clean

install: $(STAMP)

$(STAMP): pyproject.toml testkit/pyproject.toml Makefile
	@echo "Installing into $(VENV)/ (torch, diffusers, transformers ...): a few minutes on a fresh clone, once."
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]" -e ./testkit
	touch $(STAMP)

$(TV_STAMP): pyproject.toml testkit/pyproject.toml Makefile
	@echo "Installing into $(TV_VENV)/ (torch with torchvision, for the tests marked torchvision): a few minutes, once."
	test -x $(TV_VENV)/bin/python || python3 -m venv $(TV_VENV)
	$(TV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(TV_TORCH_SPEC)
	$(TV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e ".[local,audio,dev]" -e ./testkit
	touch $(TV_STAMP)

LINT_DIRS := $(wildcard sdk backends testkit tests benchmarks examples)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/ruff format --check sdk backends testkit

# [tool.mypy] names every package (tests/core/test_typecheck.py proves it sees our types in each backend).
typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/pytest -q -p no:cacheprovider

# Only the tests marked torchvision; MEDIAGEN_REQUIRE_TORCHVISION turns their skip into a failure here.
pytest-torchvision: $(TV_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MEDIAGEN_REQUIRE_TORCHVISION=1 \
		$(TV_VENV)/bin/pytest -q -p no:cacheprovider -m torchvision tests/backends/diffusers

test: lint typecheck pytest pytest-torchvision docs

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet -d build/site

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

bench: $(STAMP)
	$(PY) benchmarks/import_time.py

demo: $(STAMP)
	@echo "make demo: builds tiny random-weight models (once, ~1 min), then writes one file per modality to mediagen-demo/."
	HF_HUB_OFFLINE=1 $(VENV)/bin/mediagen demo

clean:
	rm -rf $(VENV) $(TV_VENV) .mypy_cache .ruff_cache build
