# chalk-dr: `make test` and `make demo` install what they need into .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck unit demo stop bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest -q

# A whole game day against the embedded sandbox; the Prefect server stays up for inspection.
demo: $(STAMP)
	$(PY) -m sandbox.demo run

stop: $(STAMP)
	$(PY) -m sandbox.demo stop

bench: $(STAMP)
	$(PY) benchmarks/drill.py
	$(PY) benchmarks/provision.py

clean:
	rm -rf $(VENV) .sandbox .prefect-demo
