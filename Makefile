# Two entry points for a fresh machine: `make run` (the monitor on the bundled simulator) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint venv bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/foundry-monitor demo --config config/demo.yaml

lint: $(VENV)/.installed
	$(BIN)/ruff check monitor tests bench deploy
	$(BIN)/ruff format --check monitor
	$(BIN)/mypy --strict monitor

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(BIN)/python -m bench.run

# Not in CI: 10k deployments for 30 minutes (MINUTES=5 for a shorter run), drift of RSS, fds and lag.
MINUTES ?= 30
soak: $(VENV)/.installed
	$(BIN)/python -m bench.soak --minutes $(MINUTES)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
