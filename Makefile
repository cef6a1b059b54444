# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck pytest browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the main job end to end on the embedded default (SQLite in .data/demo, or under GRAINPROOF_DATA_DIR),
## print the verdicts, the desk's address and a key per role, and keep the service and the desk running
## until Ctrl-C. `make demo DEMO_ARGS=--no-serve` stops after printing (what scripts and CI want).
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/grainproof demo $(DEMO_ARGS)

## Lint, type-check and run every test (never the serving demo: tests run it with --no-serve).
test: $(STAMP) browser lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

## Headless Chromium for the auditor-desk end-to-end test (Debian package; skipped when not root).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will be skipped"; }

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
