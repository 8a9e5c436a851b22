# Two commands: `make up` (embedded service on 127.0.0.1:8000) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: up test lint format install install-dev bench services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The stamp files re-run pip only when pyproject.toml or constraints.txt (the torch pin) changes.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

up: install
	$(BIN)/sagan up --host $(HOST) --port $(PORT)

services: install-dev
	VENV=$(VENV) scripts/ensure-services.sh

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install-dev services lint
	@# two pytest processes (tests/conftest.py): the long CPU-bound tests beside the rest; exit 5
	@# (nothing selected, e.g. PYTEST_ARGS naming one file) counts as a pass for either half
	@alone_log=$$(mktemp); \
	$(BIN)/python -m pytest -q -p no:cacheprovider -m alone --basetemp=$$(mktemp -d) $(PYTEST_ARGS) >$$alone_log 2>&1 & alone=$$!; \
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not alone" --basetemp=$$(mktemp -d) $(PYTEST_ARGS); rest=$$?; \
	wait $$alone; long=$$?; echo "--- the long tests (-m alone):"; cat $$alone_log; rm -f $$alone_log; \
	[ $$rest -eq 5 ] && rest=0; [ $$long -eq 5 ] && long=0; exit $$(( rest || long ))

bench: install
	$(BIN)/python -m sagan_core.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .cache
