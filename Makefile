# The two commands: `make run` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest install lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install whenever the lock file or the project metadata changes.
$(STAMP): $(BIN)/python requirements/dev.lock pyproject.toml
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Another address: FORESIGHT_PORT=8080 make run (any FORESIGHT_* setting applies, .env too).
# Alongside the server, `foresight simulate` backfills a day of history for a simulated plant and
# streams live readings (it waits for the server to answer); --wear 3 makes failures frequent
# enough to see (a few a day). Ctrl-C stops both.
run: $(STAMP)
	$(BIN)/foresight db upgrade
	$(BIN)/foresight demo seed
	$(BIN)/foresight simulate --backfill-hours 24 --interval 5 --wear 3 & sim=$$!; \
	trap 'kill $$sim 2>/dev/null' EXIT INT TERM; \
	$(BIN)/foresight serve

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

test: lint typecheck pytest

# Regenerate the lock files after editing dependencies in pyproject.toml (needs `uv`).
lock:
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements/dev.lock
	uv pip compile pyproject.toml --generate-hashes --python-version 3.11 -o requirements/main.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
