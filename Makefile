# Everyday commands.  Each one builds the virtualenv first if needed, so
# `make run` and `make test` work on a fresh clone.

VENV ?= .venv
PYTHON ?= python3
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: venv run test chaos bench clean

venv: $(STAMP)

# Rebuilt when the dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e '.[dev]'
	touch $@

# The complete local demo: embedded broker, GPS simulator and the gateway.
run: $(STAMP)
	$(VENV)/bin/siscom dev

test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

chaos: $(STAMP)
	$(VENV)/bin/pytest tests/chaos $(PYTEST_ARGS)

bench: $(STAMP)
	@if [ -f bench/__main__.py ]; then \
		$(VENV)/bin/python -m bench $(BENCH_ARGS); \
	else \
		echo "no benchmark yet (bench/__main__.py is missing)"; \
	fi

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
