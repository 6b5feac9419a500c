# Two set-up commands: `make run` and `make test`. Both create .venv when missing and install the project.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint format bench clean chromium postgresql

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lsq run

test: $(STAMP) lint chromium postgresql
	$(BIN)/python -m pytest -q

# The inner loop: everything but the end-to-end tests marked slow.
test-fast: $(STAMP) chromium
	$(BIN)/python -m pytest -q -m "not slow"

# The browser tests drive Debian's chromium through Playwright (a dev dependency); `playwright install` would
# download a browser build of its own, which this project never does.
chromium:
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

# The Dagster-on-PostgreSQL tests start a throw-away server from Debian's binaries (tests/postgres_server.py).
postgresql:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update && apt-get install -y postgresql)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .dagster_home .pytest_cache .mypy_cache
