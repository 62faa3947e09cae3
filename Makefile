# `make test` and `make demo` work on a fresh clone: they build .venv/ first.
VENV ?= .venv
PY := $(VENV)/bin/python
# On the project's CI machines a CPU wheel of this torch lies on disk; elsewhere set TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= all,dev,docs
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck pytest demo docs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $(STAMP)

LINT_DIRS := $(wildcard sdk backends tests benchmarks examples)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/ruff format --check sdk backends

typecheck: $(STAMP)
	$(VENV)/bin/mypy sdk backends

pytest: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/pytest -q -p no:cacheprovider

test: lint typecheck pytest docs

# griffe reads sources by package path; sdk/ is `mediagen` and backends/ is `mediagen.backends`.
docs: $(STAMP)
	rm -rf build/docs-src && mkdir -p build/docs-src/mediagen
	ln -s $(CURDIR)/sdk/* build/docs-src/mediagen/
	ln -s $(CURDIR)/backends build/docs-src/mediagen/backends
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet -d build/site

bench: $(STAMP)
	$(PY) benchmarks/import_time.py

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/mediagen demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build
