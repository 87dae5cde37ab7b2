# Everyday commands.  Each one builds the virtualenv first if needed, so
# `make run`, `make check` and `make test` work on a fresh clone.

VENV ?= .venv
PYTHON ?= python3
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: venv run test lint chaos bench clean

venv: $(STAMP)

# Rebuilt when the dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e '.[dev]'
	touch $@

# The complete local demo: embedded broker, GPS simulator and the gateway.
run: $(STAMP)
	$(VENV)/bin/siscom dev

# The fast tier, for every edit (under a minute): lint and types, then the unit tests and the
# contract tests (tests/contracts, where it exists: dependencies' internals, the layering rules).
.PHONY: check
CHECK_TESTS = $(wildcard tests/unit tests/contracts)
check: lint
	$(VENV)/bin/pytest -q $(CHECK_TESTS) $(PYTEST_ARGS)

# The whole suite, as CI runs it (about 13 minutes on the 2-core reference machine).
test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Lint, format check and types (configured in pyproject.toml); only reads, never rewrites.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

chaos: $(STAMP)
	$(VENV)/bin/pytest tests/chaos $(PYTEST_ARGS)

# The load benchmark against the naive baseline (bench/README.md): `make bench` runs the
# steady scenario; `make bench BENCH_ARGS="capacity --json capacity.json"` any other.
BENCH_ARGS ?= steady
bench: $(STAMP)
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
